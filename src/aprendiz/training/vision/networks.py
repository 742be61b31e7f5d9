"""The image networks that need torchvision, and the semi-supervised GAN's training epoch.

Each builder takes the transform's shape (C, H, W) and returns a module from float32 [N, C, H, W] pixels
to two logits; ``torchfit.export_onnx`` puts the softmax on top.

- ``mobilenet_v3_small``: torchvision's MobileNetV3-Small with two classes, from scratch unless ImageNet
  weights are given (``load_imagenet_weights``: every layer but the classifier's last, then fine-tuned).
  A one-channel image is repeated over the three channels MobileNet (and its ImageNet weights) expect.
- ``vit``: torchvision's ``VisionTransformer``, small (patches of 4 on 32 x 32, 4 layers, 4 heads,
  hidden 64, MLP 128), its patch projection taking the image's channels.
- ``ssgan_discriminator`` / ``ssgan_generator`` / ``gan_epoch``: the semi-supervised GAN of Salimans et
  al. (2016), "Improved techniques for training GANs": the discriminator has K + 1 = 3 outputs (the two
  classes, then "generated"); it learns the classes from the labelled images, and "real or generated"
  from real images (the labelled ones, and the unlabelled ones when given) against the generator's. The
  generator learns by feature matching. The classifier (``GanClassifier``) is the discriminator
  restricted to the K real classes, so its softmax is p(class | x, real).
"""

from __future__ import annotations

import io
import math
from typing import Any

import numpy as np

CLASSES = 2  # K; the GAN's discriminator has K + 1 outputs


def to_three_channels(module, channels: int):
    """``module`` behind a repeat of a one-channel image over three channels (unchanged for three)."""
    import torch

    if channels == 3:
        return module
    if channels != 1:
        raise ValueError(f"this network takes 1 or 3 channels, not {channels}")

    class ThreeChannels(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.net = inner

        def forward(self, pixels):
            return self.net(pixels.repeat(1, 3, 1, 1))

    return ThreeChannels(module)


def mobilenet_v3_small(shape: tuple[int, int, int], dropout: float = 0.2, bn_momentum: float = 0.1):
    """torchvision's MobileNetV3-Small with two outputs, randomly initialised. Its batch normalisation
    follows the batches with ``bn_momentum`` (torchvision's is 0.01, made for ImageNet's many steps: on a
    few hundred images the running statistics would still be far off when training stops)."""
    import torch.nn as nn
    from torchvision.models import mobilenet_v3_small as build

    model = build(weights=None, num_classes=CLASSES, dropout=dropout)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = bn_momentum
    return to_three_channels(model, shape[0])


def load_imagenet_weights(model, data: bytes) -> dict[str, Any]:
    """Load a MobileNetV3-Small state_dict (``torch.save`` of ImageNet weights, 1,000 classes) into every
    layer of ``model`` but the classifier's last, which keeps its fresh two-class weights. The file is read
    with ``torch.load(weights_only=True)``: tensors and plain containers only, never arbitrary objects.
    Returns what was loaded; a ValueError when the file is not such a state_dict."""
    import pickle

    import torch

    net = getattr(model, "net", model)  # the network inside ThreeChannels
    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        first = str(exc).split(". ")[0]
        raise ValueError("the weights file holds more than tensors, and is not loaded (torch.load with "
                         f"weights_only=True refused it: {first}); save the model's state_dict") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"the weights are a {type(state).__name__}, not a MobileNetV3-Small state_dict of tensors")
    last = f"classifier.{len(net.classifier) - 1}."
    own = net.state_dict()
    missing = sorted(k for k in own if k not in state and not k.startswith(last))
    unexpected = sorted(k for k in state if k not in own)
    mismatched = sorted(k for k in state if k in own and not k.startswith(last) and state[k].shape != own[k].shape)
    if missing or unexpected or mismatched:
        raise ValueError("the weights do not fit MobileNetV3-Small: "
                         f"missing {missing[:3]}, unexpected {unexpected[:3]}, other shapes {mismatched[:3]}")
    kept = {k: v for k, v in state.items() if not k.startswith(last)}
    net.load_state_dict(kept, strict=False)
    return {"tensors_loaded": len(kept), "replaced": last.rstrip(".")}


def vit(shape: tuple[int, int, int], patch_size: int = 4, num_layers: int = 4, num_heads: int = 4,
        hidden_dim: int = 64, mlp_dim: int = 128, dropout: float = 0.1):
    """A small torchvision ``VisionTransformer`` with two outputs; its patch projection takes ``shape``'s channels."""
    import torch.nn as nn
    from torchvision.models import VisionTransformer

    channels, height, width = shape
    if height != width or height % patch_size:
        raise ValueError(f"the vision transformer needs square images whose side divides by patch_size "
                         f"{patch_size}, not {height}x{width}")
    model = VisionTransformer(image_size=height, patch_size=patch_size, num_layers=num_layers, num_heads=num_heads,
                              hidden_dim=hidden_dim, mlp_dim=mlp_dim, dropout=dropout, num_classes=CLASSES)
    if channels != 3:
        model.conv_proj = nn.Conv2d(channels, hidden_dim, kernel_size=patch_size, stride=patch_size)
    return model


# -- the semi-supervised GAN --------------------------------------------------------------------------


def ssgan_discriminator(shape: tuple[int, int, int], width: int = 32, dropout: float = 0.3, noise: float = 0.1):
    """Three strided convolutions (LeakyReLU, dropout) and a linear layer to K + 1 logits. In training it
    adds Gaussian noise to its input, as Salimans et al. do; ``features`` are what feature matching matches."""
    import torch
    import torch.nn as nn

    channels, height, width_px = shape

    class Discriminator(nn.Module):
        def __init__(self):
            super().__init__()
            self.noise = noise
            self.body = nn.Sequential(
                nn.Dropout(dropout / 2),
                nn.Conv2d(channels, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
                nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                nn.Conv2d(2 * width, 4 * width, 3, stride=2, padding=1), nn.LeakyReLU(0.2), nn.Dropout(dropout),
                nn.AdaptiveAvgPool2d(1), nn.Flatten(),
            )
            self.head = nn.Linear(4 * width, CLASSES + 1)

        def features(self, pixels):
            if self.training and self.noise:
                pixels = pixels + self.noise * torch.randn_like(pixels)
            return self.body(pixels)

        def forward(self, pixels):
            return self.head(self.features(pixels))

    return Discriminator()


def ssgan_generator(shape: tuple[int, int, int], low: np.ndarray, high: np.ndarray, noise_dim: int = 64,
                    width: int = 32):
    """From noise [N, noise_dim] to images of ``shape``, within the real pixels' per-channel range
    (``low``, ``high``: the transform normalises, so the range is the data's, not [-1, 1])."""
    import torch
    import torch.nn as nn

    channels, height, width_px = shape
    start_h, start_w = math.ceil(height / 4), math.ceil(width_px / 4)

    class Generator(nn.Module):
        low: torch.Tensor  # buffers: the real pixels' per-channel range
        high: torch.Tensor

        def __init__(self):
            super().__init__()
            self.noise_dim = noise_dim
            self.project = nn.Sequential(nn.Linear(noise_dim, 2 * width * start_h * start_w),
                                         nn.BatchNorm1d(2 * width * start_h * start_w), nn.ReLU())
            self.body = nn.Sequential(
                nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                nn.ConvTranspose2d(width, width // 2, 4, stride=2, padding=1), nn.BatchNorm2d(width // 2), nn.ReLU(),
                nn.Conv2d(width // 2, channels, 3, padding=1),
            )
            self.register_buffer("low", torch.as_tensor(low, dtype=torch.float32).view(1, channels, 1, 1))
            self.register_buffer("high", torch.as_tensor(high, dtype=torch.float32).view(1, channels, 1, 1))

        def forward(self, z):
            out = self.body(self.project(z).view(len(z), 2 * width, start_h, start_w))[:, :, :height, :width_px]
            return self.low + (torch.tanh(out) + 1) / 2 * (self.high - self.low)

    return Generator()


def gan_classifier(discriminator):
    """The discriminator restricted to the K real classes: what is exported (softmax over those K)."""
    import torch.nn as nn

    class GanClassifier(nn.Module):
        def __init__(self):
            super().__init__()
            self.discriminator = discriminator

        def forward(self, pixels):
            return self.discriminator(pixels)[:, :CLASSES]

    return GanClassifier()


def gan_epoch(discriminator, generator, labelled: tuple[np.ndarray, np.ndarray], real: np.ndarray, *,
              batch_size: int, steps: int, learning_rate: float, weight_decay: float,
              unsupervised_weight: float = 1.0):
    """One GAN "epoch" of ``steps`` updates (the same number with or without unlabelled images, so the two
    are compared on equal training). Each step: the discriminator's supervised loss on a labelled batch,
    plus ``unsupervised_weight`` times its unsupervised loss (a batch of ``real`` as real, any class; a
    generated batch as generated); then the generator's feature-matching loss. Returns a callable for
    ``torchfit.fit`` (the epoch's mean discriminator loss)."""
    import torch
    import torch.nn.functional as F

    x, y = torch.from_numpy(labelled[0]), torch.from_numpy(labelled[1])
    pool = torch.from_numpy(real)
    d_optimiser = torch.optim.Adam(discriminator.parameters(), lr=learning_rate, betas=(0.5, 0.999),
                                   weight_decay=weight_decay)
    g_optimiser = torch.optim.Adam(generator.parameters(), lr=learning_rate, betas=(0.5, 0.999))
    labelled_batch, real_batch = min(batch_size, len(x)), min(batch_size, len(pool))
    state = {"labelled": torch.empty(0, dtype=torch.long), "real": torch.empty(0, dtype=torch.long)}

    def draw(name: str, count: int, size: int, rng) -> Any:
        """The next ``size`` indices of a shuffled cycle through ``count`` items."""
        if len(state[name]) < size:
            state[name] = torch.cat([state[name], torch.randperm(count, generator=rng)])
        taken, state[name] = state[name][:size], state[name][size:]
        return taken

    def noise(size: int, rng):
        return torch.randn(size, generator.noise_dim, generator=rng)

    def epoch(rng) -> float:
        generator.train()
        total = 0.0
        for _ in range(steps):
            # The discriminator: log p(y | x, real) on labelled images; real images are not generated;
            # generated images are. With logits l over K + 1 outputs, log p(real | x) = lse(l[:K]) - lse(l).
            batch = draw("labelled", len(x), labelled_batch, rng)
            supervised = F.cross_entropy(discriminator(x[batch])[:, :CLASSES], y[batch])
            real_logits = discriminator(pool[draw("real", len(pool), real_batch, rng)])
            with torch.no_grad():
                fake = generator(noise(real_batch, rng))
            fake_logits = discriminator(fake)
            unsupervised = (
                -(torch.logsumexp(real_logits[:, :CLASSES], 1) - torch.logsumexp(real_logits, 1)).mean()
                - (fake_logits[:, CLASSES] - torch.logsumexp(fake_logits, 1)).mean()
            )
            loss = supervised + unsupervised_weight * unsupervised
            d_optimiser.zero_grad(set_to_none=True)
            loss.backward()
            d_optimiser.step()
            total += loss.item()
            # The generator: feature matching (the mean of the discriminator's last features, real vs generated).
            with torch.no_grad():
                real_features = discriminator.features(pool[draw("real", len(pool), real_batch, rng)]).mean(0)
            fake_features = discriminator.features(generator(noise(real_batch, rng))).mean(0)
            g_loss = F.mse_loss(fake_features, real_features)
            g_optimiser.zero_grad(set_to_none=True)
            g_loss.backward()
            g_optimiser.step()
        generator.eval()
        return total / max(steps, 1)

    return epoch
