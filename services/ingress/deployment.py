"""The ingress deployment: Ray Serve LLM's OpenAI ingress, extended with the platform's routes.

It reaches every model deployment through deployment handles (Ray Serve model
composition): the generators' LLMServer deployments for the OpenAI routes, the
classifier deployments for KServe's V1 and V2 routes. The gateway's keys and costs
join this same entrance.
"""

from __future__ import annotations

import json
from typing import Any

from aprendiz.services.ingress.app import create_app
from fastapi import Request
from fastapi.responses import JSONResponse
from ray import serve
from ray.exceptions import RayTaskError
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ModelCard,
    ModelList,
    to_model_metadata,
)
from ray.serve.deployment import Application
from ray.serve.exceptions import BackPressureError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm import LLMConfig
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

from aprendiz.config import IngressConfig
from aprendiz.errors import (
    AprendizError,
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)

V2_BINARY_HEADER = "inference-header-content-length"


class AprendizIngress(OpenAiIngress):
    """OpenAI-compatible routes for the generators, KServe V1/V2 routes for the classifiers, probes."""

    def __init__(
        self,
        llm_deployments: dict[str, DeploymentHandle],
        model_cards: dict[str, ModelCard],
        *,
        classifiers: dict[str, DeploymentHandle] | None = None,
        max_body_bytes: int = 4 * 1024 * 1024,
    ):
        super().__init__(llm_deployments, model_cards)
        self._classifiers = dict(classifiers or {})
        self._max_body_bytes = max_body_bytes

    # -- OpenAI routes -----------------------------------------------------------------
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

    # -- classifier routes (KServe V1 and Open Inference Protocol V2) -------------------
    def _classifier(self, name: str) -> DeploymentHandle:
        if name not in self._classifiers:
            raise ModelNotFoundError(
                f"The classifier `{name}` does not exist; available classifiers: {sorted(self._classifiers)}"
            )
        return self._classifiers[name]

    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_body_bytes:
            raise PayloadTooLargeError(f"the body has {declared} bytes; the limit is {self._max_body_bytes}")
        body = await request.body()
        if len(body) > self._max_body_bytes:
            raise PayloadTooLargeError(f"the body has {len(body)} bytes; the limit is {self._max_body_bytes}")
        return body

    async def _json(self, request: Request) -> Any:
        body = await self._body(request)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None

    @staticmethod
    async def _call(handle: DeploymentHandle, method: str, *args: Any) -> Any:
        try:
            return await getattr(handle, method).remote(*args)
        except BackPressureError:
            raise ServiceUnavailableError("the model's queue is full; retry shortly") from None
        except RayTaskError as exc:
            if isinstance(exc.cause, AprendizError):
                raise exc.cause from None
            raise

    async def classifier_predict_v1(self, name: str, request: Request) -> JSONResponse:
        handle = self._classifier(name)
        return JSONResponse(await self._call(handle, "predict_v1", await self._json(request)))

    async def classifier_feedback(self, name: str, request: Request) -> JSONResponse:
        handle = self._classifier(name)
        return JSONResponse(await self._call(handle, "feedback", await self._json(request)))

    async def v2_infer(self, name: str, request: Request) -> JSONResponse:
        handle = self._classifier(name)
        body = await self._body(request)
        header = request.headers.get(V2_BINARY_HEADER)
        header_length = int(header) if header and header.isdigit() else None
        return JSONResponse(await self._call(handle, "infer_v2", body, header_length))

    async def v2_model_metadata(self, name: str) -> JSONResponse:
        return JSONResponse(await self._call(self._classifier(name), "metadata_v2"))

    async def v2_model_ready(self, name: str) -> JSONResponse:
        ready = await self._call(self._classifier(name), "ready")
        return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    async def v2_live(self) -> dict[str, bool]:
        return {"live": True}

    async def v2_ready(self) -> JSONResponse:
        ready = all([await self._call(h, "ready") for h in self._classifiers.values()])
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    # -- probes --------------------------------------------------------------------------
    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress replica answers."""
        return {"status": "ok"}

    async def readyz(self) -> dict[str, Any]:
        """Readiness: the models this entrance routes to."""
        return {"status": "ready", "models": sorted(self._model_cards), "classifiers": sorted(self._classifiers)}


# The OpenAI routes this platform serves (Ray's ingress also has embeddings, score,
# transcriptions and tokenize, which a chat generator does not offer), KServe's V1 and
# V2 routes, and the probes. Classifier routes come before the catch-all model route.
ENDPOINTS = {
    "classifier_predict_v1": lambda app: app.post("/v1/models/{name}:predict"),
    "classifier_feedback": lambda app: app.post("/v1/models/{name}/feedback"),
    "v2_live": lambda app: app.get("/v2/health/live"),
    "v2_ready": lambda app: app.get("/v2/health/ready"),
    "v2_model_ready": lambda app: app.get("/v2/models/{name}/ready"),
    "v2_model_metadata": lambda app: app.get("/v2/models/{name}"),
    "v2_infer": lambda app: app.post("/v2/models/{name}/infer"),
    "models": lambda app: app.get("/v1/models", response_model=ModelList),
    "model_data": lambda app: app.get("/v1/models/{model:path}", response_model=ModelCard),
    "completions": lambda app: app.post("/v1/completions"),
    "chat": lambda app: app.post("/v1/chat/completions"),
    "healthz": lambda app: app.get("/healthz", include_in_schema=False),
    "readyz": lambda app: app.get("/readyz", include_in_schema=False),
}


def build_ingress(
    llm_deployments: dict[str, Application],
    llm_configs: dict[str, LLMConfig],
    classifiers: dict[str, Application],
    config: IngressConfig,
) -> Application:
    """Bind the ingress deployment to the model deployments it routes to."""
    ingress_cls = make_fastapi_ingress(AprendizIngress, endpoint_map=ENDPOINTS, app=create_app())
    options = {
        "name": "Ingress",
        "max_ongoing_requests": config.max_ongoing_requests,
        "autoscaling_config": config.autoscaling.serve_options(),
        "ray_actor_options": {"num_cpus": config.num_cpus},
    }
    model_cards = {model_id: to_model_metadata(model_id, c) for model_id, c in llm_configs.items()}
    return serve.deployment(ingress_cls, **options).bind(
        llm_deployments=llm_deployments,
        model_cards=model_cards,
        classifiers=classifiers,
        max_body_bytes=config.max_body_bytes,
    )
