"""The classifier deployment: one per configured classifier, batching requests into onnxruntime.

Model swaps: every ``poll_interval_s`` (and on ``reconfigure``) a replica reads
``champion.json``; a new version is loaded and self-checked off the event loop and
only then made current. A request holds the version it started with, so requests
in flight finish on the old one. A version that fails to load is refused with a log
line and a metric, once, and the current one keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import datetime, timezone
from typing import Any

import numpy as np
from ray import serve
from ray.serve.deployment import Application

from aprendiz.config import ClassifierModel, StoreConfig
from aprendiz.errors import ServiceUnavailableError
from aprendiz.metrics import ClassifierMetrics
from aprendiz.registry import FeedbackRecord, ModelRegistry
from aprendiz.services.classifier import protocol
from aprendiz.services.classifier.model import ModelLoadError, OnnxClassifier
from aprendiz.services.gateway.accrual import ReplicaCostMeter
from aprendiz.store import ObjectStore

log = logging.getLogger("aprendiz.classifier")


class ClassifierServer:
    """Serves the champion version of one registry model (``load`` / ``ready`` / ``predict``)."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self, model: dict[str, Any], store: dict[str, Any], hourly_usd: float = 0.0
    ) -> None:
        self._config = ClassifierModel.model_validate(model)
        self._cost = ReplicaCostMeter(model=self._config.name, kind="classifier", accelerator="cpu", hourly_usd=hourly_usd)
        store_config = StoreConfig.model_validate(store)
        self._registry = ModelRegistry(ObjectStore(store_config.url, storage_options=store_config.storage_options()))
        self._metrics = ClassifierMetrics(self._config.name)
        self._pinned: str | None = None
        self._refused: set[str] = set()
        self._current: OnnxClassifier | None = None
        self._lock = asyncio.Lock()
        # serve.batch's types cannot describe a batched method: mypy is told to trust it here.
        self._infer.set_max_batch_size(self._config.max_batch_size)  # type: ignore[misc, attr-defined]
        self._infer.set_batch_wait_timeout_s(self._config.batch_wait_timeout_s)  # type: ignore[misc, attr-defined]
        await self._refresh(initial=True)
        self._poller = asyncio.get_running_loop().create_task(self._poll())
        self._metrics_keep_alive = asyncio.get_running_loop().create_task(self._metrics.keep_alive())

    # -- model lifecycle ---------------------------------------------------------------
    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        """``user_config``: ``version`` pins a version (null follows the champion);
        ``poll_interval_s`` changes the polling; any change re-reads the champion now."""
        self._pinned = user_config.get("version")
        if "poll_interval_s" in user_config:
            self._config = self._config.model_copy(update={"poll_interval_s": float(user_config["poll_interval_s"])})
        if self._current is not None:
            await self._refresh()

    async def _poll(self) -> None:
        while True:
            await asyncio.sleep(self._config.poll_interval_s)
            try:
                await self._refresh()
            except Exception:  # the poller must outlive a store outage
                log.exception("classifier %s: champion check failed", self._config.name)

    async def _target_version(self) -> str:
        if self._pinned:
            return self._pinned
        champion = await asyncio.to_thread(self._registry.champion, self._config.name)
        if champion is None:
            raise ModelLoadError(f"model {self._config.name} has no champion in {self._registry!r}")
        self._metrics.champion_promoted(champion.promoted_at.timestamp())
        return champion.version

    async def _refresh(self, *, initial: bool = False) -> None:
        async with self._lock:
            version = await self._target_version()
            if self._current is not None and version == self._current.version:
                return
            if version in self._refused and not initial:
                return
            try:
                artifact = await asyncio.to_thread(self._registry.load, self._config.name, version)
                loaded = await asyncio.to_thread(OnnxClassifier.load, artifact)
                if self._current is not None and loaded.signature != self._current.signature:
                    raise ModelLoadError(
                        f"version {version} takes other inputs than the serving version {self._current.version}"
                        " (a new input schema needs a new model name)"
                    )
            except Exception as exc:
                self._metrics.model_load_failures.inc(tags={"model": self._config.name, "version": version})
                if initial:
                    raise
                self._refused.add(version)
                log.error("classifier %s: refused version %s, still serving %s: %s",
                          self._config.name, version, self._current.version if self._current else None, exc)
                return
            old = self._current.version if self._current else None
            self._current = loaded
            self._metrics.switched(old, version)
            log.info("classifier %s: now serving version %s (was %s)", self._config.name, version, old)

    def _model(self) -> OnnxClassifier:
        if self._current is None:
            raise ServiceUnavailableError(f"model {self._config.name} is not loaded")
        return self._current

    async def check_health(self) -> None:
        self._model()

    # -- batched inference -------------------------------------------------------------
    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)  # type: ignore[arg-type]  # set in __init__
    async def _infer(  # type: ignore[misc]
        self, models: list[OnnxClassifier], rows: list[np.ndarray]
    ) -> list[np.ndarray | None]:
        """One onnxruntime call per model version in the batch; answers in request order."""
        answers: list[np.ndarray | None] = [None] * len(rows)
        groups: dict[int, list[int]] = {}
        for i, model in enumerate(models):
            groups.setdefault(id(model), []).append(i)
        for indexes in groups.values():
            model = models[indexes[0]]
            stacked = model.stack([rows[i] for i in indexes])
            started = time.perf_counter()
            probabilities = model.predict(stacked)
            self._metrics.inference_seconds.observe(time.perf_counter() - started, tags={"model": self._config.name})
            self._metrics.batch_size.observe(len(stacked), tags={"model": self._config.name})
            offset = 0
            for i in indexes:
                answers[i] = probabilities[offset : offset + len(rows[i])]
                offset += len(rows[i])
        return answers

    async def _predict(self, model: OnnxClassifier, rows) -> tuple[np.ndarray, list[str]]:
        probabilities = await self._infer(model, rows)  # type: ignore[misc, call-arg]
        labels = model.labels_for(probabilities)
        self._metrics.served(model.version, labels, probabilities)
        return probabilities, labels

    # -- protocol entry points (called by the ingress through a deployment handle) -------
    async def predict_v1(self, body: Any) -> dict[str, Any]:
        model = self._model()
        rows = protocol.decode_instances(body, model.card, self._config.max_instances)
        probabilities, labels = await self._predict(model, rows)
        return protocol.encode_v1(probabilities, labels, model.card)

    async def infer_v2(self, body: bytes, header_length: int | None) -> dict[str, Any]:
        model = self._model()
        rows, request = protocol.decode_v2(body, header_length, model.card, self._config.max_instances)
        probabilities, labels = await self._predict(model, rows)
        return protocol.encode_v2(probabilities, labels, model.card, request)

    async def metadata_v2(self) -> dict[str, Any]:
        return protocol.v2_metadata(self._model().card)

    async def ready(self) -> bool:
        return self._current is not None

    async def feedback(self, body: Any) -> dict[str, Any]:
        """Write the examples to the store; the answer (2xx) is sent only after the write returned."""
        model = self._model()
        rows, labels, ids = protocol.decode_feedback(body, model.card, self._config.max_instances)
        names = [f.name for f in model.card.features]
        now = datetime.now(timezone.utc)

        def example(row) -> dict[str, Any]:
            return {"text": row} if model.card.kind == "text" else {"features": dict(zip(names, map(float, row)))}

        records = [
            FeedbackRecord(
                **example(row),
                label=label,
                prediction_id=prediction_id,
                model_version=model.version,
                received_at=now,
            )
            for row, label, prediction_id in zip(rows, labels, ids)
        ]
        try:
            key = await asyncio.to_thread(self._registry.write_feedback, self._config.name, records)
        except Exception as exc:
            log.exception("classifier %s: feedback write failed", self._config.name)
            raise ServiceUnavailableError(f"feedback could not be stored, nothing was accepted: {exc}") from None
        for label in set(labels):
            self._metrics.feedback_examples.inc(
                labels.count(label), tags={"model": self._config.name, "label": model.card.labels[label]}
            )
        return {"accepted": len(records), "key": key, "model_version": model.version}


def build_classifier_deployment(
    model: ClassifierModel, store: StoreConfig, *, hourly_usd: float = 0.0, access_log: bool = False
) -> Application:
    options: dict[str, Any] = {
        "name": f"Classifier:{model.name}",
        "autoscaling_config": model.autoscaling.serve_options(),
        "max_ongoing_requests": model.max_ongoing_requests,
        "max_queued_requests": model.max_queued_requests,
        "ray_actor_options": {"num_cpus": model.num_cpus},
        "health_check_period_s": 10,
        "logging_config": {"enable_access_log": access_log},
        # Applied through reconfigure(): a Serve config update changes them without restarting replicas.
        "user_config": {"version": model.version, "poll_interval_s": model.poll_interval_s},
    }
    return serve.deployment(ClassifierServer, **options).bind(  # type: ignore[attr-defined]
        model=model.model_dump(mode="json"), store=store.model_dump(mode="json"), hourly_usd=hourly_usd
    )

