"""The image-training worker: ``python -m aprendiz.training.vision.worker REQUEST_DIR``, run by the
image-training environment's interpreter (``remote.RemoteImageNetwork`` runs it, with ``PYTHONPATH`` set to
aprendiz's ``src`` folder).

Reads from REQUEST_DIR:

- ``request.json``: ``algorithm`` (``mobilenet_v3_small``, ``vit`` or ``ssgan``), ``params`` (the
  training's: epochs, batch_size, learning_rate, weight_decay, patience; the GAN's: use_unlabelled,
  unsupervised_weight, steps_per_epoch; the others go to the network's builder), ``seed``, ``shape``
  [C, H, W], ``progress`` (a tqdm bar per epoch on stderr), ``threads`` (torch's, or null);
- ``request.npz``: ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test`` and optionally
  ``unlabelled`` (float32 pixels [N, C, H, W], int64 labels);
- ``weights.pt`` (optional, MobileNetV3-Small only): ImageNet weights to fine-tune from.

Writes to REQUEST_DIR: ``model.onnx``; ``reply.npz`` with torch's probabilities on ``x_val`` and
``x_test`` (``p_val``, ``p_test``, float32 [N, 2]); ``reply.json`` with the training history, what was
used (unlabelled images, weights), the versions and the export's own check. On an error, ``reply.json``
holds ``error`` and the exit status is 1.
"""

from __future__ import annotations

import json
import math
import sys
import time
import traceback
from dataclasses import fields
from pathlib import Path
from typing import Any

import numpy as np

from aprendiz.training.vision import networks, torchfit

ALGORITHMS = ("mobilenet_v3_small", "vit", "ssgan")
# Each network's training defaults, sized so that all of them train on the builtin sets (a few hundred
# 32 x 32 images) in a few minutes on 2 cores; a candidate's params override them.
DEFAULTS: dict[str, dict[str, Any]] = {
    "mobilenet_v3_small": {"epochs": 30, "batch_size": 32, "learning_rate": 1e-3, "patience": 6, "augment": True},
    "vit": {"epochs": 30, "batch_size": 32, "learning_rate": 1e-3, "weight_decay": 0.05, "patience": 5, "augment": True},
    "ssgan": {"epochs": 20, "batch_size": 32, "learning_rate": 1e-3, "patience": 5},
}
GAN_PARAMS = {"use_unlabelled": True, "unsupervised_weight": 1.0, "steps_per_epoch": None}
# A GAN epoch's updates: a pass over the labelled images, at least MIN_GAN_STEPS; the same with or without
# the unlabelled images (which are cycled through across epochs), so the two are compared on equal training.
MIN_GAN_STEPS = 8
TRAINING_PARAMS = frozenset(f.name for f in fields(torchfit.ImageTrainingSpec)) - {"seed", "progress"}


class RequestError(ValueError):
    """The request cannot be trained as asked."""


def _shape(request: dict[str, Any]) -> tuple[int, int, int]:
    channels, height, width = (int(v) for v in request["shape"])
    return channels, height, width


def train(request: dict[str, Any], arrays: dict[str, np.ndarray], weights: bytes | None) -> tuple[Any, dict[str, Any]]:
    """The trained classifier (a module from pixels to K logits, in eval mode) and what to report."""
    import torch

    algorithm = request["algorithm"]
    if algorithm not in ALGORITHMS:
        raise RequestError(f"unknown algorithm {algorithm!r}; this worker trains {list(ALGORITHMS)}")
    shape = _shape(request)
    params = {**DEFAULTS[algorithm], **(request.get("params") or {})}
    seed = int(request.get("seed", 0))
    spec = torchfit.ImageTrainingSpec(**{k: v for k, v in params.items() if k in TRAINING_PARAMS},
                                      seed=seed, progress=bool(request.get("progress", False)))
    rest = {k: v for k, v in params.items() if k not in TRAINING_PARAMS}
    train_set = (arrays["x_train"], arrays["y_train"])
    validation = (arrays["x_val"], arrays["y_val"])
    report: dict[str, Any] = {"params": params}
    torch.manual_seed(seed)
    if algorithm == "ssgan":
        gan = {k: rest.pop(k, v) for k, v in GAN_PARAMS.items()}
        noise_dim = int(rest.pop("noise_dim", 64))
        generator_width = int(rest.pop("generator_width", 32))
        unlabelled = arrays.get("unlabelled")
        unlabelled = unlabelled if gan["use_unlabelled"] and unlabelled is not None else np.zeros((0, *shape), np.float32)
        real = np.concatenate([train_set[0], unlabelled]) if len(unlabelled) else train_set[0]
        discriminator = networks.ssgan_discriminator(shape, **rest)
        low, high = real.min(axis=(0, 2, 3)), real.max(axis=(0, 2, 3))
        generator = networks.ssgan_generator(shape, low, high, noise_dim=noise_dim, width=generator_width)
        model = networks.gan_classifier(discriminator)
        steps = gan["steps_per_epoch"] or max(MIN_GAN_STEPS, math.ceil(len(train_set[0]) / spec.batch_size))
        epoch = networks.gan_epoch(discriminator, generator, train_set, real, batch_size=spec.batch_size,
                                   steps=int(steps), learning_rate=spec.learning_rate, weight_decay=spec.weight_decay,
                                   unsupervised_weight=float(gan["unsupervised_weight"]))
        report.update(unlabelled_images=int(len(unlabelled)), real_images=int(len(real)), steps_per_epoch=int(steps))
        history = torchfit.fit(model, train_set, validation, spec, epoch=epoch, desc=algorithm)
    else:
        if weights is not None and algorithm != "mobilenet_v3_small":
            raise RequestError(f"weights are for mobilenet_v3_small, not {algorithm}")
        model = networks.mobilenet_v3_small(shape, **rest) if algorithm == "mobilenet_v3_small" else networks.vit(shape, **rest)
        if weights is not None:
            report["pretrained"] = networks.load_imagenet_weights(model, weights)
        history = torchfit.fit(model, train_set, validation, spec, desc=algorithm)
    report["history"] = history.to_json()
    return model, report


def versions() -> dict[str, str]:
    import onnx
    import onnxruntime
    import torch
    import torchvision

    return {"python": sys.version.split()[0], "torch": torch.__version__, "torchvision": torchvision.__version__,
            "onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "numpy": np.__version__}


def run(folder: Path) -> dict[str, Any]:
    import torch

    start = time.perf_counter()
    request = json.loads((folder / "request.json").read_text())
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    with np.load(folder / "request.npz") as stored:
        arrays = {k: stored[k] for k in stored.files}
    missing = [k for k in ("x_train", "y_train", "x_val", "y_val", "x_test") if k not in arrays]
    if missing:
        raise RequestError(f"request.npz lacks {missing}")
    weights_file = folder / "weights.pt"
    weights = weights_file.read_bytes() if weights_file.exists() else None
    model, report = train(request, arrays, weights)
    shape = _shape(request)
    p_val, p_test = torchfit.probabilities(model, arrays["x_val"]), torchfit.probabilities(model, arrays["x_test"])
    onnx_bytes = torchfit.export_onnx(model, shape)
    report["export_max_diff"] = torchfit.check_export(onnx_bytes, model, arrays["x_test"])
    (folder / "model.onnx").write_bytes(onnx_bytes)
    np.savez(folder / "reply.npz", p_val=p_val.astype(np.float32), p_test=p_test.astype(np.float32))
    report.update(opset=torchfit.OPSET, versions=versions(), seconds=time.perf_counter() - start)
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m aprendiz.training.vision.worker REQUEST_DIR", file=sys.stderr)
        return 2
    folder = Path(args[0])
    try:
        reply = run(folder)
        status = 0
    except Exception as exc:  # the caller records it as the candidate's error
        traceback.print_exc(file=sys.stderr)
        reply, status = {"error": f"{type(exc).__name__}: {exc}"}, 1
    (folder / "reply.json").write_text(json.dumps(reply, default=float))
    return status


if __name__ == "__main__":
    sys.exit(main())
