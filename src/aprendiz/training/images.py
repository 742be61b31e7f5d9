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

import base64
import binascii
import csv
import hashlib
import io
from dataclasses import dataclass

import numpy as np

from aprendiz.errors import InvalidRequestError
from aprendiz.images import ImageLimits, ImageTransform, decode
from aprendiz.registry import dataset_prefix
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


def lesion_images(count: int = 400, labelled: int = 80, size: int = 48, seed: int = 0,
                  contrast: float = 90.0) -> list[ImageItem]:
    """``count`` textured images, half with a blob ("lesion") ``contrast`` grey levels brighter at its
    centre, half without ("clear"); only the first ``labelled`` keep their label."""
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
            texture += contrast * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / (2 * radius ** 2))
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


def is_image_dataset(store: ObjectStore, name: str) -> bool:
    """Whether ``datasets/<name>/`` holds images (PNG or JPEG files outside ``quarantine/``)."""
    prefix = dataset_prefix(name)
    return any(key.lower().endswith(IMAGE_SUFFIXES) and not key[len(prefix):].startswith("quarantine/")
               for key in store.list(prefix))


def _check(data: bytes, limits: ImageLimits, where: str) -> str | None:
    """Why these bytes cannot be trained on (what serving would answer with a 400), or None."""
    try:
        decode(data, limits, what=where)
    except InvalidRequestError as exc:
        return str(exc)
    return None


def load_image_dataset(store: ObjectStore, name: str, transform: ImageTransform, labels: tuple[str, str],
                       label_column: str = "label", limits: ImageLimits = ImageLimits()):
    """The images of ``datasets/<name>/`` and the image feedback of ``feedback/<name>/`` as one pool
    (a :class:`~aprendiz.training.dataset.Dataset` whose ``x`` holds the encoded images).

    Labels are the folder names (or labels.csv's), which must be the run's (negative, positive)
    names or 0 / 1. An image that does not decode within ``limits`` (what serving would refuse) is
    quarantined with the reason; so is tabular or text feedback. Duplicates (the same bytes) keep
    the last label, feedback after the dataset, as for tabular rows."""
    from aprendiz.training.dataset import Dataset, DatasetError, deduplicated, read_feedback_records

    try:
        found = read_image_dataset(store, name)
    except ValueError as exc:
        raise DatasetError(str(exc)) from None
    unknown = sorted({label for _, label in found.labelled} - {*labels, "0", "1"})
    if unknown:
        raise DatasetError(
            f"the images' labels {found.labels} are not the run's labels {list(labels)}: name them in "
            f"{dataset_prefix(name)}training.yaml as labels: [<negative>, <positive>] (e.g. {unknown[0]} as one of them)")
    encoded, ys, origin, quarantine, digests = [], [], [], [], []

    def add(data: bytes, label: int, source: str, line: int, from_feedback: bool) -> None:
        reason = _check(data, limits, source)
        if reason is not None:
            quarantine.append({"source": source, "line": line, "row": source, "reason": reason})
            return
        encoded.append(data)
        ys.append(label)
        origin.append(from_feedback)
        digests.append(hashlib.sha256(data).digest())

    for key, label in found.labelled:
        add(store.read_bytes(key), labels.index(label) if label in labels else int(label), key, 0, False)
    feedback, feedback_bad = read_feedback_records(store, name)
    quarantine.extend(feedback_bad)
    for number, record in enumerate(feedback, start=1):
        if record.image is None:
            quarantine.append({"source": "feedback", "line": number, "row": record.model_dump(mode="json"),
                               "reason": f"{'text' if record.text is not None else 'tabular'} feedback for an image model"})
            continue
        try:
            data = base64.b64decode(record.image, validate=True)
        except (binascii.Error, ValueError):
            quarantine.append({"source": "feedback", "line": number, "row": record.image[:100],
                               "reason": "the image is not valid base64"})
            continue
        add(data, record.label, f"feedback {number}", number, True)
    unlabelled = []
    for key in found.unlabelled:
        data = store.read_bytes(key)
        reason = _check(data, limits, key)
        if reason is None:
            unlabelled.append(data)
        else:
            quarantine.append({"source": key, "line": 0, "row": key, "reason": reason})
    kept = deduplicated(encoded, digests, ys, origin)
    return Dataset(
        features=[], label_column=label_column, x=kept.x, y=kept.y, from_feedback=kept.from_feedback,
        sources=[f"{dataset_prefix(name)} ({len(found.labelled)} labelled, {len(found.unlabelled)} unlabelled images)"],
        schema_source="image", rows_read=len(found.labelled) + len(found.unlabelled) + len(feedback) + len(feedback_bad),
        feedback_read=len(feedback) + len(feedback_bad), quarantine=quarantine, duplicates_dropped=kept.dropped,
        labels_corrected=kept.corrected, image=transform, unlabelled=unlabelled,
    )


def seed_images(store: ObjectStore, name: str, items: list[ImageItem], labels: tuple[str, str],
                transform: ImageTransform | None = None) -> bool:
    """Write ``items`` as ``datasets/<name>/`` unless images are there, with a training.yaml naming the
    (negative, positive) labels (and the transform) when there is none. Returns whether it wrote them."""
    import yaml

    if is_image_dataset(store, name):
        return False
    config_key = dataset_prefix(name) + "training.yaml"
    if not store.exists(config_key):
        config: dict = {"labels": list(labels)}
        if transform is not None:
            config["image"] = transform.model_dump()
        store.write_bytes(config_key, yaml.safe_dump(config, sort_keys=False).encode("utf-8"))
    write_image_dataset(store, name, items)
    return True


# Both builtin image sets are small grayscale-like pictures: one channel, no resize beyond a 4-pixel margin.
DIGITS_TRANSFORM = ImageTransform(channels="gray", resize=32, crop=32, mean=[0.25], std=[0.35])
LESIONS_TRANSFORM = ImageTransform(channels="rgb", resize=36, crop=32)


def seed_digits_dataset(store: ObjectStore, name: str = "digits-zero") -> bool:
    """scikit-learn's digits, 32 x 32, labelled "other" (negative) or "zero" (positive)."""
    return seed_images(store, name, digits_images(), ("other", "zero"), DIGITS_TRANSFORM)


def seed_lesions_dataset(store: ObjectStore, name: str = "lesions") -> bool:
    """The synthetic lesion set: 400 images, 80 labelled "clear" (negative) or "lesion" (positive)."""
    return seed_images(store, name, lesion_images(), ("clear", "lesion"), LESIONS_TRANSFORM)
