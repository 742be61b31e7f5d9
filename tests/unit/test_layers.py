"""The source tree's layers: the core imports neither the services nor training nor the shell, and
nothing but the shell imports the shell (aprendiz.cli: the command line and the local runner)."""

from __future__ import annotations

import ast
from pathlib import Path

import aprendiz

SRC = Path(aprendiz.__file__).resolve().parent


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module:
            names.add(node.module)
        elif isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
    return {n for n in names if n.startswith("aprendiz.")}


def _offenders(paths, forbidden: tuple[str, ...]) -> list[str]:
    return sorted(f"{p.relative_to(SRC)} imports {n}" for p in paths for n in _imports(p) if n.startswith(forbidden))


def test_the_core_imports_no_service_training_or_shell_module():
    assert _offenders(SRC.glob("*.py"), ("aprendiz.services", "aprendiz.training", "aprendiz.cli")) == []


def test_only_the_shell_imports_the_shell():
    outside = [p for p in SRC.rglob("*.py") if SRC / "cli" not in p.parents]
    assert _offenders(outside, ("aprendiz.cli",)) == []


def test_training_imports_no_service():
    assert _offenders((SRC / "training").rglob("*.py"), ("aprendiz.services",)) == []
