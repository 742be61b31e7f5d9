"""The ingress in-process, shared by the fast tier's ingress tests (test_ingress.py) and its fuzzing
(test_ingress_fuzz.py): the real FastAPI app, the real gateway and Ray Serve LLM's real LLMServer,
with a fake engine injected through ``engine_cls`` and in-process stand-ins for the deployment
handles. No Ray cluster starts.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from fastapi import FastAPI
from ray.serve.llm import LLMConfig
from ray.serve.llm.openai_api_models import ChatCompletionResponse, CompletionResponse

from aprendiz.config import PlatformConfig
from aprendiz.errors import InvalidRequestError
from aprendiz.services.classifier.deployment import registry_for
from aprendiz.services.classifier.placement import place
from aprendiz.services.gateway.backends import IngressClassifier
from aprendiz.services.generator.deployment import GeneratorServer, llm_config
from aprendiz.services.ingress.deployment import AprendizIngress, build_asgi_app
from aprendiz.services.raycompat import LLMEngine, to_model_metadata

MODEL = "tiny"


class RecordingCounter:
    """A Ray metric's inc/observe, recorded (Ray's metrics need a Ray worker to export)."""

    def __init__(self):
        self.calls = []

    def inc(self, value=1, tags=None):
        self.calls.append((value, tags))

    observe = inc


class RecordingGatewayMetrics:
    """What the gateway counts: refusals, cost, fallbacks, provider errors and every generation."""

    def __init__(self):
        self.refusals, self.cost_usd, self.fallbacks, self.upstream_errors = (RecordingCounter() for _ in range(4))
        self.generations, self.embeddings = [], []
        self.key_file_errors, self.limiter_fail_open = [], []

    def generated(self, **kwargs):
        self.generations.append(kwargs)

    def embedded(self, **kwargs):
        self.embeddings.append(kwargs)

    def key_file_error(self, reason):
        self.key_file_errors.append(reason)

    def limiter_failed_open(self, call, reason):
        self.limiter_fail_open.append((call, reason))


class EchoEngine(LLMEngine):
    """Answers "eco: <the last user message>", word by word when streaming, as vLLM's server does:
    SSE strings while streaming (usage last when asked, then [DONE]), one response model otherwise."""

    def __init__(self, llm_config: LLMConfig):
        self.llm_config = llm_config

    async def start(self):
        pass

    def routing_stats(self) -> dict:
        return {}

    async def resolve_lora(self, lora_model):
        pass

    async def embeddings(self, request, raw_request_info=None):
        raise NotImplementedError

    async def transcriptions(self, request, raw_request_info=None):
        raise NotImplementedError

    async def reset_prefix_cache(self) -> None:
        pass

    @staticmethod
    def _words(request) -> tuple[list[str], int]:
        if hasattr(request, "messages"):
            prompt = str(request.messages[-1]["content"])
        else:
            prompt = str(request.prompt)
        limit = getattr(request, "max_completion_tokens", None) or request.max_tokens or 16
        words = ["eco:", *prompt.split()][:limit]
        return words, len(prompt.split())

    async def _answer(self, request, chat: bool):
        words, prompt_tokens = self._words(request)
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": len(words),
                 "total_tokens": prompt_tokens + len(words)}
        base = {"id": "cmpl-1", "created": int(time.time()), "model": request.model}
        if not request.stream:
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": " ".join(words)}, "finish_reason": "stop"}
                yield ChatCompletionResponse.model_validate(base | {"object": "chat.completion", "choices": [choice],
                                                                    "usage": usage})
            else:
                choice = {"index": 0, "text": " ".join(words), "finish_reason": "stop"}
                yield CompletionResponse.model_validate(base | {"object": "text_completion", "choices": [choice],
                                                                "usage": usage})
            return
        kind = "chat.completion.chunk" if chat else "text_completion"
        for i, word in enumerate(words):
            text = word if i == 0 else " " + word
            choice = {"index": 0, "delta": {"content": text}} if chat else {"index": 0, "text": text}
            yield f"data: {json.dumps(base | {'object': kind, 'choices': [choice]})}\n\n"
        if request.stream_options and request.stream_options.include_usage:
            yield f"data: {json.dumps(base | {'object': kind, 'choices': [], 'usage': usage})}\n\n"
        yield "data: [DONE]\n\n"

    async def chat(self, request, raw_request_info=None):
        async for item in self._answer(request, chat=True):
            yield item

    async def completions(self, request, raw_request_info=None):
        async for item in self._answer(request, chat=False):
            yield item


# -- in-process stand-ins for Serve's deployment handles ------------------------------------
class InProcessStream:
    """What ``handle.options(stream=True).method.remote(...)`` gives: an async iterator."""

    def __init__(self, call):
        self._call, self._items = call, None

    def __aiter__(self):
        return self

    async def __anext__(self):
        if self._items is None:
            result = await self._call
            self._items = result if hasattr(result, "__anext__") else _single(result)
        return await self._items.__anext__()

    def cancel(self):
        pass


async def _single(item):
    yield item


class InProcessHandle:
    """Calls methods of a live object as Serve's handle would (``.options()``, ``.method.remote()``)."""

    def __init__(self, target, stream: bool = False, fail: Exception | None = None):
        self._target, self._stream, self.fail = target, stream, fail

    def options(self, stream: bool = False, **_: Any) -> "InProcessHandle":
        return InProcessHandle(self._target, stream, self.fail)

    def __getattr__(self, method: str):
        handle = self

        class Method:
            @staticmethod
            def remote(*args):
                if handle.fail is not None:
                    raise handle.fail
                call = getattr(handle._target, method)(*args)
                return InProcessStream(call) if handle._stream else call

        return Method


class FakeClassifier:
    """A classifier deployment's methods (its real server is tested with the platform)."""

    def __init__(self):
        self.bodies, self.feedback_bodies = [], []
        self.loaded = True

    async def predict_v1(self, body):
        self.bodies.append(body)
        if not isinstance(body, dict) or "instances" not in body:
            raise InvalidRequestError("`instances` is required")
        return {"predictions": [{"probability": 0.9, "label": "yes"} for _ in body["instances"]]}

    async def ready(self):
        return self.loaded

    async def metadata_v2(self):
        return {"name": "cancer"}

    async def feedback(self, body):
        self.feedback_bodies.append(body)
        return {"accepted": len(body["instances"]), "key": "feedback/cancer/x.jsonl", "model_version": "v1"}


class Answered:
    """The ingress's request metrics: one (route template, model, status) per answer."""

    def __init__(self):
        self.calls = []

    def answered(self, route, model, status, seconds):
        self.calls.append((route, model, status))


CONFIG = {
    "generators": [{"id": MODEL, "source": "/models/tiny", "engine_kwargs": {"max_model_len": 128}}],
    "classifiers": [{"name": "cancer", "placement": "replica"}],
    "gateway": {"hourly_prices_usd": {"cpu": 36.0}},
}


class InProcessPlatform:
    def __init__(self, config: dict, metrics, *, generator_fail: Exception | None = None):
        self.config = PlatformConfig.model_validate(config)
        self.metrics = metrics
        self.answered = Answered()
        self.classifier = FakeClassifier()
        self.generator_fail = generator_fail
        self.ingress = None

    async def build(self) -> FastAPI:
        """The entrance's app, built as Serve builds it: the async constructor awaited, placements
        decided as build_app does."""
        model = self.config.generators[0]
        llm = llm_config(model)
        server = GeneratorServer.sync_init(llm, engine_cls=EchoEngine)
        await server.start()
        placements = {c.name: place(c, registry_for(self.config.store_for(c))).as_dict() for c in self.config.classifiers}
        self.ingress = AprendizIngress.__new__(AprendizIngress)
        await self.ingress.__init__(
            {model.id: InProcessHandle(server, fail=self.generator_fail)}, {model.id: to_model_metadata(model.id, llm)},
            classifiers={c.name: InProcessHandle(self.classifier) for c in self.config.classifiers},
            placements=placements, limiter=None, config=self.config.model_dump(mode="json"), metrics=self.metrics,
        )
        return build_asgi_app(self.ingress, request_metrics=lambda: self.answered)

    async def stop(self) -> None:
        """Stop the classifiers held in the ingress (their champion polling)."""
        for route in self.ingress._gateway.routes.classifiers():
            if isinstance(route.backend, IngressClassifier):
                await route.backend.service.stop()

    async def __aenter__(self) -> httpx.AsyncClient:
        app = await self.build()
        self.client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress")
        return self.client

    async def __aexit__(self, *exc):
        await self.client.aclose()
        await self.stop()
