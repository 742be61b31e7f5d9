"""Rented models: an OpenAI-compatible provider behind the same entrance.

Requests are forwarded with the provider's model name and the provider's key (from
an environment variable, filled from a Secret); streams pass through event by
event. Provider failures become clear OpenAI-shaped errors: 502 when it cannot be
reached or fails, 504 when it does not answer in time. The provider's key never
appears in an answer or a log line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from typing import Any, AsyncIterator, Mapping
from urllib.parse import urlsplit

import httpx
from httpx_sse import EventSource, SSEError

from aprendiz.config import RentedModel
from aprendiz.errors import (
    InvalidRequestError,
    ServiceUnavailableError,
    UpstreamError,
    UpstreamTimeoutError,
)
from aprendiz.services.gateway.backends import Answer
from aprendiz.services.gateway.metering import DONE

log = logging.getLogger("aprendiz.gateway")

ROUTES = {"chat": "/chat/completions", "completions": "/completions", "embeddings": "/embeddings"}


@dataclass
class UpstreamAnswer:
    """A provider's answer: a JSON body, or its stream's SSE ``data`` fields."""

    body: dict[str, Any] | None = None
    events: AsyncIterator[list[str]] | None = None


class RentedUpstream:
    """A rented model's provider: the generator backend that answers over HTTP."""

    kind = "rented"

    def __init__(self, model: RentedModel, api_key: str | None, client: httpx.AsyncClient):
        self.model = model
        self._api_key = api_key
        self._client = client
        self._host = urlsplit(model.base_url).netloc

    def _scrub(self, text: str) -> str:
        return text.replace(self._api_key, "***") if self._api_key else text

    def _headers(self) -> dict[str, str]:
        headers = {"Content-Type": "application/json", "Accept": "application/json, text/event-stream"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        return headers

    def _fail(self, exc: httpx.HTTPError) -> UpstreamError:
        if isinstance(exc, httpx.TimeoutException):
            log.warning("rented model %s: the provider %s timed out (%s)", self.model.id, self._host, type(exc).__name__)
            return UpstreamTimeoutError(
                f"The provider of `{self.model.id}` ({self._host}) did not answer within {self.model.timeout_s:g} s."
            )
        log.warning("rented model %s: the provider %s is unreachable (%s)", self.model.id, self._host, type(exc).__name__)
        return UpstreamError(f"The provider of `{self.model.id}` ({self._host}) cannot be reached.")

    def _refusal(self, status: int, body: bytes) -> Exception:
        try:
            detail = json.loads(body).get("error", {})
            message = detail.get("message") if isinstance(detail, dict) else str(detail)
        except (ValueError, AttributeError):
            message = None
        message = self._scrub(str(message or body[:300].decode("utf-8", "replace")))
        log.warning("rented model %s: the provider %s answered %d", self.model.id, self._host, status)
        if status in (400, 413, 422):
            return InvalidRequestError(f"The provider of `{self.model.id}` refused the request: {message}")
        if status == 429:
            return ServiceUnavailableError(f"The provider of `{self.model.id}` is rate limiting this platform: {message}")
        if status in (408, 504):
            return UpstreamTimeoutError(f"The provider of `{self.model.id}` ({self._host}) timed out.")
        if status in (401, 403, 404):
            return UpstreamError(
                f"The provider of `{self.model.id}` ({self._host}) refused the platform's configuration ({status}): "
                "check the rented model's base_url, upstream_model and API key."
            )
        return UpstreamError(f"The provider of `{self.model.id}` ({self._host}) failed ({status}): {message}")

    async def call(self, route: str, payload: dict[str, Any]) -> UpstreamAnswer:
        """Forward one request (``payload`` already names the upstream model)."""
        url = self.model.base_url.rstrip("/") + ROUTES[route]
        request = self._client.build_request(
            "POST", url, json=payload, headers=self._headers(), timeout=httpx.Timeout(self.model.timeout_s)
        )
        try:
            response = await self._client.send(request, stream=bool(payload.get("stream")))
        except httpx.HTTPError as exc:
            raise self._fail(exc) from None
        if response.status_code >= 400:
            try:
                body = await response.aread()
            except httpx.HTTPError:
                body = b""
            finally:
                await response.aclose()
            raise self._refusal(response.status_code, body)
        if not payload.get("stream"):
            try:
                return UpstreamAnswer(body=response.json())
            except ValueError:
                raise UpstreamError(f"The provider of `{self.model.id}` answered something that is not JSON.") from None
        return UpstreamAnswer(events=self._events(response))

    async def generate(
        self, model: str, route: str, payload: dict[str, Any], *, first_chunk_s: float | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> Answer:
        """The backend interface: forward under the provider's model name (its own timeout applies)."""
        answer = await self.call(route, dict(payload, model=self.model.upstream_model))
        return Answer(model, self.kind, answer.body, answer.events)

    async def _events(self, response: httpx.Response) -> AsyncIterator[list[str]]:
        try:
            async for event in EventSource(response).aiter_sse():
                if event.data:
                    yield [event.data]
        except (SSEError, httpx.HTTPError) as exc:  # SSEError first: it is an httpx error too
            error = UpstreamError(
                f"The provider of `{self.model.id}` sent a stream that is not server-sent events."
            ) if isinstance(exc, SSEError) else self._fail(exc)
            yield [json.dumps({"error": {"message": error.message, "type": "server_error", "code": 502}}), DONE]
        finally:
            await response.aclose()
