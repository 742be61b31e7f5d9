"""A text classifier (tokenizer.json + ONNX) beside the tabular ones: V1 strings, V2 BYTES, feedback."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

NAME = "es-or-en"
TEXTS = ["Hola, ¿cómo estás? Me llamo Ana.", "Hello, how are you? My name is Ana.", "¿Cuál es la capital de Chile?"]


@pytest.fixture(scope="module")
def expected(stores) -> np.ndarray:
    from aprendiz.training.text_candidates import text_onnx_probabilities

    artifact = stores.s3.load(NAME, stores.s3.champion(NAME).version)
    return text_onnx_probabilities(artifact.onnx_bytes, artifact.files["tokenizer.json"], TEXTS)[:, 1]


def test_v1_texts_as_strings_and_objects(platform, expected):
    body = {"instances": [TEXTS[0], {"text": TEXTS[1]}, TEXTS[2]]}
    response = httpx.post(f"{platform.base_url}/v1/models/{NAME}:predict", json=body, headers=platform.headers, timeout=30)
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["probability"] for p in predictions] == pytest.approx(expected.tolist(), abs=1e-6)
    assert [p["label"] for p in predictions] == ["spanish", "english", "spanish"]


def test_v2_bytes_with_kserves_client(platform, expected):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        try:
            tensor = InferInput(name="text", shape=[len(TEXTS)], datatype="BYTES")
            tensor.set_data_from_numpy(np.array(TEXTS, dtype=np.object_), binary_data=False)
            request = InferRequest(model_name=NAME, infer_inputs=[tensor], request_id="t1")
            return await client.infer(platform.base_url, request, model_name=NAME, headers=platform.headers)
        finally:
            await client.close()

    outputs = {o.name: o for o in asyncio.run(run()).outputs}
    assert outputs["probability"].as_numpy() == pytest.approx(expected, abs=1e-6)
    assert list(outputs["label"].data) == ["spanish", "english", "spanish"]


def test_text_model_metadata_and_bad_input(platform):
    metadata = httpx.get(f"{platform.base_url}/v2/models/{NAME}", headers=platform.headers, timeout=30).json()
    assert metadata["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]
    assert metadata["parameters"]["labels"] == ["english", "spanish"]
    wrong = httpx.post(f"{platform.base_url}/v1/models/{NAME}:predict", json={"instances": [[1.0, 2.0]]}, headers=platform.headers, timeout=30)
    assert wrong.status_code == 400 and "classifies text" in wrong.json()["error"]["message"]
    numeric = {"inputs": [{"name": "text", "shape": [1], "datatype": "FP32", "data": [1.0]}]}
    wrong = httpx.post(f"{platform.base_url}/v2/models/{NAME}/infer", json=numeric, headers=platform.headers, timeout=30)
    assert wrong.status_code == 400 and "BYTES" in wrong.json()["error"]["message"]


def test_text_feedback_lands_in_the_store(platform, stores):
    before = len(stores.s3.read_feedback(NAME))
    body = {"instances": ["Buenas noches", "Good night"], "labels": ["spanish", "english"]}
    response = httpx.post(f"{platform.base_url}/v1/models/{NAME}/feedback", json=body, headers=platform.headers, timeout=30)
    assert response.status_code == 200, response.text
    records = stores.s3.read_feedback(NAME)[before:]
    assert [(r.text, r.label) for r in records] == [("Buenas noches", 1), ("Good night", 0)]
