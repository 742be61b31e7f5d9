"""The pure-torch parts of training an image network: early stopping on validation loss with a progress
bar per epoch, torch's probabilities, and the ONNX export with its check.

Imports numpy at module level and torch, tqdm and onnxruntime inside functions, so it loads in the main
environment (``image_candidates``, the CNN and MLP baselines) and in the image-training worker alike.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

OPSET = 17
EXPORT_TOLERANCE = 1e-4
# The registry's names (aprendiz.registry.IMAGE_INPUT and OUTPUT; a test checks they agree): the worker
# does not import the registry, which needs the main environment's packages.
IMAGE_INPUT = "pixels"
OUTPUT = "probabilities"
CHUNK = 256  # images per forward pass outside training (validation loss, probabilities)


@dataclass(frozen=True)
class ImageTrainingSpec:
    epochs: int = 30
    batch_size: int = 64
    learning_rate: float = 3e-3
    weight_decay: float = 1e-4
    patience: int = 4  # epochs without a better validation loss before stopping
    augment: bool = False  # random horizontal and vertical flips of the training images (not where a flip changes the class)
    seed: int = 0
    progress: bool = True


@dataclass
class FitResult:
    epochs: int
    best_epoch: int
    train_loss: list[float] = field(default_factory=list)
    validation_loss: list[float] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"epochs": self.epochs, "best_epoch": self.best_epoch,
                "train_loss": self.train_loss, "validation_loss": self.validation_loss}

    @classmethod
    def from_json(cls, value: dict[str, Any]) -> "FitResult":
        return cls(int(value["epochs"]), int(value["best_epoch"]),
                   [float(v) for v in value.get("train_loss", [])], [float(v) for v in value.get("validation_loss", [])])


# One training epoch: given the epoch's torch.Generator, update the weights and return the mean training loss.
Epoch = Callable[[Any], float]


def flips(x, generator):
    """Each image of ``x`` [N, C, H, W] flipped left-right, and then upside down, each with probability 1/2."""
    import torch

    for dim in (3, 2):
        flip = (torch.rand(len(x), generator=generator) < 0.5)[:, None, None, None]
        x = torch.where(flip, x.flip(dim), x)
    return x


def recalibrate_batch_norm(model, x: np.ndarray) -> None:
    """Set the running statistics of ``model``'s batch normalisation to the exact ones of ``x`` under the
    current weights (one pass, no gradients). On a few hundred images, running averages would otherwise
    still carry early epochs' (and the initial) statistics when training stops, and the network in eval
    mode answers nearly the same for every image."""
    import torch

    layers = [m for m in model.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    if not layers or not len(x):
        return
    momenta = [layer.momentum for layer in layers]
    was_training = model.training
    model.train()
    for layer in layers:
        layer.reset_running_stats()
        layer.momentum = None  # a cumulative average over the batches below
    with torch.no_grad():
        for start in range(0, len(x), CHUNK):
            model(torch.from_numpy(x[start : start + CHUNK]))
    for layer, momentum in zip(layers, momenta):
        layer.momentum = momentum
    model.train(was_training)


def supervised_epoch(model, train: tuple[np.ndarray, np.ndarray], spec: ImageTrainingSpec) -> Epoch:
    """Mini-batches of cross-entropy under AdamW, in a fresh order each epoch (with ``spec.augment``, the
    images randomly flipped). A last batch of one image is skipped when there are more (batch
    normalisation cannot train on one); a network with batch normalisation has its statistics
    recalibrated on the training images after each epoch (``recalibrate_batch_norm``)."""
    import torch

    x, y = torch.from_numpy(train[0]), torch.from_numpy(train[1])
    optimiser = torch.optim.AdamW(model.parameters(), lr=spec.learning_rate, weight_decay=spec.weight_decay)
    loss_fn = torch.nn.CrossEntropyLoss()

    def epoch(generator) -> float:
        order, total, seen = torch.randperm(len(x), generator=generator), 0.0, 0
        for start in range(0, len(x), spec.batch_size):
            batch = order[start : start + spec.batch_size]
            if len(batch) == 1 and len(x) > 1:
                continue
            images = flips(x[batch], generator) if spec.augment else x[batch]
            loss = loss_fn(model(images), y[batch])
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            total, seen = total + loss.item() * len(batch), seen + len(batch)
        recalibrate_batch_norm(model, train[0])
        return total / max(seen, 1)

    return epoch


def validation_loss(model, x: np.ndarray, y: np.ndarray) -> float:
    """Mean cross-entropy of ``model``'s logits on (x, y), in chunks (the model in eval mode)."""
    import torch

    loss_fn = torch.nn.CrossEntropyLoss(reduction="sum")
    total = 0.0
    with torch.no_grad():
        for start in range(0, len(x), CHUNK):
            total += loss_fn(model(torch.from_numpy(x[start : start + CHUNK])),
                             torch.from_numpy(y[start : start + CHUNK])).item()
    return total / max(len(x), 1)


def fit(model, train: tuple[np.ndarray, np.ndarray], validation: tuple[np.ndarray, np.ndarray],
        spec: ImageTrainingSpec = ImageTrainingSpec(), *, epoch: Epoch | None = None, desc: str | None = None,
        ) -> FitResult:
    """Train with ``epoch`` (by default, AdamW and cross-entropy on ``train``); stop when validation loss
    (``model``'s cross-entropy on ``validation``) has not improved for ``spec.patience`` epochs; leave
    the best epoch's weights in ``model``. A progress bar per epoch (``spec.progress``) on stderr."""
    import torch
    from tqdm import tqdm

    torch.manual_seed(spec.seed)
    if epoch is None:
        epoch = supervised_epoch(model, train, spec)
    result = FitResult(epochs=0, best_epoch=-1)
    best, best_state, stale = float("inf"), None, 0
    generator = torch.Generator().manual_seed(spec.seed)
    bar = tqdm(range(spec.epochs), desc=desc or type(model).__name__, unit="epoch", disable=not spec.progress)
    for index in bar:
        model.train()
        train_loss = epoch(generator)
        model.eval()
        loss = validation_loss(model, *validation)
        result.train_loss.append(train_loss)
        result.validation_loss.append(loss)
        result.epochs = index + 1
        bar.set_postfix(train=f"{train_loss:.3f}", validation=f"{loss:.3f}")
        if loss < best - 1e-6:
            best, stale, result.best_epoch = loss, 0, index
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
    """torch's softmax of ``model``'s logits: float32 [N, 2], in chunks."""
    import torch

    if not len(x):
        return np.zeros((0, 2), dtype=np.float32)
    with torch.no_grad():
        return np.concatenate([torch.softmax(model(torch.from_numpy(x[i : i + CHUNK])), dim=1).numpy()
                               for i in range(0, len(x), CHUNK)])


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


def onnx_probabilities(onnx_bytes: bytes, x: np.ndarray) -> np.ndarray:
    """onnxruntime's probabilities of an export on ``x`` (CPU), in chunks."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    if not len(x):
        return np.zeros((0, 2), dtype=np.float32)
    return np.concatenate([session.run([OUTPUT], {IMAGE_INPUT: x[i : i + CHUNK]})[0] for i in range(0, len(x), CHUNK)])


def check_export(onnx_bytes: bytes, model, x: np.ndarray, tolerance: float = EXPORT_TOLERANCE) -> float:
    """The largest difference between onnxruntime's and torch's probabilities on ``x``; a ValueError
    past ``tolerance``."""
    difference = float(np.max(np.abs(onnx_probabilities(onnx_bytes, x) - probabilities(model, x)))) if len(x) else 0.0
    if difference > tolerance:
        raise ValueError(f"the ONNX export differs from torch by {difference:.2e} (tolerance {tolerance:.0e})")
    return difference
