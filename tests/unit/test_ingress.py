"""The ingress in-process (fast tier): the real FastAPI app, the real gateway and Ray Serve LLM's
real LLMServer, with a fake engine injected through ``engine_cls`` and in-process stand-ins for
the deployment handles. Requests go through httpx's ASGI transport and the official ``openai``
client; no Ray cluster starts.
"""

from __future__ import annotations

import asyncio
import json
import time

import openai
import pytest
from ingress_support import CONFIG, MODEL, InProcessPlatform
from ray.serve.exceptions import BackPressureError

from aprendiz.keys import KeyFile
from aprendiz.services.ingress.deployment import build_asgi_app

pytestmark = pytest.mark.filterwarnings("ignore:max_tokens is deprecated:DeprecationWarning")


def run(coro):
    return asyncio.run(coro)


def test_a_chat_request_reaches_the_engine_and_comes_back_metered(recording_metrics):
    async def go():
        platform = InProcessPlatform(CONFIG, recording_metrics())
        async with platform as client:
            response = await client.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hola mundo"}], "max_tokens": 8})
            return platform, response

    platform, response = run(go())
    assert response.status_code == 200, response.text
    assert response.json()["choices"][0]["message"]["content"] == "eco: hola mundo"
    assert response.headers["x-aprendiz-served-by"] == MODEL and response.headers["x-aprendiz-backend"] == "hosted"
    assert float(response.headers["x-aprendiz-cost-usd"]) > 0
    (generation,) = platform.metrics.generations
    assert (generation["prompt_tokens"], generation["completion_tokens"]) == (2, 3)


def test_a_stream_comes_event_by_event_with_usage_only_when_asked(recording_metrics):
    async def go(include_usage: bool):
        async with InProcessPlatform(CONFIG, recording_metrics()) as client:
            body = {"model": MODEL, "messages": [{"role": "user", "content": "uno dos"}], "stream": True}
            if include_usage:
                body["stream_options"] = {"include_usage": True}
            response = await client.post("/v1/chat/completions", json=body)
            return response.status_code, response.text

    status, text = run(go(False))
    assert status == 200
    events = [e for e in text.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and events[-2].startswith(": x-aprendiz-cost-usd=")
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-2]]
    assert "".join(c["choices"][0]["delta"]["content"] for c in chunks) == "eco: uno dos"
    assert '"usage"' not in text
    _, with_usage = run(go(True))
    assert with_usage.count('"usage"') == 1


def test_the_official_client_sees_models_and_typed_errors(recording_metrics):
    async def go():
        async with InProcessPlatform(CONFIG, recording_metrics()) as http:
            client = openai.AsyncOpenAI(base_url="http://ingress/v1", api_key="none", http_client=http)
            listed = [m.id for m in (await client.models.list()).data]
            completion = await client.completions.create(model=MODEL, prompt="buenos días", max_tokens=4)
            with pytest.raises(openai.NotFoundError) as missing:
                await client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
            with pytest.raises(openai.BadRequestError) as bad:
                await client.chat.completions.create(model=MODEL, messages="not a list")
            return listed, completion, missing.value, bad.value

    listed, completion, missing, bad = run(go())
    assert listed == [MODEL]
    assert completion.choices[0].text == "eco: buenos días"
    assert missing.body["code"] == "model_not_found" and MODEL in missing.body["message"]
    assert bad.status_code == 400 and "messages" in bad.body["message"]


def test_a_full_generator_queue_is_a_503(recording_metrics):
    async def go():
        async with InProcessPlatform(CONFIG, recording_metrics(), generator_fail=BackPressureError(num_queued_requests=1,
                                                                              max_queued_requests=1)) as client:
            return await client.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hola"}]})

    response = run(go())
    assert response.status_code == 503 and "queue of `tiny` is full" in response.json()["error"]["message"]
    assert response.headers["retry-after"] == "1"  # a client backs off instead of hammering a full queue


def test_a_chunked_body_over_the_limit_is_a_413_before_it_is_all_read(recording_metrics):
    """Without Content-Length the size is counted while reading: the read stops at the limit."""
    sent = []

    async def chunks():
        for _ in range(64):
            sent.append(1)
            yield b"x" * 1024

    async def go():
        config = CONFIG | {"ingress": {"max_body_bytes": 8 * 1024}}
        async with InProcessPlatform(config, recording_metrics()) as client:
            return await client.post("/v1/models/cancer:predict", content=chunks())

    response = run(go())
    assert response.status_code == 413 and "limit is 8192" in response.json()["error"]["message"]
    assert len(sent) < 64


def test_a_404_lists_only_the_models_the_key_may_call(tmp_path, recording_metrics):
    keys = KeyFile(tmp_path / "keys.yaml")
    secret, _ = keys.create("team", models=["cancer"])

    async def go():
        config = CONFIG | {"gateway": {"keys_file": str(tmp_path / "keys.yaml")}}
        async with InProcessPlatform(config, recording_metrics()) as client:
            headers = {"Authorization": f"Bearer {secret}"}
            return (await client.post("/v1/chat/completions", headers=headers, json={"model": "nope", "messages": []}),
                    await client.post("/v1/models/nope:predict", headers=headers, json={"instances": [[1.0]]}))

    generator, classifier = run(go())
    assert generator.status_code == 404 and MODEL not in generator.json()["error"]["message"]
    assert classifier.status_code == 404 and "['cancer']" in classifier.json()["error"]["message"]


def test_the_api_document_follows_the_models_rule(tmp_path, recording_metrics):
    """With keys, /openapi.json and /docs need a key as the models do; without, they are open."""
    secret, _ = KeyFile(tmp_path / "keys.yaml").create("team")

    async def go(config):
        async with InProcessPlatform(config, recording_metrics()) as client:
            return [(await client.get(path, headers=headers)).status_code
                    for path in ("/openapi.json", "/docs")
                    for headers in ({}, {"Authorization": f"Bearer {secret}"})]

    assert run(go(CONFIG | {"gateway": {"keys_file": str(tmp_path / "keys.yaml")}})) == [401, 200, 401, 200]
    assert run(go(CONFIG)) == [200, 200, 200, 200]


def test_a_body_nested_too_deeply_is_a_400(recording_metrics):
    async def go():
        async with InProcessPlatform(CONFIG, recording_metrics()) as client:
            deep = b'{"instances": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
            return (await client.post("/v1/models/cancer:predict", content=deep),
                    await client.post("/v1/chat/completions", content=deep))

    for response in run(go()):
        assert response.status_code == 400, response.text
        assert "nested too deeply" in response.json()["error"]["message"]


def test_an_unknown_model_name_is_not_a_metric_label(recording_metrics):
    """A random name must not become a new series: the request metrics say `unknown`."""
    async def go():
        platform = InProcessPlatform(CONFIG, recording_metrics())
        async with platform as client:
            answers = [await client.get("/v1/models/no-such-model-8d1f"),
                       await client.post("/v1/models/no-such-model-8d1f:predict", json={"instances": [[1.0]]}),
                       await client.post("/v1/chat/completions", json={"model": "no-such-model-8d1f", "messages": []})]
            return platform, answers

    platform, answers = run(go())
    assert [a.status_code for a in answers] == [404, 404, 404]
    labels = [model for _, model, _ in platform.answered.calls]
    assert "no-such-model-8d1f" not in labels and labels.count("unknown") == 3


def test_classifier_routes_go_through_the_gateway_with_their_cost(recording_metrics):
    async def go():
        platform = InProcessPlatform(CONFIG, recording_metrics())
        async with platform as client:
            ok = await client.post("/v1/models/cancer:predict", json={"instances": [[1.0, 2.0]]})
            missing = await client.post("/v1/models/other:predict", json={"instances": [[1.0]]})
            bad_json = await client.post("/v1/models/cancer:predict", content=b"{not json")
            ready = await client.get("/v2/health/ready")
            return platform, ok, missing, bad_json, ready

    platform, ok, missing, bad_json, ready = run(go())
    assert ok.status_code == 200 and ok.json()["predictions"][0]["label"] == "yes"
    assert float(ok.headers["x-aprendiz-cost-usd"]) >= 0
    assert missing.status_code == 404 and "cancer" in missing.json()["error"]["message"]
    assert bad_json.status_code == 400 and "not valid JSON" in bad_json.json()["error"]["message"]
    assert ready.json() == {"ready": True}
    assert platform.classifier.bodies == [{"instances": [[1.0, 2.0]]}]
    # Counted by route template; a model is named only once it is known (no series per unknown name).
    assert platform.answered.calls[:3] == [
        ("/v1/models/{name}:predict", "cancer", 200), ("/v1/models/{name}:predict", "unknown", 404),
        ("/v1/models/{name}:predict", "cancer", 400),
    ]


def test_keys_are_checked_before_the_body_is_read(tmp_path, recording_metrics):
    keys = KeyFile(tmp_path / "keys.yaml")
    secret, _ = keys.create("team", models=["cancer"])

    async def go():
        platform = InProcessPlatform(CONFIG | {"gateway": {"keys_file": str(tmp_path / "keys.yaml")}}, recording_metrics())
        async with platform as client:
            anonymous = await client.post("/v1/chat/completions", content=b"{not json")
            denied = await client.post("/v1/chat/completions", headers={"Authorization": f"Bearer {secret}"},
                                       json={"model": MODEL, "messages": [{"role": "user", "content": "x"}]})
            listed = await client.get("/v1/models", headers={"Authorization": f"Bearer {secret}"})
            return platform, anonymous, denied, listed

    platform, anonymous, denied, listed = run(go())
    assert anonymous.status_code == 401
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    assert listed.json()["data"] == []
    assert [c[1]["reason"] for c in platform.metrics.refusals.calls] == ["missing_key", "model_not_allowed"]


def test_feedback_is_a_permission_of_its_own_on_a_key(tmp_path, recording_metrics):
    """A key that may predict may not post feedback (which becomes training labels) unless it was
    created with it; without a key file everyone may."""
    keys = KeyFile(tmp_path / "keys.yaml")
    predicts, _ = keys.create("predicts", models=["cancer"])
    teaches, _ = keys.create("teaches", models=["cancer"], feedback=True)
    body = {"instances": [[1.0, 2.0]], "labels": ["yes"]}

    async def go(config):
        platform = InProcessPlatform(config, recording_metrics())
        async with platform as client:
            answers = [await client.post(f"/v1/models/cancer{path}", headers=headers, json=body)
                       for path, headers in [(":predict", {"Authorization": f"Bearer {predicts}"}),
                                             ("/feedback", {"Authorization": f"Bearer {predicts}"}),
                                             ("/feedback", {"Authorization": f"Bearer {teaches}"})]]
            return platform, answers

    platform, (predicted, refused, taught) = run(go(CONFIG | {"gateway": {"keys_file": str(tmp_path / "keys.yaml")}}))
    assert predicted.status_code == 200 and taught.status_code == 200, (predicted.text, taught.text)
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "feedback_not_allowed"
    assert "feedback" in refused.json()["error"]["message"] and "--feedback" in refused.json()["error"]["message"]
    assert [c[1] for c in platform.metrics.refusals.calls] == [{"reason": "feedback_not_allowed", "key": "predicts"}]
    assert platform.classifier.feedback_bodies == [body]
    _, (_, anonymous, _) = run(go(CONFIG))
    assert anonymous.status_code == 200


def test_probes_name_what_the_entrance_routes_to(recording_metrics):
    async def go():
        async with InProcessPlatform(CONFIG, recording_metrics()) as client:
            return (await client.get("/readyz")).json(), (await client.get("/healthz")).json()

    ready, live = run(go())
    assert ready == {"status": "ready", "models": [MODEL], "rented": [], "classifiers": ["cancer"],
                     "authentication": False, "not_ready": []}
    assert live == {"status": "ok"}


def test_readiness_waits_for_every_generator_and_classifier(recording_metrics):
    """/readyz is 503 while a model cannot answer yet (a generator whose replica still loads its
    engine, a classifier without a version), naming it; /healthz stays 200 (the entrance is alive)."""
    from ray.exceptions import RayActorError

    async def go(platform):
        async with platform as client:
            return await client.get("/readyz"), await client.get("/healthz")

    starting = InProcessPlatform(CONFIG, recording_metrics(), generator_fail=RayActorError())
    ready, live = run(go(starting))
    assert ready.status_code == 503 and live.status_code == 200
    assert ready.json()["status"] == "not_ready" and ready.json()["not_ready"] == [MODEL]

    unloaded = InProcessPlatform(CONFIG, recording_metrics())
    unloaded.classifier.loaded = False
    ready, _ = run(go(unloaded))
    assert ready.status_code == 503 and ready.json()["not_ready"] == ["cancer"]


def test_the_ingress_tunes_its_collector_as_configured(recording_metrics):
    import gc

    async def go():
        async with InProcessPlatform({**CONFIG, "ingress": {"gc_young_threshold": 12_345}}, recording_metrics()):
            return gc.get_threshold()[0]

    assert run(go()) == 12_345


# -- classifiers held in the ingress (placement: ingress) --------------------------------------
@pytest.fixture(scope="module")
def light_store(tmp_path_factory, job_training):
    """A store whose breast-cancer champion the training job trained, and a second version (another
    seed) published but not promoted."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    root = tmp_path_factory.mktemp("light-store")
    registry = ModelRegistry(ObjectStore(str(root)))
    first = job_training.train_builtin(registry, "breast-cancer")
    second = job_training.train_version(registry, "breast-cancer", seed=3, scratch=tmp_path_factory.mktemp("scratch"))
    return registry, first, second


def _light(registry, **extra) -> dict:
    classifier = {"name": "breast-cancer", "store": {"url": registry.store.url}, "poll_interval_s": 0.05, **extra}
    return CONFIG | {"classifiers": [*CONFIG["classifiers"], classifier]}


def _row() -> list[float]:
    from sklearn.datasets import load_breast_cancer

    return load_breast_cancer().data[0].tolist()


def test_a_light_classifier_is_answered_by_the_ingress_itself(light_store, recording_metrics):
    registry, first, _ = light_store

    async def go():
        platform = InProcessPlatform(_light(registry), recording_metrics())
        async with platform as client:
            v1 = await client.post("/v1/models/breast-cancer:predict", json={"instances": [_row()]})
            v2 = await client.post("/v2/models/breast-cancer/infer", json={
                "inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": _row()}]})
            metadata = await client.get("/v2/models/breast-cancer")
            replica_metadata = await client.get("/v2/models/cancer")
            bad = await client.post("/v1/models/breast-cancer:predict", json={"instances": [[1.0]]})
            ready = await client.get("/v2/models/breast-cancer/ready")
            return platform, v1, v2, metadata, replica_metadata, bad, ready

    platform, v1, v2, metadata, replica_metadata, bad, ready = run(go())
    assert v1.status_code == 200 and v1.json()["predictions"][0]["label"] == "malignant"
    assert v1.json()["model_version"] == first and float(v1.headers["x-aprendiz-cost-usd"]) > 0
    assert v2.status_code == 200 and v2.json()["model_version"] == first
    parameters = metadata.json()["parameters"]
    assert parameters["placement"] == "ingress" and "light enough" in parameters["placement_reason"]
    assert replica_metadata.json()["parameters"]["placement"] == "replica"
    assert bad.status_code == 400 and "30 features" in bad.json()["error"]["message"]
    assert ready.json() == {"name": "breast-cancer", "ready": True}
    assert platform.classifier.bodies == []  # the replica-placed classifier was not called


def test_a_swap_in_the_ingress_under_concurrent_requests_fails_none(light_store, recording_metrics):
    registry, first, second = light_store
    results: list[tuple[int, str]] = []

    async def go():
        async with InProcessPlatform(_light(registry), recording_metrics()) as client:
            stop = asyncio.Event()

            async def client_loop():
                while not stop.is_set():
                    r = await client.post("/v1/models/breast-cancer:predict", json={"instances": [_row()] * 3})
                    results.append((r.status_code, r.json().get("model_version", r.text)))
                    await asyncio.sleep(0)  # in-process calls never wait on a socket: let the poller run

            loops = [asyncio.create_task(client_loop()) for _ in range(8)]
            await asyncio.sleep(0.3)
            await asyncio.to_thread(registry.promote, "breast-cancer", second, "test swap")
            deadline = time.monotonic() + 20
            while not any(v == second for _, v in results[-8:]):
                assert time.monotonic() < deadline, "the new champion was never served"
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.3)
            stop.set()
            await asyncio.gather(*loops)

    try:
        run(go())
    finally:
        registry.promote("breast-cancer", first, "back")
    assert [r for r in results if r[0] != 200] == []
    versions = [v for _, v in results]
    assert versions[0] == first and versions[-1] == second
    assert versions.index(second) > versions.count(first) - 1  # once the new one serves, the old one never again


def test_a_classifier_with_no_champion_yet_is_a_503_and_the_entrance_serves_on(tmp_path, light_store, recording_metrics):
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore

    registry, first, _ = light_store
    empty = ModelRegistry(ObjectStore(str(tmp_path / "empty")))
    config = _light(empty, placement="ingress")

    async def go():
        async with InProcessPlatform(config, recording_metrics()) as client:
            before = await client.post("/v1/models/breast-cancer:predict", json={"instances": [_row()]})
            chat = await client.post("/v1/chat/completions", json={"messages": [{"role": "user", "content": "hola"}]})
            ready = await client.get("/v2/health/ready")
            await asyncio.to_thread(empty.import_version, registry, "breast-cancer", first)
            await asyncio.to_thread(empty.promote, "breast-cancer", first, "first champion")
            deadline = time.monotonic() + 20
            while (after := await client.post("/v1/models/breast-cancer:predict",
                                              json={"instances": [_row()]})).status_code != 200:
                assert time.monotonic() < deadline, after.text
                await asyncio.sleep(0.05)
            return before, chat, ready, after

    before, chat, ready, after = run(go())
    assert before.status_code == 503 and "not loaded" in before.json()["error"]["message"]
    assert chat.status_code == 200
    assert ready.status_code == 503
    assert after.json()["model_version"] == first


def test_the_hot_routes_skip_fastapis_dependency_resolution_and_stay_documented(recording_metrics):
    """Predictions are served by plain Starlette routes placed first; FastAPI's routes for the same
    paths stay behind them, in the OpenAPI schema."""
    from aprendiz.services.ingress.app import PlainRoute

    async def go():
        platform = InProcessPlatform(CONFIG, recording_metrics())
        async with platform as client:
            schema = (await client.get("/openapi.json")).json()
            return platform, schema

    platform, schema = run(go())
    assert {"/v1/models/{name}:predict", "/v2/models/{name}/infer"} <= set(schema["paths"])
    app = build_asgi_app(platform.ingress)
    assert [type(r) for r in app.router.routes[:2]] == [PlainRoute, PlainRoute]


def test_a_body_the_engines_own_validators_refuse_is_a_400_naming_the_field(recording_metrics):
    """vLLM's request models raise their own error type from a validator (not a ValueError, so
    pydantic does not wrap it): found by the fuzzing, once a 500."""
    async def go():
        async with InProcessPlatform(CONFIG, recording_metrics()) as client:
            return await client.post("/v1/chat/completions", json={
                "model": MODEL, "messages": [{"role": "user", "content": "hola"}], "stream": False,
                "stream_options": {"include_usage": True}})

    response = run(go())
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == "stream_options" and "only be defined when `stream=True`" in error["message"]
