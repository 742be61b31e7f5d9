"""Every generator family served for real on vLLM's CPU backend, chat templates, and LoRA adapters
(Alpaca-LoRA style) loaded on demand from the S3 store (moto on loopback)."""

from __future__ import annotations

import json
import time

import httpx
import openai
import pytest

pytestmark = pytest.mark.integration

BASE = "aprendiz-tiny-chat"
FAMILIES = {BASE: "LlamaForCausalLM", "tiny-flor": "BloomForCausalLM", "tiny-gpt-neox": "GPTNeoXForCausalLM"}
SYSTEM = "Eres un asistente de Bilbao: respondes con acción, pingüinos y ñandúes. ¿Entendido?"


@pytest.fixture(scope="module")
def client(platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/v1", api_key=platform.api_key, max_retries=0, timeout=120)


def _chat(client, model: str, **extra):
    return client.chat.completions.create(
        model=model, messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hola, ¿qué tal?"}],
        temperature=0, **extra,
    )


@pytest.mark.parametrize("model", sorted(FAMILIES))
def test_each_family_serves_for_real(client, platform, family_models, default_model, model):
    path = family_models.get(model, default_model)
    assert json.loads((path / "config.json").read_text())["architectures"] == [FAMILIES[model]]
    answer = _chat(client, model, max_tokens=8, extra_body={"ignore_eos": True})
    assert answer.usage.completion_tokens == 8 and answer.choices[0].message.content
    streamed = list(client.completions.create(model=model, prompt="Hola", max_tokens=6, stream=True,
                                              extra_body={"ignore_eos": True}))
    assert len([c for c in streamed if c.choices and c.choices[0].text]) >= 2


@pytest.mark.parametrize("model, marker", [(BASE, "<|system|>"), ("tiny-flor", "### System:"),
                                           ("tiny-gpt-neox", "### System:")])
def test_a_spanish_system_prompt_reaches_the_model_intact(client, family_models, default_model, model, marker):
    """Through the family's template (the tiny Llama's own; the platform's default for checkpoints that
    bring none): the rendered prompt, and the token ids the engine saw, hold the system prompt exactly."""
    from transformers import AutoTokenizer

    answer = _chat(client, model, max_tokens=1, extra_body={"return_prompt_text": True, "return_token_ids": True})
    extra = answer.model_extra
    assert SYSTEM in extra["prompt_text"] and extra["prompt_text"].index(marker) < extra["prompt_text"].index(SYSTEM)
    tokenizer = AutoTokenizer.from_pretrained(family_models.get(model, default_model))
    assert SYSTEM in tokenizer.decode(extra["prompt_token_ids"])


def test_two_adapters_answer_differently_from_the_base_and_each_other(client, adapters):
    listed = {m.id for m in client.models.list().data}
    assert {f"{BASE}:{name}" for name in adapters} <= listed
    answers = {model: _chat(client, model, max_tokens=16).choices[0].message.content
               for model in (BASE, *(f"{BASE}:{name}" for name in adapters))}
    assert len(set(answers.values())) == 3, answers
    # Temperature 0: the same adapter answers the same again.
    assert _chat(client, f"{BASE}:alpaca-a", max_tokens=16).choices[0].message.content == answers[f"{BASE}:alpaca-a"]


def test_an_unknown_adapter_is_404_in_openai_shape(client, adapters):
    with pytest.raises(openai.NotFoundError) as raised:
        _chat(client, f"{BASE}:no-such-adapter", max_tokens=4)
    error = raised.value.body
    assert error["code"] == "model_not_found" and "alpaca-a" in error["message"]
    with pytest.raises(openai.NotFoundError):
        _chat(client, "tiny-flor:alpaca-a", max_tokens=4)  # a base model without adapters


def test_a_replica_holds_no_more_adapters_than_configured(client, platform, adapters):
    """max_adapters_per_replica is 1: switching adapters unloads the other (Serve's multiplexing counters)."""
    deployment = f"LLMServer:{BASE}"

    def counters():
        return (platform.metric("ray_serve_multiplexed_models_load_counter_total", deployment=deployment),
                platform.metric("ray_serve_multiplexed_models_unload_counter_total", deployment=deployment))

    loads, unloads = counters()
    for name in ("alpaca-a", "alpaca-b", "alpaca-a", "alpaca-b"):
        _chat(client, f"{BASE}:{name}", max_tokens=2)
    deadline = time.monotonic() + 45
    while counters()[1] < unloads + 3 and time.monotonic() < deadline:
        time.sleep(1)
    new_loads, new_unloads = counters()
    assert new_loads >= loads + 3 and new_unloads >= unloads + 3
    held = platform.metric("ray_serve_num_multiplexed_models", deployment=deployment)
    assert held == 1


def test_requests_arriving_together_for_an_adapter_never_loaded_all_answer(client, stores, default_model, tmp_path):
    """Eight requests at once for an adapter the replica has never loaded: each is answered. (Ray Serve
    LLM loaded the adapter into vLLM once per request, unlocked: a second load of the same adapter
    failed, "has already been loaded", and its request was a 500. `aprendiz evaluate` found it.)"""
    from concurrent.futures import ThreadPoolExecutor

    from aprendiz.loras import AdapterStore
    from aprendiz.training.tinyllm.lora import build_tiny_adapter

    folder = tmp_path / "alpaca-d"
    build_tiny_adapter(default_model, folder, seed=4)
    AdapterStore(stores.s3.store).publish(BASE, "alpaca-d", folder)
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda _: _chat(client, f"{BASE}:alpaca-d", max_tokens=4), range(8)))
    assert all(a.choices[0].message.content is not None for a in answers)


def test_an_adapter_published_while_serving_is_listed_and_served(client, platform, stores, default_model, tmp_path):
    from aprendiz.loras import AdapterStore
    from aprendiz.training.tinyllm.lora import build_tiny_adapter

    folder = tmp_path / "alpaca-c"
    build_tiny_adapter(default_model, folder, seed=3)
    AdapterStore(stores.s3.store).publish(BASE, "alpaca-c", folder)
    answer = _chat(client, f"{BASE}:alpaca-c", max_tokens=4)
    assert answer.choices[0].message.content is not None
    deadline = time.monotonic() + 15
    while f"{BASE}:alpaca-c" not in {m.id for m in client.models.list().data}:
        assert time.monotonic() < deadline, "the new adapter was never listed"
        time.sleep(1)
    assert httpx.get(f"{platform.base_url}/v1/models/{BASE}:alpaca-c", headers=platform.headers, timeout=30).json()[
        "metadata"]["adapter"] == "alpaca-c"
