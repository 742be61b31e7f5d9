"""aprendiz.settings: read from APRENDIZ_* in one place, on demand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import ValidationError

from aprendiz.settings import Settings


def test_defaults_serve_on_loopback():
    settings = Settings(_env_file=None)
    assert (settings.host, settings.port, settings.metrics_export_port) == ("127.0.0.1", 8000, 8080)
    assert settings.default_model_path == Path("var/models/aprendiz-tiny-chat")


def test_environment_with_prefix(monkeypatch):
    monkeypatch.setenv("APRENDIZ_PORT", "9123")
    monkeypatch.setenv("APRENDIZ_CONFIG_FILE", "/etc/aprendiz.yaml")
    monkeypatch.setenv("PORT", "1")  # unprefixed variables are not ours
    settings = Settings()
    assert settings.port == 9123
    assert settings.config_file == Path("/etc/aprendiz.yaml")


def test_bad_values_are_refused(monkeypatch):
    monkeypatch.setenv("APRENDIZ_PORT", "99999")
    with pytest.raises(ValidationError, match="port"):
        Settings()


def test_importing_the_package_reads_no_settings():
    # A broken APRENDIZ_PORT must not break imports: settings are read when asked for.
    code = "import aprendiz.cli, aprendiz.cli.runner, aprendiz.services.app; print('ok')"
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"APRENDIZ_PORT": "not-a-port", "PATH": ""}
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "ok"
