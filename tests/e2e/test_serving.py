"""The CPU scenario's endpoints through the release's Service: OpenAI chat (plain and streamed),
KServe V1 and V2, feedback."""

from __future__ import annotations

CHAT_MODEL = "aprendiz-tiny-chat"


def _openai(cluster):
    from openai import OpenAI

    return OpenAI(base_url=f"{cluster.base_url}/v1", api_key=cluster.api_key or "none", timeout=120, max_retries=2)


def test_models_listed(cluster):
    with cluster.client() as client:
        answer = client.get("/v1/models")
    assert answer.status_code == 200, answer.text
    assert CHAT_MODEL in {m["id"] for m in answer.json()["data"]}


def test_chat_completion(cluster):
    answer = _openai(cluster).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hola"}], max_tokens=16
    )
    assert answer.choices[0].message.content
    assert answer.usage.completion_tokens >= 1


def test_chat_completion_streamed(cluster):
    stream = _openai(cluster).chat.completions.create(
        model=CHAT_MODEL, messages=[{"role": "user", "content": "Hello"}], max_tokens=16,
        stream=True, stream_options={"include_usage": True},
    )
    pieces, usage = [], None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.usage:
            usage = chunk.usage
    assert len(pieces) >= 2, pieces
    assert usage is not None and usage.completion_tokens >= 1


def test_kserve_v1_predict(cluster, breast_cancer_row):
    with cluster.client() as client:
        answer = client.post("/v1/models/breast-cancer:predict", json={"instances": [breast_cancer_row]})
    assert answer.status_code == 200, answer.text
    prediction = answer.json()["predictions"][0]
    assert prediction["label"] == "malignant" and prediction["probability"] > 0.5 and prediction["model_version"]


def test_kserve_v2_infer(cluster, breast_cancer_row):
    body = {"inputs": [{"name": "input", "shape": [1, 30], "datatype": "FP32", "data": breast_cancer_row}]}
    with cluster.client() as client:
        assert client.get("/v2/health/ready").status_code == 200
        answer = client.post("/v2/models/breast-cancer/infer", json=body)
    assert answer.status_code == 200, answer.text
    outputs = {o["name"]: o["data"] for o in answer.json()["outputs"]}
    assert outputs["label"] == ["malignant"]


def test_feedback_is_stored(cluster, breast_cancer_row):
    with cluster.client() as client:
        answer = client.post(
            "/v1/models/breast-cancer/feedback", json={"instances": [breast_cancer_row], "labels": ["malignant"]}
        )
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["accepted"] == 1 and body["key"].startswith("feedback/breast-cancer/")
