"""The garbage collector of a serving process (the ingress and the classifier replicas).

Serve collects and freezes a replica's heap once its constructor has returned, so the startup
objects are never scanned again. What is left is the request path's own allocations: with
Python's default young threshold (700) they ran a full collection about twice a second under
load, each stalling the replica's event loop for about 90 ms, and that stall was the classifier
path's p99 at concurrency 32 (docs/benchmarks.md, "Where the time goes"). A higher threshold
makes young collections rare; the garbage they would have freed (reference cycles of finished
requests, a few MB at most) waits a little longer.
"""

from __future__ import annotations

import gc


def tune_gc(young_threshold: int | None) -> None:
    """Collect the youngest generation every ``young_threshold`` allocations (net of
    deallocations); the older generations' ratios are kept. ``None`` leaves Python's."""
    if young_threshold is None:
        return
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(young_threshold, older, oldest)
