"""Classifier measurements: aprendiz V1 and V2, KServe's ModelServer V1 and V2 (the same ONNX
model), and onnxruntime called in-process (the floor), with a closed-loop load generator."""

from __future__ import annotations

import json
import time
from typing import Any

import numpy as np

from benchmarks.common import summary
from benchmarks.loadgen import http_load, time_calls
from benchmarks.servers import CLASSIFIER


def sample_row() -> list[float]:
    """The first row of scikit-learn's breast cancer data (30 features, a malignant case)."""
    from sklearn.datasets import load_breast_cancer

    return [float(v) for v in load_breast_cancer().data[0]]


def v1_body(row: list[float]) -> bytes:
    return json.dumps({"instances": [row]}).encode()


def v2_body(row: list[float]) -> bytes:
    return json.dumps({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32", "data": row}]}).encode()


def endpoints(base_url: str) -> dict[str, str]:
    return {"v1": f"{base_url}/v1/models/{CLASSIFIER}:predict", "v2": f"{base_url}/v2/models/{CLASSIFIER}/infer"}


def in_process(onnx_bytes: bytes, row: list[float], *, duration_s: float, rounds: int) -> dict[str, Any]:
    """onnxruntime in this process, one row a call, one intra-op thread: no HTTP, no server."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    x = np.asarray([row], dtype=np.float32)
    name = session.get_inputs()[0].name
    runs = [time_calls(lambda: session.run(["probabilities"], {name: x}), duration_s=duration_s, warmup_s=0.5)
            for _ in range(rounds)]
    return summarize_runs(runs)


def summarize_runs(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "rps": summary([r["rps"] for r in runs]),
        "p50_ms": summary([r["p50_ms"] for r in runs]),
        "p99_ms": summary([r["p99_ms"] for r in runs]),
        "errors": sum(r["errors"] for r in runs),
        "tool": runs[0].get("tool") if runs else None,
        "runs": runs,
    }


def closed_loop(url: str, body: bytes | None, *, concurrency: int, rounds: int, duration_s: float, warmup_s: float,
                headers: dict[str, str] | None = None) -> dict[str, Any]:
    """``rounds`` closed-loop runs against one URL, summarized (median and spread)."""
    return summarize_runs([http_load(url, body, concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s,
                                     headers=headers) for _ in range(rounds)])


def alternated(targets: dict[str, tuple[str, dict[str, str]]], concurrencies: list[int], rounds: int, *,
               duration_s: float, warmup_s: float, log=print, body: bytes | None = None) -> dict[str, Any]:
    """``targets``: name -> (URL, headers), e.g. "aprendiz-v1". Each round runs every target at
    every concurrency; the order is reversed every other round. ``body``: the same body for every
    target (default: the sample row as V1 or V2, by URL)."""
    row = sample_row()
    bodies = {"v1": body or v1_body(row), "v2": body or v2_body(row)}
    raw: dict[str, dict[int, list]] = {t: {c: [] for c in concurrencies} for t in targets}
    names = list(targets)
    for r in range(rounds):
        for c in concurrencies:
            for name in names if r % 2 == 0 else list(reversed(names)):
                url, headers = targets[name]
                body = bodies["v2" if url.endswith("/infer") else "v1"]
                result = http_load(url, body, concurrency=c, duration_s=duration_s, warmup_s=warmup_s,
                                   headers=headers)
                raw[name][c].append(result)
                log(f"bench: classifier {name} c={c} round {r + 1}/{rounds}: {result['rps']:.0f} req/s, "
                    f"p50 {result['p50_ms']:.2f} ms, p99 {result['p99_ms']:.2f} ms, errors {result['errors']}")
    return {name: {str(c): summarize_runs(raw[name][c]) for c in concurrencies} for name in names}


def placement_of(base_url: str, model: str, headers: dict[str, str] | None = None) -> str | None:
    """Where the platform says ``model`` runs (V2 metadata's ``parameters.placement``)."""
    import httpx

    response = httpx.get(f"{base_url}/v2/models/{model}", headers=headers or {}, timeout=30)
    return response.json().get("parameters", {}).get("placement") if response.status_code == 200 else None


def check_answers(base_url: str, headers: dict[str, str] | None = None) -> dict[str, Any]:
    """The answers under test are real: V1 and V2 both say the sample row is malignant."""
    import httpx

    row = sample_row()
    urls = endpoints(base_url)
    h = {"Content-Type": "application/json", **(headers or {})}
    v1 = httpx.post(urls["v1"], content=v1_body(row), headers=h, timeout=30)
    v2 = httpx.post(urls["v2"], content=v2_body(row), headers=h, timeout=30)
    ok_v1 = v1.status_code == 200 and v1.json()["predictions"][0]["label"] == "malignant"
    labels = [o for o in v2.json().get("outputs", []) if o["name"] == "label"] if v2.status_code == 200 else []
    ok_v2 = bool(labels) and labels[0]["data"][0] == "malignant"
    return {"v1_ok": ok_v1, "v2_ok": ok_v2, "v1_status": v1.status_code, "v2_status": v2.status_code}


def ingress_floor(base_url: str, concurrencies: list[int], rounds: int, *, duration_s: float,
                  warmup_s: float) -> dict[str, Any]:
    """GET /v2/health/live through the entrance: the ingress answering alone, no model call. Set
    beside the V1 figures it splits the classifier path's cost into the ingress and the hop."""
    from benchmarks.loadgen import wrk_available

    if not wrk_available():
        return {"skipped": "wrk is not installed"}
    return {str(c): closed_loop(f"{base_url}/v2/health/live", None, concurrency=c, rounds=rounds,
                                duration_s=duration_s, warmup_s=warmup_s) for c in concurrencies}


def profile_path(server, url: str, *, concurrency: int = 32, seconds: int = 8, log=print) -> dict[str, Any]:
    """py-spy on the ingress replica, the classifier replica and Serve's Python proxy (when it is in
    the path) while a closed loop of ``concurrency`` clients posts V1 requests."""
    from benchmarks.generator import profile_processes

    body = v1_body(sample_row())
    report = profile_processes(
        server,
        {"ingress": "ServeReplica:aprendiz:Ingress", "classifier": f"ServeReplica:aprendiz:Classifier:{CLASSIFIER}",
         "proxy": "ProxyActor"},
        lambda: http_load(url, body, concurrency=concurrency, duration_s=seconds + 4, warmup_s=0),
        seconds=seconds, log=log,
    )
    return {**report, "concurrency": concurrency}


def ingress_batching(store_url: str, *, requests: int = 6000, rounds: int = 3) -> dict[str, Any]:
    """In the ingress a request's rows run inline; would ``@serve.batch`` pay there? The classifier
    service in this process, called by 1 and 32 concurrent tasks, inline against batched, taking turns.
    Microseconds of the service's own work a request (decode, onnxruntime, encode, metrics)."""
    import asyncio
    from types import SimpleNamespace

    from ray import serve

    from aprendiz.config import ClassifierModel
    from aprendiz.metrics import ClassifierMetrics
    from aprendiz.registry import ModelRegistry
    from aprendiz.services.classifier.service import ClassifierService
    from aprendiz.store import ObjectStore

    body = {"instances": [sample_row()]}
    context = SimpleNamespace(_deployment_config=SimpleNamespace(max_ongoing_requests=256),
                              replica_id=SimpleNamespace(unique_id="bench"))

    async def measure() -> dict[str, Any]:
        registry = ModelRegistry(ObjectStore(store_url))
        config = ClassifierModel(name=CLASSIFIER)
        services: dict[str, ClassifierService] = {}

        @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)
        async def batched(models, rows):
            return services["serve.batch"].run_batches(models, rows)

        services["inline"] = ClassifierService(config, registry, ClassifierMetrics(CLASSIFIER))
        services["serve.batch"] = ClassifierService(config, registry, ClassifierMetrics(CLASSIFIER), infer=batched)
        for service in services.values():
            await service.start()
        figures: dict[str, dict[str, list[float]]] = {name: {"1": [], "32": []} for name in services}
        for r in range(rounds):
            for name in services if r % 2 == 0 else reversed(list(services)):
                for concurrency in (1, 32):
                    async def worker(n: int, service=services[name]) -> None:
                        for _ in range(n):
                            await service.predict_v1(body)

                    started = time.perf_counter()
                    await asyncio.gather(*(worker(requests // concurrency) for _ in range(concurrency)))
                    figures[name][str(concurrency)].append(1e6 * (time.perf_counter() - started) / requests)
        for service in services.values():
            await service.stop()
        return {name: {c: summary(v) for c, v in per_c.items()} for name, per_c in figures.items()}

    original = serve.get_replica_context
    serve.get_replica_context = lambda: context  # @serve.batch reads its deployment's limits from it
    try:
        return asyncio.run(measure())
    finally:
        serve.get_replica_context = original
