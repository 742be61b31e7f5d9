"""The FastAPI app behind the ingress deployment, built by a factory (no module-level app)."""

from __future__ import annotations

import time
from typing import Any, Awaitable, Callable, MutableMapping

from fastapi import FastAPI, Request
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import Response
from starlette.routing import Match, Route

import aprendiz
from aprendiz.errors import install_error_handlers
from aprendiz.metrics import IngressMetrics
from aprendiz.responses import FastJSONResponse


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


class PlainRoute(Route):
    """A Starlette route for a hot path: the handler gets the request, with no dependency resolution
    (FastAPI's costs about 30 µs a request, a tenth of a classifier prediction's time in the
    ingress). It names itself in the scope, as FastAPI's routes do, for the request metrics' route
    label. FastAPI's route for the same path stays behind it, for the OpenAPI schema."""

    def __init__(self, path: str, method: str, handler: Callable[..., Awaitable[Response]]):
        async def endpoint(request: Request) -> Response:
            return await handler(request.path_params["name"], request)

        super().__init__(path, endpoint, methods=[method], include_in_schema=False)

    def matches(self, scope: MutableMapping[str, Any]) -> tuple[Match, MutableMapping[str, Any]]:
        match, child = super().matches(scope)
        if match != Match.NONE:
            child["route"] = self
        return match, child


def create_app(
    *, request_metrics: Callable[[], Any] = IngressMetrics,
    authenticate: Callable[[Request], Awaitable[Any]] | None = None,
) -> FastAPI:
    """The ingress ASGI app: FastAPI's routing, the platform's error table, request metrics.

    Every layer of the stack is pure ASGI, so a request passes it as plain calls: no
    ``BaseHTTPMiddleware`` (it costs a task and a memory stream per request), no middleware of
    Ray Serve LLM's stock ingress (its error mapping is one, its request id middleware builds a
    Request per call, its HTTP metrics only exist with verbose telemetry). Errors of every kind
    answer in OpenAI's shape (aprendiz.errors), an unexpected one as a 500 that names the request
    id and nothing internal. No permissive CORS policy: browsers are not this API's clients. The
    fast test tier, with no Ray worker to export metrics, passes its own ``request_metrics``.

    The API document (``/openapi.json``, Swagger UI at ``/docs``) follows the models' rule: with
    ``authenticate`` (the gateway's, when keys are on) it needs a key too.
    """
    open_docs = authenticate is None
    app = FastAPI(title="aprendiz", version=aprendiz.__version__, default_response_class=FastJSONResponse,
                  openapi_url="/openapi.json" if open_docs else None, docs_url="/docs" if open_docs else None,
                  redoc_url=None)
    install_error_handlers(app)
    app.add_middleware(RequestMetricsMiddleware, metrics_factory=request_metrics)
    if authenticate is not None:
        _add_keyed_docs(app, authenticate)
    return app


def _add_keyed_docs(app: FastAPI, authenticate: Callable[[Request], Awaitable[Any]]) -> None:
    async def openapi(request: Request) -> Response:
        await authenticate(request)
        return FastJSONResponse(app.openapi())

    async def docs(request: Request) -> Response:
        await authenticate(request)
        return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{app.title} - Swagger UI")

    app.add_route("/openapi.json", openapi, include_in_schema=False)
    app.add_route("/docs", docs, include_in_schema=False)
