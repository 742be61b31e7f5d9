"""The backends a model route reaches, behind one shape each, and Ray's errors mapped in one place.

- ``HostedGenerator``: a ray.serve.llm LLMServer deployment (vLLM), through its handle;
- ``RentedUpstream`` (``rented.py``): an OpenAI-compatible provider over HTTP;
- ``ReplicaClassifier``: a classifier deployment, through its handle; ``IngressClassifier``: a
  light classifier held in the ingress's own process (services/classifier/placement.py).

A generator backend answers ``generate(model, route, payload, ...)`` with an ``Answer``: a
JSON body, or a stream as the ``data`` fields of its server-sent events, in the batches they
arrived in. Whatever Ray
raises on the way (back-pressure, a dead replica, a task error) becomes a domain error
here, in ``ray_errors``, and nowhere else.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, AsyncIterator, Iterator, Mapping

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError
from ray.exceptions import RayActorError, RayTaskError
from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError
from ray.serve.handle import DeploymentHandle
from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

from aprendiz.errors import AprendizError, ModelNotFoundError, ModelRejectedError, ServiceUnavailableError
from aprendiz.loras import AdapterStore
from aprendiz.services.classifier.placement import Placement
from aprendiz.services.gateway.metering import DONE
from aprendiz.services.raycompat import (
    EngineClientError,
    ErrorResponse,
    ModelCard,
    OpenAIHTTPException,
    RawRequestInfo,
    sanitize_chat_request,
)

log = logging.getLogger("aprendiz.gateway")

REQUESTS: dict[str, type[ChatCompletionRequest] | type[CompletionRequest]] = {
    "chat": ChatCompletionRequest, "completions": CompletionRequest,
}
_END = object()  # the end of a handle's stream
# A classifier call whose replica dies (SIGKILL, OOM, node lost) is sent again, to a live replica or
# to the one Serve starts in its place, for this long; only calls that change nothing are resent
# (feedback may already be written: the client gets the 503 and decides).
REPLICA_RETRY_S = 15.0
IDEMPOTENT_CLASSIFIER_CALLS = frozenset({"predict_v1", "infer_v2", "metadata_v2", "ready"})
# Headers that stay at the entrance: the caller's key is the gateway's, not the engine's.
PRIVATE_HEADERS = frozenset({"authorization", "cookie"})


@dataclass
class Answer:
    """What a backend gave: a JSON body, or SSE ``data`` fields (JSON chunks, ``[DONE]`` last) in
    batches, each the fields that arrived together."""

    model: str
    backend: str  # hosted | rented
    body: dict[str, Any] | None = None
    events: AsyncIterator[list[str]] | None = None


class BackendUnavailableError(ServiceUnavailableError):
    """A backend is down, its queue is full, or it gave no first token in time (``reason`` says which)."""

    def __init__(self, message: str, reason: str, *, replica_died: bool = False):
        super().__init__(message)
        self.reason = reason
        self.replica_died = replica_died  # the replica that had the call died: another may take it


@contextmanager
def ray_errors(model: str) -> Iterator[None]:
    """Ray's failures of a call to ``model``'s deployment, as the platform's errors."""
    try:
        yield
    except BackPressureError:
        raise BackendUnavailableError(f"the queue of `{model}` is full; retry shortly", "queue_full") from None
    except RayActorError as exc:
        raise BackendUnavailableError(f"`{model}` is down ({type(exc).__name__})", "down", replica_died=True) from None
    except DeploymentUnavailableError as exc:
        raise BackendUnavailableError(f"`{model}` is down ({type(exc).__name__})", "down") from None
    except RayTaskError as exc:
        if isinstance(exc.cause, AprendizError):
            raise exc.cause from None
        if isinstance(exc.cause, OpenAIHTTPException) and 400 <= exc.cause.status_code < 500:
            raise engine_rejection(exc.cause.message, exc.cause.status_code) from None
        raise


# What an engine's 4xx message may carry besides the reason: Ray's wrapping of an exception
# ("Message: ..., Internal exception: ..., original exception: ..."), its request id, a grammar
# compiler's time stamp and source line; vLLM's "(parameter=..., value=...)" names the parameter.
_RAY_WRAPPED = re.compile(r"^Message: (?P<message>.*?), Internal exception: .*$", re.DOTALL)
_REQUEST_ID = re.compile(r"\s*\(Request ID: [^)]*\)")
_SOURCE_LINE = re.compile(r"\[\d{2}:\d{2}:\d{2}\] <?[\w./-]+>?:\d+: ")
_PARAMETER = re.compile(r"\s*\(parameter=(?P<param>[\w.]+), value=[^)]*\)")


def engine_rejection(message: str, status: int) -> ModelRejectedError:
    """An engine's client error as the platform's: its reason only, and the parameter it names."""
    wrapped = _RAY_WRAPPED.match(message)
    if wrapped:
        message = wrapped.group("message")
    message = _SOURCE_LINE.sub("", _REQUEST_ID.sub("", message))
    parameter = _PARAMETER.search(message)
    if parameter:
        message = _PARAMETER.sub("", message)
    return ModelRejectedError(message.strip(), status=status, param=parameter.group("param") if parameter else None)


async def _awaited(response: Any) -> Any:
    return await response


def sse_data(packet: Any) -> list[str]:
    """The data fields in what an LLMServer stream yields: SSE text (``data: ...`` blocks), a
    list of such texts, or response models."""
    if isinstance(packet, list):
        return [data for item in packet for data in sse_data(item)]
    if hasattr(packet, "model_dump_json"):
        return [packet.model_dump_json()]
    return [block.removeprefix("data:").strip() for block in str(packet).split("\n\n") if block.strip()]


class HostedGenerator:
    """A generator served here: its LLMServer deployment, its card, and its LoRA adapters if any."""

    kind = "hosted"

    def __init__(self, model_id: str, handle: DeploymentHandle, card: ModelCard, adapters: AdapterStore | None = None):
        self.model_id = model_id
        self.card = card
        self.adapters = adapters
        self._handle = handle
        self._streaming: dict[str, DeploymentHandle] = {}

    async def ready(self, timeout_s: float) -> bool:
        """A replica answers its engine's health check within ``timeout_s`` (while the only replica is
        still loading its engine, Serve holds the call until it runs: not ready)."""
        try:
            response = self._handle.check_health.remote()
        except Exception as exc:  # no such deployment, or its replicas are gone
            log.warning("gateway: %s is not ready: %r", self.model_id, exc)
            return False
        try:
            await asyncio.wait_for(_awaited(response), timeout_s)
            return True
        except asyncio.TimeoutError:
            response.cancel()
            return False
        except Exception as exc:  # a dead or failing replica, a deployment that failed to deploy
            log.warning("gateway: %s is not ready: %r", self.model_id, exc)
            return False

    def _handle_for(self, model: str) -> DeploymentHandle:
        """The streaming handle for ``model``; an adapter's requests go to the replicas holding it
        (Serve's multiplexing), the base model's to any replica."""
        if model not in self._streaming:  # configured handles are reused: each one has its own pusher
            options: dict[str, Any] = {"stream": True}
            if model != self.model_id:
                options["multiplexed_model_id"] = model
            self._streaming[model] = self._handle.options(**options)
        return self._streaming[model]

    async def adapter_names(self) -> list[str]:
        return [] if self.adapters is None else await asyncio.to_thread(self.adapters.adapters, self.model_id)

    async def check_adapter(self, adapter: str) -> None:
        """404 unless ``<model>:<adapter>`` is in the adapter store."""
        if self.adapters is None:
            raise ModelNotFoundError(
                f"The model `{self.model_id}` serves no LoRA adapters (`{self.model_id}:{adapter}`)", param="model"
            )
        listed = await self.adapter_names()
        if adapter not in listed and not await asyncio.to_thread(self.adapters.exists, self.model_id, adapter):
            raise ModelNotFoundError(
                f"The model `{self.model_id}` has no adapter `{adapter}`; its adapters: {listed}", param="model"
            )

    def adapter_card(self, adapter: str) -> ModelCard:
        metadata = {"backend": "hosted", "base_model": self.model_id, "adapter": adapter}
        if "capabilities" in (self.card.metadata or {}):  # an adapter runs on its base model's engine
            metadata["capabilities"] = self.card.metadata["capabilities"]
        return ModelCard(id=f"{self.model_id}:{adapter}", object="model", owned_by="aprendiz", permission=[],
                         metadata=metadata)

    async def generate(
        self, model: str, route: str, payload: dict[str, Any], *, first_chunk_s: float | None,
        headers: Mapping[str, str],
    ) -> Answer:
        """One request to the LLMServer deployment; waits for the first chunk (the backend is up)."""
        try:
            body = REQUESTS[route].model_validate(payload)
        except ValidationError as exc:
            raise RequestValidationError(exc.errors()) from None
        except EngineClientError as exc:  # vLLM's own validators (stream_options without stream ...)
            message = exc.args[0] if exc.args else str(exc)
            raise ModelRejectedError(f"Invalid request: {message}", param=getattr(exc, "parameter", None)) from None
        if route == "chat":
            body = sanitize_chat_request(body)  # type: ignore[arg-type, assignment]  # Ray's base class
        info = RawRequestInfo(headers={k: v for k, v in headers.items() if k.lower() not in PRIVATE_HEADERS})
        with ray_errors(model):  # Serve raises back-pressure at the call or at the first item
            stream = getattr(self._handle_for(model), route).remote(body, info)
            try:
                first = await asyncio.wait_for(stream.__anext__(), first_chunk_s)
            except asyncio.TimeoutError:
                stream.cancel()
                raise BackendUnavailableError(f"`{model}` gave no first token within {first_chunk_s:g} s", "slow") from None
        chunk = first[0] if isinstance(first, list) and first else first
        if isinstance(chunk, ErrorResponse):
            if chunk.error.code >= 500:
                raise BackendUnavailableError(f"`{model}` failed: {chunk.error.message}", "error")
            raise engine_rejection(chunk.error.message, chunk.error.code)
        if not payload.get("stream"):
            return Answer(model, self.kind, body=chunk.model_dump())
        return Answer(model, self.kind, events=self._events(model, first, stream))

    @staticmethod
    async def _events(model: str, first: Any, stream: Any) -> AsyncIterator[list[str]]:
        """The stream's data fields, a batch per packet (a replica batches a stream's tokens), the
        first packet (already awaited) first; ``[DONE]`` last. The answer's 200 is sent by then: a
        replica that fails mid-stream ends it with an error event."""
        done, packet = False, first
        try:
            with ray_errors(model):
                while packet is not _END:
                    batch = sse_data(packet)
                    done = done or DONE in batch
                    yield batch
                    packet = await anext(stream, _END)
        except Exception as exc:  # the replica died or the engine failed: no internal text to the client
            log.error("gateway: the stream of %s stopped: %r", model, exc)
            why = exc.message if isinstance(exc, AprendizError) else type(exc).__name__
            message = f"The stream of `{model}` stopped: {why}; the answer is incomplete."
            yield [json.dumps({"error": {"message": message, "type": "server_error", "code": 502}}), DONE]
            return
        if not done:
            yield [DONE]


class HostedEmbedder:
    """An embedding model served here: its deployment's handle, the model's dimension and input cap."""

    kind = "hosted"

    def __init__(self, model_id: str, handle: DeploymentHandle, *, dimension: int | None, max_inputs: int):
        self.model_id = model_id
        self.dimension = dimension
        self.max_inputs = max_inputs
        self._handle = handle

    async def ready(self, timeout_s: float) -> bool:
        try:
            await asyncio.wait_for(_awaited(self._handle.check_health.remote()), timeout_s)
            return True
        except Exception:  # a timeout, a replica still loading or down: not ready, and the probe answers
            return False

    async def embed(self, texts: list[str]) -> tuple[Any, int]:
        """The texts' vectors (float32 [N, D]) and the tokens they took."""
        with ray_errors(self.model_id):
            return await self._handle.embed.remote(texts)


class ClassifierBackend:
    """A classifier, called by method name (``predict_v1``, ``infer_v2``, ``metadata_v2``, ``ready``,
    ``feedback``), wherever it runs; ``placement`` says where, and why."""

    kind = "classifier"

    def __init__(self, name: str, placement: Placement):
        self.name = name
        self.placement = placement

    async def call(self, method: str, *args: Any) -> Any:
        raise NotImplementedError


class ReplicaClassifier(ClassifierBackend):
    """A classifier deployment of its own, through its handle."""

    def __init__(self, name: str, handle: DeploymentHandle, placement: Placement):
        super().__init__(name, placement)
        self._handle = handle

    async def call(self, method: str, *args: Any) -> Any:
        """``method`` on a replica; an idempotent call whose replica died is resent (``REPLICA_RETRY_S``)."""
        deadline = time.monotonic() + (REPLICA_RETRY_S if method in IDEMPOTENT_CLASSIFIER_CALLS else 0)
        pause = 0.05
        while True:
            try:
                with ray_errors(self.name):
                    return await getattr(self._handle, method).remote(*args)
            except BackendUnavailableError as exc:
                if not exc.replica_died or time.monotonic() + pause > deadline:
                    raise
                log.warning("classifier %s: a replica died under %s; sending it again", self.name, method)
            await asyncio.sleep(pause)
            pause = min(2 * pause, 1.0)


class IngressClassifier(ClassifierBackend):
    """A classifier held in this process (``placement: ingress``): its service is called directly."""

    def __init__(self, name: str, service: Any, placement: Placement, *, cost_meter: Any = None):
        super().__init__(name, placement)
        self.service = service
        self._cost_meter = cost_meter  # held: its accrual task lives as long as the backend

    async def call(self, method: str, *args: Any) -> Any:
        return await getattr(self.service, method)(*args)
