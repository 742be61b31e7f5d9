"""aprendiz.training.text_classifier: the es-or-en text model, as ONNX + tokenizer.json, in the registry."""

from __future__ import annotations

import json

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from tokenizers import Tokenizer

from aprendiz.registry import ModelRegistry
from aprendiz.training.text_classifier import (
    encode_texts,
    export_onnx,
    fingerprint,
    fit_text_classifier,
    labelled_corpus,
    language_of,
    publish_text_classifier,
    text_probabilities,
    train_text_classifier,
)

SPANISH = "Hola, ¿cómo estás? Me llamo Ana."
ENGLISH = "Hello, how are you? My name is Ana."


@pytest.fixture(scope="module")
def trained():
    return train_text_classifier(seed=0)


@pytest.fixture(scope="module")
def fit():
    return fit_text_classifier(seed=0)


@pytest.fixture(scope="module")
def session(trained):
    return ort.InferenceSession(trained[1], providers=["CPUExecutionProvider"])


def positive(trained, texts: list[str]) -> np.ndarray:
    _, onnx_bytes, tokenizer_json = trained
    return text_probabilities(onnx_bytes, tokenizer_json, texts)[:, 1]


# -- the labelling rule and the data ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "label"),
    [
        ("¿Cuál es la capital de Bolivia?", 1),
        ("Hola", 1),
        ("Me llamo Carlos", 1),
        ("The capital of Colombia is Bogotá.", 0),
        ("The constitutional capital of Bolivia is Sucre, and the government sits in La Paz.", 0),
        ("Where is Medellín?", 0),
        ("Hello", 0),
        ("Holaa", None),
        ("2 + 2", None),
        ("", None),
    ],
)
def test_labelling_rule(text, label):
    assert language_of(text) == label


def test_labelled_corpus_is_balanced_and_distinct():
    texts, labels = labelled_corpus()
    assert len(texts) == len(set(texts)) == len(labels) > 700
    assert labels.dtype == np.int64 and set(labels.tolist()) == {0, 1}
    assert 0.4 < labels.mean() < 0.6


# -- the graph -------------------------------------------------------------------------------


def test_graph_is_valid_opset_17(trained):
    model = onnx.load_model_from_string(trained[1])
    onnx.checker.check_model(model, full_check=True)
    assert {(o.domain, o.version) for o in model.opset_import} == {("", 17)}
    assert model.ir_version <= 10  # onnxruntime 1.20 reads up to IR 10
    assert {n.op_type for n in model.graph.node} >= {"Gather", "ReduceSum", "Sigmoid", "Concat"}


def test_inputs_and_outputs_follow_the_text_contract(trained, session):
    card, _, _ = trained
    inputs = {i.name: i for i in session.get_inputs()}
    outputs = {o.name: o for o in session.get_outputs()}
    assert list(inputs) == ["input_ids", "attention_mask"] and card.onnx_input == "input_ids"
    for graph_input in inputs.values():
        assert graph_input.type == "tensor(int64)"
        assert len(graph_input.shape) == 2 and not any(isinstance(d, int) for d in graph_input.shape)
    assert list(outputs) == [card.onnx_output] == ["probabilities"]
    probabilities = outputs["probabilities"]
    assert probabilities.type == "tensor(float)"
    assert probabilities.shape[1] == 2 and not isinstance(probabilities.shape[0], int)


def test_card_describes_the_model(trained, fit):
    card, _, _ = trained
    assert (card.name, card.kind, card.text_field, card.features) == ("es-or-en", "text", "text", [])
    assert card.labels == ("english", "spanish") and card.threshold == 0.5
    assert card.algorithm == "bag_of_tokens_logistic_regression"
    assert set(card.metrics) == {"roc_auc", "accuracy", "f1"}
    assert card.metrics["roc_auc"] > 0.95 and card.metrics["accuracy"] > 0.9 and card.metrics["f1"] > 0.9
    assert card.data_fingerprint == fingerprint(fit.texts_train, fit.y_train)
    assert card.training["n_train"] == len(fit.texts_train) and card.training["n_test"] == len(fit.texts_test)


def test_training_is_reproducible(trained, fit):
    _, onnx_bytes, tokenizer_json = trained
    assert fit.tokenizer_json == tokenizer_json
    assert export_onnx(fit.model.coef_.reshape(-1), float(fit.model.intercept_[0])) == onnx_bytes


# -- the tokenizer ---------------------------------------------------------------------------


def test_tokenizer_json_pads_and_truncates(trained):
    tokenizer_json = trained[2]
    tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    assert tokenizer.token_to_id("[PAD]") == 0 and tokenizer.token_to_id("[UNK]") is not None
    assert tokenizer.padding["pad_id"] == 0 and tokenizer.padding["pad_token"] == "[PAD]"
    assert tokenizer.padding["length"] is None  # pad to the longest of the batch
    assert tokenizer.truncation["max_length"] == 128
    encodings = tokenizer.encode_batch(["hola", "uno dos tres cuatro", "x " * 400])
    assert len({len(e.ids) for e in encodings}) == 1 == len({len(e.attention_mask) for e in encodings})
    assert len(encodings[2].ids) == 128
    assert encodings[0].attention_mask.count(1) == len([i for i in encodings[0].ids if i != 0])
    json.loads(tokenizer_json)  # plain JSON, as stored beside model.onnx


def test_encode_texts(trained):
    tokenizer_json = trained[2]
    feeds = encode_texts(tokenizer_json, ["hola", "the capital of spain is madrid"])
    assert set(feeds) == {"input_ids", "attention_mask"}
    for array in feeds.values():
        assert array.dtype == np.int64 and array.ndim == 2 and array.shape[0] == 2
    assert feeds["attention_mask"][0].sum() < feeds["attention_mask"][1].sum() == feeds["input_ids"].shape[1]
    assert (feeds["input_ids"][feeds["attention_mask"] == 0] == 0).all()
    assert encode_texts(tokenizer_json, [""])["input_ids"].shape == (1, 1)  # never [N, 0]
    assert encode_texts(tokenizer_json, [])["input_ids"].shape == (0, 1)


# -- what the model computes -----------------------------------------------------------------


def test_onnx_matches_scikit_learn_on_the_held_out_texts(trained, fit):
    _, onnx_bytes, tokenizer_json = trained
    expected = fit.model.predict_proba(fit.counts(fit.texts_test))
    got = text_probabilities(onnx_bytes, tokenizer_json, fit.texts_test)
    assert got.dtype == np.float32 and got.shape == (len(fit.texts_test), 2)
    np.testing.assert_allclose(got, expected, atol=1e-5, rtol=0)
    np.testing.assert_allclose(got.sum(axis=1), 1.0, atol=1e-6)


def test_held_out_roc_auc(trained, fit):
    from sklearn.metrics import roc_auc_score

    scores = positive(trained, fit.texts_test)
    assert roc_auc_score(fit.y_test, scores) > 0.95
    assert scores[fit.y_test == 1].mean() > 0.8 > 0.2 > scores[fit.y_test == 0].mean()


def test_obvious_cases(trained):
    card = trained[0]
    spanish, english = positive(trained, [SPANISH, ENGLISH])
    assert spanish >= 0.5 > english
    assert card.label_for(float(spanish)) == "spanish" and card.label_for(float(english)) == "english"


def test_padding_does_not_change_a_probability(trained):
    long = " ".join(["The capital of Colombia is Bogotá, and the capital of Peru is Lima."] * 20)
    for text in (SPANISH, ENGLISH, "hola"):
        alone = positive(trained, [text])
        batched = positive(trained, [text, long, ""])
        assert encode_texts(trained[2], [text, long])["input_ids"].shape[1] == 128
        np.testing.assert_allclose(batched[0], alone[0], atol=1e-6, rtol=0)


def test_empty_and_unknown_texts_get_a_finite_probability(trained, session):
    tokenizer_json = trained[2]
    unknown = "漢字 日本語 😀"
    unk_id = Tokenizer.from_str(tokenizer_json.decode("utf-8")).token_to_id("[UNK]")
    assert set(encode_texts(tokenizer_json, [unknown])["input_ids"].ravel().tolist()) == {unk_id}
    scores = positive(trained, ["", unknown, "   "])
    assert np.isfinite(scores).all() and ((0 <= scores) & (scores <= 1)).all()
    # the serving side feeds encode_batch's arrays as they are: a batch of empty texts is [N, 0]
    empty = {"input_ids": np.zeros((2, 0), np.int64), "attention_mask": np.zeros((2, 0), np.int64)}
    (probabilities,) = session.run(["probabilities"], empty)
    assert probabilities.shape == (2, 2) and np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities[:, 1], scores[0], atol=1e-6)


# -- the registry ----------------------------------------------------------------------------


def test_publish_text_classifier_is_idempotent(store):
    registry = ModelRegistry(store)
    version = publish_text_classifier(registry)
    assert version is not None
    assert registry.champion("es-or-en").version == version
    assert registry.versions("es-or-en") == [version]
    loaded = registry.load("es-or-en", version)
    assert loaded.card.version == version and loaded.card.kind == "text"
    assert set(loaded.files) == {"tokenizer.json"}
    spanish, english = text_probabilities(loaded.onnx_bytes, loaded.files["tokenizer.json"], [SPANISH, ENGLISH])[:, 1]
    assert loaded.card.label_for(float(spanish)) == "spanish" and loaded.card.label_for(float(english)) == "english"
    assert publish_text_classifier(registry) is None
    assert registry.versions("es-or-en") == [version]


def test_publish_without_promotion_under_another_name(local_store):
    registry = ModelRegistry(local_store)
    version = publish_text_classifier(registry, "lang-test", promote=False)
    assert registry.card("lang-test", version).name == "lang-test"
    assert registry.champion("lang-test") is None
