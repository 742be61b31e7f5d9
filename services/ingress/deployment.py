"""The ingress deployment: Ray Serve LLM's OpenAI ingress, extended with the platform's routes.

It reaches every model deployment through deployment handles (Ray Serve model
composition): the generators' LLMServer deployments for the OpenAI routes, the
classifier deployments for KServe's V1 and V2 routes, the rate limiter. Rented
models are reached over HTTP. Every model route first passes the gateway
(services/gateway): API key, allowed models, limits; every answer is metered.
Probes (/healthz, /readyz, /v2/health/*) need no key.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
from typing import Any
from urllib.parse import urlsplit

import httpx
from aprendiz.services.gateway.auth import Gatekeeper, Principal
from aprendiz.services.gateway.gateway import COST, Answer, Gateway, HostedUnavailableError
from aprendiz.services.gateway.limits import build_rate_limiter
from aprendiz.services.gateway.metering import TokenCounter, split_events
from aprendiz.services.gateway.rented import RentedUpstream
from aprendiz.services.ingress.app import create_app
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from pydantic import ValidationError
from ray import serve
from ray.exceptions import RayActorError, RayTaskError
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    CompletionRequest,
    ErrorResponse,
    ModelCard,
    ModelList,
    OpenAIHTTPException,
    to_model_metadata,
)
from ray.llm._internal.serve.core.ingress.ingress import CallMethod
from ray.llm._internal.serve.core.ingress.utils import (
    NON_STREAMING_RESPONSE_TYPES,
    _openai_json_wrapper,
    _peek_at_generator,
)
from ray.serve.deployment import Application
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm import LLMConfig
from ray.serve.llm.ingress import OpenAiIngress, make_fastapi_ingress

from aprendiz.config import PlatformConfig, RentedModel
from aprendiz.errors import (
    AprendizError,
    InvalidRequestError,
    ModelNotFoundError,
    PayloadTooLargeError,
    ServiceUnavailableError,
)
from aprendiz.loras import AdapterStore, split_model_id
from aprendiz.metrics import GatewayMetrics
from aprendiz.store import ObjectStore

log = logging.getLogger("aprendiz.ingress")

V2_BINARY_HEADER = "inference-header-content-length"


class AprendizIngress(OpenAiIngress):
    """OpenAI-compatible routes for the generators, KServe V1/V2 routes for the classifiers, probes."""

    def __init__(
        self,
        llm_deployments: dict[str, DeploymentHandle],
        model_cards: dict[str, ModelCard],
        *,
        classifiers: dict[str, DeploymentHandle] | None = None,
        limiter: DeploymentHandle | None = None,
        config: dict[str, Any] | None = None,
    ):
        super().__init__(llm_deployments, model_cards)
        platform = PlatformConfig.model_validate(config) if config else None
        self._classifiers = dict(classifiers or {})
        self._max_body_bytes = platform.ingress.max_body_bytes if platform else 4 * 1024 * 1024
        self._gateway = self._build_gateway(platform, limiter)
        self._adapters: dict[str, AdapterStore] = {}
        for g in platform.generators if platform else []:
            store = platform.lora_store_for(g)
            if store is not None:
                self._adapters[g.id] = AdapterStore(ObjectStore(store.url, storage_options=store.storage_options()))
        self._rented_cards = {
            r.id: ModelCard(
                id=r.id, object="model", owned_by="rented", permission=[],
                metadata={"backend": "rented", "provider": urlsplit(r.base_url).netloc, "upstream_model": r.upstream_model},
            )
            for r in (platform.rented if platform else [])
        }

    @staticmethod
    def _build_gateway(platform: PlatformConfig | None, limiter: DeploymentHandle | None) -> Gateway:
        """The gateway's parts, from the config (keys file, rented providers, prices, fallbacks)."""
        gateway = platform.gateway if platform else None
        rented: list[RentedModel] = platform.rented if platform else []
        client = httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
        upstreams = {}
        for r in rented:
            key = os.environ.get(r.api_key_env) if r.api_key_env else None
            if r.api_key_env and not key:
                log.warning("rented model %s: the environment variable %s is not set; calls go without a key",
                            r.id, r.api_key_env)
            upstreams[r.id] = RentedUpstream(r, key, client)
        hourly: dict[str, float] = {}
        fallbacks: dict[str, str] = {}
        fallback_after_s: dict[str, float] = {}
        if platform:
            for g in platform.generators:
                hourly[g.id] = platform.gateway.generator_hourly_usd(g)
                if g.fallback:
                    fallbacks[g.id], fallback_after_s[g.id] = g.fallback, g.fallback_after_s
            for c in platform.classifiers:
                hourly[c.name] = platform.gateway.classifier_hourly_usd(c)
            fallbacks.update({r.id: r.fallback for r in rented if r.fallback})
        return Gateway(
            gatekeeper=Gatekeeper(gateway.keys_file if gateway else None, reload_s=gateway.keys_reload_s if gateway else 5),
            metrics=GatewayMetrics(),
            limiter=limiter,
            rented=upstreams,
            counters={r.id: TokenCounter(r.tokenizer) for r in rented},
            hourly_usd=hourly,
            fallbacks=fallbacks,
            fallback_after_s=fallback_after_s,
        )

    async def _admit(self, request: Request, model: str | None) -> Principal:
        """Authenticate the caller and, when ``model`` is given, check it may call it now."""
        principal = await self._gateway.authenticate(request.headers.get("authorization"))
        if model is not None:
            request.state.model = model
            await self._gateway.permit(principal, model)
        return principal

    # -- OpenAI routes -----------------------------------------------------------------
    def _known_models(self) -> list[str]:
        return sorted([*self._model_cards, *self._rented_cards])

    async def _get_model_id(self, model: str | None) -> str:
        """The model a request names, or a typed error saying which models exist."""
        available = self._known_models()
        if model is None:
            if len(available) == 1:
                return available[0]
            raise InvalidRequestError(f"`model` is required; available models: {available}", param="model")
        base, adapter = split_model_id(model)
        if adapter is not None and base in self._model_cards:
            await self._check_adapter(base, adapter)
            return model
        if model not in self._model_cards and model not in self._rented_cards:
            raise ModelNotFoundError(
                f"The model `{model}` does not exist; available models: {available}", param="model"
            )
        return model

    async def _check_adapter(self, base: str, adapter: str) -> None:
        store = self._adapters.get(base)
        if store is None:
            raise ModelNotFoundError(f"The model `{base}` serves no LoRA adapters (`{base}:{adapter}`)", param="model")
        listed = await asyncio.to_thread(store.adapters, base)
        if adapter not in listed and not await asyncio.to_thread(store.exists, base, adapter):
            raise ModelNotFoundError(
                f"The model `{base}` has no adapter `{adapter}`; its adapters: {listed}", param="model"
            )

    @staticmethod
    def _adapter_card(base: str, adapter: str) -> ModelCard:
        return ModelCard(
            id=f"{base}:{adapter}", object="model", owned_by="aprendiz", permission=[],
            metadata={"backend": "hosted", "base_model": base, "adapter": adapter},
        )

    async def _adapter_cards(self) -> list[ModelCard]:
        return [
            self._adapter_card(base, adapter)
            for base, store in self._adapters.items()
            for adapter in await asyncio.to_thread(store.adapters, base)
        ]

    async def models(self, request: Request) -> ModelList:
        principal = await self._admit(request, None)
        cards = [*self._model_cards.values(), *await self._adapter_cards(), *self._rented_cards.values()]
        return ModelList(data=[c for c in cards if self._gateway.gatekeeper.visible(principal, c.id)])

    async def model_data(self, model: str, request: Request) -> ModelCard:
        await self._admit(request, model)
        base, adapter = split_model_id(model)
        if adapter is not None and base in self._model_cards:
            await self._check_adapter(base, adapter)
            return self._adapter_card(base, adapter)
        card = self._rented_cards.get(model) or await self.model(model)
        if card is None:
            raise ModelNotFoundError(f"The model `{model}` does not exist; available models: {self._known_models()}")
        return card

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completions")

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def _generate(self, request: Request, route: str) -> Response:
        principal = await self._gateway.authenticate(request.headers.get("authorization"))
        payload = await self._json(request)
        if not isinstance(payload, dict):
            raise InvalidRequestError("the body must be a JSON object")
        model = payload.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequestError("`model` must be a string", param="model")
        payload["model"] = model = await self._get_model_id(model)
        request.state.model = model
        await self._gateway.permit(principal, model)
        return await self._gateway.generate(route, payload, principal, lambda *a: self._hosted(request, *a))

    async def _hosted(
        self, request: Request, model: str, route: str, payload: dict[str, Any], first_chunk_s: float | None
    ) -> Answer:
        """One request to a hosted generator (the LLMServer deployment), through Ray Serve LLM's path."""
        body_cls, method = (
            (ChatCompletionRequest, CallMethod.CHAT.value) if route == "chat"
            else (CompletionRequest, CallMethod.COMPLETIONS.value)
        )
        try:
            body = body_cls.model_validate(payload)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        stream = self._get_response(body=body, call_method=method, raw_request=request)
        try:
            first, stream = await asyncio.wait_for(_peek_at_generator(stream), first_chunk_s)
        except asyncio.TimeoutError:
            raise HostedUnavailableError(f"`{model}` gave no first token within {first_chunk_s:g} s", "slow") from None
        except BackPressureError:
            raise HostedUnavailableError(f"the queue of `{model}` is full; retry shortly", "queue_full") from None
        except (RayActorError, DeploymentUnavailableError) as exc:
            raise HostedUnavailableError(f"`{model}` is down ({type(exc).__name__})", "down") from None
        except RayTaskError as exc:
            if isinstance(exc.cause, AprendizError):
                raise exc.cause from None
            raise
        chunk = first[0] if isinstance(first, list) else first
        if isinstance(chunk, ErrorResponse):
            if chunk.error.code >= 500:
                raise HostedUnavailableError(f"`{model}` failed: {chunk.error.message}", "error")
            raise OpenAIHTTPException(message=chunk.error.message, status_code=chunk.error.code, type=chunk.error.type)
        if isinstance(chunk, NON_STREAMING_RESPONSE_TYPES):
            return Answer(model, "hosted", body=chunk.model_dump())

        async def events():
            async for packet in _openai_json_wrapper(stream):
                for event in split_events(packet):
                    yield event

        return Answer(model, "hosted", events=events())

    # -- classifier routes (KServe V1 and Open Inference Protocol V2) -------------------
    def _classifier(self, name: str) -> DeploymentHandle:
        """The classifier's handle (404 naming the classifiers there are)."""
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

    async def _admit_classifier(self, name: str, request: Request) -> Principal:
        """Authenticate (401 first), then the classifier must exist (404) and be allowed (403, 429)."""
        principal = await self._gateway.authenticate(request.headers.get("authorization"))
        self._classifier(name)
        request.state.model = name
        await self._gateway.permit(principal, name)
        return principal

    async def _classify(self, name: str, principal: Principal, method: str, *args: Any) -> tuple[Any, dict[str, str]]:
        """Call one classifier; the answer's headers carry the request's estimated cost."""
        started, in_flight = self._gateway.classifier_started(name)
        try:
            result = await self._call(self._classifier(name), method, *args)
        finally:
            cost = self._gateway.classifier_finished(name, principal, started, in_flight)
        return result, {COST: cost}

    async def classifier_predict_v1(self, name: str, request: Request) -> JSONResponse:
        principal = await self._admit_classifier(name, request)
        result, headers = await self._classify(name, principal, "predict_v1", await self._json(request))
        return JSONResponse(result, headers=headers)

    async def classifier_feedback(self, name: str, request: Request) -> JSONResponse:
        principal = await self._admit_classifier(name, request)
        result, headers = await self._classify(name, principal, "feedback", await self._json(request))
        return JSONResponse(result, headers=headers)

    async def v2_infer(self, name: str, request: Request) -> JSONResponse:
        principal = await self._admit_classifier(name, request)
        body = await self._body(request)
        header = request.headers.get(V2_BINARY_HEADER)
        header_length = int(header) if header and header.isdigit() else None
        result, headers = await self._classify(name, principal, "infer_v2", body, header_length)
        return JSONResponse(result, headers=headers)

    async def v2_model_metadata(self, name: str, request: Request) -> JSONResponse:
        principal = await self._admit_classifier(name, request)
        result, _ = await self._classify(name, principal, "metadata_v2")
        return JSONResponse(result)

    async def v2_model_ready(self, name: str, request: Request) -> JSONResponse:
        principal = await self._admit_classifier(name, request)
        ready, _ = await self._classify(name, principal, "ready")
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
        return {
            "status": "ready",
            "models": sorted(self._model_cards),
            "rented": sorted(self._rented_cards),
            "classifiers": sorted(self._classifiers),
            "authentication": self._gateway.gatekeeper.enabled,
        }


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
    config: PlatformConfig,
) -> Application:
    """Bind the ingress deployment to the model deployments it routes to (and the rate limiter)."""
    ingress_cls = make_fastapi_ingress(AprendizIngress, endpoint_map=ENDPOINTS, app=create_app())
    options = {
        "name": "Ingress",
        "max_ongoing_requests": config.ingress.max_ongoing_requests,
        "autoscaling_config": config.ingress.autoscaling.serve_options(),
        "ray_actor_options": {"num_cpus": config.ingress.num_cpus},
        "logging_config": {"enable_access_log": config.ingress.access_log},
    }
    model_cards = {model_id: to_model_metadata(model_id, c) for model_id, c in llm_configs.items()}
    return serve.deployment(ingress_cls, **options).bind(
        llm_deployments=llm_deployments,
        model_cards=model_cards,
        classifiers=classifiers,
        limiter=build_rate_limiter() if config.gateway.keys_file else None,
        config=config.model_dump(mode="json"),
    )
