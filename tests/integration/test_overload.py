"""Overload: a burst at five times what a model admits, against a classifier and a generator.

What a model admits is its admission limits (conftest's ``overload_limits``): ``max_ongoing_requests``
at each replica, plus ``max_queued_requests`` waiting at each caller (each ingress replica holds its
own handle, so its own queue). Past that the entrance answers 503 with Retry-After at once: no
request waits until its client gives up, every request let in finishes, the replicas' memory stays
put, and single requests are as fast as before within seconds. Bounded: one burst each, a few
hundred requests at most, under a minute.
"""

from __future__ import annotations

import asyncio
import statistics
import time

import httpx
import psutil
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CLIENT_TIMEOUT_S = 60
MEMORY_GROWTH_LIMIT = 300 * 2**20  # bytes the replicas may grow by over one burst


def admitted_at_once(limits: dict[str, int], replicas: int, ingress_replicas: int) -> int:
    return limits["max_ongoing_requests"] * replicas + limits["max_queued_requests"] * ingress_replicas


def replicas_rss(*names: str) -> int:
    """Resident memory of the Serve replicas whose process title names one of ``names`` (and the
    ingress's), in bytes."""
    total = 0
    for proc in psutil.process_iter(["cmdline"]):
        title = " ".join(proc.info["cmdline"] or [])
        if "ServeReplica:aprendiz:" in title and any(name in title for name in (*names, "Ingress")):
            try:
                total += proc.memory_info().rss
            except psutil.NoSuchProcess:
                pass
    return total


async def burst(platform, requests: list[tuple[str, dict]]) -> list[tuple[int, float, dict[str, str], str]]:
    """Every request at once; (status, seconds, headers, body) each, status 0 for a client timeout."""
    limits = httpx.Limits(max_connections=len(requests), max_keepalive_connections=len(requests))
    async with httpx.AsyncClient(base_url=platform.base_url, headers=platform.headers,
                                 timeout=CLIENT_TIMEOUT_S, limits=limits) as client:
        async def one(path, body):
            started = time.monotonic()
            try:
                response = await client.post(path, json=body)
                return response.status_code, time.monotonic() - started, dict(response.headers), response.text
            except httpx.TimeoutException as exc:
                return 0, time.monotonic() - started, {}, repr(exc)

        return await asyncio.gather(*(one(path, body) for path, body in requests))


def latencies(platform, path: str, body: dict, n: int) -> list[float]:
    with httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=CLIENT_TIMEOUT_S) as client:
        out = []
        for _ in range(n):
            started = time.monotonic()
            response = client.post(path, json=body)
            assert response.status_code == 200, response.text
            out.append(time.monotonic() - started)
        return out


def check_burst(answers, admitted: int) -> dict[str, float]:
    """The burst's outcome, asserted; its figures returned."""
    statuses = [status for status, *_ in answers]
    timed_out = [a for a in answers if a[0] == 0]
    assert not timed_out, f"{len(timed_out)} requests waited until the client gave up"
    unexpected = [a for a in answers if a[0] not in (200, 429, 503)]
    assert not unexpected, unexpected[:3]
    refused = [a for a in answers if a[0] in (429, 503)]
    for _, _, headers, body in refused:
        assert int(headers["retry-after"]) >= 1, headers
        assert "Internal exception" not in body and "Traceback" not in body
    assert refused, f"a burst of {len(answers)} against {admitted} admitted at once refused none"
    assert statuses.count(200) >= 1
    shed_s = [seconds for status, seconds, *_ in answers if status != 200]
    return {
        "sent": len(answers), "ok": statuses.count(200), "refused": len(refused),
        "refusal_p50_s": statistics.median(shed_s), "refusal_max_s": max(shed_s),
        "slowest_ok_s": max(seconds for status, seconds, *_ in answers if status == 200),
    }


def check_recovery(platform, path: str, body: dict, before: list[float]) -> float:
    """Seconds after the burst until five single requests in a row are as fast as before (median
    within 3x, or 50 ms, of the median before the burst)."""
    ended, target = time.monotonic(), max(3 * statistics.median(before), statistics.median(before) + 0.05)
    while statistics.median(latencies(platform, path, body, 5)) > target:
        assert time.monotonic() - ended < 20, "latency not back to normal within 20 s of the burst"
    return time.monotonic() - ended


def test_a_classifier_burst_at_five_times_its_admission(platform, overload_limits):
    model = overload_limits.classifier
    path, body = f"/v1/models/{model}:predict", {"instances": ["Hola, ¿cómo estás hoy?"]}
    # Its autoscaling maximum of replicas.
    admitted = admitted_at_once(overload_limits.classifier_limits, 2, overload_limits.ingress_replicas)
    before = latencies(platform, path, body, 10)
    rss_before = replicas_rss(model)
    answers = asyncio.run(burst(platform, [(path, body)] * (5 * admitted)))
    figures = check_burst(answers, admitted)
    figures["recovered_s"] = check_recovery(platform, path, body, before)
    growth = replicas_rss(model) - rss_before
    print(f"\nclassifier burst: {figures}, replicas grew {growth / 2**20:.0f} MiB")
    assert growth < MEMORY_GROWTH_LIMIT, f"the replicas grew by {growth / 2**20:.0f} MiB over one burst"


def test_a_generator_burst_at_five_times_its_admission(platform, overload_limits):
    """Each request asks for 32 tokens exactly (min_tokens), so the replica is busy while the burst
    arrives; streamed and whole answers alike, since a stream's 503 must come before its 200."""
    path = "/v1/chat/completions"
    model = overload_limits.generator
    body = {"model": model, "messages": [{"role": "user", "content": "Hola"}],
            "max_tokens": 32, "min_tokens": 32}
    admitted = admitted_at_once(overload_limits.generator_limits, 1, overload_limits.ingress_replicas)
    before = latencies(platform, path, body, 3)
    rss_before = replicas_rss(model)
    requests = [(path, body | {"stream": i % 2 == 1}) for i in range(5 * admitted)]
    answers = asyncio.run(burst(platform, requests))
    figures = check_burst(answers, admitted)
    for status, _, _, text in answers:
        if status == 200 and text.startswith("data:"):  # a stream let in ends whole, not cut
            assert text.rstrip().endswith("data: [DONE]") and '"error"' not in text, text[-300:]
    figures["recovered_s"] = check_recovery(platform, path, body, before)
    growth = replicas_rss(model) - rss_before
    print(f"\ngenerator burst: {figures}, replicas grew {growth / 2**20:.0f} MiB")
    assert growth < MEMORY_GROWTH_LIMIT, f"the replicas grew by {growth / 2**20:.0f} MiB over one burst"
