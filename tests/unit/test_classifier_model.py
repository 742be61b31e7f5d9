"""aprendiz.services.classifier.model: loading checks a version before it can serve."""

from __future__ import annotations

import numpy as np
import pytest

from aprendiz.registry import LoadedArtifact
from aprendiz.services.classifier.model import ModelLoadError, OnnxClassifier
from aprendiz.training.onnx_export import onnx_probabilities


@pytest.fixture(scope="module")
def artifact(trained_classifier) -> LoadedArtifact:
    registry, name, version = trained_classifier
    return registry.load(name, version)


def test_loads_and_predicts_like_the_training_side(artifact):
    from sklearn.datasets import load_breast_cancer

    model = OnnxClassifier.load(artifact)
    rows = load_breast_cancer().data[:6].astype(np.float32)
    assert model.predict(rows) == pytest.approx(onnx_probabilities(artifact.onnx_bytes, rows)[:, 1])
    assert model.version == artifact.card.version
    assert model.labels_for(np.array([0.2, 0.9])) == ["benign", "malignant"]


def test_garbage_bytes_are_refused(artifact):
    with pytest.raises(ModelLoadError, match="cannot load"):
        OnnxClassifier.load(LoadedArtifact(card=artifact.card, onnx_bytes=b"not onnx"))


def test_a_card_naming_a_missing_output_is_refused(artifact):
    card = artifact.card.model_copy(update={"onnx_output": "scores"})
    with pytest.raises(ModelLoadError, match="no output 'scores'"):
        OnnxClassifier.load(LoadedArtifact(card=card, onnx_bytes=artifact.onnx_bytes))


def test_a_card_with_the_wrong_feature_count_fails_the_self_check(artifact):
    card = artifact.card.model_copy(update={"features": artifact.card.features[:5]})
    with pytest.raises(ModelLoadError, match="self-check"):
        OnnxClassifier.load(LoadedArtifact(card=card, onnx_bytes=artifact.onnx_bytes))


def test_a_text_model_without_its_tokenizer_is_refused(artifact):
    card = artifact.card.model_copy(update={"kind": "text", "features": [], "text_field": "text", "onnx_input": "input_ids"})
    with pytest.raises(ModelLoadError, match="tokenizer.json"):
        OnnxClassifier.load(LoadedArtifact(card=card, onnx_bytes=artifact.onnx_bytes))


def test_batches_of_several_requests_stack(artifact):
    model = OnnxClassifier.load(artifact)
    parts = [np.zeros((2, 30), np.float32), np.ones((1, 30), np.float32)]
    assert model.stack(parts).shape == (3, 30)
    assert model.stack([["a"], ["b", "c"]]) == ["a", "b", "c"]


def test_a_large_batch_is_scored_in_slices(artifact, monkeypatch):
    """An exported k-NN computes every distance of a call at once: a @serve.batch of many requests
    is scored PREDICT_CHUNK_ROWS rows a call, with the same answers."""
    from sklearn.datasets import load_breast_cancer

    from aprendiz.services.classifier import model as model_module

    monkeypatch.setattr(model_module, "PREDICT_CHUNK_ROWS", 100)
    model = OnnxClassifier.load(artifact)
    rows = np.tile(load_breast_cancer().data[:50].astype(np.float32), (5, 1))  # 250 rows
    whole = onnx_probabilities(artifact.onnx_bytes, rows)[:, 1]
    calls = []
    real_run = model._session.run
    monkeypatch.setattr(model._session, "run", lambda *a, **k: calls.append(len(a[1][artifact.card.onnx_input]))
                        or real_run(*a, **k), raising=False)
    assert model.predict(rows) == pytest.approx(whole)
    assert calls == [100, 100, 50]
