"""Shared stand-ins of the fast tier."""

from __future__ import annotations

import gc
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # ingress_support.py, importable by the tests here

from ingress_support import RecordingGatewayMetrics  # noqa: E402


@pytest.fixture(autouse=True)
def gc_thresholds():
    """The ingress and classifier servers built here tune this process's collector as they would
    their replica's (services/heap.py): each test gets Python's thresholds back."""
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


@pytest.fixture
def recording_metrics() -> type[RecordingGatewayMetrics]:
    return RecordingGatewayMetrics


@pytest.fixture(scope="session")
def serve_loop():
    """One event loop for every in-process classifier server of the session, as a replica has one:
    ``@serve.batch`` keeps its queue (and that queue's loop) on the decorated method, not per
    server, so a server awaited on a second loop would wait forever on the first one's queue."""
    import asyncio

    loop = asyncio.new_event_loop()
    yield loop.run_until_complete
    pending = asyncio.all_tasks(loop)  # the servers' pollers, cost meters and batch loops
    for task in pending:
        task.cancel()
    loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
    loop.close()


@pytest.fixture
def replica_context(monkeypatch):
    """The one thing a replica would give an in-process classifier server: ``serve.get_replica_context()``,
    which ``@serve.batch`` reads its deployment's ``max_ongoing_requests`` from."""
    from types import SimpleNamespace

    from ray import serve

    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=128),
                              replica_id=SimpleNamespace(unique_id="in-process"))
    monkeypatch.setattr(serve, "get_replica_context", lambda: context)


@pytest.fixture(scope="session")
def image_python() -> str:
    """The image-training environment's Python (make image-venv; the Makefile exports it for make test)."""
    import os

    python = os.environ.get("APRENDIZ_IMAGE_PYTHON")
    if not python or not os.access(python, os.X_OK):
        pytest.fail(f"APRENDIZ_IMAGE_PYTHON is {python!r}: run `make image-venv` (the Makefile exports it for "
                    "make test), or set it to a Python with torch and torchvision", pytrace=False)
    return python
