"""The embedding deployment: a sentence encoder in replicas of its own, reached by a handle.

Each replica loads the model once (``model.py``) and embeds a request's texts on a thread, so
its event loop keeps taking calls; it accrues its hourly price while it is up, as every replica.
"""

from __future__ import annotations

import asyncio
import math
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from ray.serve.deployment import Application

from aprendiz.config import EmbeddingModel
from aprendiz.services.embedder.model import OnnxEmbedder
from aprendiz.services.gateway.accrual import ReplicaCostMeter


class EmbedderServer:
    async def __init__(self, model: dict[str, Any], hourly_usd: float = 0.0) -> None:  # type: ignore[misc]
        config = EmbeddingModel.model_validate(model)
        self._cost = ReplicaCostMeter(model=config.id, kind="embedding", accelerator="cpu", hourly_usd=hourly_usd)
        self._model = await asyncio.to_thread(
            OnnxEmbedder.load, Path(config.source), threads=max(1, math.ceil(config.num_cpus))
        )

    async def check_health(self) -> None:
        return None

    async def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        return await asyncio.to_thread(self._model.embed, texts)


def build_embedding_deployment(model: EmbeddingModel, *, hourly_usd: float = 0.0, access_log: bool = False) -> Application:
    options: dict[str, Any] = {
        "name": f"Embedder:{model.id}",
        "autoscaling_config": model.autoscaling.serve_options(),
        "max_ongoing_requests": model.max_ongoing_requests,
        "max_queued_requests": model.max_queued_requests,
        "ray_actor_options": {"num_cpus": model.num_cpus},
        "health_check_period_s": 10,
        "logging_config": {"enable_access_log": access_log},
    }
    return serve.deployment(EmbedderServer, **options).bind(  # type: ignore[attr-defined]
        model=model.model_dump(mode="json"), hourly_usd=hourly_usd,
    )
