"""The FastAPI app behind the ingress deployment, built by a factory (no module-level app)."""

from __future__ import annotations

import time
from typing import Any, Callable

from fastapi import FastAPI

import aprendiz
from aprendiz.errors import install_error_handlers
from aprendiz.metrics import IngressMetrics
from aprendiz.services.raycompat import (
    SetRequestIdMiddleware,
    add_exception_handling_middleware,
    add_http_metrics_middleware,
    metrics_lifespan,
)


class RequestMetricsMiddleware:
    """Counts every answer by route template (never the raw path), model and status, and times it
    to its response headers. Handlers name the model in ``request.state.model``.

    The metrics are created on the first request, inside the Serve replica (Ray's metrics
    API needs a running worker), not when the app is built on the driver.
    """

    def __init__(self, app: Callable, metrics_factory: Callable[[], Any] = IngressMetrics):
        self.app = app
        self._factory = metrics_factory
        self._metrics = None

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._metrics is None:
            self._metrics = self._factory()
        started = time.perf_counter()
        answered: list[int] = []

        async def send_and_count(message: dict) -> None:
            if message["type"] == "http.response.start" and not answered:
                answered.append(message["status"])
                self._record(scope, message["status"], time.perf_counter() - started)
            await send(message)

        try:
            await self.app(scope, receive, send_and_count)
        finally:
            if not answered:  # the app raised before answering
                self._record(scope, 500, time.perf_counter() - started)

    def _record(self, scope: dict, status: int, seconds: float) -> None:
        route = getattr(scope.get("route"), "path", None) or "unmatched"
        model = (scope.get("state") or {}).get("model") or "none"
        assert self._metrics is not None, "created on the first request"
        self._metrics.answered(route, model, status, seconds)


def create_app(*, ray_metrics: bool = True, request_metrics: Callable[[], Any] = IngressMetrics) -> FastAPI:
    """The ingress ASGI app with Ray Serve LLM's OpenAI error handling and request ids.

    Unlike Ray's stock ingress app it adds no permissive CORS policy: browsers are
    not this API's clients. Errors of every kind answer in OpenAI's shape
    (aprendiz.errors). Middleware runs last-added first: request id, then our
    request metrics, then Ray's metrics, then error mapping. The fast test tier, with
    no Ray worker to export metrics, leaves out Ray's and passes its own ``request_metrics``.
    """
    app = FastAPI(title="aprendiz", version=aprendiz.__version__, lifespan=metrics_lifespan if ray_metrics else None)
    add_exception_handling_middleware(app)
    install_error_handlers(app)
    if ray_metrics:
        add_http_metrics_middleware(app)
    app.add_middleware(RequestMetricsMiddleware, metrics_factory=request_metrics)
    app.add_middleware(SetRequestIdMiddleware)
    return app
