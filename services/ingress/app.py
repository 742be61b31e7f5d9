"""The FastAPI app behind the ingress deployment, built by a factory (no module-level app)."""

from __future__ import annotations

from fastapi import FastAPI
from ray.llm._internal.serve.core.ingress.middleware import (
    SetRequestIdMiddleware,
    add_exception_handling_middleware,
)
from ray.llm._internal.serve.observability.metrics.fast_api_metrics import (
    add_http_metrics_middleware,
    metrics_lifespan,
)

import aprendiz
from aprendiz.errors import install_error_handlers


def create_app() -> FastAPI:
    """The ingress ASGI app with Ray Serve LLM's OpenAI error handling and request ids.

    Unlike Ray's stock ingress app it adds no permissive CORS policy: browsers are
    not this API's clients, and the gateway will own cross-origin rules if any.
    Errors of every kind answer in OpenAI's shape (aprendiz.errors).
    Middleware runs last-added first: request id, then metrics, then error mapping.
    """
    app = FastAPI(title="aprendiz", version=aprendiz.__version__, lifespan=metrics_lifespan)
    add_exception_handling_middleware(app)
    install_error_handlers(app)
    add_http_metrics_middleware(app)
    app.add_middleware(SetRequestIdMiddleware)
    return app
