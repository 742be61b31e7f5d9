"""scripts/build-cache.sh, which keeps the default model's build once per machine: a second build of
the same inputs is a copy, a changed input builds again, and ``APRENDIZ_BUILD_CACHE=off`` always builds."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "build-cache.sh"
# The build: a counter of its runs, and the output folder holding which run made it.
BUILD = 'n=$(($(cat runs 2>/dev/null || echo 0) + 1)); echo $n > runs; mkdir -p out/model; echo "run $n" > out/model/weights'


def build(work: Path, *inputs: str, cache: str) -> str:
    env = {**os.environ, "APRENDIZ_BUILD_CACHE": cache}
    done = subprocess.run(["bash", str(SCRIPT), "out/model", *inputs, "--", "bash", "-c", BUILD],
                          cwd=work, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return (work / "out" / "model" / "weights").read_text().strip()


def test_the_same_inputs_are_built_once_and_copied_after(tmp_path):
    (tmp_path / "build.py").write_text("spec = 1\n")
    (tmp_path / "corpus.jsonl").write_text("{}\n")
    cache = str(tmp_path / "cache")
    assert build(tmp_path, "build.py", "corpus.jsonl", cache=cache) == "run 1"
    (tmp_path / "out" / "model" / "weights").unlink()  # a fresh clone has no output
    assert build(tmp_path, "build.py", "corpus.jsonl", cache=cache) == "run 1"  # copied, not built
    assert (tmp_path / "runs").read_text().strip() == "1"

    (tmp_path / "corpus.jsonl").write_text('{"more": 1}\n')
    assert build(tmp_path, "build.py", "corpus.jsonl", cache=cache) == "run 2"  # a changed input builds
    assert build(tmp_path, "build.py", "corpus.jsonl", cache=cache) == "run 2"
    assert build(tmp_path, "build.py", "corpus.jsonl", cache="off") == "run 3"  # off: always built
    assert (tmp_path / "runs").read_text().strip() == "3"


def test_a_failed_build_keeps_nothing(tmp_path):
    (tmp_path / "build.py").write_text("spec = 1\n")
    cache = tmp_path / "cache"
    env = {**os.environ, "APRENDIZ_BUILD_CACHE": str(cache)}
    done = subprocess.run(["bash", str(SCRIPT), "out/model", "build.py", "--", "bash", "-c", "mkdir -p out/model; exit 3"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30)
    assert done.returncode == 3
    assert not [p for p in cache.iterdir() if p.is_dir()]  # the next run builds again
