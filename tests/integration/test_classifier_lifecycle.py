"""Classifier lifecycle under load: champion swaps with zero failed requests, a broken version
refused while the old one keeps serving, and Serve's autoscaler adding and removing replicas."""

from __future__ import annotations

import asyncio
import re
import time

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

S3_MODEL, LOCAL_MODEL = "breast-cancer", "breast-cancer-local"  # in its own replicas; in the ingress
TEXT_MODEL = "es-or-en"  # MiniLM: in its own replicas, autoscaled


@pytest.fixture(scope="module")
def rows():
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data[:8].tolist()


async def steady_load(platform, name: str, rows, stop: asyncio.Event, results: list, concurrency: int):
    """``concurrency`` clients posting predictions until ``stop``; records (status, version or error)."""
    async with httpx.AsyncClient(base_url=platform.base_url, headers=platform.headers, timeout=60) as client:
        async def worker(k: int):
            i = k
            while not stop.is_set():
                instances = [rows[i % len(rows)]]
                i += 1
                try:
                    response = await client.post(f"/v1/models/{name}:predict", json={"instances": instances})
                    version = response.json().get("model_version") if response.status_code == 200 else response.text
                    results.append((response.status_code, version))
                except httpx.HTTPError as exc:
                    results.append((0, repr(exc)))

        await asyncio.gather(*(worker(k) for k in range(concurrency)))


def test_the_light_model_is_in_the_ingress_and_the_heavy_one_in_its_own_replicas(platform):
    """Placement auto on the platform: the logistic regression in the two ingress replicas (no
    deployment of its own), MiniLM (es-or-en) in replicas of its own; both say so in V2 metadata."""
    status = platform.serve_status()
    assert status["Ingress"]["running_replicas"] == 2
    assert f"Classifier:{LOCAL_MODEL}" not in status
    assert status["Classifier:es-or-en"]["running_replicas"] >= 1
    with httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=30) as client:
        light = client.get(f"/v2/models/{LOCAL_MODEL}").json()["parameters"]
        heavy = client.get("/v2/models/es-or-en").json()["parameters"]
        explicit = client.get(f"/v2/models/{S3_MODEL}").json()["parameters"]
    assert light["placement"] == "ingress" and "light enough" in light["placement_reason"]
    assert heavy["placement"] == "replica" and "over 1 ms a row" in heavy["placement_reason"]
    assert explicit == explicit | {"placement": "replica", "placement_reason": "placement: replica in the config"}
    assert re.search(rf"classifier {LOCAL_MODEL}: placed in the ingress", platform.log_path.read_text(errors="replace"))


def _serving_replicas(platform, name: str, version: str) -> float:
    """How many replicas report serving ``version`` (each sets its own version gauge)."""
    return platform.metric("ray_aprendiz_classifier_model_version_info", model=name, version=version)


def test_champion_changes_twice_under_load_with_zero_failed_requests(platform, stores, rows, job_training, tmp_path):
    """The model is held by the two ingress replicas: each one follows the champion on its own,
    requests in flight finish on the version they started with, and none fails."""
    registry = stores.local
    first = registry.champion(LOCAL_MODEL).version
    results: list = []
    promoted: list[str] = []
    switched_at: list[int] = []  # len(results) once every replica serves the new version

    async def scenario():
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(platform, LOCAL_MODEL, rows, stop, results, concurrency=4))
        try:
            await asyncio.sleep(2)
            for seed in (1, 2):
                version = await asyncio.to_thread(
                    job_training.train_version, registry, LOCAL_MODEL, seed=seed, scratch=tmp_path / f"scratch-{seed}"
                )
                await asyncio.to_thread(registry.promote, LOCAL_MODEL, version, f"test swap {seed}")
                promoted.append(version)
                deadline = time.monotonic() + 60
                while await asyncio.to_thread(_serving_replicas, platform, LOCAL_MODEL, version) < 2:
                    assert time.monotonic() < deadline, f"version {version} not served by both ingress replicas"
                    await asyncio.sleep(0.5)
                switched_at.append(len(results))
                await asyncio.sleep(1.5)
        finally:
            stop.set()
            await load

    asyncio.run(scenario())
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    served = [v for _, v in results]
    assert {first, *promoted} <= set(served), (first, promoted, set(served))
    # Once both replicas report a version (Ray exports gauges every few seconds, so well after they
    # switched), no answer comes from an older one; the 4 requests in flight then may finish on it.
    versions = [first, *promoted]
    for i, at in enumerate(switched_at):
        assert not set(versions[: i + 1]) & set(served[at + 4:]), (versions, i, at)
    assert len(results) > 50


def _broken_schema_version(name: str):
    """A valid ONNX model that takes 10 features instead of 30: the replica must refuse it."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression

    from aprendiz.registry import Feature, ModelCard, new_version
    from aprendiz.training.onnx_export import export_onnx

    data = load_breast_cancer()
    x, y = data.data[:, :10].astype(np.float32), (data.target == 0).astype(int)
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pipeline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    card = ModelCard(
        name=name, version=new_version(), kind="tabular",
        features=[Feature(name=n) for n in data.feature_names[:10]],
        labels=("benign", "malignant"), data_fingerprint="test", algorithm="logistic_regression",
    )
    return card, export_onnx(pipeline, 10)


def test_a_version_that_fails_its_checks_is_refused_and_the_old_one_keeps_serving(platform, stores, rows):
    registry = stores.local
    serving = registry.champion(LOCAL_MODEL).version
    card, onnx = _broken_schema_version(LOCAL_MODEL)
    registry.publish(card, onnx)
    registry.promote(LOCAL_MODEL, card.version, "a broken candidate")
    try:
        deadline = time.monotonic() + 60
        failures = 0.0
        with httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=30) as client:
            while failures < 1:
                assert time.monotonic() < deadline, "no load failure was counted"
                response = client.post(f"/v1/models/{LOCAL_MODEL}:predict", json={"instances": [rows[0]]})
                assert response.status_code == 200 and response.json()["model_version"] == serving
                failures = platform.metric(
                    "ray_aprendiz_classifier_model_load_failures_total", model=LOCAL_MODEL, version=card.version
                )
                time.sleep(1)
        assert re.search(rf"refused version {card.version}", platform.log_path.read_text(errors="replace"))
    finally:
        registry.promote(LOCAL_MODEL, serving, "back to the good version")


TEXTS = ["Hola, ¿cómo estás hoy?", "Hello, how are you today?", "Buenas noches a todos", "Good night, everyone"]


def test_autoscaling_adds_replicas_under_load_and_returns_to_the_minimum(platform):
    """The heavy classifier (MiniLM, about 5 ms a text) under 24 clients: its replica is the
    bottleneck, so Serve's autoscaler adds the second one, then removes it when the load stops.
    (A light model in replicas of its own answers faster than the ingress can send, and rightly
    stays at one replica under the same load.)"""
    deployment = f"Classifier:{TEXT_MODEL}"
    deadline = time.monotonic() + 60  # an earlier test's load may have scaled it up: back to the minimum first
    while platform.serve_status()[deployment]["running_replicas"] != 1:
        assert time.monotonic() < deadline, "not at its minimum of 1 replica before the load"
        time.sleep(2)
    results: list = []
    counts: list[int] = []

    async def scenario():
        stop = asyncio.Event()
        load = asyncio.create_task(steady_load(platform, TEXT_MODEL, TEXTS, stop, results, concurrency=24))
        try:
            deadline = time.monotonic() + 120
            while True:
                running = (await asyncio.to_thread(platform.serve_status))[deployment]["running_replicas"]
                counts.append(running)
                if running == 2:
                    break
                assert time.monotonic() < deadline, f"never scaled up: {counts}"
                await asyncio.sleep(2)
        finally:
            stop.set()
            await load

    asyncio.run(scenario())
    deadline = time.monotonic() + 120
    while (running := platform.serve_status()[deployment]["running_replicas"]) != 1:
        counts.append(running)
        assert time.monotonic() < deadline, f"never scaled back down: {counts}"
        time.sleep(2)
    failures = [r for r in results if r[0] != 200]
    assert not failures, failures[:5]
    assert max(counts) == 2  # the configured maximum, never above
