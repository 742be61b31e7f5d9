"""The generator through the one ingress, called with the official `openai` client."""

from __future__ import annotations

import json
import re

import httpx
import openai
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "aprendiz-tiny-chat"


@pytest.fixture(scope="module")
def client(platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/v1", api_key=platform.api_key, max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def corpus_words() -> set[str]:
    from aprendiz.training.tinyllm.build import load_corpus

    words = set()
    for conversation in load_corpus():
        for message in conversation:
            words.update(re.findall(r"\w+", message["content"].lower()))
    return words


def chat(client, content: str, **kwargs):
    return client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": content}], **kwargs
    )


def test_models_lists_the_configured_generator(client):
    ids = [m.id for m in client.models.list().data]
    assert ids[0] == MODEL  # hosted generators first, in config order; then adapters, then rented models
    assert client.models.retrieve(MODEL).id == MODEL


@pytest.mark.parametrize("prompt", ["Hola, ¿qué tal?", "Hello, what is your name?"])
def test_chat_answers_with_words_from_its_languages(client, corpus_words, prompt):
    response = chat(client, prompt, max_tokens=40, temperature=0)
    text = response.choices[0].message.content
    words = re.findall(r"\w+", text.lower())
    assert words, f"empty answer to {prompt!r}"
    known = [w for w in words if w in corpus_words]
    # A trained model answers in the corpus's Spanish and English, not noise.
    assert len(known) >= 0.8 * len(words), f"{prompt!r} -> {text!r}"
    assert response.choices[0].message.role == "assistant"
    usage = response.usage
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens


def test_temperature_zero_is_deterministic(client):
    first = chat(client, "¿Qué es un clasificador binario?", max_tokens=40, temperature=0)
    second = chat(client, "¿Qué es un clasificador binario?", max_tokens=40, temperature=0)
    assert first.choices[0].message.content == second.choices[0].message.content
    assert first.choices[0].message.content


def test_max_tokens_is_respected(client):
    response = chat(client, "Tell me about machine learning.", max_tokens=3, temperature=0)
    assert response.usage.completion_tokens == 3
    assert response.choices[0].finish_reason == "length"


def test_stop_sequence_is_respected(client):
    full = chat(client, "Hello", max_tokens=40, temperature=0).choices[0].message.content
    words = full.split()
    assert len(words) >= 3, f"answer too short to test stop: {full!r}"
    stop = words[len(words) // 2]
    cut = chat(client, "Hello", max_tokens=40, temperature=0, stop=[stop])
    assert cut.choices[0].message.content == full[: full.index(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_streaming_chat_arrives_in_chunks_and_matches_the_whole_answer(client):
    whole = chat(client, "Good morning!", max_tokens=30, temperature=0).choices[0].message.content
    stream = chat(
        client, "Good morning!", max_tokens=30, temperature=0, stream=True, stream_options={"include_usage": True}
    )
    pieces, usage, finish = [], None, None
    for chunk in stream:
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            if choice.delta.content:
                pieces.append(choice.delta.content)
            finish = choice.finish_reason or finish
    assert len(pieces) >= 3, pieces
    assert "".join(pieces) == whole
    assert finish in ("stop", "length")
    assert usage is not None and usage.completion_tokens > 0 and usage.prompt_tokens > 0


def test_completion_with_raw_prompt(client):
    prompt = "<|user|>\nHola<|end|>\n<|assistant|>\n"
    response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
    assert response.choices[0].text.strip()
    assert response.usage.prompt_tokens > 0 and response.usage.completion_tokens > 0
    again = client.completions.create(model=MODEL, prompt=prompt, max_tokens=20, temperature=0)
    assert again.choices[0].text == response.choices[0].text


def test_streaming_completion(client):
    stream = client.completions.create(
        model=MODEL, prompt="<|user|>\nHello<|end|>\n<|assistant|>\n", max_tokens=10, temperature=0, stream=True
    )
    texts = [c.choices[0].text for c in stream if c.choices]
    assert len(texts) >= 2 and "".join(texts).strip()


def test_unknown_model_is_404_in_openai_shape(client, platform):
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    error = raised.value.body
    assert "no-such-model" in error["message"] and MODEL in error["message"]
    assert error["code"] == "model_not_found" and error["type"] == "invalid_request_error"
    response = httpx.get(f"{platform.base_url}/v1/models/no-such-model", headers=platform.headers, timeout=10)
    assert response.status_code == 404 and response.json()["error"]["code"] == "model_not_found"


def test_malformed_bodies_get_a_readable_400_and_the_server_keeps_serving(client, platform):
    url = f"{platform.base_url}/v1/chat/completions"
    not_json = httpx.post(
        url, content=b"{not json", headers={"Content-Type": "application/json", **platform.headers}, timeout=10
    )
    assert not_json.status_code == 400
    assert "not valid JSON" in not_json.json()["error"]["message"]

    wrong_type = httpx.post(url, json={"model": MODEL, "messages": "hello"}, headers=platform.headers, timeout=10)
    assert wrong_type.status_code == 400
    body = wrong_type.json()["error"]
    assert body["param"] == "messages" and "messages" in body["message"], body

    missing = httpx.post(url, json={"model": MODEL}, headers=platform.headers, timeout=10)
    assert missing.status_code == 400 and "messages" in missing.json()["error"]["message"]

    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=100_000
        )

    # Still serving.
    assert chat(client, "Hola", max_tokens=5).choices[0].message.content


def test_health_probes(platform):
    assert httpx.get(f"{platform.base_url}/healthz", timeout=10).json() == {"status": "ok"}
    ready = httpx.get(f"{platform.base_url}/readyz", timeout=10).json()
    assert ready["status"] == "ready" and MODEL in ready["models"]


def test_streamed_body_is_server_sent_events(platform):
    with httpx.stream(
        "POST",
        f"{platform.base_url}/v1/chat/completions",
        json={"model": MODEL, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 5, "stream": True},
        headers=platform.headers,
        timeout=60,
    ) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        events = [line for line in response.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "data: [DONE]"
    assert json.loads(events[0][len("data: "):])["object"] == "chat.completion.chunk"
