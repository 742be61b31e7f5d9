"""Images for classifiers: decoding a client's PNG or JPEG safely, and the transform a model was
trained with, recorded in its card and applied the same way at serving.

Decoding refuses, each with a message that says which was wrong (``InvalidRequestError``, a 400):
bytes over ``max_bytes``; anything that is not a PNG or a JPEG; dimensions over ``max_pixels``, read
from the header before a pixel is decoded (a decompression bomb is a small file that declares a
huge image); and bytes Pillow cannot decode. Serving never needs torch: the transform is Pillow and
numpy.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from collections.abc import Sequence
from typing import Literal

import numpy as np
from pydantic import Field, model_validator

from aprendiz.errors import InvalidRequestError
from aprendiz.strict import Strict

FORMATS = ("PNG", "JPEG")


class ImageLimits(Strict):
    max_bytes: int = Field(8 * 1024 * 1024, gt=0, description="Largest encoded image accepted.")
    max_pixels: int = Field(16_000_000, gt=0, description="Largest width x height accepted (checked before decoding).")


class ImageTransform(Strict):
    """Resize the shorter side to ``resize``, crop the centre ``crop`` x ``crop``, scale to 0..1,
    normalise per channel with ``mean`` and ``std``; the result is float32, channels first."""

    channels: Literal["rgb", "gray"] = "rgb"
    resize: int = Field(36, gt=0)
    crop: int = Field(32, gt=0)
    mean: list[float] = Field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = Field(default_factory=lambda: [0.25, 0.25, 0.25])

    @model_validator(mode="after")
    def _shape(self) -> "ImageTransform":
        n = 3 if self.channels == "rgb" else 1
        if len(self.mean) != n or len(self.std) != n:
            raise ValueError(f"mean and std need {n} value(s) each for channels {self.channels!r}")
        if any(s <= 0 for s in self.std):
            raise ValueError("std values must be positive")
        if self.crop > self.resize:
            raise ValueError(f"crop ({self.crop}) cannot be larger than resize ({self.resize})")
        return self

    @property
    def shape(self) -> tuple[int, int, int]:
        """One image's tensor shape (C, H, W)."""
        return (3 if self.channels == "rgb" else 1, self.crop, self.crop)

    def apply(self, image) -> np.ndarray:
        from PIL import Image

        image = image.convert("RGB" if self.channels == "rgb" else "L")
        width, height = image.size
        scale = self.resize / min(width, height)
        size = (max(self.resize, round(width * scale)), max(self.resize, round(height * scale)))
        image = image.resize(size, Image.Resampling.BILINEAR)
        left, top = (size[0] - self.crop) // 2, (size[1] - self.crop) // 2
        image = image.crop((left, top, left + self.crop, top + self.crop))
        pixels = np.asarray(image, dtype=np.float32) / 255.0
        if pixels.ndim == 2:
            pixels = pixels[:, :, None]
        normalised = (pixels - np.asarray(self.mean, dtype=np.float32)) / np.asarray(self.std, dtype=np.float32)
        return np.ascontiguousarray(normalised.transpose(2, 0, 1), dtype=np.float32)


def decode(data: bytes, limits: ImageLimits, *, what: str = "image"):
    """A PIL image from PNG or JPEG bytes, within ``limits``; an InvalidRequestError naming the problem."""
    from PIL import Image, UnidentifiedImageError

    if len(data) > limits.max_bytes:
        raise InvalidRequestError(f"{what} is {len(data):,} bytes; the limit is {limits.max_bytes:,}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            if image.format not in FORMATS:
                raise InvalidRequestError(f"{what} is {image.format or 'not an image'}; PNG and JPEG are accepted")
            width, height = image.size
            if width * height > limits.max_pixels:
                raise InvalidRequestError(
                    f"{what} is {width}x{height} pixels; the limit is {limits.max_pixels:,} pixels")
            image.load()
    except InvalidRequestError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise InvalidRequestError(f"{what} declares more pixels than Pillow will decode (a decompression bomb)") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        raise InvalidRequestError(f"{what} cannot be decoded as PNG or JPEG") from None
    return image


_DATA_URL = re.compile(r"^data:image/[a-z.+-]+;base64,", re.IGNORECASE)
_WHITESPACE = re.compile(r"\s+")


def from_base64(value: object, limits: ImageLimits, *, what: str = "image") -> bytes:
    """The bytes of a base64 image (a data: URL prefix and line breaks are allowed), refused
    before decoding when they would exceed ``limits.max_bytes``."""
    if not isinstance(value, str):
        raise InvalidRequestError(f"{what} must be a base64 string, not {type(value).__name__}", param=what)
    text = _WHITESPACE.sub("", _DATA_URL.sub("", value, count=1))
    if len(text) // 4 * 3 > limits.max_bytes + 2:
        raise InvalidRequestError(
            f"{what} is about {len(text) // 4 * 3:,} bytes; the limit is {limits.max_bytes:,}", param=what)
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidRequestError(f"{what} is not valid base64", param=what) from None


def to_pixels(encoded: Sequence[bytes], transform: ImageTransform, limits: ImageLimits, *,
              what: str = "instances") -> np.ndarray:
    """Encoded images decoded within ``limits`` and transformed: float32 [N, C, H, W]. The error
    names the item at fault (``what[i]``)."""
    return np.stack([transform.apply(decode(data, limits, what=f"{what}[{i}]")) for i, data in enumerate(encoded)])
