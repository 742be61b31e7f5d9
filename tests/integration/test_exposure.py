"""A platform whose entrance is on loopback opens no port beyond loopback: Ray, Serve, HAProxy, vLLM."""

from __future__ import annotations

import ipaddress

import psutil
import pytest

pytestmark = pytest.mark.integration


def test_everything_the_platform_started_listens_on_loopback_only(platform):
    tree = [psutil.Process(platform.process.pid), *psutil.Process(platform.process.pid).children(recursive=True)]
    pids = {process.pid for process in tree}
    listening = {}
    for conn in psutil.net_connections(kind="inet"):
        if conn.status == psutil.CONN_LISTEN and conn.pid in pids:
            listening[(conn.laddr.ip, conn.laddr.port)] = psutil.Process(conn.pid).name()
    # the entrance, HAProxy's stats and metrics, Ray's metrics, GCS, raylet, workers, agents at least
    assert len(listening) >= 8, listening
    names = set(listening.values())
    assert "haproxy" in names and "gcs_server" in names and "raylet" in names, names

    def loopback(ip: str) -> bool:
        address = ipaddress.ip_address(ip)
        mapped = getattr(address, "ipv4_mapped", None)
        return (mapped or address).is_loopback

    beyond = {f"{ip}:{port}": name for (ip, port), name in listening.items() if not loopback(ip)}
    assert not beyond, f"listening beyond loopback: {beyond}"
