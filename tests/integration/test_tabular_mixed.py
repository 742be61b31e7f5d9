"""A mixed-type classifier on the shared platform: the generated credit table (numbers and
categories, missing values, 3 % positives) trained and promoted by the job, served through the
real entrance (placement auto: in the ingress) over V1 (objects with strings and nulls) and V2
(one input per column, BYTES for categories) with KServe's own client, and its bad input refused
with 400s that name the feature."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

MODEL = "credit"
FEATURES = ("age", "income", "balance", "student", "plan", "region")
CUSTOMERS = [
    {"age": 23, "income": None, "balance": 5200.0, "student": "Yes", "plan": "basic", "region": "north"},
    {"age": 61, "income": 81000.0, "balance": 120.5, "student": "No", "plan": None, "region": "west"},
    {"age": 40, "income": 30500.0, "balance": 2100.0, "student": "No", "plan": "gold", "region": "centre"},
]


@pytest.fixture(scope="module")
def http(platform) -> httpx.Client:
    with httpx.Client(base_url=platform.base_url, headers=platform.headers, timeout=60) as client:
        yield client


@pytest.fixture(scope="module")
def expected(stores) -> tuple[str, list[float]]:
    """The champion's version and its probabilities for CUSTOMERS, by onnxruntime on its own bytes."""
    import onnxruntime as ort

    version = stores.local.champion(MODEL).version
    artifact = stores.local.load(MODEL, version)
    session = ort.InferenceSession(artifact.onnx_bytes, providers=["CPUExecutionProvider"])
    feeds = {}
    for feature in artifact.card.features:
        values = [c[feature.name] for c in CUSTOMERS]
        if feature.type == "category":
            feeds[feature.name] = np.asarray([[v or ""] for v in values], dtype=object)
        else:
            feeds[feature.name] = np.asarray([[np.nan if v is None else v] for v in values], dtype=np.float32)
    (probabilities,) = session.run(["probabilities"], feeds)
    return version, probabilities[:, 1].tolist()


def test_v1_objects_with_strings_and_nulls(http, expected):
    version, probabilities = expected
    response = http.post(f"/v1/models/{MODEL}:predict", json={"instances": CUSTOMERS})
    assert response.status_code == 200, response.text
    predictions = response.json()["predictions"]
    assert [p["probability"] for p in predictions] == pytest.approx(probabilities, abs=1e-6)
    assert {p["model_version"] for p in predictions} == {version}
    assert {p["label"] for p in predictions} <= {"No", "Yes"}


def test_v2_one_input_per_column_with_kserves_own_client(platform, expected):
    from kserve import InferenceRESTClient, InferInput, InferRequest, RESTConfig

    _, probabilities = expected
    columns = {name: [c[name] for c in CUSTOMERS] for name in FEATURES}

    def tensors(binary: bool) -> list:
        out = []
        for name, values in columns.items():
            if name in ("student", "plan", "region"):
                tensor = InferInput(name, [len(values), 1], "BYTES")
                tensor.set_data_from_numpy(np.asarray([[v or ""] for v in values], dtype=object), binary_data=binary)
            else:
                if binary:  # NaN (missing) travels in the binary extension
                    tensor = InferInput(name, [len(values), 1], "FP32")
                    tensor.set_data_from_numpy(np.asarray([[np.nan if v is None else v] for v in values],
                                                          dtype=np.float32), binary_data=True)
                else:  # JSON: null is missing
                    tensor = InferInput(name, [len(values), 1], "FP32", data=list(values))
            out.append(tensor)
        return out

    async def run():
        client = InferenceRESTClient(RESTConfig(protocol="v2", timeout=60))
        try:
            assert await client.is_model_ready(platform.base_url, MODEL, headers=platform.headers)
            return [await client.infer(platform.base_url, InferRequest(model_name=MODEL, infer_inputs=tensors(binary)),
                                       model_name=MODEL, headers=platform.headers) for binary in (False, True)]
        finally:
            await client.close()

    for response in asyncio.run(run()):
        outputs = {o.name: o for o in response.outputs}
        assert outputs["probability"].as_numpy().tolist() == pytest.approx(probabilities, abs=1e-6)


def test_v2_metadata_lists_one_input_per_column(http):
    metadata = http.get(f"/v2/models/{MODEL}").json()
    assert [(i["name"], i["datatype"]) for i in metadata["inputs"]] == [
        ("age", "FP32"), ("income", "FP32"), ("balance", "FP32"), ("student", "BYTES"), ("plan", "BYTES"),
        ("region", "BYTES")]
    schema = {f["name"]: f for f in metadata["parameters"]["schema"]}
    assert schema["plan"]["levels"] == ["basic", "gold", "plus"] and schema["plan"]["missing"] is True
    assert schema["balance"]["missing"] is False


@pytest.mark.parametrize("change, words", [
    ({"region": "mars"}, ["instances[0].region", "'mars' is not a level of category 'region'"]),
    ({"balance": None}, ["instances[0].balance is missing", "required"]),
    ({"student": 2.5}, ["instances[0].student must be a level of category 'student'"]),
    ({"age": "forty"}, ["instances[0].age must be a number"]),
])
def test_bad_values_are_a_400_naming_the_feature_and_serving_goes_on(http, expected, change, words):
    response = http.post(f"/v1/models/{MODEL}:predict", json={"instances": [CUSTOMERS[0] | change]})
    assert response.status_code == 400, response.text
    message = response.json()["error"]["message"]
    for word in words:
        assert word in message
    assert "Traceback" not in response.text
    again = http.post(f"/v1/models/{MODEL}:predict", json={"instances": CUSTOMERS[:1]})
    assert again.status_code == 200 and again.json()["predictions"][0]["probability"] == pytest.approx(
        expected[1][0], abs=1e-6)
