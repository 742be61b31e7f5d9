"""Mixed tabular data end to end, in-process: numbers and categories with missing values and a 3 %
positive rate, read and encoded by the training job, exported with the encoder inside the ONNX
graph, checked against scikit-learn, promoted, and served by the real classifier server (V1
objects with strings and nulls, V2 one input per column, JSON and binary), with feedback that
carries strings and nulls back into the next run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aprendiz.columns import Columns, feeds_from_matrix, one_hot
from aprendiz.errors import InvalidRequestError
from aprendiz.registry import Feature, ModelRegistry
from aprendiz.services.classifier.deployment import ClassifierServer
from aprendiz.store import ObjectStore
from aprendiz.training.config import TrainingConfig
from aprendiz.training.dataset import load_dataset
from aprendiz.training.job import run_training
from aprendiz.training.synthetic import TRAINING_YAML, credit_csv, credit_frame

NAME = "credit"
ROWS = 4000


@pytest.fixture(autouse=True)
def _replica(replica_context):
    """Every server here is built as in a replica (the shared stand-in of tests/unit/conftest.py)."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The credit table (3 % positives) trained and promoted by the job: (store root, result)."""
    root = tmp_path_factory.mktemp("credit-store")
    store = ObjectStore(str(root))
    store.write_bytes(f"datasets/{NAME}/data.csv", credit_csv(ROWS))
    store.write_bytes(f"datasets/{NAME}/training.yaml", (TRAINING_YAML + "unseen_categories: refuse\n").encode())
    result = run_training(ModelRegistry(store), NAME, TrainingConfig.load(store, NAME))
    return root, result


@pytest.fixture
def run(serve_loop):
    return serve_loop


async def _server(root) -> ClassifierServer:
    server = ClassifierServer.__new__(ClassifierServer)
    await server.__init__(model={"name": NAME, "poll_interval_s": 0.05}, store={"url": str(root)})
    return server


def test_the_schema_is_inferred_with_categories_missing_values_and_the_id_left_out(trained):
    root, result = trained
    card = ModelRegistry(ObjectStore(str(root))).load(NAME, result.version).card
    by_name = {f.name: f for f in card.features}
    assert list(by_name) == ["age", "income", "balance", "student", "plan", "region"]
    assert result.left_out == {"customer_id": f"an id: {ROWS} distinct integers in {ROWS} rows"}
    assert (by_name["age"].type, by_name["income"].type) == ("int", "float")
    assert by_name["income"].missing and not by_name["balance"].missing
    assert by_name["student"].levels == ["No", "Yes"]  # YAML 1.2: the strings as written, not booleans
    assert by_name["plan"].levels == ["basic", "gold", "plus"] and by_name["plan"].missing
    assert by_name["region"].unseen == "refuse"
    assert card.labels == ("No", "Yes") and card.graph_inputs() == list(by_name)
    assert card.training["categories"].startswith("one-hot inside the graph")
    assert card.training["missing_numbers"]


def test_every_default_candidate_exports_with_the_encoder_and_agrees_with_scikit_learn(trained):
    _, result = trained
    assert result.promoted, result.reason
    rows = {c["name"]: c for c in result.candidates}
    assert set(rows) == {"knn", "logistic_regression", "mlp", "gradient_boosting"}
    for name, row in rows.items():
        assert row["error"] is None, (name, row["error"])
        assert row["onnx_max_diff"] <= 1e-4 + (0.2 if name == "knn" else 0)
    # imbalanced: PR-AUC leads and the rare class is found at all
    assert result.best_metrics["pr_auc"] > 0.5 and result.best_metrics["recall"] > 0


def test_v1_objects_with_strings_and_nulls_and_v2_one_input_per_column_agree(trained, run):
    root, result = trained
    frame = credit_frame(8, seed=11)
    instances = []
    for record in frame.drop(columns=["customer_id", "default"]).to_dict("records"):
        instances.append({k: (None if isinstance(v, float) and np.isnan(v) else v) for k, v in record.items()})
    instances[0]["income"] = None
    instances[1]["plan"] = None
    del instances[2]["income"]  # a feature that may be missing may be left out

    async def go():
        server = await _server(root)
        v1 = await server.predict_v1({"instances": instances})
        as_lists = await server.predict_v1({"instances": [[i.get(k) for k in
                                                             ("age", "income", "balance", "student", "plan", "region")]
                                                            for i in instances]})
        inputs = []
        for name, datatype in (("age", "INT64"), ("income", "FP64"), ("balance", "FP32"), ("student", "BYTES"),
                               ("plan", "BYTES"), ("region", "BYTES")):
            inputs.append({"name": name, "datatype": datatype, "shape": [len(instances), 1],
                           "data": [i.get(name) for i in instances]})
        v2 = await server.infer_v2(json.dumps({"inputs": inputs}).encode(), None)
        return v1, as_lists, v2, await server.metadata_v2()

    v1, as_lists, v2, metadata = run(go())
    p1 = [p["probability"] for p in v1["predictions"]]
    assert {p["model_version"] for p in v1["predictions"]} == {result.version}
    assert [p["probability"] for p in as_lists["predictions"]] == pytest.approx(p1, abs=1e-6)
    outputs = {o["name"]: o for o in v2["outputs"]}
    assert outputs["probability"]["data"] == pytest.approx(p1, abs=1e-6)
    assert [i["name"] for i in metadata["inputs"]] == ["age", "income", "balance", "student", "plan", "region"]
    assert {i["name"]: i["datatype"] for i in metadata["inputs"]}["plan"] == "BYTES"
    assert metadata["parameters"]["schema"][4]["levels"] == ["basic", "gold", "plus"]


def test_v2_binary_tensors_from_the_kserve_client_types_are_read(trained, run):
    from kserve import InferInput, InferRequest

    root, _ = trained
    inputs = []
    for name, values in (("age", np.asarray([[30], [64]], dtype=np.int64)),
                         ("income", np.asarray([[np.nan], [52000.0]], dtype=np.float32)),
                         ("balance", np.asarray([[4000.0], [10.0]], dtype=np.float32)),
                         ("student", np.asarray([["Yes"], ["No"]], dtype=object)),
                         ("plan", np.asarray([["basic"], ["gold"]], dtype=object)),
                         ("region", np.asarray([["north"], ["west"]], dtype=object))):
        tensor = InferInput(name, list(values.shape), "BYTES" if values.dtype == object else
                            {"int64": "INT64", "float32": "FP32"}[str(values.dtype)])
        tensor.set_data_from_numpy(values, binary_data=True)
        inputs.append(tensor)
    body, header_length = InferRequest(model_name=NAME, infer_inputs=inputs).to_rest()

    async def go():
        server = await _server(root)
        binary = await server.infer_v2(body, header_length)
        as_json = await server.predict_v1({"instances": [
            {"age": 30, "income": None, "balance": 4000.0, "student": "Yes", "plan": "basic", "region": "north"},
            {"age": 64, "income": 52000.0, "balance": 10.0, "student": "No", "plan": "gold", "region": "west"}]})
        return binary, as_json

    binary, as_json = run(go())
    got = {o["name"]: o for o in binary["outputs"]}["probability"]["data"]
    assert got == pytest.approx([p["probability"] for p in as_json["predictions"]], abs=1e-6)
    assert got[0] > got[1]  # a basic-plan student with a high balance is the riskier


@pytest.mark.parametrize("instance, expected", [
    ({"age": 30, "income": 1.0, "balance": 2.0, "student": "Yes", "plan": "gold", "region": "mars"},
     "instances[0].region: 'mars' is not a level of category 'region'"),
    ({"age": 30, "income": 1.0, "balance": None, "student": "Yes", "plan": "gold", "region": "north"},
     "instances[0].balance is missing; feature 'balance' is required"),
    ({"age": 30, "income": 1.0, "student": "Yes", "plan": "gold", "region": "north"},
     "instances[0]: missing features ['balance']"),
    ({"age": 30, "income": 1.0, "balance": 2.0, "student": 1.5, "plan": "gold", "region": "north"},
     "instances[0].student must be a level of category 'student'"),
    ({"age": "old", "income": 1.0, "balance": 2.0, "student": "No", "plan": "gold", "region": "north"},
     "instances[0].age must be a number"),
    ({"age": 30, "income": 1.0, "balance": 2.0, "student": ["No"], "plan": "gold", "region": "north"},
     "instances[0].student must be a level of category 'student'"),
])
def test_bad_values_are_a_400_that_names_the_feature(trained, run, instance, expected):
    root, _ = trained

    async def go():
        server = await _server(root)
        with pytest.raises(InvalidRequestError) as raised:
            await server.predict_v1({"instances": [instance]})
        return raised.value.message

    assert expected in run(go())


@pytest.mark.parametrize("change, expected", [
    (lambda inputs: inputs.pop(), "missing inputs ['region']"),
    (lambda inputs: inputs[3].update(datatype="FP32", data=[1.0]), "category 'student' takes BYTES"),
    (lambda inputs: inputs[0].update(datatype="BYTES", data=["x"]), "number 'age' takes"),
    (lambda inputs: inputs[2].update(data=[None]), "input 'balance' row 0 is missing"),
    (lambda inputs: inputs[1].update(shape=[2, 1], data=[1.0, 2.0]), "input 'income' has 2 rows"),
    (lambda inputs: inputs[5].update(data=["mars"]), "'mars' is not a level of category 'region'"),
])
def test_bad_v2_columns_are_a_400_that_names_the_input(trained, run, change, expected):
    root, _ = trained
    inputs = [{"name": n, "datatype": d, "shape": [1, 1], "data": [v]} for n, d, v in (
        ("age", "INT64", 30), ("income", "FP32", 1.0), ("balance", "FP32", 2.0), ("student", "BYTES", "No"),
        ("plan", "BYTES", "gold"), ("region", "BYTES", "north"))]
    change(inputs)

    async def go():
        server = await _server(root)
        with pytest.raises(InvalidRequestError) as raised:
            await server.infer_v2(json.dumps({"inputs": inputs}).encode(), None)
        return raised.value.message

    assert expected in run(go())


def test_feedback_with_strings_and_nulls_is_stored_and_read_back_by_the_next_run(trained, run):
    root, _ = trained
    feedback = {"instances": [{"age": 41, "income": None, "balance": 9000.0, "student": "Yes", "plan": None,
                               "region": "east"}], "labels": ["Yes"]}

    async def go():
        server = await _server(root)
        return await server.feedback(feedback)

    answer = run(go())
    assert answer["accepted"] == 1
    store = ObjectStore(str(root))
    record = json.loads(store.read_bytes(answer["key"]).decode().splitlines()[0])
    assert record["features"] == {"age": 41.0, "income": None, "balance": 9000.0, "student": "Yes", "plan": None,
                                  "region": "east"}
    config = TrainingConfig.load(store, NAME)
    from aprendiz.training.config import load_schema

    dataset = load_dataset(store, NAME, config, kept_schema=load_schema(store, NAME), labels=("No", "Yes"))
    assert dataset.from_feedback.sum() == 1 and not any(q["source"] == "feedback" for q in dataset.quarantine)
    row = dataset.x[dataset.from_feedback][0]
    features = dataset.features
    feeds = feeds_from_matrix(row[None, :], features)
    assert np.isnan(feeds["income"][0, 0]) and feeds["plan"][0, 0] == "" and feeds["region"][0, 0] == "east"


def test_na_markers_blank_cells_and_declared_categories(local_store):
    local_store.write_bytes("datasets/m/d.csv", (
        "n,colour,size,label\n"
        + "".join(f"{i},{'red' if i % 2 else 'blue'},{i % 3},{i % 2}\n" for i in range(30))
        + "NA,red,1,1\n5,,2,0\n7,N/A,2,1\n8,green,true,0\n"
    ).encode())
    config = TrainingConfig(features=[Feature(name="n", missing=True), Feature(name="colour", type="category"),
                                      Feature(name="size", type="category", levels=["0", "1", "2"], unseen="refuse")])
    dataset = load_dataset(local_store, "m", config, kept_schema=None, labels=None)
    colour = dataset.features[1]
    assert colour.levels == ["blue", "green", "red"] and not colour.missing
    reasons = sorted(q["reason"] for q in dataset.quarantine)
    assert reasons == ["feature 'size': 'true' is not one of its levels (the feature refuses unseen values)",
                       "missing value for feature 'colour'", "missing value for feature 'colour'"]
    assert len(dataset.y) == 31 and np.isnan(dataset.x[30, 0])  # "NA" is missing, and n may be missing
    assert dataset.x.shape[1] == 1 + 3 + 3


def test_the_encoder_and_its_inverse_round_trip():
    features = [Feature(name="a"), Feature(name="c", type="category", levels=["x", "y"], missing=True)]
    texts = ["y", None, "x", "zzz"]
    matrix = np.concatenate([np.asarray([[1.0], [np.nan], [3.0], [4.0]], dtype=np.float32), one_hot(texts, ["x", "y"])],
                            axis=1)
    feeds = feeds_from_matrix(matrix, features)
    assert feeds["c"][:, 0].tolist() == ["y", "", "x", ""]  # unseen and missing both set no level
    assert len(Columns.concat([Columns(feeds), Columns(feeds)])) == 8


def test_pandas_missing_markers_from_arrow_backed_columns_are_missing_values():
    """Ray Data hands the distributed job Parquet blocks as pandas frames whose string and nullable
    columns hold ``pd.NA`` (not None): a missing category, number or label. It was read as "<NA> is
    not a category level" and the row quarantined."""
    import pandas as pd

    from aprendiz.columns import category_text
    from aprendiz.training.dataset import validate_rows

    assert category_text(pd.NA) is None and category_text(pd.NaT) is None
    features = [Feature(name="plan", type="category", levels=["basic", "gold"], missing=True),
                Feature(name="income", missing=True)]
    frame = pd.DataFrame({
        "plan": pd.array(["gold", None, "basic"], dtype="string[pyarrow]"),
        "income": pd.array([1.5, None, 2.0], dtype="Float64"),
        "label": pd.array(["Yes", "No", None], dtype="string[pyarrow]"),
    })
    x, y, bad = validate_rows(frame, np.arange(3), "shard", features, "label", ("No", "Yes"))
    assert y.tolist() == [1, 0] and np.isnan(x[1, 2]) and x[1, :2].tolist() == [0.0, 0.0]
    assert [b["reason"] for b in bad] == ["missing label"]
    mixed = pd.DataFrame({"plan": ["gold"] * 2, "income": pd.Series([pd.NA, "2.5"], dtype=object), "label": ["No", "Yes"]})
    x, _, bad = validate_rows(mixed, np.arange(2), "shard", features, "label", ("No", "Yes"))
    assert not bad and np.isnan(x[0, 2]) and x[1, 2] == 2.5
