"""The gateway, end to end: one key reaches hosted, rented and classifier models; refusals; what it costs.

The rented model's provider is a second, separately started plain vLLM OpenAI server on
loopback (the same tiny model), which demands its own API key (the session's `provider`, in
conftest.py). The last test kills it: no later module may use it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

HOSTED = "aprendiz-tiny-chat"
RENTED = "rented-tiny"


def _client(platform, key: str | None = None) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/v1", api_key=key or platform.api_key, max_retries=0, timeout=120)


def _direct(url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=url, api_key=key, max_retries=0, timeout=120)


MESSAGES = [{"role": "user", "content": "Hola, ¿quién eres?"}]


def _wait_for_metric(platform, name: str, expected: float, *, rel: float = 1e-6, timeout: float = 45, **labels):
    """Ray exports replica metrics every few seconds: poll until the value arrives."""
    deadline = time.monotonic() + timeout
    value = platform.metric(name, **labels)
    while value != pytest.approx(expected, rel=rel) and time.monotonic() < deadline:
        time.sleep(1)
        value = platform.metric(name, **labels)
    return value


def test_one_key_reaches_a_hosted_a_rented_model_and_a_classifier(platform, provider):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig
    from sklearn.datasets import load_breast_cancer

    client = _client(platform)
    listed = {m.id for m in client.models.list().data}
    assert {HOSTED, RENTED, "rented-tiny-fb", "rented-silent"} <= listed
    hosted = client.chat.completions.with_raw_response.create(model=HOSTED, messages=MESSAGES, max_tokens=12)
    rented = client.chat.completions.with_raw_response.create(model=RENTED, messages=MESSAGES, max_tokens=12)
    assert hosted.headers["x-aprendiz-served-by"] == HOSTED and hosted.headers["x-aprendiz-backend"] == "hosted"
    assert rented.headers["x-aprendiz-served-by"] == RENTED and rented.headers["x-aprendiz-backend"] == "rented"
    assert hosted.parse().choices[0].message.content and rented.parse().choices[0].message.content
    assert float(hosted.headers["x-aprendiz-cost-usd"]) > 0 and float(rented.headers["x-aprendiz-cost-usd"]) > 0

    row = load_breast_cancer().data[0].astype("float32").reshape(1, -1)

    async def classify():
        kserve = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        try:
            tensor = InferInput(name="input", shape=list(row.shape), datatype="FP32")
            tensor.set_data_from_numpy(row, binary_data=False)
            return await kserve.infer(
                platform.base_url, InferRequest(model_name="breast-cancer", infer_inputs=[tensor]),
                model_name="breast-cancer", headers=platform.headers,
            )
        finally:
            await kserve.close()

    answer = asyncio.run(classify())
    assert {o.name: o for o in answer.outputs}["label"].data[0] in ("benign", "malignant")


def test_rented_chat_and_stream_equal_calling_the_provider_directly(platform, provider, provider_settings):
    _, url = provider
    gateway, direct = _client(platform), _direct(url, provider_settings.key)
    settings = dict(messages=MESSAGES, max_tokens=24, temperature=0, seed=7)
    through = gateway.chat.completions.create(model=RENTED, **settings)
    straight = direct.chat.completions.create(model=provider_settings.model, **settings)
    assert through.choices[0].message.content == straight.choices[0].message.content
    assert through.usage.prompt_tokens == straight.usage.prompt_tokens
    assert through.usage.completion_tokens == straight.usage.completion_tokens

    chunks = list(gateway.chat.completions.create(model=RENTED, stream=True, **settings))
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == straight.choices[0].message.content
    assert len([c for c in chunks if c.choices]) > 2  # chunk by chunk, not one block
    assert all(c.usage is None for c in chunks)  # no usage chunk: the client did not ask for it

    with_usage = list(gateway.chat.completions.create(
        model=RENTED, stream=True, stream_options={"include_usage": True}, **settings
    ))
    assert with_usage[-1].usage.completion_tokens == straight.usage.completion_tokens

    completion = gateway.completions.create(model=RENTED, prompt="Hola", max_tokens=8, temperature=0)
    assert completion.choices[0].text == direct.completions.create(
        model=provider_settings.model, prompt="Hola", max_tokens=8, temperature=0
    ).choices[0].text


def test_a_rented_model_takes_tools_and_schemas_through_the_entrance(platform, provider):
    """The rented stand-in: a schema's answer validates, a forced tool call comes back as tool_calls and
    the model goes on after the client's tool turn, all through the gateway."""
    import jsonschema

    client = _client(platform)
    schema = {"type": "object", "properties": {"answer": {"type": "string", "enum": ["si", "no"]}},
              "required": ["answer"], "additionalProperties": False}
    shaped = client.chat.completions.create(
        model=RENTED, messages=MESSAGES, max_tokens=40,
        response_format={"type": "json_schema", "json_schema": {"name": "a", "schema": schema, "strict": True}})
    jsonschema.validate(json.loads(shaped.choices[0].message.content), schema)
    tool = {"type": "function", "function": {"name": "get_time", "description": "The time now",
                                             "parameters": {"type": "object", "properties": {}}}}
    asked = [{"role": "user", "content": "What time is it?"}]
    first = client.chat.completions.create(model=RENTED, messages=asked, tools=[tool], tool_choice="required",
                                           max_tokens=100, temperature=0)
    (call,) = first.choices[0].message.tool_calls
    assert call.function.name == "get_time"
    turns = [*asked, first.choices[0].message.model_dump(exclude_none=True),
             {"role": "tool", "tool_call_id": call.id, "content": "17:45"}]
    second = client.chat.completions.create(model=RENTED, messages=turns, tools=[tool], max_tokens=20)
    assert second.choices[0].message.content or second.choices[0].message.tool_calls


def test_rented_usage_is_billed_at_the_configured_prices_and_counted(platform, gateway_keys, provider, provider_settings):
    prices = provider_settings.rented_prices
    client = _client(platform, gateway_keys.keys["billing"])
    prompt = completion = 0
    expected_usd = 0.0
    for max_tokens in (4, 9, 16):
        raw = client.chat.completions.with_raw_response.create(model=RENTED, messages=MESSAGES, max_tokens=max_tokens)
        usage = raw.parse().usage
        cost = (usage.prompt_tokens * prices["input_usd_per_million"]
                + usage.completion_tokens * prices["output_usd_per_million"]) / 1e6
        assert float(raw.headers["x-aprendiz-cost-usd"]) == pytest.approx(cost, rel=1e-6)
        prompt, completion, expected_usd = prompt + usage.prompt_tokens, completion + usage.completion_tokens, expected_usd + cost
    # A stream, whose usage the client never sees: billed all the same, cost as a closing SSE comment.
    with httpx.stream(
        "POST", f"{platform.base_url}/v1/chat/completions", headers=gateway_keys.header("billing"), timeout=120,
        json={"model": RENTED, "messages": MESSAGES, "max_tokens": 6, "temperature": 0, "stream": True},
    ) as response:
        lines = list(response.iter_lines())
    comment = [line for line in lines if line.startswith(": x-aprendiz-cost-usd=")]
    assert len(comment) == 1 and [line for line in lines if line][-1] == "data: [DONE]"
    direct = _direct(provider[1], provider_settings.key).chat.completions.create(
        model=provider_settings.model, messages=MESSAGES, max_tokens=6, temperature=0
    )
    stream_cost = (direct.usage.prompt_tokens * prices["input_usd_per_million"]
                   + direct.usage.completion_tokens * prices["output_usd_per_million"]) / 1e6
    assert float(comment[0].split("=", 1)[1]) == pytest.approx(stream_cost, rel=1e-6)
    prompt += direct.usage.prompt_tokens
    completion += direct.usage.completion_tokens
    expected_usd += stream_cost

    labels = {"key": "billing", "model": RENTED, "backend": "rented"}
    assert _wait_for_metric(platform, "ray_aprendiz_gateway_cost_usd_total", expected_usd, **labels) == pytest.approx(
        expected_usd, rel=1e-6
    )
    assert platform.metric("ray_aprendiz_gateway_tokens_total", kind="prompt", **labels) == prompt
    assert platform.metric("ray_aprendiz_gateway_tokens_total", kind="completion", **labels) == completion


def test_hosted_replicas_accrue_their_hourly_price_and_tokens_are_counted(platform, gateway_keys, provider_settings):
    client = _client(platform, gateway_keys.keys["billing"])
    usages = [client.chat.completions.create(model=HOSTED, messages=MESSAGES, max_tokens=n).usage for n in (5, 10)]
    labels = {"key": "billing", "model": HOSTED, "backend": "hosted"}
    completion = sum(u.completion_tokens for u in usages)
    assert _wait_for_metric(platform, "ray_aprendiz_gateway_tokens_total", completion, kind="completion", **labels) == completion
    assert platform.metric("ray_aprendiz_gateway_tokens_total", kind="prompt", **labels) == sum(u.prompt_tokens for u in usages)
    assert platform.metric("ray_aprendiz_gateway_cost_usd_total", **labels) > 0  # the requests' share, estimated

    # The generator replica (1 CPU at 36 USD/h) accrues 0.01 USD a second while it is up.
    hourly = _wait_for_metric(
        platform, "ray_aprendiz_replica_hourly_usd", provider_settings.cpu_hourly_usd, model=HOSTED, kind="generator"
    )
    assert hourly == pytest.approx(provider_settings.cpu_hourly_usd * 1)
    accrued = platform.metric("ray_aprendiz_replica_cost_usd_total", model=HOSTED, kind="generator")
    up_at_most = time.time() - platform.started_at
    assert 0.01 * 5 < accrued <= 0.01 * up_at_most
    assert platform.metric("ray_aprendiz_replica_cost_usd_total", model="breast-cancer", kind="classifier") > 0


def test_refusals_401_403_429_and_each_is_counted_by_reason(platform, gateway_keys):
    url = f"{platform.base_url}/v1/chat/completions"
    body = {"model": HOSTED, "messages": MESSAGES, "max_tokens": 4}
    before = {r: platform.metric("ray_aprendiz_gateway_refusals_total", reason=r)
              for r in ("missing_key", "invalid_key", "model_not_allowed", "requests_per_minute", "tokens_per_minute")}

    missing = httpx.post(url, json=body, timeout=30)
    assert missing.status_code == 401 and missing.json()["error"]["type"] == "authentication_error"
    assert missing.headers["www-authenticate"].startswith("Bearer")
    wrong = httpx.post(url, json=body, headers={"Authorization": "Bearer apz_0badc0de_" + "A" * 43}, timeout=30)
    assert wrong.status_code == 401
    revoked = httpx.post(url, json=body, headers=gateway_keys.header("revoked"), timeout=30)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError):
        _client(platform, "not-a-key").models.list()

    denied = httpx.post(url, json=body, headers=gateway_keys.header("classifier-only"), timeout=30)
    assert denied.status_code == 403 and denied.json()["error"]["code"] == "model_not_allowed"
    assert [m["id"] for m in httpx.get(f"{platform.base_url}/v1/models", headers=gateway_keys.header("classifier-only"),
                                       timeout=30).json()["data"]] == []

    # classifier-only may make 3 requests a minute.
    predict = f"{platform.base_url}/v1/models/breast-cancer:predict"
    from sklearn.datasets import load_breast_cancer

    instances = {"instances": load_breast_cancer().data[:1].tolist()}
    codes = [httpx.post(predict, json=instances, headers=gateway_keys.header("classifier-only"), timeout=30)
             for _ in range(4)]
    assert [r.status_code for r in codes] == [200, 200, 200, 429]
    assert 1 <= int(codes[-1].headers["retry-after"]) <= 20
    assert codes[-1].json()["error"]["type"] == "rate_limit_error" and "3 requests per minute" in codes[-1].text
    assert codes[0].headers["x-aprendiz-cost-usd"]

    # tokens may spend 30 tokens a minute: the first request overdraws, the next is refused.
    tokens = _client(platform, gateway_keys.keys["tokens"])
    tokens.chat.completions.create(model=HOSTED, messages=MESSAGES, max_tokens=20, extra_body={"ignore_eos": True})
    with pytest.raises(openai.RateLimitError) as limited:
        tokens.chat.completions.create(model=HOSTED, messages=MESSAGES, max_tokens=20)
    assert "tokens per minute" in limited.value.message

    expected = {"missing_key": 1, "invalid_key": 3, "model_not_allowed": 1, "requests_per_minute": 1,
                "tokens_per_minute": 1}
    for reason, count in expected.items():
        value = _wait_for_metric(platform, "ray_aprendiz_gateway_refusals_total", before[reason] + count, reason=reason)
        assert value == before[reason] + count, reason


def test_a_provider_that_never_answers_is_504(platform):
    started = time.monotonic()
    response = httpx.post(
        f"{platform.base_url}/v1/chat/completions", headers=platform.headers, timeout=60,
        json={"model": "rented-silent", "messages": MESSAGES, "max_tokens": 4},
    )
    assert response.status_code == 504 and response.json()["error"]["code"] == "upstream_timeout"
    assert "did not answer within 2 s" in response.json()["error"]["message"]
    assert time.monotonic() - started < 30


def test_no_key_material_in_logs_or_error_bodies(platform, gateway_keys, provider, provider_settings):
    log = platform.log_path.read_text(errors="replace")
    secrets = [provider_settings.key] + [key.split("_", 2)[2] for key in gateway_keys.keys.values()]
    assert not [s for s in secrets if s in log]
    assert "gateway: 4 active keys" in log  # the key file was read (and only counted)


def test_a_killed_provider_gives_502_and_its_fallback_answers_instead(platform, provider, provider_settings):
    process, _ = provider
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    body = {"messages": MESSAGES, "max_tokens": 8}
    down = httpx.post(f"{platform.base_url}/v1/chat/completions", headers=platform.headers,
                      json={"model": RENTED, **body}, timeout=60)
    assert down.status_code == 502, down.text
    error = down.json()["error"]
    assert error["code"] == "upstream_error" and "cannot be reached" in error["message"]
    assert provider_settings.key not in down.text

    client = _client(platform)
    raw = client.chat.completions.with_raw_response.create(model="rented-tiny-fb", **body)
    assert raw.headers["x-aprendiz-served-by"] == HOSTED and raw.headers["x-aprendiz-backend"] == "hosted"
    assert raw.parse().choices[0].message.content
    streamed = list(client.chat.completions.create(model="rented-tiny-fb", stream=True, **body))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices)
    assert _wait_for_metric(platform, "ray_aprendiz_gateway_fallbacks_total", 2, model="rented-tiny-fb",
                            fallback=HOSTED) == 2


def test_cost_command_shows_break_even_from_measured_figures(platform, platform_config, provider_settings, tmp_path):
    prices = provider_settings.rented_prices
    """Measure the hosted model's throughput through the gateway, then `aprendiz cost` on those figures."""

    async def load():
        async with httpx.AsyncClient(base_url=platform.base_url, headers=platform.headers, timeout=120) as client:
            async def one(i):
                response = await client.post("/v1/completions", json={
                    "model": HOSTED, "prompt": f"Hola {i}", "max_tokens": 32, "temperature": 0.8, "ignore_eos": True,
                })
                assert response.status_code == 200, response.text
                return response.json()["usage"]["total_tokens"]

            started = time.perf_counter()
            tokens = await asyncio.gather(*(one(i) for i in range(16)))
            return sum(tokens) / (time.perf_counter() - started)

    tokens_per_s = asyncio.run(load())
    hourly = platform.metric("ray_aprendiz_replica_hourly_usd", model=HOSTED, kind="generator")
    bench = tmp_path / "measured.json"
    bench.write_text(json.dumps({"hosted": [{"model": HOSTED, "replica_hourly_usd": hourly, "tokens_per_s": tokens_per_s}]}))
    aprendiz = str(__import__("pathlib").Path(sys.executable).parent / "aprendiz")
    result = subprocess.run(
        [aprendiz, "cost", "--benchmark", str(bench), "--config", str(platform_config), "--plot", str(tmp_path / "c.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if f"{HOSTED} vs {RENTED}:" in x)
    per_million = hourly / (3600 * tokens_per_s) * 1e6
    blended = (prices["input_usd_per_million"] + prices["output_usd_per_million"]) / 2
    if per_million < blended:
        assert f"{24 * hourly / (blended / 1e6):,.0f} tokens/day" in line
    else:
        assert "never" in line
    assert (tmp_path / "c.png").stat().st_size > 1000
