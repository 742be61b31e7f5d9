"""Image datasets in the store, and the two the project makes itself (issue #18's test data).

An image dataset is ``datasets/<name>/`` with one folder per label (``<label>/<file>.png``) and
optionally ``unlabelled/`` (images without a label, which the semi-supervised GAN learns from too),
or a ``labels.csv`` of ``path,label`` (paths relative to the dataset's folder; an empty label is
unlabelled). Files are PNG or JPEG of any size; the model's transform (``aprendiz.images``) sizes them.

- ``digits_images``: scikit-learn's bundled handwritten digits (8 x 8), upscaled to 32 x 32, as the
  binary task "is it a zero".
- ``lesion_images``: a synthetic lesion set: a textured background with or without a bright blob,
  most of it unlabelled (the medical case: few labels, many images).
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass

import numpy as np

from aprendiz.store import ObjectStore

UNLABELLED = "unlabelled"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


@dataclass(frozen=True)
class ImageItem:
    data: bytes  # PNG
    label: str | None  # None: unlabelled


def _png(pixels: np.ndarray) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_images(size: int = 32) -> list[ImageItem]:
    """The 1,797 digits of scikit-learn, upscaled to ``size`` pixels, labelled "zero" or "other"."""
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    items = []
    for pixels, target in zip(digits.images, digits.target):
        small = Image.fromarray((pixels * (255.0 / 16.0)).astype(np.uint8))
        items.append(ImageItem(_png(np.asarray(small.resize((size, size), Image.Resampling.BILINEAR))),
                               "zero" if target == 0 else "other"))
    return items


def lesion_images(count: int = 400, labelled: int = 80, size: int = 48, seed: int = 0) -> list[ImageItem]:
    """``count`` textured images, half with a blob ("lesion") and half without ("clear"); only the
    first ``labelled`` keep their label."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size].astype(np.float32)
    items = []
    for i in range(count):
        fx, fy, phase = rng.uniform(0.05, 0.3), rng.uniform(0.05, 0.3), rng.uniform(0, 2 * np.pi)
        texture = 100 + 25 * np.sin(fx * x + fy * y + phase) + rng.normal(0, 12, (size, size))
        lesion = bool(i % 2)
        if lesion:
            cx, cy = rng.uniform(size * 0.2, size * 0.8, 2)
            radius = rng.uniform(size * 0.08, size * 0.18)
            texture += 90 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius ** 2))
        gray = np.repeat(texture[:, :, None], 3, axis=2) * np.array([1.0, 0.85, 0.8])  # a skin-like tint
        items.append(ImageItem(_png(gray), ("lesion" if lesion else "clear") if i < labelled else None))
    return items


def write_image_dataset(store: ObjectStore, name: str, items: list[ImageItem]) -> int:
    """Write ``items`` as ``datasets/<name>/<label>/<n>.png`` (``unlabelled/`` for no label)."""
    for n, item in enumerate(items):
        store.write_bytes(f"datasets/{name}/{item.label or UNLABELLED}/{n:05d}.png", item.data)
    return len(items)


@dataclass(frozen=True)
class ImageDataset:
    labelled: list[tuple[str, str]]  # (store key, label)
    unlabelled: list[str]

    @property
    def labels(self) -> list[str]:
        return sorted({label for _, label in self.labelled})


def read_image_dataset(store: ObjectStore, name: str) -> ImageDataset:
    """The images of ``datasets/<name>/``: from ``labels.csv`` if there is one, else one folder per label."""
    prefix = f"datasets/{name}/"
    if store.exists(prefix + "labels.csv"):
        labelled, unlabelled = [], []
        rows = csv.DictReader(io.StringIO(store.read_bytes(prefix + "labels.csv").decode("utf-8")))
        if rows.fieldnames is None or not {"path", "label"} <= set(rows.fieldnames):
            raise ValueError(f"{store.url}/{prefix}labels.csv needs the columns path,label")
        for row in rows:
            key = prefix + row["path"].lstrip("/")
            (labelled.append((key, row["label"])) if row["label"] else unlabelled.append(key))
        return ImageDataset(labelled, unlabelled)
    labelled, unlabelled = [], []
    for key in sorted(store.list(prefix)):
        parts = key[len(prefix):].split("/")
        if len(parts) != 2 or not parts[1].lower().endswith(IMAGE_SUFFIXES):
            continue
        (unlabelled.append(key) if parts[0] == UNLABELLED else labelled.append((key, parts[0])))
    if not labelled:
        raise ValueError(f"{store.url}/{prefix} holds no labelled image (one folder per label, or labels.csv)")
    return ImageDataset(labelled, unlabelled)
