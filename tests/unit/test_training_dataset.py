"""aprendiz.training.dataset and .config: reading, validation, quarantine, feedback merge, schema, training.yaml."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aprendiz.registry import Feature, FeedbackRecord, ModelRegistry
from aprendiz.training.config import TrainingConfig, TrainingConfigError, default_candidates
from aprendiz.training.dataset import (
    DatasetError,
    TextDatasetError,
    check_trainable,
    load_dataset,
    seed_breast_cancer_dataset,
    split_dataset,
)


def _load(store, name="bc", config=None, **kwargs):
    return load_dataset(store, name, config or TrainingConfig(), kept_schema=kwargs.get("schema"), labels=kwargs.get("labels"))


def test_seed_writes_breast_cancer_once(local_store):
    assert seed_breast_cancer_dataset(local_store) is True
    assert seed_breast_cancer_dataset(local_store) is False
    frame = pd.read_csv(local_store.url + "/datasets/breast-cancer/data.csv")
    assert frame.shape == (569, 31) and list(frame.columns[:2]) == ["mean radius", "mean texture"]
    assert frame["label"].sum() == 212  # malignant is the positive class
    # the cards the job writes name the classes, so clients can send "malignant" as feedback
    assert TrainingConfig.load(local_store, "breast-cancer").labels == ("benign", "malignant")


def test_csv_parquet_and_jsonl_are_read_and_bad_rows_quarantined(local_store):
    csv = "a,b,label\n1,2.5,1\n2,x,0\n3,inf,1\n4,5,\n5,6,1,extra\n6,7,2\n7,8,0\n"
    local_store.write_bytes("datasets/bc/part-1.csv", csv.encode())
    buffer = pd.DataFrame({"a": [8, 9], "b": [1.5, float("nan")], "label": [0, 1]})
    import io

    raw = io.BytesIO()
    buffer.to_parquet(raw)
    local_store.write_bytes("datasets/bc/part-2.parquet", raw.getvalue())
    local_store.write_bytes("datasets/bc/part-3.jsonl", b'{"a": 10, "b": 1, "label": 1}\nnot json\n{"a": 11, "b": "nan", "label": 0}\n')
    local_store.write_bytes("datasets/bc/README.txt", b"not data")

    dataset = _load(local_store)
    assert [f.name for f in dataset.features] == ["a", "b"] and dataset.features[0].type == "int"
    # b has missing values (a Parquet null, a JSON "nan"): it may be missing, and those rows are kept
    assert dataset.features[1].missing and not dataset.features[0].missing
    assert dataset.x.dtype == np.float32
    np.testing.assert_array_equal(dataset.x, [[1, 2.5], [7, 8], [8, 1.5], [9, np.nan], [10, 1], [11, np.nan]])
    assert dataset.y.tolist() == [1, 0, 0, 1, 1, 0]
    reasons = {(q["source"].rsplit("/", 1)[-1], q["line"]): q["reason"] for q in dataset.quarantine}
    assert reasons[("part-1.csv", 3)] == "feature 'b': 'x' is not a number"
    assert reasons[("part-1.csv", 4)] == "feature 'b': 'inf' is not finite"
    assert reasons[("part-1.csv", 5)] == "missing label"
    assert "4 fields" in reasons[("part-1.csv", 6)]
    assert "label '2' is not 0 or 1" in reasons[("part-1.csv", 7)]
    assert ("part-2.parquet", 2) not in reasons and ("part-3.jsonl", 3) not in reasons
    assert reasons[("part-3.jsonl", 2)].startswith("not valid JSON")
    assert dataset.rows_quarantined == 6 and dataset.rows_read == 12
    assert dataset.ignored_files == ["datasets/bc/README.txt"]


def test_a_number_beyond_float32_is_quarantined_not_trained_on(local_store):
    """The model computes in float32: 1e39 is finite as a float64 but infinite there."""
    rows = "".join(f"{i},{i % 7},{i % 2}\n" for i in range(20))
    local_store.write_bytes("datasets/bc/d.csv", f"a,b,label\n{rows}1e39,1,1\n5,-4e38,0\n".encode())
    parquet = pd.DataFrame({"a": [1e300, 2.5], "b": [1.0, 2.0], "label": [0, 1]})
    import io

    raw = io.BytesIO()
    parquet.to_parquet(raw)
    local_store.write_bytes("datasets/bc/e.parquet", raw.getvalue())
    dataset = _load(local_store)
    assert np.isfinite(dataset.x).all() and len(dataset.x) == 21
    reasons = [q["reason"] for q in dataset.quarantine]
    assert reasons == ["feature 'a': '1e39' is beyond float32's range (about ±3.4e38)",
                       "feature 'b': '-4e38' is beyond float32's range (about ±3.4e38)",
                       "feature 'a': 1e+300 is beyond float32's range (about ±3.4e38)"]


def test_label_names_and_int_features(local_store):
    local_store.write_bytes("datasets/bc/d.csv", b"n,label\n1,yes\n2,no\n3.5,yes\n")
    dataset = _load(local_store, config=TrainingConfig(features=[Feature(name="n", type="int")]), labels=("no", "yes"))
    assert dataset.y.tolist() == [1, 0]
    assert dataset.quarantine[0]["reason"] == "feature 'n': '3.5' is not an integer"


def test_feedback_wins_over_the_dataset_row_with_the_same_features(local_store):
    local_store.write_bytes("datasets/bc/d.csv", b"a,b,label\n1,2,0\n3,4,1\n1,2,0\n")
    registry = ModelRegistry(local_store)
    registry.write_feedback("bc", [FeedbackRecord(features={"a": 1.0, "b": 2.0}, label=1)])
    registry.write_feedback("bc", [FeedbackRecord(features={"a": 5.0, "b": 6.0}, label=0), FeedbackRecord(text="hola", label=1)])
    local_store.write_bytes("feedback/bc/2026-01-01/zz-bad.jsonl", b'{"label": 7}\n')
    dataset = _load(local_store)
    rows = {tuple(x): y for x, y in zip(dataset.x.tolist(), dataset.y.tolist())}
    assert rows == {(1.0, 2.0): 1, (3.0, 4.0): 1, (5.0, 6.0): 0}
    assert dataset.labels_corrected == 2 and dataset.duplicates_dropped == 2
    assert dataset.from_feedback.sum() == 2
    reasons = [q["reason"] for q in dataset.quarantine]
    assert "text feedback for a tabular model" in reasons
    assert any(r.startswith("not a feedback record") for r in reasons)


def test_one_text_column_loads_as_a_text_dataset(local_store):
    local_store.write_bytes("datasets/bc/d.csv", b"text,label\nhola amigo,1\nhello friend,0\n ,1\nhola amigo,0\n")
    dataset = _load(local_store)
    assert dataset.text_column == "text" and dataset.features == [] and dataset.schema_source == "text"
    assert list(dataset.x) == ["hello friend", "hola amigo"] and list(dataset.y) == [0, 0]
    assert dataset.duplicates_dropped == 1 and dataset.labels_corrected == 1
    assert [q["reason"] for q in dataset.quarantine] == ["missing text in column 'text'"]
    with pytest.raises(TextDatasetError, match="holds text"):
        from aprendiz.training.dataset import infer_schema, read_sources

        infer_schema(read_sources(local_store, "bc")[0], "label")


def test_text_feedback_joins_a_text_dataset_and_tabular_feedback_is_quarantined(local_store):
    local_store.write_bytes("datasets/bc/d.csv", b"text,label\nhola amigo,0\nhello friend,0\n")
    ModelRegistry(local_store).write_feedback(
        "bc", [FeedbackRecord(text="hola amigo", label=1), FeedbackRecord(features={"a": 1.0}, label=0)]
    )
    dataset = _load(local_store)
    assert dict(zip(dataset.x, dataset.y)) == {"hello friend": 0, "hola amigo": 1}
    assert dataset.labels_corrected == 1 and dataset.from_feedback.tolist() == [False, True]
    assert [q["reason"] for q in dataset.quarantine] == ["tabular feedback for a text model"]
    assert dataset.quarantine[0]["source"] == "feedback" and dataset.quarantine[0]["line"] == 2


def test_too_few_rows_and_one_class(local_store):
    local_store.write_bytes("datasets/bc/d.csv", ("a,label\n" + "".join(f"{i},{i % 2}\n" for i in range(20))).encode())
    with pytest.raises(DatasetError, match="only 20 valid rows.*min_rows=50"):
        check_trainable(_load(local_store), TrainingConfig())
    local_store.write_bytes("datasets/bc/d.csv", ("a,label\n" + "".join(f"{i / 2},0\n" for i in range(100))).encode())
    with pytest.raises(DatasetError, match="all 100 valid rows have label 0"):
        check_trainable(_load(local_store), TrainingConfig())


def test_split_is_stratified_and_seeded(local_store):
    seed_breast_cancer_dataset(local_store, "bc")
    dataset = _load(local_store)
    one = split_dataset(dataset, TrainingConfig(seed=3))
    two = split_dataset(dataset, TrainingConfig(seed=3))
    assert one.sizes() == {"train": 341, "validation": 114, "test": 114}
    np.testing.assert_array_equal(one.x_test, two.x_test)
    for y in (one.y_train, one.y_val, one.y_test):
        assert abs(y.mean() - dataset.y.mean()) < 0.02


def test_training_yaml_is_loaded_and_checked(local_store):
    assert TrainingConfig.load(local_store, "bc") == TrainingConfig()
    # Gradient boosting is scikit-learn's histogram-based one: at 1M rows the classic one took 550 s.
    assert [c.algorithm for c in default_candidates()] == ["knn", "logistic_regression", "mlp", "hist_gradient_boosting"]
    local_store.write_bytes(
        "datasets/bc/training.yaml",
        b"selection_metric: pr_auc\nmargin: 0.01\nfloors: {roc_auc: 0.8}\n"
        b"candidates:\n  - {name: lr, algorithm: logistic_regression, search: {C: [1, 10]}}\n",
    )
    config = TrainingConfig.load(local_store, "bc")
    assert (config.selection_metric, config.margin, config.floors) == ("pr_auc", 0.01, {"roc_auc": 0.8})
    assert config.candidates[0].search == {"C": [1, 10]}
    local_store.write_bytes("datasets/bc/training.yaml", b"selection_metrc: pr_auc\n")
    with pytest.raises(TrainingConfigError, match="selection_metrc"):
        TrainingConfig.load(local_store, "bc")
    local_store.write_bytes("datasets/bc/training.yaml", json.dumps({"floors": {"speed": 1}}).encode())
    with pytest.raises(TrainingConfigError, match="unknown metrics"):
        TrainingConfig.load(local_store, "bc")


def test_an_id_column_and_a_constant_one_are_left_out_with_the_reason(local_store):
    """A customer id (distinct integers) would be memorised, a constant column says nothing: the
    inferred schema leaves both out and says why; the run's result and report repeat it."""
    from aprendiz.training.job import run_training

    rng = np.random.default_rng(0)
    n = 400
    x = rng.normal(size=(n, 3))
    frame = pd.DataFrame({"customer_id": rng.permutation(100_000)[:n] + 1, "a": x[:, 0], "b": x[:, 1],
                          "c": x[:, 2], "plan_version": 3, "label": (x[:, 0] + x[:, 1] > 0).astype(int)})
    local_store.write_bytes("datasets/churn/data.csv", frame.to_csv(index=False).encode())
    dataset = load_dataset(local_store, "churn", TrainingConfig(), kept_schema=None, labels=None)
    assert [f.name for f in dataset.features] == ["a", "b", "c"]
    assert "distinct" in dataset.left_out["customer_id"] and "an id" in dataset.left_out["customer_id"]
    assert "constant" in dataset.left_out["plan_version"]
    config = TrainingConfig(candidates=[default_candidates()[1]])
    result = run_training(ModelRegistry(local_store), "churn", config)
    assert set(result.left_out) == {"customer_id", "plan_version"}
    report = local_store.read_bytes(result.report_keys["report.md"]).decode()
    assert "customer_id" in report and "constant" in report


def test_a_row_counter_is_an_id_a_unique_measurement_is_not_and_all_left_out_is_an_error(local_store):
    rng = np.random.default_rng(1)
    frame = pd.DataFrame({"row": range(200), "income_cents": rng.permutation(10**7)[:200], "label": [0, 1] * 100})
    local_store.write_bytes("datasets/inc/data.csv", frame.to_csv(index=False).encode())
    dataset = load_dataset(local_store, "inc", TrainingConfig(), kept_schema=None, labels=None)
    assert [f.name for f in dataset.features] == ["income_cents"] and list(dataset.left_out) == ["row"]
    local_store.write_bytes("datasets/only/data.csv", frame[["row", "label"]].to_csv(index=False).encode())
    with pytest.raises(DatasetError, match="every feature column was left out: row"):
        load_dataset(local_store, "only", TrainingConfig(), kept_schema=None, labels=None)


def test_few_distinct_integers_are_a_feature_not_an_id(local_store):
    frame = pd.DataFrame({"children": [0, 1, 2, 3, 0, 1] * 20, "label": [0, 1] * 60})
    local_store.write_bytes("datasets/kids/data.csv", frame.to_csv(index=False).encode())
    dataset = load_dataset(local_store, "kids", TrainingConfig(), kept_schema=None, labels=None)
    assert [f.name for f in dataset.features] == ["children"] and dataset.left_out == {}


@pytest.mark.parametrize(("written", "read"), [
    ("[No, Yes]", ("No", "Yes")),
    ("[off, on]", ("off", "on")),
    ("[n, y]", ("n", "y")),
    ("['00', '01']", ("00", "01")),
    ("[00, 01]", ("00", "01")),
    ("[benign, malignant]", ("benign", "malignant")),
])
def test_labels_are_the_strings_the_user_wrote(local_store, written, read):
    """YAML 1.1 (PyYAML's safe_load) reads No/Yes/on/off/y/n as booleans and 01 as a number; the
    training config is read as YAML 1.2, where they are the strings they look like."""
    local_store.write_bytes("datasets/bc/training.yaml", f"labels: {written}\nmargin: 0.01\nseed: 7\n".encode())
    config = TrainingConfig.load(local_store, "bc")
    assert config.labels == read and config.margin == 0.01 and config.seed == 7


def test_yaml_12_keeps_numbers_booleans_and_nulls(local_store):
    local_store.write_bytes(
        "datasets/bc/training.yaml",
        b"labels: null\nmin_precision: 0.95\nmin_rows: 60\ncandidates:\n"
        b"  - {name: mlp, algorithm: mlp, params: {early_stopping: true, alpha: 1e-3, hidden_layer_sizes: [8]}}\n",
    )
    config = TrainingConfig.load(local_store, "bc")
    assert config.labels is None and config.min_precision == 0.95 and config.min_rows == 60
    assert config.candidates[0].params == {"early_stopping": True, "alpha": 1e-3, "hidden_layer_sizes": [8]}


def test_a_wrong_field_is_named_with_the_fix(local_store):
    local_store.write_bytes("datasets/bc/training.yaml", b"labels: [benign, malignant, other]\nmargin: lots\n")
    with pytest.raises(TrainingConfigError) as error:
        TrainingConfig.load(local_store, "bc")
    message = str(error.value)
    assert "labels:" in message and "two" in message
    assert "margin:" in message and "number" in message
    assert "https://errors.pydantic.dev" not in message


# -- property (hypothesis): any CSV cell is read as a finite float32 or its row is quarantined -------------------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

CSV_CELLS = st.one_of(
    st.sampled_from(["1e39", "-1e39", "3.4e38", "1e-50", "NaN", "-inf", "", " 3 ", "0x10", "1_000", "١٢", "1e", "--1"]),
    st.integers(min_value=-(10**400), max_value=10**400).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=8),
)


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(st.lists(CSV_CELLS, min_size=1, max_size=6))
def test_any_csv_cell_is_a_finite_float32_or_a_quarantined_row(local_store, cells):
    import csv
    import io

    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["a", "b", "label"])
    for i in range(20):  # good rows (a is unique: no duplicates to drop), then the generated cells in column b
        writer.writerow([i, i / 7, i % 2])
    for j, cell in enumerate(cells):
        writer.writerow([100 + j, cell, j % 2])
    local_store.write_bytes("datasets/bc/data.csv", text.getvalue().encode())
    try:
        dataset = _load(local_store)
    except DatasetError:
        return  # refused as a whole, with a DatasetError's message (never another exception)
    # every value is a finite float32, or NaN in a feature the schema marks as possibly missing
    may_miss = np.asarray([f.missing for f in dataset.features])
    assert dataset.x.dtype == np.float32 and not np.isinf(dataset.x).any()
    assert not (np.isnan(dataset.x) & ~may_miss[None, :]).any()
    assert len(dataset.x) + dataset.rows_quarantined + dataset.duplicates_dropped == dataset.rows_read
    assert all(q["reason"] for q in dataset.quarantine)
