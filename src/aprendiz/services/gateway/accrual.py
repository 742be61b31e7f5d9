"""What hosted capacity costs: a request's share of its replica's hour, and a replica's own accrual.

A hosted replica has an hourly price (``gateway.hourly_prices_usd`` by accelerator, or a
model's own ``hourly_usd``). A request is charged its share of the replica's time: the
seconds it took, divided by the requests the replica served at once. Separately, every
replica accrues its price into ``aprendiz_replica_cost_usd`` while it is up, which is
what the hosting side of rent-or-host sums.
"""

from __future__ import annotations

import asyncio
import time
from contextlib import contextmanager
from typing import Iterator

from aprendiz.metrics import ReplicaCostMetrics


def hosted_share_usd(hourly_usd: float, seconds: float, in_flight: int) -> float:
    """A hosted request's estimated cost: its share of the replica's time (the replica serves
    ``in_flight`` requests at once), at the replica's hourly price."""
    return hourly_usd * seconds / 3600.0 / max(1, in_flight)


class InFlight:
    """How many requests each model is serving now (what a request's cost is shared by)."""

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}

    @contextmanager
    def request(self, model: str) -> Iterator[int]:
        """Count one request for its duration; yields the count including it."""
        self._counts[model] = count = self._counts.get(model, 0) + 1
        try:
            yield count
        finally:
            self._counts[model] -= 1


class ReplicaCostMeter:
    """Accrues a replica's hourly price into ``aprendiz_replica_cost_usd`` while it is up."""

    def __init__(self, *, model: str, kind: str, accelerator: str, hourly_usd: float, interval_s: float = 5.0):
        from ray import serve

        try:
            replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # outside a replica (tests)
            replica = "local"
        self._metrics = ReplicaCostMetrics(model=model, kind=kind, accelerator=accelerator, replica=replica)
        self._hourly_usd = hourly_usd
        self._interval_s = interval_s
        self._metrics.price(hourly_usd)
        self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        last = time.monotonic()
        while True:
            await asyncio.sleep(self._interval_s)
            now = time.monotonic()
            self._metrics.price(self._hourly_usd)  # re-set each tick: Ray exports gauges as last reported
            if self._hourly_usd > 0:
                self._metrics.accrue(self._hourly_usd * (now - last) / 3600.0)
            last = now
