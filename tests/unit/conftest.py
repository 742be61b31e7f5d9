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
