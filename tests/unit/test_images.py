"""aprendiz.images (decoding a client's image safely, the recorded transform) and
aprendiz.training.images (image datasets in the store, and the two the project makes)."""

from __future__ import annotations

import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from aprendiz.errors import InvalidRequestError
from aprendiz.images import ImageLimits, ImageTransform, decode
from aprendiz.store import ObjectStore
from aprendiz.training.images import (
    digits_images,
    lesion_images,
    read_image_dataset,
    write_image_dataset,
)


def _encoded(image: Image.Image, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


def _bomb(width: int, height: int) -> bytes:
    """A PNG whose header declares width x height (1-bit gray), with a tiny compressed body."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    rows = zlib.compress(b"\x00" * (1 + (width + 7) // 8) * 4)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


LIMITS = ImageLimits(max_bytes=200_000, max_pixels=1_000_000)


def test_png_and_jpeg_decode():
    picture = Image.new("RGB", (40, 30), (200, 10, 10))
    for fmt in ("PNG", "JPEG"):
        decoded = decode(_encoded(picture, fmt), LIMITS)
        assert decoded.size == (40, 30) and decoded.format == fmt


@pytest.mark.parametrize(("data", "message"), [
    (b"\x00" * 300_000, "300,000 bytes; the limit is 200,000"),
    (b"not an image at all", "cannot be decoded as PNG or JPEG"),
    (_encoded(Image.new("RGB", (8, 8)), "GIF"), "is GIF; PNG and JPEG are accepted"),
    (_bomb(5_000, 5_000), "5000x5000 pixels; the limit is 1,000,000 pixels"),
    (_encoded(Image.new("RGB", (64, 64)), "PNG")[:60], "cannot be decoded"),
])
def test_bad_images_are_refused_saying_what_is_wrong(data, message):
    with pytest.raises(InvalidRequestError, match=message.replace("(", r"\(")):
        decode(data, LIMITS, what="instances[0]")


def test_a_bomb_past_pillows_own_limit_is_refused_even_with_a_generous_limit():
    with pytest.raises(InvalidRequestError, match="decompression bomb|pixels"):
        decode(_bomb(100_000, 100_000), ImageLimits(max_bytes=10_000, max_pixels=10**12))


def test_the_transform_resizes_crops_and_normalises():
    transform = ImageTransform(resize=36, crop=32, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25])
    white = Image.new("RGB", (100, 50), (255, 255, 255))
    tensor = transform.apply(white)
    assert tensor.shape == transform.shape == (3, 32, 32) and tensor.dtype == np.float32
    assert np.allclose(tensor, (1.0 - 0.5) / 0.25)
    gray = ImageTransform(channels="gray", resize=32, crop=32, mean=[0.0], std=[1.0]).apply(white)
    assert gray.shape == (1, 32, 32) and np.allclose(gray, 1.0)
    with pytest.raises(ValueError, match="3 value"):
        ImageTransform(mean=[0.5])
    with pytest.raises(ValueError, match="cannot be larger"):
        ImageTransform(resize=16, crop=32)


def test_the_project_makes_its_own_image_data(tmp_path):
    digits = digits_images()
    assert len(digits) == 1797 and {d.label for d in digits} == {"zero", "other"}
    assert Image.open(io.BytesIO(digits[0].data)).size == (32, 32)
    lesions = lesion_images(count=40, labelled=10, size=32)
    assert sum(item.label is None for item in lesions) == 30
    assert {item.label for item in lesions[:10]} == {"lesion", "clear"}
    # A blob is brighter than the texture around it.
    brightest = [np.asarray(Image.open(io.BytesIO(item.data))).max() for item in lesions[:10]]
    assert min(b for b, item in zip(brightest, lesions) if item.label == "lesion") > 150

    store = ObjectStore(str(tmp_path))
    write_image_dataset(store, "lesions", lesions)
    dataset = read_image_dataset(store, "lesions")
    assert len(dataset.labelled) == 10 and len(dataset.unlabelled) == 30 and dataset.labels == ["clear", "lesion"]


def test_a_labels_csv_names_the_images(tmp_path):
    store = ObjectStore(str(tmp_path))
    png = _encoded(Image.new("RGB", (4, 4)))
    for name in ("a.png", "b.png", "c.png"):
        store.write_bytes(f"datasets/x/img/{name}", png)
    store.write_bytes("datasets/x/labels.csv", b"path,label\nimg/a.png,cancer\nimg/b.png,healthy\nimg/c.png,\n")
    dataset = read_image_dataset(store, "x")
    assert dataset.labelled == [("datasets/x/img/a.png", "cancer"), ("datasets/x/img/b.png", "healthy")]
    assert dataset.unlabelled == ["datasets/x/img/c.png"]
    store.write_bytes("datasets/y/labels.csv", b"file,class\n")
    with pytest.raises(ValueError, match="path,label"):
        read_image_dataset(store, "y")
    with pytest.raises(ValueError, match="no labelled image"):
        read_image_dataset(store, "nothing")
