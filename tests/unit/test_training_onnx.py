"""aprendiz.training.onnx_export: scoring a whole evaluation set in slices gives the one-call answer."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aprendiz.training.onnx_export import export_onnx, onnx_probabilities


def test_chunked_scoring_equals_one_call_for_a_knn():
    """k-NN is the export whose one-call memory grows with test rows x training rows."""
    x, y = make_classification(n_samples=300, n_features=6, random_state=0)
    x = x.astype(np.float32)
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5)).fit(x[:200], y[:200])
    onnx_bytes = export_onnx(model, 6)
    whole = onnx_probabilities(onnx_bytes, x[200:], chunk_rows=1000)
    sliced = onnx_probabilities(onnx_bytes, x[200:], chunk_rows=7)  # 100 rows: 15 slices, the last of 2
    assert sliced.shape == whole.shape == (100, 2)
    np.testing.assert_allclose(sliced, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole, model.predict_proba(x[200:]), atol=1e-5)


def test_a_neighbour_vote_flipped_by_a_near_tie_is_allowed_in_a_few_rows_only():
    """k-NN in float32 (onnxruntime) and float64 (scikit-learn) can rank two nearly equidistant
    neighbours differently: that row's probability moves by one vote, 1/k. At 1M rows one test row
    in 200,000 did, and the whole candidate was thrown out. One vote in a few rows is allowed;
    more rows, or more than a vote, are not."""
    from aprendiz.training.onnx_export import check_export

    k = 31
    expected = np.tile([[0.2, 0.8]], (10_000, 1))
    got = expected.copy()
    got[7] += [1 / k, -1 / k]
    assert check_export(got, expected, 1e-4, vote=1 / k) == pytest.approx(1 / k)
    with pytest.raises(RuntimeError, match="disagrees"):
        check_export(got, expected, 1e-4)  # not a vote-based model: the plain tolerance
    many = expected.copy()
    many[:100] += [1 / k, -1 / k]  # 1 % of the rows
    with pytest.raises(RuntimeError, match="rows"):
        check_export(many, expected, 1e-4, vote=1 / k)
    two_votes = expected.copy()
    two_votes[7] += [2 / k, -2 / k]
    with pytest.raises(RuntimeError, match="disagrees"):
        check_export(two_votes, expected, 1e-4, vote=1 / k)


def test_an_xgboost_candidate_exports_with_the_encoder_and_missing_values_and_agrees(tmp_path):
    """XGBoost through onnxmltools' converter, inside the same export as every candidate: the
    credit table's categories (the encoder), its missing incomes (XGBoost's own missing branch,
    no imputer) and its 3 % positives (scale_pos_weight). The agreement check is the usual one."""
    from aprendiz.registry import ModelRegistry
    from aprendiz.store import ObjectStore
    from aprendiz.training.candidates import class_weights
    from aprendiz.training.config import CandidateConfig, TrainingConfig
    from aprendiz.training.job import run_training
    from aprendiz.training.synthetic import credit_csv

    store = ObjectStore(str(tmp_path))
    store.write_bytes("datasets/credit/data.csv", credit_csv(3000))
    config = TrainingConfig(label_column="default", labels=("No", "Yes"), candidates=[
        CandidateConfig(name="xgb", algorithm="xgboost", params={"n_estimators": 60, "max_depth": 4})])
    result = run_training(ModelRegistry(store), "credit", config)
    row = result.candidates[0]
    assert row["error"] is None and result.promoted, (row["error"], result.reason)
    assert row["onnx_max_diff"] <= 1e-4
    assert row["params"]["scale_pos_weight"] > 10  # negatives / positives at about 3 %
    assert row["metrics"]["roc_auc"] > 0.8
    card = ModelRegistry(store).load("credit", result.version).card
    assert card.algorithm == "xgboost" and card.training["missing_numbers"].startswith("native")
    assert card.graph_inputs() == [f.name for f in card.features]  # one input per feature: the encoder
    # balanced classes: no weight; a weight the candidate sets is left alone
    assert class_weights("xgboost", {}, 50, 50) == {}
    assert class_weights("xgboost", {}, 97, 3) == {"scale_pos_weight": 97 / 3}
    assert class_weights("xgboost", {"scale_pos_weight": 2}, 97, 3) == {}
    assert class_weights("logistic_regression", {}, 97, 3) == {"class_weight": "balanced"}
    assert class_weights("knn", {}, 97, 3) == {}
