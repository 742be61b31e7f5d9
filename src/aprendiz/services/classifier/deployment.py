"""The classifier deployment: a classifier with its own replicas (``placement: replica``).

Heavy models (transformer encoders, image networks, anything that wants a GPU) run here, with
their own autoscaling and accelerator; the ingress reaches them through a deployment handle.
The serving itself is ``ClassifierService`` (``service.py``), the same as in the ingress; what
a replica adds is batching (``@serve.batch``: requests that arrive while a batch runs form the
next one), Serve's reconfigure and health check, and the replica's cost accrual.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve
from ray.serve.deployment import Application

from aprendiz.config import ClassifierModel, StoreConfig
from aprendiz.metrics import ClassifierMetrics
from aprendiz.registry import ModelRegistry
from aprendiz.services.classifier.model import OnnxClassifier
from aprendiz.services.classifier.service import ClassifierService
from aprendiz.services.gateway.accrual import ReplicaCostMeter
from aprendiz.services.heap import tune_gc
from aprendiz.services.replicas import replica_options
from aprendiz.store import ObjectStore


def registry_for(store: StoreConfig) -> ModelRegistry:
    return ModelRegistry(ObjectStore(store.url, storage_options=store.storage_options()))


class ClassifierServer:
    """One replica of a classifier deployment: a ``ClassifierService`` with batched inference."""

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self, model: dict[str, Any], store: dict[str, Any], hourly_usd: float = 0.0,
        gc_young_threshold: int | None = None,
    ) -> None:
        config = ClassifierModel.model_validate(model)
        tune_gc(gc_young_threshold)
        self._cost = ReplicaCostMeter(
            model=config.name, kind="classifier", accelerator=config.accelerator_type or config.accelerator,
            hourly_usd=hourly_usd,
        )
        self._service = ClassifierService(
            config, registry_for(StoreConfig.model_validate(store)), ClassifierMetrics(config.name),
            infer=self._infer,  # type: ignore[arg-type, misc]  # serve.batch's types cannot describe a batched method
        )
        self._infer.set_max_batch_size(config.max_batch_size)  # type: ignore[misc, attr-defined]
        self._infer.set_batch_wait_timeout_s(config.batch_wait_timeout_s)  # type: ignore[misc, attr-defined]
        await self._service.start(required=True)

    async def reconfigure(self, user_config: dict[str, Any]) -> None:
        await self._service.reconfigure(user_config)

    async def check_health(self) -> None:
        self._service.model()

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.0)  # type: ignore[arg-type]  # set in __init__
    async def _infer(  # type: ignore[misc]
        self, models: list[OnnxClassifier], rows: list[np.ndarray]
    ) -> list[np.ndarray | None]:
        return self._service.run_batches(models, rows)

    # -- protocol entry points (called by the ingress through a deployment handle) -------
    async def predict_v1(self, body: Any) -> dict[str, Any]:
        return await self._service.predict_v1(body)

    async def infer_v2(self, body: bytes, header_length: int | None) -> dict[str, Any]:
        return await self._service.infer_v2(body, header_length)

    async def metadata_v2(self) -> dict[str, Any]:
        return await self._service.metadata_v2()

    async def ready(self) -> bool:
        return await self._service.ready()

    async def feedback(self, body: Any) -> dict[str, Any]:
        return await self._service.feedback(body)


def build_classifier_deployment(
    model: ClassifierModel, store: StoreConfig, *, hourly_usd: float = 0.0, access_log: bool = False,
    gc_young_threshold: int | None = None,
) -> Application:
    options: dict[str, Any] = {
        **replica_options(f"Classifier:{model.name}", model, access_log=access_log),
        # Applied through reconfigure(): a Serve config update changes them without restarting replicas.
        "user_config": {"version": model.version, "poll_interval_s": model.poll_interval_s},
    }
    return serve.deployment(ClassifierServer, **options).bind(  # type: ignore[attr-defined]
        model=model.model_dump(mode="json"), store=store.model_dump(mode="json"), hourly_usd=hourly_usd,
        gc_young_threshold=gc_young_threshold,
    )
