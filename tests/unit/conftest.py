"""Shared stand-ins of the fast tier."""

from __future__ import annotations

import gc

import pytest


@pytest.fixture(autouse=True)
def gc_thresholds():
    """The ingress and classifier servers built here tune this process's collector as they would
    their replica's (services/heap.py): each test gets Python's thresholds back."""
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


class RecordingCounter:
    """A Ray metric's inc/observe, recorded (Ray's metrics need a Ray worker to export)."""

    def __init__(self):
        self.calls = []

    def inc(self, value=1, tags=None):
        self.calls.append((value, tags))

    observe = inc


class RecordingGatewayMetrics:
    """What the gateway counts: refusals, cost, fallbacks, provider errors and every generation."""

    def __init__(self):
        self.refusals, self.cost_usd, self.fallbacks, self.upstream_errors = (RecordingCounter() for _ in range(4))
        self.generations = []
        self.key_file_errors, self.limiter_fail_open = [], []

    def generated(self, **kwargs):
        self.generations.append(kwargs)

    def key_file_error(self, reason):
        self.key_file_errors.append(reason)

    def limiter_failed_open(self, call, reason):
        self.limiter_fail_open.append((call, reason))


@pytest.fixture
def recording_metrics() -> type[RecordingGatewayMetrics]:
    return RecordingGatewayMetrics
