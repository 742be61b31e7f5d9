"""Image candidates in plain torch (issue #18's baselines): a small CNN and an MLP on pixels.

They need no torchvision, so they train in the project's environment; MobileNetV3, the vision
transformer and the semi-supervised GAN come with the image-training environment (``aprendiz.training.vision``:
its worker trains them there, ``vision.remote.RemoteImageNetwork`` drives it from here). Each network is
trained with early stopping on validation loss (the best epoch's weights are kept), exported to ONNX
with a dynamic batch dimension (input ``pixels`` float32 [N, C, H, W], output ``probabilities``
float32 [N, 2]: the registry's contract), and the export is checked against torch's outputs.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
from typing import Any, Mapping, Sequence

import numpy as np

from aprendiz.images import ImageLimits, ImageTransform, to_pixels
from aprendiz.registry import IMAGE_INPUT, OUTPUT
from aprendiz.training.candidates import CandidateResult, Inputs, feeds_latency_ms, train_with
from aprendiz.training.config import CandidateConfig, TrainingConfig
from aprendiz.training.dataset import Split
from aprendiz.training.onnx_export import CHUNK_ROWS, run_in_chunks
from aprendiz.training.vision.remote import REMOTE_ALGORITHMS

# The training loop, torch's probabilities and the ONNX export live in the vision package's torch-only
# module, which the image-training worker shares (these names are this module's too).
from aprendiz.training.vision.torchfit import EXPORT_TOLERANCE as EXPORT_TOLERANCE
from aprendiz.training.vision.torchfit import OPSET as OPSET
from aprendiz.training.vision.torchfit import FitResult as FitResult
from aprendiz.training.vision.torchfit import ImageTrainingSpec as ImageTrainingSpec
from aprendiz.training.vision.torchfit import check_export as check_export
from aprendiz.training.vision.torchfit import export_onnx as export_onnx
from aprendiz.training.vision.torchfit import fit as fit
from aprendiz.training.vision.torchfit import probabilities as probabilities

log = logging.getLogger(__name__)


def to_tensors(images: list, labels: list[int], transform: ImageTransform) -> tuple[np.ndarray, np.ndarray]:
    """PIL images through ``transform``: float32 [N, C, H, W], and int64 labels."""
    x = np.stack([transform.apply(image) for image in images]).astype(np.float32)
    return x, np.asarray(labels, dtype=np.int64)


def small_cnn(shape: tuple[int, int, int]):
    """Two convolutions, each with a 2x2 max pool, and a linear layer over the pooled maps."""
    import torch.nn as nn

    channels, height, width = shape
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(32 * (height // 4) * (width // 4), 2),
    )


def pixel_mlp(shape: tuple[int, int, int], hidden: int = 128):
    """A multilayer perceptron on the flattened pixels."""
    import torch.nn as nn

    inputs = shape[0] * shape[1] * shape[2]
    return nn.Sequential(nn.Flatten(), nn.Linear(inputs, hidden), nn.ReLU(), nn.Dropout(0.1), nn.Linear(hidden, 2))


# -- in the training job: the candidates go through the same skeleton as tabular ones ------------

BUILDERS = {"small_cnn": small_cnn, "pixel_mlp": pixel_mlp}
# A candidate's params that set the training (ImageTrainingSpec); the others go to the network's builder.
TRAINING_PARAMS = frozenset(f.name for f in dataclasses.fields(ImageTrainingSpec)) - {"seed", "progress"}


def default_image_candidates() -> list[CandidateConfig]:
    """The networks trained when training.yaml lists no candidates: the small CNN and the MLP on pixels; and,
    where the image-training environment is (``vision.remote.image_python``), MobileNetV3-Small, the vision
    transformer and the semi-supervised GAN, with and without the unlabelled images (what they changed)."""
    baselines = [CandidateConfig(name="small_cnn", algorithm="small_cnn"),
                 CandidateConfig(name="pixel_mlp", algorithm="pixel_mlp")]
    from aprendiz.training.vision.remote import resolve_image_python

    python, why = resolve_image_python()
    if python is None:
        _log_once(f"image candidates: the small CNN and the MLP only; {why}")
        return baselines
    return baselines + [
        CandidateConfig(name="mobilenet_v3_small", algorithm="mobilenet_v3_small"),
        CandidateConfig(name="vit", algorithm="vit"),
        CandidateConfig(name="ssgan", algorithm="ssgan"),
        CandidateConfig(name="ssgan_labelled_only", algorithm="ssgan", params={"use_unlabelled": False}),
    ]


_logged: set[str] = set()


def _log_once(message: str) -> None:
    if message not in _logged:
        _logged.add(message)
        log.warning(message)


class ImageNetwork:
    """A torch network with scikit-learn's ``fit`` / ``predict_proba``, so that the job's one skeleton
    (``candidates.train_with``: search, threshold, export check, test metrics) trains it. ``fit``
    stops early on ``validation`` (the validation split's pixels and labels)."""

    def __init__(self, algorithm: str, shape: tuple[int, int, int], params: dict[str, Any], seed: int,
                 validation: tuple[np.ndarray, np.ndarray]) -> None:
        training = {k: v for k, v in params.items() if k in TRAINING_PARAMS}
        self.spec = ImageTrainingSpec(**training, seed=seed, progress=sys.stderr.isatty())
        self.module = BUILDERS[algorithm](shape, **{k: v for k, v in params.items() if k not in TRAINING_PARAMS})
        self.validation = validation
        self.history: FitResult | None = None

    def fit(self, x: np.ndarray, y: np.ndarray) -> "ImageNetwork":
        self.history = fit(self.module, (x, y), self.validation, self.spec)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([probabilities(self.module, x[i : i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)])


def onnx_image_probabilities(onnx_bytes: bytes, pixels: np.ndarray, input_name: str = IMAGE_INPUT,
                             output_name: str = OUTPUT) -> np.ndarray:
    """onnxruntime's [N, 2] probabilities on float32 [N, C, H, W], as the classifier serves them."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return np.asarray(run_in_chunks(session, output_name, {input_name: pixels}, CHUNK_ROWS))


def _scoring(pixels: dict[str, np.ndarray], estimator, export) -> Inputs:
    """The pixels of the splits, and how every image candidate's export is scored on the test images."""
    test = pixels["test"]
    return Inputs(
        pixels["train"], pixels["validation"], test, estimator=estimator, export=export,
        served=lambda onnx_bytes, index: onnx_image_probabilities(onnx_bytes, test[index]),
        latency_ms=lambda onnx_bytes: feeds_latency_ms(onnx_bytes, {IMAGE_INPUT: test}),
    )


def image_inputs(candidate: CandidateConfig, split: Split, pixels: dict[str, np.ndarray],
                 config: TrainingConfig, weights: Mapping[str, bytes] | None = None) -> Inputs:
    """How ``candidate`` trains on the split's pixels (``pixels["unlabelled"]``, when there, for the GAN):
    in this process (the CNN, the MLP), or in the image-training worker (``REMOTE_ALGORITHMS``).
    ``weights``: files read from the store by key, for a candidate whose ``weights`` param names one."""
    shape = config.image.shape
    if candidate.algorithm in REMOTE_ALGORITHMS:
        return remote_image_inputs(candidate, split, pixels, config, weights or {})
    return _scoring(
        pixels,
        estimator=lambda params: ImageNetwork(candidate.algorithm, shape, params, config.seed,
                                              (pixels["validation"], split.y_val)),
        export=lambda network: (export_onnx(network.module, shape), {}),
    )


def remote_image_inputs(candidate: CandidateConfig, split: Split, pixels: dict[str, np.ndarray],
                        config: TrainingConfig, weights: Mapping[str, bytes]) -> Inputs:
    """A candidate trained by the worker in the image-training environment (``vision.remote``)."""
    from aprendiz.training.vision.remote import ImageWorkerError, RemoteImageNetwork, resolve_image_python

    python, why = resolve_image_python()
    if python is None:
        raise ImageWorkerError(why)

    def estimator(params: dict[str, Any]) -> RemoteImageNetwork:
        params = dict(params)
        key = params.pop("weights", None)
        if key is not None and key not in weights:
            raise ValueError(f"the weights {key!r} were not read from the store")
        return RemoteImageNetwork(candidate.algorithm, config.image.shape, params, config.seed,
                                  (pixels["validation"], split.y_val), pixels["test"],
                                  unlabelled=pixels.get("unlabelled"), weights=weights[key] if key else None,
                                  python=python)

    def export(network: RemoteImageNetwork) -> tuple[bytes, dict[str, bytes]]:
        assert network.onnx_bytes is not None
        return network.onnx_bytes, {}

    return _scoring(pixels, estimator, export)


def split_pixels(split: Split, transform: ImageTransform, limits: ImageLimits = ImageLimits()) -> dict[str, np.ndarray]:
    """Each split's encoded images through ``transform``: float32 [N, C, H, W] (decoded once, for every candidate)."""
    return {part: to_pixels(list(x), transform, limits, what=part)
            for part, x in (("train", split.x_train), ("validation", split.x_val), ("test", split.x_test))}


def train_image_candidates(candidates: list[CandidateConfig], split: Split, config: TrainingConfig, *,
                           unlabelled: Sequence[bytes] = (), weights: Mapping[str, bytes] | None = None,
                           ) -> list[CandidateResult]:
    """Every image candidate through ``train_with``; each result's params record the epochs trained
    and the best epoch (whose weights were kept), and for the worker's networks what they learnt from
    (the unlabelled images, ImageNet weights) and torch's and torchvision's versions. ``unlabelled``: the
    dataset's encoded images without labels (the semi-supervised GAN's); ``weights``: store files by key,
    for candidates whose ``weights`` param names one."""
    pixels = split_pixels(split, config.image)
    if len(unlabelled) and any(c.algorithm == "ssgan" for c in candidates):
        pixels["unlabelled"] = to_pixels(list(unlabelled), config.image, ImageLimits(), what="unlabelled")
    results = []
    for candidate in candidates:
        result = train_with(candidate, split, config,
                            lambda: image_inputs(candidate, split, pixels, config, weights))
        history = getattr(result.pipeline, "history", None)
        if history is not None:
            result.params = {**result.params, "epochs_trained": history.epochs, "best_epoch": history.best_epoch + 1,
                             **getattr(result.pipeline, "reported", {})}
        results.append(result)
    return results
