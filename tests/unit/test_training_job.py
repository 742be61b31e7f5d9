"""aprendiz.training.job: train, evaluate, promote or not, publish, report, metrics, CLI."""

from __future__ import annotations

import http.server
import io
import json
import socket
import threading

import numpy as np
import pandas as pd
import pytest

from aprendiz.registry import FeedbackRecord, ModelRegistry
from aprendiz.services.classifier.model import OnnxClassifier
from aprendiz.store import ObjectStore
from aprendiz.training.candidates import train_candidate
from aprendiz.training.config import CandidateConfig, TrainingConfig
from aprendiz.training.dataset import DatasetError, load_dataset, seed_breast_cancer_dataset, split_dataset
from aprendiz.training.job import StoreUnavailableError, run_training
from aprendiz.training.onnx_export import onnx_probabilities

NAME = "breast-cancer"
# Two cheap candidates keep each run near a second.
FAST = TrainingConfig(
    candidates=[
        CandidateConfig(name="logreg", algorithm="logistic_regression", search={"C": [0.1, 1.0]}),
        CandidateConfig(name="knn", algorithm="knn", params={"n_neighbors": 15}),
    ]
)


def _bc_frame() -> pd.DataFrame:
    """The seeded CSV as it reads back (so feedback floats equal the CSV's)."""
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    frame = pd.DataFrame(data.data, columns=[str(n) for n in data.feature_names])
    frame["label"] = (data.target == 0).astype(int)
    return pd.read_csv(io.StringIO(frame.to_csv(index=False, float_format="%.10g")))


def _write_csv(store, frame: pd.DataFrame, key: str = f"datasets/{NAME}/data.csv") -> None:
    store.write_bytes(key, frame.to_csv(index=False, float_format="%.10g").encode())


def test_first_run_promotes_and_the_same_data_again_does_not(store):
    registry = ModelRegistry(store)
    seed_breast_cancer_dataset(store)
    first = run_training(registry, NAME, FAST)
    assert first.promoted and first.version == first.run_id and first.reason.startswith("first model")
    assert registry.champion(NAME).version == first.version
    assert first.split == {"train": 341, "validation": 114, "test": 114} and first.rows_quarantined == 0
    card = registry.card(NAME, first.version)
    assert card.kind == "tabular" and len(card.features) == 30 and card.features[0].name == "mean radius"
    assert card.training["seed"] == 0 and card.training["candidate"] == first.best_candidate
    assert set(card.metrics) >= {"roc_auc", "pr_auc", "f1", "precision", "recall", "recall_at_precision", "brier",
                                 "latency_ms", "size_bytes"}
    assert card.metrics["roc_auc"] > 0.97 and 0 < card.threshold < 1
    assert store.exists(f"datasets/{NAME}/schema.json")

    # report: published with the version, the page shows the PNGs
    loaded = registry.load(NAME, first.version)
    assert {"report/report.md", "report/report.html", "report/roc.png", "report/pr.png", "report/confusion.png",
            "report/calibration.png"} <= set(loaded.files)
    page = loaded.files["report/report.html"].decode()
    for png in ("roc.png", "pr.png", "confusion.png", "calibration.png"):
        assert f"src='{png}'" in page
        assert loaded.files[f"report/{png}"].startswith(b"\x89PNG")
    assert "logreg" in page and "knn" in page
    # the serving side loads it, and it agrees with what the run measured
    model = OnnxClassifier.load(loaded)
    frame = _bc_frame()
    p = model.predict(frame[[f.name for f in card.features]].to_numpy(np.float32))
    assert p.shape == (569,) and ((p >= card.threshold) == frame["label"].to_numpy().astype(bool)).mean() > 0.9

    second = run_training(registry, NAME, FAST)
    assert not second.promoted and second.version is None
    assert "does not beat the champion by the margin" in second.reason and "delta +0.0000" in second.reason
    assert second.champion_metrics["roc_auc"] == pytest.approx(second.best_metrics["roc_auc"], abs=1e-6)
    assert registry.champion(NAME).version == first.version and registry.versions(NAME) == [first.version]
    assert second.report_keys["report.html"] == f"runs/{NAME}/{second.run_id}/report.html"
    assert store.exists(second.report_keys["roc.png"]) and store.exists(f"runs/{NAME}/{second.run_id}/result.json")
    assert "champion" in store.read_bytes(second.report_keys["report.md"]).decode()


def test_feedback_that_fixes_planted_label_flips_wins(local_store):
    registry = ModelRegistry(local_store)
    frame = _bc_frame()
    # Plant: the 180 largest tumours get the wrong label.
    flipped = frame["worst area"].rank(method="first", ascending=False) <= 180
    planted = frame.copy()
    planted.loc[flipped, "label"] = 1 - planted.loc[flipped, "label"]
    _write_csv(local_store, planted)
    first = run_training(registry, NAME, FAST)
    assert first.promoted

    features = [c for c in frame.columns if c != "label"]
    registry.write_feedback(
        NAME,
        [FeedbackRecord(features={c: float(row[c]) for c in features}, label=int(row["label"]))
         for _, row in frame[flipped].iterrows()],
    )
    second = run_training(registry, NAME, FAST)
    assert second.labels_corrected == 180 and second.duplicates_dropped == 180 and second.rows_used == 569
    assert second.promoted, second.reason
    assert second.reason.startswith("beats the champion")
    assert second.best_metrics["roc_auc"] > second.champion_metrics["roc_auc"] + FAST.margin
    assert registry.champion(NAME).version == second.version
    assert registry.card(NAME, second.version).training["labels_corrected"] == 180


class _Pushgateway(http.server.BaseHTTPRequestHandler):
    bodies: list = []

    def do_PUT(self):  # noqa: N802 (http.server's naming)
        self.bodies.append((self.path, self.rfile.read(int(self.headers["Content-Length"])).decode()))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT

    def log_message(self, *args):
        pass


def test_corrupt_rows_are_quarantined_counted_and_metrics_pushed(local_store):
    registry = ModelRegistry(local_store)
    seed_breast_cancer_dataset(local_store)
    header = local_store.read_bytes(f"datasets/{NAME}/data.csv").decode().splitlines()[0]
    good = ",".join(["1"] * 30)
    bad = "\n".join([
        ",".join(["abc"] + ["1"] * 29) + ",1",  # non-numeric
        good + ",",  # missing label
        ",".join(["1"] * 29 + ["inf"]) + ",0",  # non-finite
    ])
    local_store.write_bytes(f"datasets/{NAME}/extra.csv", f"{header}\n{bad}\n".encode())
    server = http.server.HTTPServer(("127.0.0.1", 0), _Pushgateway)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_training(registry, NAME, FAST, pushgateway=f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert result.rows_read == 572 and result.rows_quarantined == 3 and result.rows_used == 569
    lines = [json.loads(line) for line in local_store.read_bytes(result.quarantine_key).decode().splitlines()]
    assert result.quarantine_key == f"datasets/{NAME}/quarantine/{result.run_id}.jsonl"
    assert [(q["line"], q["reason"]) for q in lines] == [
        (2, "feature 'mean radius': 'abc' is not a number"),
        (3, "missing label"),
        (4, "feature 'worst fractal dimension': 'inf' is not finite"),
    ]
    assert lines[0]["row"]["mean radius"] == "abc" and lines[0]["source"] == f"datasets/{NAME}/extra.csv"
    path, body = _Pushgateway.bodies[-1]
    assert path == f"/metrics/job/aprendiz-training/model/{NAME}"
    assert "aprendiz_training_rows_quarantined 3.0" in body and "aprendiz_training_promoted 1.0" in body
    assert "aprendiz_training_candidates_trained 2.0" in body and 'aprendiz_training_best_metric{metric="roc_auc"}' in body


def test_too_few_rows_or_one_class_change_nothing(local_store):
    registry = ModelRegistry(local_store)
    frame = _bc_frame()
    _write_csv(local_store, frame)
    first = run_training(registry, NAME, FAST)
    before = {key: local_store.read_bytes(key) for key in local_store.list()}
    _write_csv(local_store, frame.head(30))
    before[f"datasets/{NAME}/data.csv"] = local_store.read_bytes(f"datasets/{NAME}/data.csv")
    with pytest.raises(DatasetError, match="only 30 valid rows"):
        run_training(registry, NAME, FAST)
    assert {key: local_store.read_bytes(key) for key in local_store.list()} == before
    _write_csv(local_store, frame[frame["label"] == 0])
    before[f"datasets/{NAME}/data.csv"] = local_store.read_bytes(f"datasets/{NAME}/data.csv")
    with pytest.raises(DatasetError, match="training needs both classes"):
        run_training(registry, NAME, FAST)
    assert {key: local_store.read_bytes(key) for key in local_store.list()} == before
    assert registry.champion(NAME).version == first.version


class _MeetAfterPublishing(ModelRegistry):
    """A real registry whose publish waits for the other run's publish: both runs have read the same
    (absent) champion and decided to promote before either promotes (the race, made certain)."""

    def __init__(self, store, meeting: threading.Barrier):
        super().__init__(store)
        self.meeting = meeting

    def publish(self, *args, **kwargs):
        version = super().publish(*args, **kwargs)
        self.meeting.wait(60)
        return version


def test_two_concurrent_runs_promote_exactly_once(store):
    seed_breast_cancer_dataset(store)
    meeting = threading.Barrier(2)
    results: list = []
    errors: list = []

    def run() -> None:
        try:
            results.append(run_training(_MeetAfterPublishing(store, meeting), NAME, FAST))
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors and len(results) == 2
    winners = [r for r in results if r.promoted]
    losers = [r for r in results if not r.promoted]
    assert len(winners) == 1 and len(losers) == 1, [r.reason for r in results]
    registry = ModelRegistry(store)
    assert registry.champion(NAME).version == winners[0].version
    loser = losers[0]
    assert loser.version is None
    assert f"{winners[0].run_id} was promoted over no champion first" in loser.reason
    assert f"{loser.run_id} is kept unpromoted" in loser.reason
    assert sorted(registry.versions(NAME)) == sorted(r.run_id for r in results)  # both published, one serves
    assert store.read_json(f"runs/{NAME}/{loser.run_id}/result.json")["promoted"] is False


def test_an_unreachable_store_fails_clearly():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    store = ObjectStore(
        "s3://nowhere/root",
        storage_options={
            "endpoint_url": f"http://127.0.0.1:{port}", "key": "k", "secret": "s",
            "config_kwargs": {"connect_timeout": 1, "read_timeout": 1, "retries": {"max_attempts": 1}},
        },
    )
    with pytest.raises(StoreUnavailableError, match="unreachable"):
        run_training(ModelRegistry(store), NAME, FAST)


def test_every_default_algorithm_exports_onnx_that_agrees(local_store):
    seed_breast_cancer_dataset(local_store)
    config = TrainingConfig(
        candidates=[
            CandidateConfig(name="knn", algorithm="knn", params={"n_neighbors": 7}),
            CandidateConfig(name="lr", algorithm="logistic_regression"),
            CandidateConfig(name="mlp", algorithm="mlp", params={"hidden_layer_sizes": [8], "max_iter": 100}),
            CandidateConfig(name="gb", algorithm="gradient_boosting", params={"n_estimators": 15}),
            CandidateConfig(name="hgb", algorithm="hist_gradient_boosting", params={"max_iter": 15}),
        ]
    )
    dataset = load_dataset(local_store, NAME, config, kept_schema=None, labels=None)
    split = split_dataset(dataset, config)
    for candidate in config.candidates:
        result = train_candidate(candidate, split, config, dataset.features)
        assert result.ok, result.error
        expected = result.pipeline.predict_proba(split.x_test)
        got = onnx_probabilities(result.onnx_bytes, split.x_test)
        assert got.dtype == np.float32 and got.shape == (len(split.y_test), 2)
        np.testing.assert_allclose(got, expected, atol=1e-4)
        assert result.test_metrics["roc_auc"] > 0.9 and result.test_metrics["size_bytes"] == len(result.onnx_bytes)
        assert result.test_metrics["latency_ms"] > 0 and sum(map(sum, result.confusion)) == len(split.y_test)


def test_knn_fits_on_a_stated_stratified_sample_of_the_training_rows(local_store):
    """k-NN keeps every training row in its model (and in its ONNX graph): past its row cap it fits
    on a seeded, stratified sample, and the result and the report say so."""
    from aprendiz.training.config import default_candidates
    from aprendiz.training.report import build_report

    assert next(c for c in default_candidates() if c.algorithm == "knn").max_train_rows == 20_000
    seed_breast_cancer_dataset(local_store)
    candidate = CandidateConfig(name="knn", algorithm="knn", params={"n_neighbors": 5}, max_train_rows=100)
    config = TrainingConfig(candidates=[candidate])
    dataset = load_dataset(local_store, NAME, config, kept_schema=None, labels=None)
    split = split_dataset(dataset, config)
    result = train_candidate(candidate, split, config, dataset.features)
    assert result.ok, result.error
    assert result.train_rows == 100 and result.pipeline.named_steps["model"].n_samples_fit_ == 100
    positives = split.y_train.mean()
    assert abs(result.pipeline.named_steps["model"]._y.mean() - positives) < 0.02  # stratified
    assert f"100 of {len(split.y_train)}" in result.note
    again = train_candidate(candidate, split, config, dataset.features)
    np.testing.assert_array_equal(again.test_probabilities, result.test_probabilities)  # seeded
    files = build_report({"selection_metric": "roc_auc"}, [result], split.y_test, None, ("benign", "malignant"))
    assert f"100 of {len(split.y_train)}" in files["report.md"].decode()
    uncapped = train_candidate(CandidateConfig(name="knn", algorithm="knn", max_train_rows=10_000), split, config,
                               dataset.features)
    assert uncapped.train_rows == len(split.y_train) and uncapped.note == ""


def test_a_3_percent_positive_rate_is_weighted_reported_first_and_warned_about(local_store, caplog):
    """Fraud-like data: 3 % positives. The split keeps the rate in every part, algorithms that take
    class weights get balanced ones, the report leads with PR-AUC and recall at precision, and a
    test split with fewer than 30 positives is called out. The gate and threshold still work."""
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=3000, n_features=8, n_informative=5, weights=[0.97], flip_y=0,
                               class_sep=1.5, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)])
    frame["label"] = y
    _write_csv(local_store, frame, "datasets/fraud/data.csv")
    config = TrainingConfig(candidates=[
        CandidateConfig(name="logreg", algorithm="logistic_regression"),
        CandidateConfig(name="hgb", algorithm="hist_gradient_boosting", params={"max_iter": 30}),
        CandidateConfig(name="knn", algorithm="knn", params={"n_neighbors": 15}),
    ], min_precision=0.5)
    with caplog.at_level("WARNING"):
        result = run_training(ModelRegistry(local_store), "fraud", config)
    assert result.promoted, result.reason
    rows = json.loads(local_store.read_bytes(f"runs/fraud/{result.run_id}/result.json"))["candidates"]
    params = {row["name"]: row["params"] for row in rows}
    assert params["logreg"]["class_weight"] == "balanced" and params["hgb"]["class_weight"] == "balanced"
    assert "class_weight" not in params["knn"]
    report = local_store.read_bytes(result.report_keys["report.md"]).decode()
    header = next(line for line in report.splitlines() if line.startswith("| candidate"))
    columns = [cell.strip() for cell in header.strip("|").split("|")]
    assert columns.index("pr_auc") < columns.index("roc_auc") and columns.index("recall_at_precision") < columns.index("roc_auc")
    assert "positive rate" in report and "fewer than 30" in report
    assert "holds 18 positives, fewer than 30" in caplog.text
    assert 0 < result.best_metrics["recall"] and result.best_metrics["pr_auc"] > 0.3


def test_cli_train(tmp_path):
    from typer.testing import CliRunner

    from aprendiz.cli import app

    store_dir = tmp_path / "store"
    config = tmp_path / "aprendiz.yaml"
    config.write_text(f"classifiers:\n  - name: {NAME}\nstore:\n  url: {store_dir}\n")
    ObjectStore(str(store_dir)).write_bytes(
        f"datasets/{NAME}/training.yaml",
        b"candidates:\n  - {name: lr, algorithm: logistic_regression}\n",
    )
    runner = CliRunner()
    ok = runner.invoke(app, ["train", "--model", NAME, "--config", str(config)])
    assert ok.exit_code == 0, ok.output
    assert "wrote scikit-learn's breast cancer data" in ok.output and "promoted" in ok.output
    assert f"report: {store_dir}/models/{NAME}/" in ok.output
    failed = runner.invoke(app, ["train", "--model", "empty-model", "--config", str(config)])
    assert failed.exit_code == 1 and "training empty-model failed: no data rows" in failed.output


def test_a_large_test_split_checks_the_export_on_a_stratified_sample(local_store, monkeypatch):
    """Past EXPORT_CHECK_ROWS test rows, onnxruntime scores a seeded stratified sample (checked against the
    fitted model there) and the metrics are the fitted model's on every test row, which the note says."""
    from aprendiz.training import candidates

    monkeypatch.setattr(candidates, "EXPORT_CHECK_ROWS", 50)
    seed_breast_cancer_dataset(local_store)
    candidate = CandidateConfig(name="knn", algorithm="knn", params={"n_neighbors": 5})
    config = TrainingConfig(candidates=[candidate])
    dataset = load_dataset(local_store, NAME, config, kept_schema=None, labels=None)
    split = split_dataset(dataset, config)
    result = train_candidate(candidate, split, config, dataset.features)
    assert result.ok, result.error
    assert len(result.test_probabilities) == len(split.y_test) > 50
    np.testing.assert_allclose(result.test_probabilities, result.pipeline.predict_proba(split.x_test)[:, 1])
    assert "stratified 50-row sample" in result.note and f"all {len(split.y_test)} test rows" in result.note
    checked = candidates._check_rows(split.y_test, 0)
    assert len(checked) == 50 and abs(split.y_test[checked].mean() - split.y_test.mean()) < 0.03
