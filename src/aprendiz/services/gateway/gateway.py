"""The gateway: the layer every model request passes, between the ingress's routes and a backend.

For each request, in order:

1. ``admit``: who calls (the API key: 401), which model they name (the route table:
   400, 404), whether they may call it now (the key's models: 403; its limits: 429);
2. ``generate`` or ``classify``: the route's backend serves it; a generator that is down,
   full or too slow hands the request to its configured fallback;
3. metering: tokens, latency and cost counted once, the key's tokens charged, the cost
   sent back (the ``x-aprendiz-cost-usd`` header, or a comment before a stream's end).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, Literal, Mapping

from fastapi import Request
from fastapi.responses import StreamingResponse

from aprendiz.capabilities import check_request, metered_feature
from aprendiz.errors import InvalidRequestError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from aprendiz.metrics import GatewayMetrics
from aprendiz.responses import FastJSONResponse
from aprendiz.services.embedder.protocol import embedding_response, read_request
from aprendiz.services.gateway.accrual import InFlight, hosted_share_usd
from aprendiz.services.gateway.auth import Gatekeeper, Principal, Refusal
from aprendiz.services.gateway.backends import Answer, ClassifierBackend, HostedEmbedder
from aprendiz.services.gateway.limits import Limiter
from aprendiz.services.gateway.metering import StreamRecord, TokenCounter, Usage, completion_text, metered
from aprendiz.services.gateway.rented import RentedUpstream
from aprendiz.services.gateway.routes import ModelRoute, RouteTable

log = logging.getLogger("aprendiz.gateway")

SERVED_BY = "x-aprendiz-served-by"
BACKEND = "x-aprendiz-backend"
COST = "x-aprendiz-cost-usd"

# What makes a model hand a request to its fallback: a full queue, a model that is down
# or too slow to start answering, a provider that fails or cannot be reached.
FALLBACK_ON = (ServiceUnavailableError, UpstreamError)
# What a request is admitted to: a generator, a classifier, or no model (listing, probes of keys).
Kind = Literal["generator", "embedding", "classifier", "feedback", "none"]


@dataclass(frozen=True)
class Admission:
    """An admitted request: its caller and, for a model route, the model's route and the name called."""

    principal: Principal
    route: ModelRoute | None = None
    model: str | None = None


class Gateway:
    def __init__(self, *, routes: RouteTable, gatekeeper: Gatekeeper, limiter: Limiter, metrics: GatewayMetrics):
        self.routes = routes
        self.gatekeeper = gatekeeper
        self._limiter = limiter
        self._metrics = metrics
        self._in_flight = InFlight()
        self._default_counter = TokenCounter()

    # -- 1. admission -------------------------------------------------------------------
    async def admit(
        self, request: Request, model: str | None, *, kind: Kind = "generator", caller: Principal | None = None
    ) -> Admission:
        """Admit a request to ``model`` (a generator, or a classifier with ``kind="classifier"``);
        ``None`` for a generator: the only one; no model at all for ``kind="none"``.

        ``caller``: the principal when the route authenticated already (before reading a body)."""
        try:
            principal = caller or await self.gatekeeper.authenticate(request.headers.get("authorization"))
            if kind == "none":
                return Admission(principal)
            request.state.model = "unknown"  # a name no route knows is not a metric label (one series each)

            def visible(name: str) -> bool:
                return self.gatekeeper.visible(principal, name)

            if kind in ("classifier", "feedback"):
                route, name = self.routes.classifier(model or "", visible), model or ""
            elif kind == "embedding":
                route, name = self.routes.embedder(model or "", visible), model or ""
            else:
                route, name = await self.routes.generator(model, visible)
            request.state.model = name
            if kind == "feedback":
                self.gatekeeper.authorize_feedback(principal, name)
            else:
                self.gatekeeper.authorize(principal, name)
            await self._limiter.admit(principal)
        except Refusal as refusal:
            self._metrics.refusals.inc(1, tags={"reason": refusal.reason, "key": refusal.key})
            raise refusal.error from None
        return Admission(principal, route, name)

    async def authenticate(self, request: Request) -> Principal:
        return (await self.admit(request, None, kind="none")).principal

    def visible(self, principal: Principal, model: str) -> bool:
        return self.gatekeeper.visible(principal, model)

    # -- 2. serving ---------------------------------------------------------------------
    async def generate(
        self, admission: Admission, route_name: str, payload: dict[str, Any], headers: Mapping[str, str]
    ) -> FastJSONResponse | StreamingResponse:
        """Serve a chat or completion from the admitted model's backend (or its fallback), metered."""
        started = time.perf_counter()
        route, model = admission.route, admission.model
        assert route is not None and model is not None, "admitted to a generator"
        feature = metered_feature(check_request(model, route.capabilities, route.caps, payload))
        try:
            answer = await self._serve(route, model, route_name, payload, headers)
        except FALLBACK_ON as exc:
            fallback = self.routes.fallback_of(route)
            self._count_upstream_error(model, exc)
            if fallback is None:
                raise
            try:  # a fallback that lacks the request's tools or schema, or has lower caps, does not take it
                check_request(fallback.id, fallback.capabilities, fallback.caps, payload)
            except InvalidRequestError as refusal:
                log.warning("gateway: %s failed; its fallback %s cannot take the request: %s", model, fallback.id,
                            refusal.message)
                raise exc from None
            reason = getattr(exc, "reason", None) or (
                "upstream_timeout" if isinstance(exc, UpstreamTimeoutError)
                else "upstream_error" if isinstance(exc, UpstreamError) else "unavailable"
            )
            log.warning("gateway: %s handed a request to %s (%s)", model, fallback.id, reason)
            self._metrics.fallbacks.inc(1, tags={"model": model, "fallback": fallback.id, "reason": reason})
            route, model = fallback, fallback.id
            answer = await self._serve(route, model, route_name, payload, headers)
        return await self._respond(admission.principal, route, answer, payload, started, feature)

    @staticmethod
    async def _serve(
        route: ModelRoute, model: str, route_name: str, payload: dict[str, Any], headers: Mapping[str, str]
    ) -> Answer:
        forward = dict(payload, model=model)
        if forward.get("stream"):  # ask every backend for usage; the client gets it only if it asked
            forward["stream_options"] = {**(forward.get("stream_options") or {}), "include_usage": True}
        backend = route.backend
        assert not isinstance(backend, (ClassifierBackend, HostedEmbedder)), "admitted as a generator"
        # A stream falls back when its first token is late; a whole answer is not late to start, and
        # re-running a long generation on a paid fallback would bill it twice.
        first_chunk_s = route.fallback_after_s if forward.get("stream") else None
        return await backend.generate(model, route_name, forward, first_chunk_s=first_chunk_s, headers=headers)

    async def embed(self, admission: Admission, payload: dict[str, Any]) -> FastJSONResponse:
        """Embed a request's texts on the admitted embedding model (hosted or rented), metered as its
        prompt tokens. No fallback: another model's vectors are not comparable with this one's."""
        started = time.perf_counter()
        route, model = admission.route, admission.model
        assert route is not None and model is not None and route.embedding, "admitted to an embedding model"
        backend = route.backend
        with self._in_flight.request(model) as in_flight:
            if isinstance(backend, RentedUpstream):
                texts = payload.get("input")
                try:
                    answer = await backend.call("embeddings", dict(payload, model=backend.model.upstream_model))
                except UpstreamError as exc:
                    self._count_upstream_error(model, exc)
                    raise
                body = dict(answer.body or {}, model=model)
                counter = route.counter or self._default_counter
                usage = Usage.of(body.get("usage")) or counter.usage({"prompt": texts}, "")
            else:
                assert isinstance(backend, HostedEmbedder), "a hosted embedding model"
                request = read_request(payload, dimension=backend.dimension, max_inputs=backend.max_inputs)
                vectors, tokens = await backend.embed(request.texts)
                body = embedding_response(model, vectors, tokens, request.encoding_format)
                usage = Usage(tokens, 0, reported=True)
            cost = self.request_cost(route, usage, time.perf_counter() - started, in_flight)
        self._metrics.embedded(model=model, backend=backend.kind, key=admission.principal.name,
                               prompt_tokens=usage.prompt_tokens, cost_usd=cost)
        await self._limiter.charge(admission.principal, usage.total)
        return FastJSONResponse(body, headers={SERVED_BY: model, BACKEND: backend.kind, COST: f"{cost:.10f}"})

    async def classify(self, admission: Admission, method: str, *args: Any) -> tuple[Any, dict[str, str]]:
        """Call the admitted classifier; the answer's headers carry the request's estimated cost."""
        route = admission.route
        assert route is not None and isinstance(route.backend, ClassifierBackend), "admitted as a classifier"
        started = time.perf_counter()
        with self._in_flight.request(route.id) as in_flight:
            try:
                result = await route.backend.call(method, *args)
            finally:
                cost = hosted_share_usd(route.hourly_usd, time.perf_counter() - started, in_flight)
                if cost > 0:
                    tags = {"model": route.id, "backend": "hosted", "key": admission.principal.name}
                    self._metrics.cost_usd.inc(cost, tags=tags)
        return result, {COST: f"{cost:.10f}"}

    # -- 3. metering --------------------------------------------------------------------
    async def _respond(
        self, principal: Principal, route: ModelRoute, answer: Answer, payload: dict[str, Any], started: float,
        feature: str,
    ) -> FastJSONResponse | StreamingResponse:
        headers = {SERVED_BY: answer.model, BACKEND: answer.backend}
        counter = route.counter or self._default_counter
        if answer.body is not None:
            with self._in_flight.request(answer.model) as in_flight:
                usage = Usage.of(answer.body.get("usage")) or counter.usage(payload, completion_text(answer.body))
                cost = await self._finish(principal, route, answer, usage, started, None, in_flight, feature)
            headers[COST] = f"{cost:.10f}"
            return FastJSONResponse(answer.body, headers=headers)

        keep_usage = bool((payload.get("stream_options") or {}).get("include_usage"))

        async def events():
            with self._in_flight.request(answer.model) as in_flight:
                async def finish(rec: StreamRecord) -> float:
                    usage = rec.usage or counter.usage(payload, rec.sent_text())  # a client that left: what it was sent
                    return await self._finish(principal, route, answer, usage, started, rec.first_token_at, in_flight,
                                              feature)

                assert answer.events is not None, "a stream"
                async for event in metered(answer.events, StreamRecord(started=started), keep_usage=keep_usage,
                                           collect_text=answer.backend == "rented", finish=finish):
                    yield event

        return StreamingResponse(events(), media_type="text/event-stream", headers=headers)

    def _count_upstream_error(self, model: str, exc: Exception) -> None:
        if isinstance(exc, UpstreamError):
            reason = "timeout" if isinstance(exc, UpstreamTimeoutError) else "unreachable_or_failed"
            self._metrics.upstream_errors.inc(1, tags={"model": model, "reason": reason})

    @staticmethod
    def request_cost(route: ModelRoute, usage: Usage, seconds: float, in_flight: int) -> float:
        if isinstance(route.backend, RentedUpstream):
            return route.backend.model.cost_usd(usage.prompt_tokens, usage.completion_tokens)
        return hosted_share_usd(route.hourly_usd, seconds, in_flight)  # an adapter runs on its base's replicas

    async def _finish(
        self, principal: Principal, route: ModelRoute, answer: Answer, usage: Usage, started: float,
        first_token_at: float | None, in_flight: int, feature: str,
    ) -> float:
        seconds = time.perf_counter() - started
        cost = self.request_cost(route, usage, seconds, in_flight)
        self._metrics.generated(
            model=answer.model, backend=answer.backend, key=principal.name, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=cost, seconds=seconds,
            first_token_s=None if first_token_at is None else first_token_at - started, feature=feature,
        )
        await self._limiter.charge(principal, usage.total)
        return cost
