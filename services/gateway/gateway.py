"""The gateway's decisions for one request: who calls, may they, which backend serves, what it cost.

The ingress deployment owns the HTTP routes and the calls to hosted deployments;
it hands each generation request here with a ``hosted`` callable, and this class
admits it (key, model, limits), serves it from the hosted or rented backend (with
the configured fallback), and meters it (tokens, cost, latency, the key's tokens).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any, AsyncIterator, Awaitable, Callable

from aprendiz.services.gateway.auth import Gatekeeper, Principal, Refusal
from aprendiz.services.gateway.metering import (
    StreamRecord,
    TokenCounter,
    Usage,
    completion_text,
    hosted_share_usd,
    metered,
)
from aprendiz.services.gateway.rented import RentedUpstream
from fastapi.responses import JSONResponse, StreamingResponse
from ray.serve.handle import DeploymentHandle

from aprendiz.errors import RateLimitedError, ServiceUnavailableError, UpstreamError, UpstreamTimeoutError
from aprendiz.metrics import GatewayMetrics

log = logging.getLogger("aprendiz.gateway")

SERVED_BY = "x-aprendiz-served-by"
BACKEND = "x-aprendiz-backend"
COST = "x-aprendiz-cost-usd"

# What makes a model hand a request to its fallback: a full queue, a model that is down
# or too slow to start answering, a provider that fails or cannot be reached.
FALLBACK_ON = (ServiceUnavailableError, UpstreamError)


class HostedUnavailableError(ServiceUnavailableError):
    """A hosted model is down, its queue is full, or it gave no first token in time."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason


@dataclass
class Answer:
    """What a backend gave: a JSON body or SSE events (``data: ...`` without the blank line)."""

    model: str
    backend: str  # hosted | rented
    body: dict[str, Any] | None = None
    events: AsyncIterator[str] | None = None


HostedCall = Callable[[str, str, dict[str, Any], "float | None"], Awaitable[Answer]]


class Gateway:
    def __init__(
        self,
        *,
        gatekeeper: Gatekeeper,
        metrics: GatewayMetrics,
        limiter: DeploymentHandle | None,
        rented: dict[str, RentedUpstream],
        counters: dict[str, TokenCounter],
        hourly_usd: dict[str, float],
        fallbacks: dict[str, str],
        fallback_after_s: dict[str, float],
    ):
        self.gatekeeper = gatekeeper
        self._metrics = metrics
        self._limiter = limiter
        self._rented = rented
        self._counters = counters
        self._hourly_usd = hourly_usd
        self._fallbacks = fallbacks
        self._fallback_after_s = fallback_after_s
        self._in_flight: dict[str, int] = {}

    # -- admission ----------------------------------------------------------------------
    async def authenticate(self, authorization: str | None) -> Principal:
        """The caller (401 without a valid key)."""
        try:
            return await self.gatekeeper.authenticate(authorization)
        except Refusal as refusal:
            raise self._refused(refusal) from None

    async def permit(self, principal: Principal, model: str) -> None:
        """May this caller call ``model`` now (403 for a model not allowed, 429 over a limit)."""
        try:
            self.gatekeeper.authorize(principal, model)
            if principal.limited and self._limiter is not None:
                await self._limit(principal)
        except Refusal as refusal:
            raise self._refused(refusal) from None

    def _refused(self, refusal: Refusal) -> Exception:
        self._metrics.refusals.inc(1, tags={"reason": refusal.reason, "key": refusal.key})
        return refusal.error

    async def _limit(self, principal: Principal) -> None:
        try:
            reason, wait_s = await self._limiter.admit.remote(
                principal.key_id, principal.requests_per_minute, principal.tokens_per_minute
            )
        except Exception as exc:  # the limiter is down: serve, and say so
            log.warning("gateway: rate limiter unreachable (%s); request let through", type(exc).__name__)
            return
        if reason is not None:
            per_minute = principal.requests_per_minute if reason == "requests_per_minute" else principal.tokens_per_minute
            raise Refusal(reason, principal.name, RateLimitedError(
                f"The key of `{principal.name}` is over its limit of {per_minute} "
                f"{'requests' if reason == 'requests_per_minute' else 'tokens'} per minute; "
                f"retry in {wait_s:.1f} s.",
                retry_after_s=wait_s,
            ))

    async def _charge(self, principal: Principal, tokens: int) -> None:
        if principal.limited and principal.tokens_per_minute is not None and self._limiter is not None and tokens:
            try:
                await self._limiter.charge.remote(principal.key_id, tokens, principal.tokens_per_minute)
            except Exception as exc:
                log.warning("gateway: rate limiter unreachable (%s); %d tokens not charged", type(exc).__name__, tokens)

    # -- generation ---------------------------------------------------------------------
    async def _serve(self, model: str, route: str, payload: dict[str, Any], hosted: HostedCall) -> Answer:
        forward = dict(payload, model=model)
        if forward.get("stream"):  # ask every backend for usage; the client gets it only if it asked
            forward["stream_options"] = {**(forward.get("stream_options") or {}), "include_usage": True}
        upstream = self._rented.get(model)
        if upstream is None:
            return await hosted(model, route, forward, self._fallback_after_s.get(model))
        forward["model"] = upstream.model.upstream_model
        answer = await upstream.call(route, forward)
        return Answer(model, "rented", answer.body, answer.events)

    async def generate(
        self, route: str, payload: dict[str, Any], principal: Principal, hosted: HostedCall
    ) -> JSONResponse | StreamingResponse:
        model = payload["model"]
        started = time.perf_counter()
        try:
            answer = await self._serve(model, route, payload, hosted)
        except FALLBACK_ON as exc:
            fallback = self._fallbacks.get(model)
            if fallback is None:
                self._count_upstream_error(model, exc)
                raise
            reason = getattr(exc, "reason", None) or (
                "upstream_timeout" if isinstance(exc, UpstreamTimeoutError)
                else "upstream_error" if isinstance(exc, UpstreamError) else "unavailable"
            )
            self._count_upstream_error(model, exc)
            log.warning("gateway: %s handed a request to %s (%s)", model, fallback, reason)
            self._metrics.fallbacks.inc(1, tags={"model": model, "fallback": fallback, "reason": reason})
            answer = await self._serve(fallback, route, payload, hosted)

        served = answer.model
        self._in_flight[served] = in_flight = self._in_flight.get(served, 0) + 1
        headers = {SERVED_BY: served, BACKEND: answer.backend}
        if answer.body is not None:
            try:
                usage = Usage.of(answer.body.get("usage")) or self._counter(served).usage(
                    payload, completion_text(answer.body)
                )
                cost = await self._finish(served, answer.backend, principal, usage, started, None, in_flight)
            finally:
                self._in_flight[served] -= 1
            headers[COST] = f"{cost:.10f}"
            return JSONResponse(answer.body, headers=headers)

        keep_usage = bool((payload.get("stream_options") or {}).get("include_usage"))
        record = StreamRecord(started=started)

        async def finish(rec: StreamRecord) -> float:
            try:
                usage = rec.usage or self._counter(served).usage(payload, "".join(rec.text))
                return await self._finish(served, answer.backend, principal, usage, started, rec.first_token_at, in_flight)
            finally:
                self._in_flight[served] -= 1

        events = metered(
            answer.events, record, keep_usage=keep_usage, collect_text=answer.backend == "rented", finish=finish
        )
        return StreamingResponse(events, media_type="text/event-stream", headers=headers)

    def _counter(self, model: str) -> TokenCounter:
        return self._counters.get(model) or self._counters.setdefault("", TokenCounter())

    def _count_upstream_error(self, model: str, exc: Exception) -> None:
        if isinstance(exc, UpstreamError):
            reason = "timeout" if isinstance(exc, UpstreamTimeoutError) else "unreachable_or_failed"
            self._metrics.upstream_errors.inc(1, tags={"model": model, "reason": reason})

    def request_cost(self, model: str, backend: str, usage: Usage, seconds: float, in_flight: int) -> float:
        if backend == "rented":
            return self._rented[model].model.cost_usd(usage.prompt_tokens, usage.completion_tokens)
        base = model.partition(":")[0]  # an adapter runs on its base model's replicas
        return hosted_share_usd(self._hourly_usd.get(base, 0.0), seconds, in_flight)

    async def _finish(
        self, model: str, backend: str, principal: Principal, usage: Usage, started: float,
        first_token_at: float | None, in_flight: int,
    ) -> float:
        seconds = time.perf_counter() - started
        cost = self.request_cost(model, backend, usage, seconds, in_flight)
        self._metrics.generated(
            model=model, backend=backend, key=principal.name, prompt_tokens=usage.prompt_tokens,
            completion_tokens=usage.completion_tokens, cost_usd=cost, seconds=seconds,
            first_token_s=None if first_token_at is None else first_token_at - started,
        )
        await self._charge(principal, usage.total)
        return cost

    # -- classifiers -----------------------------------------------------------------------
    def classifier_started(self, name: str) -> tuple[float, int]:
        self._in_flight[name] = in_flight = self._in_flight.get(name, 0) + 1
        return time.perf_counter(), in_flight

    def classifier_finished(self, name: str, principal: Principal, started: float, in_flight: int) -> str:
        """Count the request's estimated cost; returns the cost header's value."""
        self._in_flight[name] -= 1
        cost = hosted_share_usd(self._hourly_usd.get(name, 0.0), time.perf_counter() - started, in_flight)
        if cost > 0:
            self._metrics.cost_usd.inc(cost, tags={"model": name, "backend": "hosted", "key": principal.name})
        return f"{cost:.10f}"
