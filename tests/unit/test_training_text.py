"""Text datasets in the training job: MiniLM embeddings / TF-IDF candidates, one ONNX graph + tokenizer.json."""

from __future__ import annotations

import os
import socket

import numpy as np
import pytest

from aprendiz.registry import ModelRegistry
from aprendiz.services.classifier.model import OnnxClassifier
from aprendiz.store import ObjectStore
from aprendiz.training.dataset import seed_es_or_en_dataset
from aprendiz.training.job import run_training

NAME = "es-or-en"


def _no_network(*args, **kwargs):
    raise AssertionError(f"network access during training: {args[1:]!r}")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One run on the shipped dataset (default text candidates), with sockets refused and HF_HUB_OFFLINE unset."""
    store = ObjectStore(str(tmp_path_factory.mktemp("text") / "store"))
    registry = ModelRegistry(store)
    assert seed_es_or_en_dataset(store) is True
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("HF_HUB_OFFLINE", raising=False)
        patch.setattr(socket.socket, "connect", _no_network)
        result = run_training(registry, NAME)
        offline = os.environ.get("HF_HUB_OFFLINE")
    return registry, result, offline


def test_seed_writes_the_dataset_once(local_store):
    assert seed_es_or_en_dataset(local_store) is True
    assert seed_es_or_en_dataset(local_store) is False
    lines = local_store.read_bytes(f"datasets/{NAME}/data.csv").decode().splitlines()
    assert lines[0] == "text,label" and len(lines) > 300
    assert local_store.read_bytes(f"datasets/{NAME}/training.yaml") == b"labels: [english, spanish]\n"


def test_first_run_promotes_and_the_version_serves(trained):
    registry, result, offline = trained
    assert offline == "1"  # the code path that loads MiniLM turns the hub off
    assert result.promoted and result.reason.startswith("first model") and result.schema_source == "text"
    assert result.split == {"train": 240, "validation": 80, "test": 80}
    rows = {row["name"]: row for row in result.candidates}
    assert set(rows) == {"minilm_logreg", "tfidf_logreg"}
    for row in rows.values():
        assert row["error"] is None and row["onnx_max_diff"] <= 1e-4
        assert row["metrics"]["roc_auc"] > 0.9
    assert result.best_candidate in rows
    card = registry.card(NAME, result.version)
    assert card.kind == "text" and card.text_field == "text" and card.features == []
    assert card.onnx_input == "input_ids" and card.labels == ("english", "spanish")
    assert card.algorithm == rows[result.best_candidate]["algorithm"]
    loaded = registry.load(NAME, result.version)
    assert "tokenizer.json" in loaded.files and "report/report.html" in loaded.files
    assert not registry.store.exists(f"datasets/{NAME}/schema.json")
    model = OnnxClassifier.load(loaded)
    p = model.predict(["Hola, ¿qué tal?", "Hello, how are you?"])
    assert model.labels_for(p) == ["spanish", "english"]


def test_the_embedding_candidate_serves_too(trained):
    """Published as-is, the MiniLM graph classifies like the job measured (the best may be tf-idf)."""
    from aprendiz.training.text_candidates import minilm_tokenizer_json

    registry, result, _ = trained
    row = next(r for r in result.candidates if r["name"] == "minilm_logreg")
    assert row["metrics"]["accuracy"] > 0.9 and row["metrics"]["size_bytes"] > 80e6
    tokenizer = minilm_tokenizer_json()
    assert b'"max_length":128' in tokenizer.replace(b" ", b"")


def test_onnx_export_matches_torch():
    """encoder + pooling + logistic regression: onnxruntime vs torch, batched (padded) and one text at a time."""
    import torch
    from sklearn.linear_model import LogisticRegression

    from aprendiz.training.text_candidates import (
        ATTENTION_MASK,
        INPUT_IDS,
        _classifier_module,
        _head,
        embed,
        encode,
        export_embedding_classifier,
        minilm_tokenizer_json,
        text_onnx_probabilities,
    )

    texts = ["Hola, ¿qué tal?", "Hello, how are you?", "¿Dónde está la biblioteca de la ciudad?",
             "The quick brown fox jumps over the lazy dog near the river bank.", "gracias", "thanks"]
    tokenizer = minilm_tokenizer_json()
    x = embed(tokenizer, texts)
    assert x.shape == (6, 384) and np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    model = LogisticRegression(C=10.0).fit(x, [1, 0, 1, 0, 1, 0])
    onnx_bytes = export_embedding_classifier(model, tokenizer, texts)
    got = text_onnx_probabilities(onnx_bytes, tokenizer, texts)
    feeds = encode(tokenizer, texts)
    assert feeds[INPUT_IDS].shape[1] > 2 and (feeds[ATTENTION_MASK] == 0).any()  # padding is exercised
    with torch.inference_mode():
        module = _classifier_module(_head(model))
        expected = module(torch.from_numpy(feeds[INPUT_IDS]), torch.from_numpy(feeds[ATTENTION_MASK])).numpy()
    assert got.dtype == np.float32 and got.shape == (6, 2)
    assert np.abs(got - expected).max() < 1e-4
    assert np.abs(got - model.predict_proba(x)).max() < 1e-4
    one_by_one = np.concatenate([text_onnx_probabilities(onnx_bytes, tokenizer, [t]) for t in texts])
    assert np.abs(one_by_one - got).max() < 1e-4
