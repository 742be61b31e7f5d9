"""aprendiz.training.default_classifier: the bundled breast-cancer model, as ONNX, in the registry."""

from __future__ import annotations

import hashlib

import numpy as np
import onnxruntime as ort
import pytest

from aprendiz.registry import ModelRegistry
from aprendiz.training.default_classifier import (
    fit_default_pipeline,
    onnx_probabilities,
    publish_default_classifier,
    train_default_classifier,
)


@pytest.fixture(scope="module")
def trained():
    return train_default_classifier(seed=0)


def test_onnx_input_and_output(trained):
    card, onnx_bytes = trained
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    assert list(inputs) == [card.onnx_input] == ["input"]
    assert inputs["input"].type == "tensor(float)"
    assert inputs["input"].shape[1] == 30 and not isinstance(inputs["input"].shape[0], int)
    probabilities = outputs[card.onnx_output]
    assert card.onnx_output == "probabilities"
    assert probabilities.type == "tensor(float)"
    assert probabilities.shape[1] == 2 and not isinstance(probabilities.shape[0], int)


def test_onnx_matches_scikit_learn_on_the_test_rows(trained):
    _, onnx_bytes = trained
    fit = fit_default_pipeline(seed=0)
    expected = fit.pipeline.predict_proba(fit.x_test)
    got = onnx_probabilities(onnx_bytes, fit.x_test)
    assert got.shape == (len(fit.x_test), 2)
    np.testing.assert_allclose(got, expected, atol=1e-4)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-5)


def test_card_describes_the_model(trained):
    card, _ = trained
    fit = fit_default_pipeline(seed=0)
    assert (card.name, card.kind, card.algorithm) == ("breast-cancer", "tabular", "logistic_regression")
    assert card.labels == ("benign", "malignant")
    assert card.threshold == 0.5
    assert [f.name for f in card.features][:3] == ["mean radius", "mean texture", "mean perimeter"]
    assert len(card.features) == 30 and {f.type for f in card.features} == {"float"}
    assert set(card.metrics) == {"roc_auc", "accuracy", "f1"}
    assert card.metrics["roc_auc"] > 0.95 and card.metrics["accuracy"] > 0.9
    digest = hashlib.sha256(fit.x_train.tobytes() + fit.y_train.tobytes()).hexdigest()
    assert card.data_fingerprint == digest
    # the positive class is malignant: sklearn's target 0, the minority (212 of 569)
    assert fit.y_train.mean() == pytest.approx(212 / 569, abs=0.01)


def test_malignant_rows_score_high(trained):
    card, onnx_bytes = trained
    fit = fit_default_pipeline(seed=0)
    positive = onnx_probabilities(onnx_bytes, fit.x_test)[:, 1]
    assert positive[fit.y_test == 1].mean() > 0.8 > 0.2 > positive[fit.y_test == 0].mean()
    assert card.label_for(float(positive[fit.y_test == 1].max())) == "malignant"


def test_publish_default_classifier_is_idempotent(store):
    registry = ModelRegistry(store)
    version = publish_default_classifier(registry)
    assert version is not None
    assert registry.champion("breast-cancer").version == version
    assert registry.versions("breast-cancer") == [version]
    loaded = registry.load("breast-cancer", version)
    assert loaded.card.version == version and loaded.files == {}
    assert publish_default_classifier(registry) is None
    assert registry.versions("breast-cancer") == [version]


def test_publish_without_promotion_under_another_name(local_store):
    registry = ModelRegistry(local_store)
    version = publish_default_classifier(registry, "bc-test", promote=False)
    assert registry.card("bc-test", version).name == "bc-test"
    assert registry.champion("bc-test") is None
