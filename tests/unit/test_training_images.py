"""The training job on image datasets (aprendiz.training.images, image_candidates, job): a folder of
images in the store becomes a promoted ONNX model whose card records the transform serving applies."""

from __future__ import annotations

import base64
import io

import numpy as np
import pytest
from PIL import Image

from aprendiz.images import to_pixels
from aprendiz.registry import FeedbackRecord, ModelRegistry
from aprendiz.services.classifier.model import OnnxClassifier
from aprendiz.training.config import TrainingConfig
from aprendiz.training.dataset import DatasetError, seed_builtin
from aprendiz.training.images import (
    LESIONS_TRANSFORM,
    ImageItem,
    digits_images,
    is_image_dataset,
    lesion_images,
    load_image_dataset,
    write_image_dataset,
)
from aprendiz.training.job import TrainingError, run_training

CNN = {"name": "small_cnn", "algorithm": "small_cnn", "params": {"epochs": 20}}
MLP = {"name": "pixel_mlp", "algorithm": "pixel_mlp", "params": {"epochs": 20}}
LESIONS = TrainingConfig.model_validate({"labels": ["clear", "lesion"], "image": LESIONS_TRANSFORM.model_dump(),
                                         "candidates": [CNN, MLP]})


def test_the_builtin_lesions_are_trained_promoted_and_serve_with_the_recorded_transform(store):
    """On a local folder and on the S3-protocol server alike."""
    registry = ModelRegistry(store)
    assert seed_builtin(store, "lesions") and is_image_dataset(store, "lesions")
    result = run_training(registry, "lesions", LESIONS)
    assert result.promoted and result.split == {"train": 48, "validation": 16, "test": 16}
    assert {c["name"] for c in result.candidates if not c["error"]} == {"small_cnn", "pixel_mlp"}
    assert all(c["onnx_max_diff"] <= 1e-4 for c in result.candidates)
    assert result.candidates[0]["params"]["epochs_trained"] >= result.candidates[0]["params"]["best_epoch"] >= 1
    card = registry.card("lesions", result.version)
    assert card.kind == "image" and card.image == LESIONS_TRANSFORM and card.onnx_input == "pixels"
    assert card.labels == ("clear", "lesion") and card.metrics["roc_auc"] > 0.8
    assert card.training["onnx"]["opsets"]["ai.onnx"] == 17
    assert card.training["onnx"]["inputs"]["pixels"] == ["batch", 3, 32, 32]  # a dynamic batch
    assert {"report.html", "roc.png"} <= {key.rsplit("/", 1)[1] for key in result.report_keys.values()}
    # What serves: the card's transform on the client's bytes, then the graph.
    model = OnnxClassifier.load(registry.load("lesions", result.version))
    items = lesion_images(count=40, labelled=40, seed=99)
    pixels = to_pixels([item.data for item in items], card.image, _limits())
    truth = np.asarray([item.label == "lesion" for item in items])
    predicted = np.asarray([label == "lesion" for label in model.labels_for(model.predict(pixels))])
    assert (predicted == truth).mean() >= 0.8


def _limits():
    from aprendiz.images import ImageLimits

    return ImageLimits()


def test_a_second_run_meets_the_champion_on_the_same_test_images(local_store):
    store = local_store
    registry = ModelRegistry(store)
    seed_builtin(store, "lesions")
    first = run_training(registry, "lesions", LESIONS.model_copy(update={"candidates": LESIONS.candidates[1:]}))
    second = run_training(registry, "lesions", LESIONS)
    assert first.promoted and second.champion_before == first.version
    assert second.champion_metrics is not None and "roc_auc" in second.champion_metrics
    assert "champion" in second.reason


def _png(value: int, size: int = 32) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (size, size), (value, value, value)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_bad_images_are_quarantined_feedback_joins_and_the_last_label_wins(local_store):
    store = local_store
    registry = ModelRegistry(store)
    items = [ImageItem(_png(v), "lesion" if v > 127 else "clear") for v in range(0, 250, 5)]
    write_image_dataset(store, "shades", items)
    store.write_bytes("datasets/shades/clear/broken.png", b"\x89PNG not really")
    store.write_bytes("datasets/shades/clear/notes.txt", b"not an image, not read")
    relabelled = items[0].data  # a dark one, now said to be a lesion
    registry.write_feedback("shades", [
        FeedbackRecord(image=base64.b64encode(_png(254)).decode(), label=1),
        FeedbackRecord(image=base64.b64encode(relabelled).decode(), label=1),
        FeedbackRecord(text="a text", label=0),
    ])
    dataset = load_image_dataset(store, "shades", LESIONS_TRANSFORM, ("clear", "lesion"))
    reasons = {q["source"]: q["reason"] for q in dataset.quarantine}
    assert "cannot be decoded" in reasons["datasets/shades/clear/broken.png"]
    assert reasons["feedback"] == "text feedback for an image model"
    assert dataset.rows_from_feedback == 2 and dataset.duplicates_dropped == 1 and dataset.labels_corrected == 1
    assert len(dataset.y) == len(items) + 1


def test_labels_that_are_not_the_runs_say_how_to_name_them(local_store):
    store = local_store
    write_image_dataset(store, "digits", digits_images()[:60])
    with pytest.raises(DatasetError, match=r"labels \['other', 'zero'\].*training.yaml as labels"):
        run_training(ModelRegistry(store), "digits", TrainingConfig.model_validate({"candidates": [CNN]}))


def test_an_image_dataset_cannot_challenge_a_tabular_champion_nor_train_tabular_candidates(local_store, job_training):
    store = local_store
    registry = ModelRegistry(store)
    job_training.train_builtin(registry, "breast-cancer")
    write_image_dataset(store, "breast-cancer", lesion_images(count=60, labelled=60))
    with pytest.raises(TrainingError, match="is a tabular model; the dataset is image"):
        run_training(registry, "breast-cancer", LESIONS)
    seed_builtin(store, "lesions")
    with pytest.raises(TrainingError, match=r"\['logreg'\] do not train on images"):
        run_training(registry, "lesions", LESIONS.model_copy(update={"candidates": [
            *LESIONS.candidates[:1], TrainingConfig.model_validate(
                {"candidates": [{"name": "logreg", "algorithm": "logistic_regression"}]}).candidates[0]]}))


def test_the_report_says_what_the_unlabelled_images_changed():
    from aprendiz.training.candidates import CandidateResult
    from aprendiz.training.report import build_report, unlabelled_effect

    def gan(name, use, auc):
        return CandidateResult(name=name, algorithm="ssgan", params={"use_unlabelled": use},
                               test_metrics={"roc_auc": auc}, test_probabilities=np.linspace(0, 1, 8), confusion=[[4, 0], [0, 4]])

    pair = [gan("ssgan", True, 0.91), gan("ssgan_labelled_only", False, 0.84)]
    effect = unlabelled_effect(pair, "roc_auc")
    assert effect == ("ssgan (with the unlabelled images) roc_auc 0.9100 against ssgan_labelled_only (labelled images "
                      "only) 0.8400: +0.0700 on the same test images")
    assert unlabelled_effect(pair[:1], "roc_auc") is None
    report = build_report({"model": "m", "selection_metric": "roc_auc", "best_candidate": "ssgan"}, pair,
                          np.array([0, 0, 0, 0, 1, 1, 1, 1]), None, ("clear", "lesion"))
    assert "what the unlabelled images changed" in report["report.html"].decode()


def test_the_job_trains_the_gan_with_and_without_the_unlabelled_images_and_says_what_they_changed(local_store,
                                                                                                   image_python):
    """The semi-supervised case through the job: the builtin lesions (80 labelled, 320 not), the GAN in
    the image-training environment (make image-venv) with and without the unlabelled images."""
    registry = ModelRegistry(local_store)
    seed_builtin(local_store, "lesions")
    quick = {"epochs": 2, "threads": 1}
    config = LESIONS.model_copy(update={"candidates": TrainingConfig.model_validate({"candidates": [
        {"name": "ssgan", "algorithm": "ssgan", "params": quick},
        {"name": "ssgan_labelled_only", "algorithm": "ssgan", "params": {**quick, "use_unlabelled": False}},
    ]}).candidates})
    result = run_training(registry, "lesions", config)
    by_name = {c["name"]: c for c in result.candidates}
    assert not by_name["ssgan"]["error"] and not by_name["ssgan_labelled_only"]["error"], by_name
    assert by_name["ssgan"]["params"]["unlabelled_images"] == 320
    assert by_name["ssgan_labelled_only"]["params"]["unlabelled_images"] == 0
    assert result.unlabelled_effect and result.unlabelled_effect.startswith("ssgan (with the unlabelled images) roc_auc")
    report = registry.store.read_bytes(result.report_keys["report.html"]).decode()
    assert "what the unlabelled images changed" in report
