"""POST /v1/embeddings through the one entrance, with the official `openai` client: the shipped
MiniLM encoder in replicas of its own, answers in OpenAI's shape (base64, as the client asks by
default, and float), the model list, bad input, and keys' token limits."""

from __future__ import annotations

import time

import httpx
import numpy as np
import openai
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

EMBED = "minilm-embeddings"
CHAT = "aprendiz-tiny-chat"
SENTENCES = ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]


@pytest.fixture(scope="module")
def client(platform) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{platform.base_url}/v1", api_key=platform.api_key, max_retries=0, timeout=120)


def test_sentences_become_unit_vectors_that_place_like_meanings_together(client):
    response = client.embeddings.create(model=EMBED, input=SENTENCES)  # the client asks for base64 and decodes it
    vectors = np.array([d.embedding for d in response.data], dtype=np.float32)
    assert vectors.shape == (3, 384) and [d.index for d in response.data] == [0, 1, 2]
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    similar, unrelated = float(vectors[0] @ vectors[1]), float(vectors[0] @ vectors[2])
    assert similar > 0.6 > unrelated, (similar, unrelated)
    assert response.model == EMBED and response.usage.prompt_tokens == response.usage.total_tokens > 3 * 5


def test_float_and_base64_answers_carry_the_same_vector(client):
    floats = client.embeddings.create(model=EMBED, input="Hola, ¿qué tal?", encoding_format="float")
    packed = client.embeddings.create(model=EMBED, input="Hola, ¿qué tal?")
    assert np.allclose(floats.data[0].embedding, packed.data[0].embedding, atol=1e-6)


def test_the_model_list_shows_the_embedding_model_and_its_dimension(client):
    card = {m.id: m.model_dump() for m in client.models.list().data}[EMBED]
    assert card["metadata"]["kind"] == "embedding" and card["metadata"]["dimension"] == 384
    assert card["metadata"]["max_input_tokens"] == 256


@pytest.mark.parametrize(("body", "param", "words"), [
    ({"model": EMBED, "input": []}, "input", "non-empty list"),
    ({"model": EMBED, "input": "hola", "dimensions": 128}, "dimensions", "cannot be shortened"),
    ({"model": EMBED, "input": ["hola", "palabra " * 400]}, "input", "input[1] is"),
    ({"model": CHAT, "input": "hola"}, "model", "is a chat model"),
    ({"input": "hola"}, "model", "`model` is required"),
])
def test_bad_input_is_a_400_that_names_the_field_and_the_model_keeps_serving(platform, body, param, words):
    response = httpx.post(f"{platform.base_url}/v1/embeddings", json=body, headers=platform.headers, timeout=60)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == param and words in error["message"]
    ok = httpx.post(f"{platform.base_url}/v1/embeddings", json={"model": EMBED, "input": "hola"},
                    headers=platform.headers, timeout=60)
    assert ok.status_code == 200


def test_an_embedding_model_is_not_a_chat_model(client):
    with pytest.raises(openai.BadRequestError, match="is an embedding model: send it to /v1/embeddings"):
        client.chat.completions.create(model=EMBED, messages=[{"role": "user", "content": "hola"}], max_tokens=4)


def test_embedding_tokens_count_against_a_keys_token_limit(platform, gateway_keys):
    from aprendiz.keys import KeyFile

    key, _ = KeyFile(gateway_keys.path).create("embedding-tokens", models=[EMBED], tokens_per_minute=20)
    limited = openai.OpenAI(base_url=f"{platform.base_url}/v1", api_key=key, max_retries=0, timeout=60)
    deadline = time.monotonic() + 20

    def once_the_key_is_known(texts):
        """Each ingress replica reloads the key file every second on its own: until both have, a
        request may land on one that does not know the key yet."""
        while True:
            try:
                return limited.embeddings.create(model=EMBED, input=texts)
            except openai.AuthenticationError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)

    spent = once_the_key_is_known(SENTENCES * 2)  # about 40 tokens: overdraws the minute's 20
    assert spent.usage.prompt_tokens > 20
    with pytest.raises(openai.RateLimitError, match="tokens per minute"):
        once_the_key_is_known("hola")
