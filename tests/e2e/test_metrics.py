"""Prometheus scrapes Ray's metrics port of the release's pods through the chart's PodMonitor."""

from __future__ import annotations

import time

import httpx
import pytest

SCRAPE_TIMEOUT_S = 300


def _query(cluster, promql: str) -> list[dict]:
    answer = httpx.get(f"{cluster.prometheus_url}/api/v1/query", params={"query": promql}, timeout=30)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]["result"]


@pytest.mark.parametrize(
    "promql",
    [
        'up{namespace="%(ns)s", container=~"ray-head|ray-worker"} == 1',
        'ray_serve_num_http_requests_total{namespace="%(ns)s"}',
        'ray_vllm_num_requests_running{namespace="%(ns)s"}',
    ],
    ids=["targets-up", "serve-requests", "vllm-engine"],
)
def test_ray_metrics_are_scraped(cluster, promql):
    if not cluster.prometheus_url:
        pytest.skip("APRENDIZ_E2E_PROMETHEUS_URL is not set")
    with cluster.client() as client:  # traffic, so the request counters exist
        client.get("/v1/models")
    query = promql % {"ns": cluster.namespace}
    deadline = time.monotonic() + SCRAPE_TIMEOUT_S
    while not (result := _query(cluster, query)) and time.monotonic() < deadline:
        time.sleep(10)
    assert result, f"Prometheus has no series for {query} after {SCRAPE_TIMEOUT_S}s"
