"""aprendiz.training.image_candidates: the small CNN and the pixel MLP learn "is it a zero" from
scikit-learn's digits, stop early, and export to ONNX that matches torch at any batch size."""

from __future__ import annotations

import io

import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from aprendiz.images import ImageTransform
from aprendiz.training.image_candidates import (
    ImageTrainingSpec,
    check_export,
    export_onnx,
    fit,
    pixel_mlp,
    probabilities,
    small_cnn,
    to_tensors,
)
from aprendiz.training.images import digits_images

TRANSFORM = ImageTransform(channels="gray", resize=32, crop=32, mean=[0.2], std=[0.3])


@pytest.fixture(scope="module")
def digits():
    items = digits_images()[:600]
    images = [Image.open(io.BytesIO(item.data)) for item in items]
    x, y = to_tensors(images, [int(item.label == "zero") for item in items], TRANSFORM)
    return (x[:420], y[:420]), (x[420:], y[420:])


@pytest.mark.parametrize("make", [small_cnn, pixel_mlp])
def test_a_candidate_learns_and_its_export_matches_torch(digits, make):
    import torch

    torch.set_num_threads(1)
    train, validation = digits
    model = make(TRANSFORM.shape)
    result = fit(model, train, validation, ImageTrainingSpec(epochs=20, patience=3, learning_rate=1e-2, progress=False))
    assert 0 <= result.best_epoch < result.epochs <= 20
    assert min(result.validation_loss) == result.validation_loss[result.best_epoch]
    # One digit in ten is a zero: accuracy would reward saying "other"; the ranking shows learning.
    auc = roc_auc_score(validation[1], probabilities(model, validation[0])[:, 1])
    assert auc > 0.95, (auc, result.validation_loss)
    exported = export_onnx(model, TRANSFORM.shape)
    assert check_export(exported, model, validation[0]) < 1e-4
    assert check_export(exported, model, validation[0][:1]) < 1e-4  # a batch of one: the batch is dynamic


def test_a_bad_export_is_caught(digits):
    train, validation = digits
    model = small_cnn(TRANSFORM.shape)
    exported = export_onnx(model, TRANSFORM.shape)
    with torch_no_grad():
        for parameter in model.parameters():
            parameter.add_(0.5)  # torch's model moves on; the export does not
    with pytest.raises(ValueError, match="differs from torch"):
        check_export(exported, model, validation[0][:8])


def torch_no_grad():
    import torch

    return torch.no_grad()
