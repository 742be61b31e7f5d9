"""Build the generator deployments: one ``ray.serve.llm`` LLMServer per configured model.

The engine class is a parameter (``engine_cls``): ``None`` is Ray's vLLM engine,
the production path; the fast test tier passes a fake engine instead.
"""

from __future__ import annotations

from typing import Any

from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig, build_llm_deployment

from aprendiz.config import GeneratorModel


def llm_config(model: GeneratorModel) -> LLMConfig:
    return LLMConfig(**model.llm_config())


def build_generator_deployments(
    models: list[GeneratorModel], *, engine_cls: type | None = None
) -> tuple[dict[str, Application], dict[str, LLMConfig]]:
    """Return the bound LLMServer deployments and their LLMConfigs, both keyed by model id."""
    configs = {m.id: llm_config(m) for m in models}
    bind_kwargs: dict[str, Any] = {"engine_cls": engine_cls} if engine_cls is not None else {}
    deployments = {
        model_id: build_llm_deployment(config, bind_kwargs=dict(bind_kwargs))
        for model_id, config in configs.items()
    }
    return deployments, configs
