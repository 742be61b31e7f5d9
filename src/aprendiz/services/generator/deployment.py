"""Build the generator deployments: one ``ray.serve.llm`` LLMServer per configured model.

The engine class is a parameter (``engine_cls``): ``None`` is Ray's vLLM engine,
the production path; the fast test tier passes a fake engine instead. The server
class is Ray's LLMServer plus two things: the replica accrues its hourly price while
it is up (``aprendiz_replica_cost_usd``), the hosted side of rent-or-host; and a streamed
answer's chunks are batched as the model's ``stream_batching`` says (``stream_batching.py``).
"""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, LLMServer, build_llm_deployment

from aprendiz.config import GatewayConfig, GeneratorModel, StoreConfig
from aprendiz.services.gateway.accrual import ReplicaCostMeter
from aprendiz.services.generator.lora import StoreLoraLoader
from aprendiz.services.generator.stream_batching import StreamBatching
from aprendiz.services.raycompat import (
    LocalModelCallback,
    batch_output_stream,
    lora_loader_kwargs,
    resolve_lora_once,
    start_engine,
)


class GeneratorServer(LLMServer):
    """Ray Serve LLM's server, metering what its replica costs from the moment it starts, batching a
    stream's chunks in the model's ``stream_batching`` mode, and starting its engine without Ray
    Serve LLM's telemetry actor (``raycompat.start_engine``)."""

    _stream_batching: StreamBatching = "adaptive"  # also for an instance made by Ray's sync_init

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        llm_config: LLMConfig,
        *,
        hourly_usd: float = 0.0,
        accelerator: str = "cpu",
        lora_store: dict[str, Any] | None = None,
        stream_batching: StreamBatching = "adaptive",
        **kwargs: Any,
    ):
        self._stream_batching: StreamBatching = stream_batching
        self._cost = ReplicaCostMeter(
            model=llm_config.model_id, kind="generator", accelerator=accelerator, hourly_usd=hourly_usd
        )
        if lora_store is not None:
            kwargs.update(lora_loader_kwargs(partial(StoreLoraLoader, store=lora_store)))
        await super().__init__(with_vllm_configs(llm_config), **kwargs)

    def _batch_output_stream(self, generator):  # LLMServer's private hook (raycompat.batch_output_stream)
        return batch_output_stream(self, generator, self._stream_batching)

    async def _maybe_resolve_lora_from_multiplex(self) -> None:  # LLMServer's private hook (raycompat)
        await resolve_lora_once(self, super()._maybe_resolve_lora_from_multiplex)

    async def _start_engine(self) -> None:  # LLMServer's private hook (raycompat.start_engine)
        await start_engine(self)


def with_vllm_configs(config: LLMConfig) -> LLMConfig:
    """The LLMConfig with its engine's sub-configs given as plain data (a config file, Serve YAML)
    made vLLM's objects: vLLM's engine arguments take a dict only for some of them, and not for
    ``structured_outputs_config``. Made here, in the replica, which imports vLLM anyway."""
    structured = config.engine_kwargs.get("structured_outputs_config")
    if not isinstance(structured, dict):
        return config
    from vllm.config import StructuredOutputsConfig

    engine_kwargs = {**config.engine_kwargs, "structured_outputs_config": StructuredOutputsConfig(**structured)}
    return config.model_copy(update={"engine_kwargs": engine_kwargs})


def llm_config(model: GeneratorModel) -> LLMConfig:
    fields = model.llm_config()
    if "://" not in model.source and Path(model.source).is_dir():  # nothing for Ray to download
        fields["callback_config"] = {"callback_class": LocalModelCallback}
    return LLMConfig(**fields)


def build_generator_deployments(
    models: list[GeneratorModel],
    *,
    prices: GatewayConfig | None = None,
    lora_stores: dict[str, StoreConfig] | None = None,
    engine_cls: type | None = None,
) -> tuple[dict[str, Application], dict[str, LLMConfig]]:
    """Return the bound LLMServer deployments and their LLMConfigs, both keyed by model id.

    ``lora_stores``: the store of each model that serves LoRA adapters."""
    prices = prices or GatewayConfig()
    lora_stores = lora_stores or {}
    configs = {m.id: llm_config(m) for m in models}
    deployments = {}
    for model in models:
        bind_kwargs: dict[str, Any] = {
            "hourly_usd": prices.generator_hourly_usd(model),
            "accelerator": model.accelerator_type or model.accelerator,
            "stream_batching": model.stream_batching,
        }
        if model.id in lora_stores:
            bind_kwargs["lora_store"] = lora_stores[model.id].model_dump(mode="json")
        if engine_cls is not None:
            bind_kwargs["engine_cls"] = engine_cls
        deployments[model.id] = build_llm_deployment(
            configs[model.id], bind_kwargs=bind_kwargs, deployment_cls=GeneratorServer, name_prefix="LLMServer:"
        )
    return deployments, configs
