"""aprendiz.runner: without API keys the entrance stays on loopback, and the banner says how it is protected."""

from __future__ import annotations

import pytest

from aprendiz.config import PlatformConfig
from aprendiz.runner import ExposureError, banner, check_exposure, is_loopback
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
