"""Where a classifier runs (services/classifier/placement.py): each explicit setting, and ``auto``
choosing each way from the serving version's card."""

from __future__ import annotations

import pytest

from aprendiz.config import ClassifierModel
from aprendiz.registry import Feature, ModelCard, ModelRegistry
from aprendiz.services.classifier.placement import decide, place
from aprendiz.store import ObjectStore


def card(kind: str = "tabular", **metrics: float) -> ModelCard:
    shape = {"features": [Feature(name="x")]} if kind == "tabular" else {"text_field": "text"}
    return ModelCard(name="m", version="20260101T000000Z-abcd", kind=kind, data_fingerprint="f",  # type: ignore[arg-type]
                     algorithm="a", metrics=metrics, **shape)


def config(placement: str = "auto") -> ClassifierModel:
    return ClassifierModel(name="m", placement=placement)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("kind", "metrics", "where", "words"),
    [
        ("tabular", {"latency_ms": 0.014, "size_bytes": 1030}, "ingress", "light enough"),  # logistic regression
        ("text", {"latency_ms": 0.43, "size_bytes": 489_663}, "ingress", "light enough"),  # TF-IDF graph
        ("text", {"latency_ms": 5.03, "size_bytes": 90_411_426}, "replica", "over 1 ms a row"),  # MiniLM
        ("tabular", {"latency_ms": 0.2, "size_bytes": 200e6}, "replica", "over 32 MiB"),  # a huge forest
        ("tabular", {"roc_auc": 0.9}, "replica", "records no latency_ms"),  # a card written by hand
    ],
)
def test_auto_decides_from_the_card(kind, metrics, where, words):
    placement = decide(config(), card(kind, **metrics))
    assert placement.where == where
    assert words in placement.reason


def test_auto_without_a_serving_version_is_the_safe_choice():
    assert decide(config(), None).where == "replica"


@pytest.mark.parametrize("setting", ["ingress", "replica"])
def test_an_explicit_setting_wins_over_any_card(setting):
    for c in (card(latency_ms=0.01, size_bytes=10), card(latency_ms=50.0, size_bytes=1e9), None):
        placement = decide(config(setting), c)
        assert placement.where == setting
        assert placement.reason == f"placement: {setting} in the config"


@pytest.mark.parametrize("setting", ["auto", "replica"])
def test_a_gpu_classifier_is_placed_in_its_own_replicas_before_any_card_is_read(setting):
    gpu = ClassifierModel(name="m", placement=setting, accelerator="gpu", accelerator_type="L4")  # type: ignore[arg-type]
    for c in (card(latency_ms=0.01, size_bytes=10), None):  # a card light enough for the ingress, or none
        placement = decide(gpu, c)
        assert placement.where == "replica"
        assert placement.reason == "accelerator: gpu runs in replicas of its own (the ingress holds no GPU)"


def test_place_reads_no_card_for_a_gpu_classifier(tmp_path, caplog):
    broken = ModelRegistry(ObjectStore(str(tmp_path / "store")))
    broken.store.write_bytes("models/m/champion.json", b"{not json")
    with caplog.at_level("INFO", logger="aprendiz.classifier"):
        assert place(ClassifierModel(name="m", accelerator="gpu"), broken).where == "replica"
    assert "cannot read its card" not in caplog.text
    assert "classifier m: placed in the replica (accelerator: gpu" in caplog.text


def test_place_reads_the_champion_and_a_store_it_cannot_read_means_replica(tmp_path, job_training, caplog):
    registry = ModelRegistry(ObjectStore(str(tmp_path / "store")))
    job_training.train_builtin(registry, "m")
    with caplog.at_level("INFO", logger="aprendiz.classifier"):
        assert place(config(), registry).where == "ingress"  # the trained logistic regression
    assert "classifier m: placed in the ingress" in caplog.text
    broken = ModelRegistry(ObjectStore(str(tmp_path / "store")))
    broken.store.write_bytes("models/m/champion.json", b"{not json")
    assert place(config(), broken).where == "replica"
    assert place(config("ingress"), broken).where == "ingress"  # an explicit setting reads nothing
