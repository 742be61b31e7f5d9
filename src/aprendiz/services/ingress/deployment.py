"""The ingress deployment: the one entrance, its routes read top to bottom.

Every model route does the same three things:

1. read the body (413 over ``ingress.max_body_bytes``, 400 for JSON that does not parse);
2. ``gateway.admit``: the caller's key, the model named, its permission and limits;
3. ``gateway.generate`` (OpenAI routes) or ``gateway.classify`` (KServe V1 and V2 routes):
   the model's backend answers, metered, with its fallback if it has one.

The backends are reached through deployment handles (Ray Serve model composition): the
generators' LLMServer deployments, the heavy classifiers' deployments and the rate limiter;
rented models over HTTP. Light classifiers are held in this process (placement: ingress) and
called directly. Probes (/healthz, /readyz, /v2/health/*) need no key.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Callable

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import Response
from ray import serve
from ray.serve.deployment import Application
from ray.serve.handle import DeploymentHandle
from ray.serve.llm import LLMConfig

from aprendiz.config import PlatformConfig
from aprendiz.errors import InvalidRequestError, PayloadTooLargeError
from aprendiz.metrics import ClassifierMetrics, GatewayMetrics, IngressMetrics
from aprendiz.responses import FastJSONResponse
from aprendiz.services.classifier.deployment import registry_for
from aprendiz.services.classifier.placement import Placement
from aprendiz.services.classifier.service import ClassifierService
from aprendiz.services.gateway.accrual import ReplicaCostMeter
from aprendiz.services.gateway.auth import Gatekeeper
from aprendiz.services.gateway.backends import ClassifierBackend, IngressClassifier, ReplicaClassifier
from aprendiz.services.gateway.gateway import Admission, Gateway
from aprendiz.services.gateway.limits import Limiter, build_rate_limiter
from aprendiz.services.gateway.routes import build_routes
from aprendiz.services.heap import tune_gc
from aprendiz.services.ingress.app import PlainRoute, create_app
from aprendiz.services.ingress.openapi import ApiDocument
from aprendiz.services.raycompat import ModelCard, ModelList, to_model_metadata

V2_BINARY_HEADER = "inference-header-content-length"


class AprendizIngress:
    """OpenAI-compatible routes for the generators, KServe V1/V2 routes for the classifiers, probes.

    Its dependencies are passed in: the handles it was bound to, the platform config, and
    (for the fast test tier) the gateway's metrics and HTTP client.
    """

    async def __init__(  # type: ignore[misc]  # Serve awaits an async constructor
        self,
        llm_deployments: dict[str, DeploymentHandle],
        model_cards: dict[str, ModelCard],
        *,
        classifiers: dict[str, DeploymentHandle],
        placements: dict[str, dict[str, str]],
        limiter: DeploymentHandle | None,
        config: dict[str, Any],
        embedders: dict[str, DeploymentHandle] | None = None,
        metrics: GatewayMetrics | None = None,
        client: httpx.AsyncClient | None = None,
    ):
        platform = PlatformConfig.model_validate(config)
        self._max_body_bytes = platform.ingress.max_body_bytes
        client = client or httpx.AsyncClient(limits=httpx.Limits(max_connections=512, max_keepalive_connections=64))
        routes = build_routes(
            platform, llm_handles=llm_deployments, model_cards=model_cards,
            classifiers=await classifier_backends(platform, classifiers, placements), client=client,
            embedder_handles=embedders or {},
        )
        keys, metrics = platform.gateway, metrics or GatewayMetrics()
        self._gateway = Gateway(
            routes=routes,
            gatekeeper=Gatekeeper(keys.keys_file, reload_s=keys.keys_reload_s, on_error=metrics.key_file_error),
            limiter=Limiter(limiter, timeout_s=keys.limiter_timeout_s, on_fail_open=metrics.limiter_failed_open),
            metrics=metrics,
        )
        tune_gc(platform.ingress.gc_young_threshold)

    def __serve_build_asgi_app__(self) -> FastAPI:
        """The ASGI app, built in the replica once this object exists: its routes are this
        object's bound methods (Serve's public late-bound ``serve.ingress()``), so a request
        solves no dependency to find them."""
        return build_asgi_app(self)

    # -- reading a body -------------------------------------------------------------------
    async def _body(self, request: Request) -> bytes:
        declared = request.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > self._max_body_bytes:
            raise PayloadTooLargeError(f"the body has {declared} bytes; the limit is {self._max_body_bytes}")
        chunks, size = [], 0
        async for chunk in request.stream():  # counted as it arrives: a chunked body declares no length
            size += len(chunk)
            if size > self._max_body_bytes:
                raise PayloadTooLargeError(f"the body has more than {self._max_body_bytes} bytes; "
                                           f"the limit is {self._max_body_bytes}")
            chunks.append(chunk)
        return b"".join(chunks)

    async def _json(self, request: Request) -> Any:
        body = await self._body(request)
        try:
            return json.loads(body)
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidRequestError(f"the body is not valid JSON: {exc}") from None
        except RecursionError:
            raise InvalidRequestError("the body is nested too deeply to be read") from None

    # -- OpenAI routes --------------------------------------------------------------------
    async def models(self, request: Request) -> ModelList:
        principal = await self._gateway.authenticate(request)
        cards = await self._gateway.routes.cards()
        return ModelList(data=[c for c in cards if self._gateway.visible(principal, c.id)])

    async def model_data(self, model: str, request: Request) -> ModelCard:
        await self._gateway.admit(request, model)
        return await self._gateway.routes.card(model)

    async def chat(self, request: Request) -> Response:
        return await self._generate(request, "chat")

    async def completions(self, request: Request) -> Response:
        return await self._generate(request, "completions")

    async def embeddings(self, request: Request) -> FastJSONResponse:
        caller = await self._gateway.authenticate(request)  # 401 before the body is read
        payload = await self._json(request)
        if not isinstance(payload, dict):
            raise InvalidRequestError("the body must be a JSON object")
        model = payload.get("model")
        if not isinstance(model, str) or not model:
            raise InvalidRequestError("`model` is required: the embedding model's name", param="model")
        admission = await self._gateway.admit(request, model, kind="embedding", caller=caller)
        return await self._gateway.embed(admission, payload)

    async def _generate(self, request: Request, route: str) -> Response:
        caller = await self._gateway.authenticate(request)  # 401 before the body is read
        payload = await self._json(request)
        if not isinstance(payload, dict):
            raise InvalidRequestError("the body must be a JSON object")
        model = payload.get("model")
        if model is not None and not isinstance(model, str):
            raise InvalidRequestError("`model` must be a string", param="model")
        admission = await self._gateway.admit(request, model, caller=caller)
        return await self._gateway.generate(admission, route, payload, request.headers)

    # -- classifier routes (KServe V1 and Open Inference Protocol V2) ---------------------
    async def classifier_predict_v1(self, name: str, request: Request) -> FastJSONResponse:
        admission = await self._gateway.admit(request, name, kind="classifier")
        result, headers = await self._gateway.classify(admission, "predict_v1", await self._json(request))
        return FastJSONResponse(result, headers=headers)

    async def classifier_feedback(self, name: str, request: Request) -> FastJSONResponse:
        admission = await self._gateway.admit(request, name, kind="feedback")
        result, headers = await self._gateway.classify(admission, "feedback", await self._json(request))
        return FastJSONResponse(result, headers=headers)

    async def v2_infer(self, name: str, request: Request) -> FastJSONResponse:
        admission = await self._gateway.admit(request, name, kind="classifier")
        body = await self._body(request)
        header = request.headers.get(V2_BINARY_HEADER)
        header_length = int(header) if header and header.isdigit() else None
        result, headers = await self._gateway.classify(admission, "infer_v2", body, header_length)
        return FastJSONResponse(result, headers=headers)

    async def v2_model_metadata(self, name: str, request: Request) -> FastJSONResponse:
        admission = await self._gateway.admit(request, name, kind="classifier")
        result, _ = await self._gateway.classify(admission, "metadata_v2")
        return FastJSONResponse(with_placement(result, admission))

    async def v2_model_ready(self, name: str, request: Request) -> FastJSONResponse:
        admission = await self._gateway.admit(request, name, kind="classifier")
        ready, _ = await self._gateway.classify(admission, "ready")
        return FastJSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)

    async def v2_live(self) -> dict[str, bool]:
        return {"live": True}

    async def v2_ready(self) -> FastJSONResponse:
        ready = all([await backend.call("ready") for backend in self._gateway.routes.classifier_backends()])
        return FastJSONResponse({"ready": ready}, status_code=200 if ready else 503)

    # -- probes ---------------------------------------------------------------------------
    async def healthz(self) -> dict[str, str]:
        """Liveness: the ingress replica answers."""
        return {"status": "ok"}

    async def readyz(self) -> FastJSONResponse:
        """Readiness: the models this entrance routes to, and those that cannot answer yet (a 503
        until every hosted generator, embedding model and classifier can; a rented model's provider
        is not probed)."""
        routes = self._gateway.routes
        hosted, classifiers = [*routes.generators("hosted"), *routes.embedders("hosted")], routes.classifiers()
        checks = [r.backend.ready(READY_TIMEOUT_S) for r in hosted]  # type: ignore[union-attr]
        checks += [_ready_within(r.backend, READY_TIMEOUT_S) for r in classifiers]  # type: ignore[arg-type]
        answers = await asyncio.gather(*checks)
        not_ready = sorted(r.id for r, ok in zip([*hosted, *classifiers], answers) if not ok)
        body = {
            "status": "not_ready" if not_ready else "ready",
            "models": sorted(r.id for r in hosted),
            "rented": sorted(r.id for r in [*routes.generators("rented"), *routes.embedders("rented")]),
            "classifiers": sorted(r.id for r in classifiers),
            "authentication": self._gateway.gatekeeper.enabled,
            "not_ready": not_ready,
        }
        return FastJSONResponse(body, status_code=503 if not_ready else 200)


READY_TIMEOUT_S = 2.0  # each model's readiness answer, within a probe's usual timeout


async def _ready_within(backend: ClassifierBackend, timeout_s: float) -> bool:
    try:
        return bool(await asyncio.wait_for(backend.call("ready"), timeout_s))
    except Exception:  # a timeout, a replica down: not ready, and the probe still answers
        return False


async def classifier_backends(
    platform: PlatformConfig, handles: dict[str, DeploymentHandle], placements: dict[str, dict[str, str]]
) -> dict[str, ClassifierBackend]:
    """Each classifier's backend: its deployment's handle, or (``placement: ingress``) its model
    held here. Each ingress replica loads and follows the champion on its own; one that cannot
    load yet answers 503 for that model and keeps trying, while the rest of the entrance serves."""
    backends: dict[str, ClassifierBackend] = {}
    for c in platform.classifiers:
        placement = Placement(placements[c.name]["placement"], placements[c.name]["placement_reason"])  # type: ignore[arg-type]
        if placement.where == "replica":
            backends[c.name] = ReplicaClassifier(c.name, handles[c.name], placement)
            continue
        service = ClassifierService(c, registry_for(platform.store_for(c)), ClassifierMetrics(c.name))
        await service.start(required=False)
        cost = ReplicaCostMeter(model=c.name, kind="classifier", accelerator="cpu",
                                hourly_usd=platform.gateway.classifier_hourly_usd(c))
        backends[c.name] = IngressClassifier(c.name, service, placement, cost_meter=cost)
    return backends


def with_placement(metadata: dict[str, Any], admission: Admission) -> dict[str, Any]:
    """V2 model metadata with where the model runs (``parameters.placement``) and why."""
    assert admission.route is not None and isinstance(admission.route.backend, ClassifierBackend)
    parameters = {**metadata.get("parameters", {}), **admission.route.backend.placement.as_dict()}
    return {**metadata, "parameters": parameters}


# The OpenAI routes this platform serves (Ray's ingress also has score, transcriptions and
# tokenize, which a chat generator does not offer), KServe's V1 and
# V2 routes, and the probes. Classifier routes come before the catch-all model route.
ENDPOINTS: dict[str, tuple[str, str, dict[str, Any]]] = {
    "classifier_predict_v1": ("POST", "/v1/models/{name}:predict", {}),
    "classifier_feedback": ("POST", "/v1/models/{name}/feedback", {}),
    "v2_live": ("GET", "/v2/health/live", {}),
    "v2_ready": ("GET", "/v2/health/ready", {}),
    "v2_model_ready": ("GET", "/v2/models/{name}/ready", {}),
    "v2_model_metadata": ("GET", "/v2/models/{name}", {}),
    "v2_infer": ("POST", "/v2/models/{name}/infer", {}),
    "models": ("GET", "/v1/models", {"response_model": ModelList}),
    "model_data": ("GET", "/v1/models/{model:path}", {"response_model": ModelCard}),
    "completions": ("POST", "/v1/completions", {}),
    "chat": ("POST", "/v1/chat/completions", {}),
    "embeddings": ("POST", "/v1/embeddings", {}),
    "healthz": ("GET", "/healthz", {"include_in_schema": False}),
    "readyz": ("GET", "/readyz", {"include_in_schema": False}),
}


# The hot paths, served by plain Starlette routes in front of their FastAPI ones (app.PlainRoute).
PLAIN_ROUTES = {
    "classifier_predict_v1": ("/v1/models/{name}:predict", "POST"),
    "v2_infer": ("/v2/models/{name}/infer", "POST"),
}


def build_asgi_app(ingress: AprendizIngress, *, request_metrics: Callable[[], Any] = IngressMetrics) -> FastAPI:
    """The entrance's app with ``ENDPOINTS`` bound to ``ingress``'s methods."""
    gateway = ingress._gateway
    app = create_app(request_metrics=request_metrics,
                     authenticate=gateway.authenticate if gateway.gatekeeper.enabled else None)
    document = ApiDocument([r.id for r in gateway.routes.generators()], [r.id for r in gateway.routes.classifiers()],
                           [r.id for r in gateway.routes.embedders()])
    for name, (method, path, options) in ENDPOINTS.items():
        app.add_api_route(path, getattr(ingress, name), methods=[method], **options, **document.operation(name))
    document.finish(app)
    for position, (name, (path, method)) in enumerate(PLAIN_ROUTES.items()):
        app.router.routes.insert(position, PlainRoute(path, method, getattr(ingress, name)))
    return app


def build_ingress(
    llm_deployments: dict[str, Application],
    llm_configs: dict[str, LLMConfig],
    classifiers: dict[str, Application],
    placements: dict[str, Placement],
    config: PlatformConfig,
    embedders: dict[str, Application] | None = None,
) -> Application:
    """Bind the ingress deployment to the model deployments it routes to (and the rate limiter);
    ``classifiers`` has the deployments of those placed in replicas, ``placements`` every one's;
    ``embedders`` the embedding models'."""
    ingress_cls = serve.ingress()(AprendizIngress)
    options: dict[str, Any] = {
        "name": "Ingress",
        "max_ongoing_requests": config.ingress.max_ongoing_requests,
        "autoscaling_config": config.ingress.autoscaling.serve_options(),
        "ray_actor_options": {"num_cpus": config.ingress.num_cpus},
        "logging_config": {"enable_access_log": config.ingress.access_log},
    }
    model_cards = {model_id: to_model_metadata(model_id, c) for model_id, c in llm_configs.items()}
    return serve.deployment(ingress_cls, **options).bind(  # type: ignore[attr-defined]
        llm_deployments=llm_deployments,
        model_cards=model_cards,
        classifiers=classifiers,
        placements={name: p.as_dict() for name, p in placements.items()},
        limiter=build_rate_limiter() if config.gateway.keys_file else None,
        config=config.model_dump(mode="json"),
        embedders=embedders or {},
    )
