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
from aprendiz.services.replicas import replica_options


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
    options = replica_options(f"Embedder:{model.id}", model, access_log=access_log)
    return serve.deployment(EmbedderServer, **options).bind(  # type: ignore[attr-defined]
        model=model.model_dump(mode="json"), hourly_usd=hourly_usd,
    )
