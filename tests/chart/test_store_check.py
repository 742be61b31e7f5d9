"""files/scripts/store_check.py, the chart's init-container check, against real stores:
a local folder and an S3-protocol server (moto) with and without its bucket."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml
from chart_support import CHART

SCRIPT = CHART / "files" / "scripts" / "store_check.py"


def _run(config, *args, env=None, timeout="1"):
    return subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(config), "--timeout", timeout, "--interval", "0.2", *args],
        capture_output=True, text=True, timeout=60, env=env,
    )


def _config(tmp_path, store: dict, classifiers=("breast-cancer",)):
    path = tmp_path / "aprendiz.yaml"
    path.write_text(yaml.safe_dump({"classifiers": [{"name": n} for n in classifiers], "store": store}))
    return path


def test_waits_for_champions_then_passes(tmp_path, job_training):
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    store = tmp_path / "store"
    config = _config(tmp_path, {"url": str(store)})
    waiting = _run(config, "--wait-for-champions")
    assert waiting.returncode == 1
    assert "no champion yet for breast-cancer" in waiting.stdout and "gave up after 1 s" in waiting.stderr
    job_training.train_builtin(ModelRegistry(ObjectStore(str(store))), "breast-cancer")
    ready = _run(config, "--wait-for-champions")
    assert ready.returncode == 0, ready.stderr
    assert "store_check: ready" in ready.stdout


def test_creates_a_missing_bucket_only_when_asked(tmp_path, s3_env):
    import os

    config = _config(tmp_path, {"url": "s3://chart-bucket/store", "endpoint_url": s3_env})
    env = dict(os.environ)
    missing = _run(config, env=env)
    assert missing.returncode == 1 and "bucket chart-bucket of s3://chart-bucket/store does not exist" in missing.stdout
    created = _run(config, "--create-bucket", env=env)
    assert created.returncode == 0, created.stderr
    assert "created bucket chart-bucket" in created.stdout
    assert _run(config, env=env).returncode == 0


def test_unreachable_store_is_named(tmp_path):
    config = _config(tmp_path, {"url": "s3://b/store", "endpoint_url": "http://127.0.0.1:9"})
    result = _run(config, env={
        "AWS_ACCESS_KEY_ID": "x", "AWS_SECRET_ACCESS_KEY": "y", "AWS_MAX_ATTEMPTS": "1", "PATH": "/usr/bin",
    })
    assert result.returncode == 1
    assert "store not reachable" in result.stdout


@pytest.mark.parametrize("content", ["generators: [", "{}"])
def test_bad_config_exits_2(tmp_path, content):
    path = tmp_path / "aprendiz.yaml"
    path.write_text(content)
    result = _run(path)
    assert result.returncode == 2 and result.stderr.startswith("store_check: ")
