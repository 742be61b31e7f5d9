"""Fixtures of the chart checks (helpers in chart_support.py, importable from this folder)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from chart_support import CRDS_DIR, SCENARIOS, find_helm, render, scenario_id  # noqa: E402


@pytest.fixture(scope="session")
def helm() -> str:
    found = find_helm()
    if found is None:
        pytest.fail("no helm binary: run `make helm` (make test does it), set APRENDIZ_HELM, or put helm on PATH")
    return found


@pytest.fixture(params=[None, *SCENARIOS], ids=["defaults", *[scenario_id(p) for p in SCENARIOS]])
def scenario(request) -> Path | None:
    """The default values and every ci/*-values.yaml scenario."""
    return request.param


@pytest.fixture
def rendered(helm, scenario):
    return render(helm, values=scenario)


@pytest.fixture(scope="session")
def crds_dir() -> Path:
    if not CRDS_DIR.is_dir():
        pytest.skip(f"{CRDS_DIR} is absent: the upstream CRDs live in the shared folder beside the repository")
    return CRDS_DIR
