"""Image candidates in plain torch (issue #18's baselines): a small CNN and an MLP on pixels.

They need no torchvision, so they train in the project's environment; MobileNetV3, the vision
transformer and the semi-supervised GAN come with the image-training environment. Each network is
trained with early stopping on validation loss (the best epoch's weights are kept), exported to ONNX
with a dynamic batch dimension (input ``pixels`` float32 [N, C, H, W], output ``probabilities``
float32 [N, 2]: the registry's contract), and the export is checked against torch's outputs.
"""

from __future__ import annotations

import dataclasses
import io
import sys
import time
import warnings
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from aprendiz.images import ImageLimits, ImageTransform, to_pixels
from aprendiz.registry import IMAGE_INPUT, OUTPUT
from aprendiz.training.candidates import LATENCY_BUDGET_S, LATENCY_ROWS, CandidateResult, Inputs, train_with
from aprendiz.training.config import CandidateConfig, TrainingConfig
from aprendiz.training.dataset import Split
from aprendiz.training.onnx_export import CHUNK_ROWS, run_in_chunks

OPSET = 17
EXPORT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ImageTrainingSpec:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without a better validation loss before stopping
    seed: int = 0
    progress: bool = True


@dataclass
class FitResult:
    epochs: int
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)


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


def fit(model, train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
        spec: ImageTrainingSpec = ImageTrainingSpec()) -> FitResult:
    """Train with AdamW and cross-entropy; stop when validation loss has not improved for
    ``spec.patience`` epochs; leave the best epoch's weights in ``model``."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(spec.seed)
    x, y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    vx, vy = torch.from_numpy(validation[0]), torch.from_numpy(validation[1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()
    result = FitResult(epochs=0, best_epoch=-1)
    best, best_state, stale = float("inf"), None, 0
    generator = torch.Generator().manual_seed(spec.seed)
    bar = tqdm(range(spec.epochs), desc=type(model).__name__, unit="epoch", disable=not spec.progress)
    for epoch in bar:
        model.train()
        order, total = torch.randperm(len(x), generator=generator), 0.0
        for start in range(0, len(x), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            loss = loss_fn(model(x[batch]), y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total += loss.item() * len(batch)
        model.eval()
        with torch.no_grad():
            validation_loss = loss_fn(model(vx), vy).item()
        result.train_loss.append(total / len(x))
        result.validation_loss.append(validation_loss)
        result.epochs = epoch + 1
        bar.set_postfix(train=f"{result.train_loss[-1]:.3f}", validation=f"{validation_loss:.3f}")
        if validation_loss < best - 1e-6:
            best, stale, result.best_epoch = validation_loss, 0, epoch
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= spec.patience:
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return result


def probabilities(model, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return torch.softmax(model(torch.from_numpy(x)), dim=1).numpy()


def export_onnx(model, shape: tuple[int, int, int]) -> bytes:
    """``model`` with a softmax on top as ONNX: ``pixels`` [N, C, H, W] in, ``probabilities`` [N, 2] out."""
    import torch

    class WithSoftmax(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, pixels):
            return torch.softmax(self.inner(pixels), dim=1)

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript exporter: the dynamo one needs onnxscript, which the project does not install.
        torch.onnx.export(
            WithSoftmax(model).eval(), (torch.zeros((2, *shape)),), buffer,  # type: ignore[arg-type]
            input_names=[IMAGE_INPUT], output_names=[OUTPUT],
            dynamic_axes={IMAGE_INPUT: {0: "batch"}, OUTPUT: {0: "batch"}}, opset_version=OPSET, dynamo=False,
        )
    return buffer.getvalue()


def check_export(onnx_bytes: bytes, model, x: np.ndarray, tolerance: float = EXPORT_TOLERANCE) -> float:
    """The largest difference between onnxruntime's and torch's probabilities on ``x``; a ValueError
    past ``tolerance``."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    exported = session.run([OUTPUT], {IMAGE_INPUT: x})[0]
    difference = float(np.max(np.abs(exported - probabilities(model, x)))) if len(x) else 0.0
    if difference > tolerance:
        raise ValueError(f"the ONNX export differs from torch by {difference:.2e} (tolerance {tolerance:.0e})")
    return difference


# -- in the training job: the candidates go through the same skeleton as tabular ones ------------

BUILDERS = {"small_cnn": small_cnn, "pixel_mlp": pixel_mlp}
# A candidate's params that set the training (ImageTrainingSpec); the others go to the network's builder.
TRAINING_PARAMS = frozenset(f.name for f in dataclasses.fields(ImageTrainingSpec)) - {"seed", "progress"}


def default_image_candidates() -> list[CandidateConfig]:
    """The networks trained when training.yaml lists no candidates: the small CNN and the MLP on pixels."""
    return [CandidateConfig(name="small_cnn", algorithm="small_cnn"),
            CandidateConfig(name="pixel_mlp", algorithm="pixel_mlp")]


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
        import torch

        torch.manual_seed(self.spec.seed)
        self.history = fit(self.module, (x, y), self.validation, self.spec)
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        return np.concatenate([probabilities(self.module, x[i : i + CHUNK_ROWS]) for i in range(0, len(x), CHUNK_ROWS)])


def _session(onnx_bytes: bytes, threads: int | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = options.inter_op_num_threads = threads
    return ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])


def onnx_image_probabilities(onnx_bytes: bytes, pixels: np.ndarray, input_name: str = IMAGE_INPUT,
                             output_name: str = OUTPUT) -> np.ndarray:
    """onnxruntime's [N, 2] probabilities on float32 [N, C, H, W], as the classifier serves them."""
    return np.asarray(run_in_chunks(_session(onnx_bytes), output_name, {input_name: pixels}, CHUNK_ROWS))


def image_latency_ms(onnx_bytes: bytes, pixels: np.ndarray, rows: int = LATENCY_ROWS) -> float:
    """Mean time of one single-image onnxruntime call (one thread), in milliseconds."""
    session = _session(onnx_bytes, threads=1)
    session.run([OUTPUT], {IMAGE_INPUT: pixels[:1]})  # warm-up
    count, start = min(rows, len(pixels)), time.perf_counter()
    for i in range(count):
        session.run([OUTPUT], {IMAGE_INPUT: pixels[i : i + 1]})
        if time.perf_counter() - start > LATENCY_BUDGET_S:
            count = i + 1
            break
    return (time.perf_counter() - start) * 1000.0 / max(count, 1)


def image_inputs(candidate: CandidateConfig, split: Split, pixels: dict[str, np.ndarray],
                 config: TrainingConfig) -> Inputs:
    shape = config.image.shape
    return Inputs(
        pixels["train"], pixels["validation"], pixels["test"],
        estimator=lambda params: ImageNetwork(candidate.algorithm, shape, params, config.seed,
                                              (pixels["validation"], split.y_val)),
        export=lambda network: (export_onnx(network.module, shape), {}),
        served=lambda onnx_bytes, index: onnx_image_probabilities(onnx_bytes, pixels["test"][index]),
        latency_ms=lambda onnx_bytes: image_latency_ms(onnx_bytes, pixels["test"]),
    )


def split_pixels(split: Split, transform: ImageTransform, limits: ImageLimits = ImageLimits()) -> dict[str, np.ndarray]:
    """Each split's encoded images through ``transform``: float32 [N, C, H, W] (decoded once, for every candidate)."""
    return {part: to_pixels(list(x), transform, limits, what=part)
            for part, x in (("train", split.x_train), ("validation", split.x_val), ("test", split.x_test))}


def train_image_candidates(candidates: list[CandidateConfig], split: Split, config: TrainingConfig) -> list[CandidateResult]:
    """Every image candidate through ``train_with``; each result's params record the epochs trained
    and the best epoch (whose weights were kept)."""
    pixels = split_pixels(split, config.image)
    results = []
    for candidate in candidates:
        result = train_with(candidate, split, config, lambda: image_inputs(candidate, split, pixels, config))
        history = getattr(result.pipeline, "history", None)
        if history is not None:
            result.params = {**result.params, "epochs_trained": history.epochs, "best_epoch": history.best_epoch + 1}
        results.append(result)
    return results
