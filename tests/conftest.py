"""Shared test settings: where the repository and the default model are."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = ROOT / "var" / "models" / "aprendiz-tiny-chat"
DEFAULT_CONFIG = ROOT / "config" / "aprendiz.yaml"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def default_model() -> Path:
    """The embedded default model that `make test` builds before pytest runs."""
    from aprendiz.training.tinyllm.build import is_built

    if not is_built(DEFAULT_MODEL):
        pytest.fail(f"{DEFAULT_MODEL} is not built: run `make model` (make test does it first)")
    return DEFAULT_MODEL
