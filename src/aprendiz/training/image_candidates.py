"""Image candidates in plain torch (issue #18's baselines): a small CNN and an MLP on pixels.

They need no torchvision, so they train in the project's environment; MobileNetV3, the vision
transformer and the semi-supervised GAN come with the image-training environment. Each network is
trained with early stopping on validation loss (the best epoch's weights are kept), exported to ONNX
with a dynamic batch dimension (input ``pixels`` float32 [N, C, H, W], output ``probabilities``
float32 [N, 2]: the registry's contract), and the export is checked against torch's outputs.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass, field

import numpy as np

from aprendiz.images import ImageTransform
from aprendiz.registry import OUTPUT

IMAGE_INPUT = "pixels"
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
