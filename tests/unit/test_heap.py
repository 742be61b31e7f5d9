"""The garbage collector of a serving process: the young generation's threshold the platform
sets in its ingress and classifier replicas (docs/benchmarks.md has the stalls it removes)."""

from __future__ import annotations

import gc

import pytest

from aprendiz.config import IngressConfig, PlatformConfig
from aprendiz.services.heap import tune_gc


def test_the_young_threshold_is_set_and_the_older_ratios_kept():
    gc.set_threshold(700, 11, 12)
    tune_gc(50_000)
    assert gc.get_threshold() == (50_000, 11, 12)


def test_none_leaves_python_s_thresholds():
    gc.set_threshold(700, 10, 10)
    tune_gc(None)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_default_is_raised_and_the_config_refuses_nonsense():
    assert IngressConfig().gc_young_threshold == 50_000
    with pytest.raises(ValueError, match="gc_young_threshold"):
        PlatformConfig.model_validate({"ingress": {"gc_young_threshold": 0}})
