"""aprendiz.services.classifier.model: loading checks a version before it can serve."""

from __future__ import annotations

from pathlib import Path

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
    with pytest.raises(ModelLoadError, match="not an ONNX model"):
        OnnxClassifier.load(LoadedArtifact(card=artifact.card, onnx_bytes=b"not onnx"))


class _RunsCodeWhenUnpickled:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_a_pickle_named_model_onnx_is_refused_as_a_pickle_and_never_unpickled(artifact, tmp_path):
    import pickle

    marker = tmp_path / "the-pickle-ran"
    for protocol in (2, 4, 5):
        with pytest.raises(ModelLoadError, match="a pickle, not ONNX"):
            OnnxClassifier.load(LoadedArtifact(card=artifact.card, onnx_bytes=pickle.dumps(_RunsCodeWhenUnpickled(marker), protocol)))
    assert not marker.exists()


def _linear_softmax_onnx(card, weights: np.ndarray):
    """A graph that scores like a classifier of ``card``: softmax(x @ W), W an initializer tensor."""
    from onnx import TensorProto, helper, numpy_helper

    graph = helper.make_graph(
        [helper.make_node("MatMul", [card.onnx_input, "W"], ["logits"]),
         helper.make_node("Softmax", ["logits"], [card.onnx_output], axis=1)],
        "linear",
        [helper.make_tensor_value_info(card.onnx_input, TensorProto.FLOAT, [None, weights.shape[0]])],
        [helper.make_tensor_value_info(card.onnx_output, TensorProto.FLOAT, [None, 2])],
        initializer=[numpy_helper.from_array(weights, "W")],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)


def test_an_onnx_with_external_data_is_refused(artifact, tmp_path, monkeypatch):
    """External data names a file to read at load time: a path of the serving machine, not the store's."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = _linear_softmax_onnx(artifact.card, np.full((len(artifact.card.features), 2), 0.01, np.float32))
    assert OnnxClassifier.load(LoadedArtifact(card=artifact.card, onnx_bytes=model.SerializeToString())).version
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location="weights.bin", size_threshold=0)
    monkeypatch.chdir(tmp_path)
    onnx.save_model(model, "model.onnx")  # writes weights.bin beside it, where onnxruntime would look
    with pytest.raises(ModelLoadError, match="external data"):
        OnnxClassifier.load(LoadedArtifact(card=artifact.card, onnx_bytes=Path("model.onnx").read_bytes()))


def test_an_onnx_over_the_size_limit_is_refused_before_it_is_parsed(artifact, monkeypatch):
    from aprendiz.services.classifier import model as model_module

    monkeypatch.setattr(model_module, "MAX_ONNX_BYTES", len(artifact.onnx_bytes) - 1)
    with pytest.raises(ModelLoadError, match="over the limit"):
        OnnxClassifier.load(artifact)


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
