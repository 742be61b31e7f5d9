"""One real platform per test session: `aprendiz serve` as a user runs it (real Ray Serve,
real vLLM CPU engine, the tiny default model), on free loopback ports."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil
import pytest

START_TIMEOUT_S = 600
STOP_TIMEOUT_S = 120
# Processes a platform run leaves behind if it does not stop cleanly.
PLATFORM_PROCESS_MARKERS = ("raylet", "gcs_server", "ray::", "EngineCore", "VLLM::", "aprendiz serve", "dashboard_agent")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def platform_processes() -> dict[int, str]:
    found = {}
    for proc in psutil.process_iter(["pid", "cmdline", "name"]):
        try:
            text = " ".join(proc.info["cmdline"] or []) or proc.info["name"] or ""
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
        if any(marker in text for marker in PLATFORM_PROCESS_MARKERS) and proc.pid != os.getpid():
            found[proc.pid] = text[:160]
    return found


class RunningPlatform:
    def __init__(self, process: subprocess.Popen, base_url: str, metrics_url: str, log_path: Path):
        self.process = process
        self.base_url = base_url
        self.metrics_url = metrics_url
        self.log_path = log_path

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


@pytest.fixture(scope="session")
def platform(default_model, repo_root, tmp_path_factory) -> RunningPlatform:
    before = set(platform_processes())
    port, metrics_port = _free_port(), _free_port()
    log_path = tmp_path_factory.mktemp("platform") / "serve.log"
    env = {
        **os.environ,
        "APRENDIZ_PORT": str(port),
        "APRENDIZ_METRICS_EXPORT_PORT": str(metrics_port),
        "APRENDIZ_CONFIG_FILE": str(repo_root / "config" / "aprendiz.yaml"),
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "aprendiz"), "serve"],
            cwd=repo_root, env=env, stdout=log, stderr=subprocess.STDOUT,
        )
    running = RunningPlatform(process, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}", log_path)
    deadline = time.monotonic() + START_TIMEOUT_S
    while True:
        if process.poll() is not None:
            pytest.fail(f"aprendiz serve exited with {process.returncode} while starting:\n{running.log_tail()}")
        if "aprendiz is serving" in log_path.read_text(errors="replace"):
            break
        if time.monotonic() > deadline:
            process.kill()
            pytest.fail(f"aprendiz serve not ready after {START_TIMEOUT_S}s:\n{running.log_tail()}")
        time.sleep(2)
    assert httpx.get(f"{running.base_url}/readyz", timeout=10).status_code == 200

    yield running

    # Ctrl-C, as a user stops `make run`: it must exit 0 and leave no Ray or vLLM process.
    process.send_signal(signal.SIGINT)
    try:
        code = process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"aprendiz serve did not stop within {STOP_TIMEOUT_S}s of SIGINT:\n{running.log_tail()}")
    leftover = {}
    for _ in range(30):  # processes may take a moment to be reaped
        leftover = {pid: cmd for pid, cmd in platform_processes().items() if pid not in before}
        if not leftover:
            break
        time.sleep(1)
    for pid in leftover:
        try:
            psutil.Process(pid).kill()
        except psutil.NoSuchProcess:
            pass
    assert code == 0, f"aprendiz serve exited with {code} on SIGINT:\n{running.log_tail()}"
    assert not leftover, f"processes left behind after Ctrl-C: {leftover}"
