"""Typed domain errors and the one table that maps them to HTTP answers.

Every error leaves the platform in OpenAI's shape::

    {"error": {"message": "...", "type": "...", "param": "...", "code": "..."}}

so the official clients raise their typed exceptions (``openai.NotFoundError``,
``openai.BadRequestError`` ...) with a message a person can act on.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException

from aprendiz.responses import FastJSONResponse

log = logging.getLogger("aprendiz.errors")


class AprendizError(Exception):
    """Base of the platform's request errors: a message for the client and an optional parameter."""

    def __init__(self, message: str, *, param: str | None = None):
        super().__init__(message)
        self.message = message
        self.param = param

    @property
    def headers(self) -> dict[str, str] | None:
        return None


class InvalidRequestError(AprendizError):
    """The request is malformed or breaks a documented rule."""


class ModelNotFoundError(AprendizError):
    """The request names a model this platform does not serve."""


class PayloadTooLargeError(AprendizError):
    """The body is over the configured size limit."""


class ServiceUnavailableError(AprendizError):
    """The model exists but cannot take the request now; ``Retry-After`` tells clients to back off."""

    retry_after_s = 1

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class AuthenticationError(AprendizError):
    """No API key, or one the gateway does not know (or has revoked)."""

    @property
    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": 'Bearer realm="aprendiz"'}


class PermissionDeniedError(AprendizError):
    """The key is valid but may not call this model."""


class FeedbackNotAllowedError(PermissionDeniedError):
    """The key may call the model but not post feedback to it (a permission of its own)."""


class RateLimitedError(AprendizError):
    """The key is over one of its limits; ``retry_after_s`` says when it may try again."""

    def __init__(self, message: str, *, retry_after_s: float):
        super().__init__(message)
        self.retry_after_s = retry_after_s

    @property
    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(max(1, math.ceil(self.retry_after_s)))}


class ModelRejectedError(AprendizError):
    """A model's engine refused the request with a client error of its own (``status``: 4xx), for
    example a prompt longer than the model's context."""

    def __init__(self, message: str, *, status: int = 400, param: str | None = None):
        super().__init__(message, param=param)
        self.status = status if 400 <= status < 500 else 400


class UpstreamError(AprendizError):
    """A rented model's provider could not be reached or failed."""


class UpstreamTimeoutError(UpstreamError):
    """A rented model's provider did not answer in time."""


# error class -> (HTTP status, OpenAI error type, OpenAI error code)
ERROR_TABLE: dict[type[AprendizError], tuple[int, str, str]] = {
    InvalidRequestError: (400, "invalid_request_error", "invalid_parameter"),
    ModelRejectedError: (400, "invalid_request_error", "invalid_parameter"),  # or the engine's own 4xx
    ModelNotFoundError: (404, "invalid_request_error", "model_not_found"),
    PayloadTooLargeError: (413, "invalid_request_error", "payload_too_large"),
    ServiceUnavailableError: (503, "server_error", "service_unavailable"),
    AuthenticationError: (401, "authentication_error", "invalid_api_key"),
    PermissionDeniedError: (403, "permission_error", "model_not_allowed"),
    FeedbackNotAllowedError: (403, "permission_error", "feedback_not_allowed"),
    RateLimitedError: (429, "rate_limit_error", "rate_limit_exceeded"),
    UpstreamError: (502, "server_error", "upstream_error"),
    UpstreamTimeoutError: (504, "timeout_error", "upstream_timeout"),
}

# Status of an HTTPException raised by a framework -> OpenAI error type.
STATUS_TYPES: dict[int, str] = {
    400: "invalid_request_error",
    401: "authentication_error",
    403: "permission_error",
    404: "not_found_error",
    405: "invalid_request_error",
    408: "timeout_error",
    409: "conflict_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(message: str, type_: str, *, param: str | None = None, code: str | int | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def to_response(exc: AprendizError) -> FastJSONResponse:
    """The answer for a domain error (Ray's wrappers are taken off where handles are called:
    services/gateway/backends.py)."""
    for cls in type(exc).__mro__:
        if cls in ERROR_TABLE:
            status, type_, code = ERROR_TABLE[cls]
            break
    else:  # an AprendizError subclass missing from the table is a server bug
        status, type_, code = 500, "server_error", "internal_error"
    if isinstance(exc, ModelRejectedError):
        status, type_ = exc.status, STATUS_TYPES.get(exc.status, type_)
    return FastJSONResponse(
        status_code=status, content=error_body(exc.message, type_, param=exc.param, code=code), headers=exc.headers
    )


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None]:
    """A readable message ("messages: Input should be a valid list") and the first bad parameter."""
    parts, first_param = [], None
    for error in exc.errors():
        loc = [str(p) for p in error.get("loc", ()) if p != "body"]
        if error.get("type") == "json_invalid":
            parts.append(f"the body is not valid JSON ({error.get('ctx', {}).get('error', 'decode error')})")
            continue
        where = ".".join(loc) or "body"
        first_param = first_param or (loc[0] if loc else None)
        parts.append(f"{where}: {error.get('msg', 'invalid value')}")
    return "Invalid request: " + "; ".join(parts or ["the body does not match the schema"]), first_param


def install_error_handlers(app: FastAPI) -> None:
    """Make every error the app raises an OpenAI-shaped answer: domain errors by the table,
    validation failures as 400 with the field and reason, other HTTP errors with their status."""

    @app.exception_handler(AprendizError)
    async def _domain(_request: Request, exc: AprendizError) -> FastJSONResponse:
        return to_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> FastJSONResponse:
        message, param = _describe_validation(exc)
        return FastJSONResponse(status_code=400, content=error_body(message, "invalid_request_error", param=param, code="invalid_parameter"))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> FastJSONResponse:
        """The last resort: a 500 that says nothing internal (the log has the traceback)."""
        request_id = request.headers.get("x-request-id", "")
        log.error("unexpected error answering %s %s (request id %s)", request.method, request.url.path, request_id,
                  exc_info=exc)
        message = f"internal error; the platform's log has the details (request id: {request_id or 'none'})"
        return FastJSONResponse(status_code=500, content=error_body(message, "server_error", code="internal_error"))

    @app.exception_handler(StarletteHTTPException)
    async def _http(_request: Request, exc: StarletteHTTPException) -> FastJSONResponse:
        type_ = STATUS_TYPES.get(exc.status_code, "server_error" if exc.status_code >= 500 else "invalid_request_error")
        return FastJSONResponse(
            status_code=exc.status_code,
            content=error_body(str(exc.detail), type_, code=exc.status_code),
            headers=getattr(exc, "headers", None),
        )
