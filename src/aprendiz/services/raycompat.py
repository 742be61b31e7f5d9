"""Everything the platform takes from Ray's private surface, in one place.

Ray Serve LLM exports its stable API from ``ray.serve.llm`` (LLMConfig, LLMServer,
build_llm_deployment, make_fastapi_ingress, the OpenAI request models). The rest of what
the platform needs lives under ``ray.llm._internal``, which Ray changes between
releases. Only this module imports it; ``tests/unit/test_raycompat.py`` pins the names and
signatures relied on, so a Ray upgrade that moves one fails there, with the name, rather
than somewhere along a request.

What is taken, and why:

- the OpenAI wire models Ray does not export (ModelCard, ModelList, ErrorResponse as the
  engine yields it, OpenAIHTTPException) and ``to_model_metadata`` for a generator's card;
- ``RawRequestInfo``, the picklable request headers an LLMServer call carries;
- ``sanitize_chat_request``: Ray's workaround for a pydantic iterator that does not pickle;
- the ingress app's request-id and error middleware and Ray's HTTP metrics middleware;
- the LoRA loader's base class, its disk config and the adapter id counter; the loader is
  handed to LLMServer through its ``model_downloader`` argument;
- an ``Application``'s bound deployment and its autoscaling config, which Serve's public
  API does not show (the tests of ``build_app`` read them);
- ``Batcher``, Ray Serve LLM's fixed-window stream batcher, and LLMServer's private hook that
  batches a streamed answer (``_batch_output_stream``, with ``_get_batch_interval_ms``): the
  generator's server takes the hook over to choose the batching (``batch_output_stream``);
- LLMServer's private hook that puts a request's LoRA adapter into the engine
  (``_maybe_resolve_lora_from_multiplex``): the generator's server runs it one request at a time
  per adapter (``resolve_lora_once``), since Ray's check-then-load lets requests arriving together
  load the same adapter twice;
- LLMServer's private ``_start_engine``, which after starting the engine creates a detached
  ``TelemetryAgent`` actor for Ray's usage tags and waits on it: the generator's server takes it over
  to start the engine alone (``start_engine``), one process and about 1 % of a core less;
- ``CallbackBase``, the base of an LLMConfig's ``callback_config`` class: ``LocalModelCallback``
  turns off the per-node download task for a model in a local folder (Ray's vLLM engine asks
  its context's ``run_init_node`` as it starts);
- ``LLMEngine``, the engine protocol LLMServer's ``engine_cls`` takes (vLLM in production, a
  fake engine in the fast test tier);
- from vLLM, whose request models Ray's are: ``EngineClientError``, the base of the errors its
  request validators raise (not a ValueError, so pydantic passes them through unwrapped).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable
from typing import Any, Callable

from ray.llm._internal.common.callbacks.base import CallbackBase
from ray.llm._internal.common.models import global_id_manager
from ray.llm._internal.serve.core.configs.llm_config import DiskMultiplexConfig
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ErrorResponse,
    ModelCard,
    ModelList,
    OpenAIHTTPException,
    to_model_metadata,
)
from ray.llm._internal.serve.core.engine.protocol import LLMEngine
from ray.llm._internal.serve.core.ingress.middleware import (
    SetRequestIdMiddleware,
    add_exception_handling_middleware,
)
from ray.llm._internal.serve.core.ingress.utils import (
    _sanitize_chat_completion_request as sanitize_chat_request,
)
from ray.llm._internal.serve.core.protocol import RawRequestInfo
from ray.llm._internal.serve.observability.metrics.fast_api_metrics import (
    add_http_metrics_middleware,
    metrics_lifespan,
)
from ray.llm._internal.serve.utils.batcher import Batcher
from ray.llm._internal.serve.utils.lora_serve_utils import LoraModelLoader
from ray.serve.deployment import Application, Deployment
from vllm.exceptions import VLLMClientError as EngineClientError

from aprendiz.services.generator.stream_batching import StreamBatching, batch_stream

__all__ = [
    "Batcher",
    "DiskMultiplexConfig",
    "EngineClientError",
    "ErrorResponse",
    "LLMEngine",
    "LocalModelCallback",
    "LoraModelLoader",
    "ModelCard",
    "ModelList",
    "OpenAIHTTPException",
    "RawRequestInfo",
    "SetRequestIdMiddleware",
    "add_exception_handling_middleware",
    "add_http_metrics_middleware",
    "autoscaling_of",
    "batch_output_stream",
    "bound_deployment",
    "lora_loader_kwargs",
    "metrics_lifespan",
    "next_adapter_id",
    "sanitize_chat_request",
    "to_model_metadata",
]


def next_adapter_id() -> int:
    """A process-wide unique integer id for a loaded LoRA adapter (vLLM's ``lora_int_id``)."""
    return global_id_manager.next()


def lora_loader_kwargs(loader_factory: Callable[..., Any]) -> dict[str, Any]:
    """The LLMServer constructor arguments that make it load adapters with ``loader_factory``."""
    return {"model_downloader": loader_factory}


def bound_deployment(app: Application) -> Deployment:
    """The deployment an application was bound from (its options and ``init_kwargs``)."""
    return app._bound_deployment


def autoscaling_of(deployment: Deployment) -> Any:
    """A deployment's autoscaling config (None without autoscaling)."""
    return deployment._deployment_config.autoscaling_config


def batch_output_stream(server: Any, source: AsyncIterator[Any], mode: StreamBatching) -> AsyncGenerator[list[Any], None]:
    """What an LLMServer's ``_batch_output_stream`` hook returns for a streamed answer, batched by
    ``mode`` over the server's window (``stream_batching_interval_ms``; Ray's 50 ms unset)."""
    return batch_stream(source, mode, server._get_batch_interval_ms(), fixed=Batcher)


async def resolve_lora_once(server: Any, resolve: Callable[[], Awaitable[None]]) -> None:
    """LLMServer's ``_maybe_resolve_lora_from_multiplex`` (``resolve``), one request at a time per
    adapter. Ray's vLLM engine checks whether vLLM has the adapter and then loads it, with nothing
    held between: requests arriving together for an adapter not loaded yet each load it, and every
    load after the first fails in vLLM ("has already been loaded"), a 500 for its request. Under the
    lock the first loads it and the others find it loaded."""
    from ray import serve

    locks = server.__dict__.setdefault("_aprendiz_lora_locks", {})
    lock = locks.setdefault(serve.get_multiplexed_model_id(), asyncio.Lock())
    async with lock:
        await resolve()


class LocalModelCallback(CallbackBase):
    """For a model in a local folder: Ray Serve LLM's task that downloads the model on each node
    before the engine starts has nothing to download, and its worker (a new process importing
    torch and vLLM) costs seconds of every start; it is not run."""

    async def on_before_node_init(self) -> None:
        self.ctx.run_init_node = False


async def start_engine(server: Any) -> None:
    """LLMServer._start_engine less its telemetry push: Ray Serve LLM creates a detached TelemetryAgent
    actor on the head node (a worker process for the cluster's life, about 1 % of a core when idle on
    this machine) and blocks the replica's start on it, only to record usage tags for Ray's usage stats."""
    if server.engine is None:
        raise ValueError("Engine is not set")
    await server.engine.start()
