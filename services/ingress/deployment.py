"""The ingress deployment: Ray Serve LLM's OpenAI ingress, extended with the platform's routes.

It reaches every model deployment through deployment handles (Ray Serve model
composition). The classifier's endpoints and the gateway's keys and costs join
this same entrance.
"""

from __future__ import annotations

from typing import Any

from ray import serve
from ray.llm._internal.serve.core.configs.openai_api_models import ModelCard, ModelList, to_model_metadata
from ray.serve.deployment import Application
from ray.serve.llm import LLMConfig
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

from aprendiz.config import IngressConfig
from aprendiz.errors import InvalidRequestError, ModelNotFoundError
from aprendiz.services.ingress.app import create_app


class AprendizIngress(OpenAiIngress):
    """OpenAI-compatible routes for the hosted generators, plus health probes."""

    async def _get_model_id(self, model: str | None) -> str:
        """The model a request names, or a typed error saying which models exist."""
        available = sorted(self._model_cards)
        if model is None:
            if len(available) == 1:
                return available[0]
            raise InvalidRequestError(f"`model` is required; available models: {available}", param="model")
        if model not in self._model_cards:
            raise ModelNotFoundError(
                f"The model `{model}` does not exist; available models: {available}", param="model"
            )
        return model

    async def model_data(self, model: str) -> ModelCard:
        card = await self.model(model)
        if card is None:
            raise ModelNotFoundError(f"The model `{model}` does not exist; available models: {sorted(self._model_cards)}")
        return card

    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress replica answers."""
        return {"status": "ok"}

    async def readyz(self) -> dict[str, Any]:
        """Readiness: the models this entrance routes to."""
        return {"status": "ready", "models": sorted(self._model_cards)}


# The OpenAI routes this platform serves (Ray's ingress also has embeddings, score,
# transcriptions and tokenize, which a chat generator does not offer), and its probes.
ENDPOINTS = {
    "models": lambda app: app.get("/v1/models", response_model=ModelList),
    "model_data": lambda app: app.get("/v1/models/{model:path}", response_model=ModelCard),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "healthz": lambda app: app.get("/healthz", include_in_schema=False),
    "readyz": lambda app: app.get("/readyz", include_in_schema=False),
}


def build_ingress(
    llm_deployments: dict[str, Application], llm_configs: dict[str, LLMConfig], config: IngressConfig
) -> Application:
    """Bind the ingress deployment to the model deployments it routes to."""
    ingress_cls = make_fastapi_ingress(AprendizIngress, endpoint_map=ENDPOINTS, app=create_app())
    options = {
        "name": "Ingress",
        "max_ongoing_requests": config.max_ongoing_requests,
        "autoscaling_config": config.autoscaling.model_dump(),
        "ray_actor_options": {"num_cpus": config.num_cpus},
    }
    model_cards = {model_id: to_model_metadata(model_id, c) for model_id, c in llm_configs.items()}
    return serve.deployment(ingress_cls, **options).bind(
        llm_deployments=llm_deployments, model_cards=model_cards
    )
