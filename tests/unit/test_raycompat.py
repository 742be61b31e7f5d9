"""aprendiz.services.raycompat: the one place Ray's private APIs come in, pinned.

Each check names what the platform relies on. When a Ray upgrade moves or changes one of
them, this file fails with that name, before anything reaches a request.
"""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

import pytest

import aprendiz
from aprendiz.services import raycompat

SRC = Path(aprendiz.__file__).resolve().parent


def _params(obj) -> list[str]:
    return [p for p in inspect.signature(obj).parameters if p != "self"]


def test_ray_is_the_version_pinned():
    import ray

    assert ray.__version__ == "2.60.0", "raycompat was checked against Ray 2.60.0: re-check every name below"


def test_only_raycompat_imports_ray_private_modules():
    offenders = []
    for path in SRC.rglob("*.py"):
        if path.name == "raycompat.py":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            names = [node.module or ""] if isinstance(node, ast.ImportFrom) else (
                [a.name for a in node.names] if isinstance(node, ast.Import) else [])
            offenders += [f"{path.relative_to(SRC)}: {n}" for n in names if "._internal" in n or "._private" in n]
    # The one exception: the replica setup hook, imported by every Ray worker of a loopback platform,
    # so it must not pull in raycompat's ray.llm imports; it touches one Serve function, lazily.
    assert offenders == ["services/loopback.py: ray.serve._private"]


@pytest.mark.parametrize("name", raycompat.__all__)
def test_every_exported_name_is_there(name):
    assert getattr(raycompat, name) is not None


def test_the_llm_server_takes_the_arguments_the_generator_passes():
    from ray.serve.llm import LLMServer

    init = _params(LLMServer.__init__)
    assert init[0] == "llm_config" and {"engine_cls", "model_downloader"} <= set(init)
    assert set(raycompat.lora_loader_kwargs(object)) <= set(init)
    for method in ("chat", "completions"):
        assert _params(getattr(LLMServer, method))[:2] == ["request", "raw_request_info"], method


def test_the_lora_loader_base_and_its_disk_config():
    loader = raycompat.LoraModelLoader
    assert {"lora_root", "download_timeout_s", "max_tries"} <= set(_params(loader.__init__))
    assert _params(loader.load_model_from_config) == ["lora_model_id", "llm_config"]
    fields = set(raycompat.DiskMultiplexConfig.model_fields)
    assert {"model_id", "max_total_tokens", "local_path", "lora_assigned_int_id"} <= fields
    first, second = raycompat.next_adapter_id(), raycompat.next_adapter_id()
    assert isinstance(first, int) and second != first


def test_the_openai_wire_models():
    card = raycompat.ModelCard(id="m", object="model", owned_by="aprendiz", permission=[], metadata={"a": 1})
    assert raycompat.ModelList(data=[card]).model_dump()["data"][0]["id"] == "m"
    assert {"message", "status_code", "type"} <= set(_params(raycompat.OpenAIHTTPException.__init__))
    error = raycompat.ErrorResponse.model_fields["error"].annotation
    assert {"message", "code", "type"} <= set(error.model_fields)
    assert _params(raycompat.to_model_metadata)[:2] == ["model_id", "model_config"]


def test_request_info_and_the_chat_request_sanitizer():
    from ray.serve.llm.openai_api_models import ChatCompletionRequest

    info = raycompat.RawRequestInfo(headers={"x-request-id": "1"})
    assert info.headers == {"x-request-id": "1"}
    request = ChatCompletionRequest(model="m", messages=[{"role": "user", "content": "hola"}])
    assert raycompat.sanitize_chat_request(request).messages[0]["content"] == "hola"


def test_the_ingress_app_middleware_and_lifespan():
    assert _params(raycompat.add_exception_handling_middleware) == ["router"]
    assert _params(raycompat.add_http_metrics_middleware)[:1] == ["app"]
    assert callable(raycompat.metrics_lifespan) and callable(raycompat.SetRequestIdMiddleware)


def test_the_stream_batching_hook_the_generator_takes_over():
    """GeneratorServer overrides LLMServer's ``_batch_output_stream``: the hook must still be called
    for a streamed answer, with the window from ``_get_batch_interval_ms``, and Ray's fixed batcher
    must still take ``(generator, interval_ms=)`` and stream lists."""
    from ray.serve.llm import LLMServer

    assert _params(LLMServer._batch_output_stream) == ["generator"]
    assert "self._batch_output_stream(" in inspect.getsource(LLMServer._run_request)
    assert "stream" in _params(LLMServer._get_batch_interval_ms)
    assert _params(raycompat.Batcher.__init__) == ["generator", "interval_ms"]
    assert inspect.isasyncgenfunction(raycompat.Batcher.stream)


def test_the_lora_resolution_hook_the_generator_serializes():
    import asyncio
    import inspect

    from ray.serve.llm import LLMServer

    hook = LLMServer._maybe_resolve_lora_from_multiplex
    assert inspect.iscoroutinefunction(hook) and list(inspect.signature(hook).parameters) == ["self"]
    assert "resolve_lora" in inspect.getsource(hook)  # Ray's check-then-load, the race resolve_lora_once closes

    async def two_at_once():
        order: list[str] = []

        async def resolve(name):
            order.append(f"{name} in")
            await asyncio.sleep(0.01)
            order.append(f"{name} out")

        server = type("Server", (), {})()
        await asyncio.gather(raycompat.resolve_lora_once(server, lambda: resolve("a")),
                             raycompat.resolve_lora_once(server, lambda: resolve("b")))
        return order

    assert asyncio.run(two_at_once()) == ["a in", "a out", "b in", "b out"]


def test_a_model_in_a_local_folder_skips_rays_node_download_task(tmp_path):
    """Ray Serve LLM runs a task per node to download the model before the engine starts: for a
    model in a local folder there is nothing to download, and the task's worker (a new process that
    imports torch and vLLM) cost 11 s of the tiny model's start. The callback turns it off."""
    import asyncio

    from aprendiz.config import GeneratorModel
    from aprendiz.services.generator.deployment import llm_config

    (tmp_path / "config.json").write_text("{}")
    local = llm_config(GeneratorModel(id="m", source=str(tmp_path)))
    assert local.callback_config.callback_class is raycompat.LocalModelCallback
    callback = raycompat.LocalModelCallback(llm_config=local)  # as get_or_create_callback makes it, in the replica
    assert callback.ctx.run_init_node
    asyncio.run(callback.run_callback("on_before_node_init"))
    assert callback.ctx.run_init_node is False
    remote = llm_config(GeneratorModel(id="m", source="s3://bucket/model"))
    assert remote.callback_config.callback_class is not raycompat.LocalModelCallback  # downloads stay
    from ray.llm._internal.serve.engines.vllm.vllm_engine import VLLMEngine  # not raycompat's: 1.2 s of imports

    assert "callback.ctx.run_init_node" in inspect.getsource(VLLMEngine.start)  # Ray still asks it


def test_the_generator_starts_its_engine_without_ray_serve_llms_telemetry_actor(monkeypatch):
    """LLMServer._start_engine starts the engine, then creates (or finds) a detached TelemetryAgent
    actor on the head node and waits on it: a process of its own for the cluster's life (about 1 % of
    a core idle here, docs/benchmarks.md) that only records usage tags, created inside the replica's
    start. The generator's server starts the engine alone."""
    import asyncio
    import inspect

    from ray.llm._internal.serve.core.server import llm_server
    from ray.serve.llm import LLMServer

    from aprendiz.config import GeneratorModel
    from aprendiz.services.generator.deployment import GeneratorServer, llm_config
    from tests.unit.ingress_support import EchoEngine

    hook = LLMServer._start_engine
    assert inspect.iscoroutinefunction(hook) and list(inspect.signature(hook).parameters) == ["self"]
    assert "push_telemetry_report_for_all_models" in inspect.getsource(hook)  # what the override leaves out
    pushed: list = []
    monkeypatch.setattr(llm_server, "push_telemetry_report_for_all_models", lambda **kw: pushed.append(kw))
    server = GeneratorServer.sync_init(llm_config(GeneratorModel(id="tiny", source="/models/tiny")),
                                       engine_cls=EchoEngine)
    asyncio.run(server.start())
    assert server.engine is not None and pushed == []
