"""OpenAI's embeddings API: the request read and checked, the answer written.

Read in the ingress, before any replica is called: ``input`` is a string or a list of
strings (a token array is refused: token ids are one model's, and this API's clients
mostly send text); ``encoding_format`` is ``float`` or ``base64`` (the official client asks
for base64 and decodes it: little-endian float32); ``dimensions`` may only name the model's
own dimension (these models cannot shorten their vectors).
"""

from __future__ import annotations

import base64
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from aprendiz.errors import InvalidRequestError

KNOWN_FIELDS = frozenset({"model", "input", "encoding_format", "dimensions", "user"})


@dataclass(frozen=True)
class EmbeddingRequest:
    texts: list[str]
    encoding_format: Literal["float", "base64"]


def read_request(payload: dict[str, Any], *, dimension: int | None, max_inputs: int) -> EmbeddingRequest:
    """The texts and format of a request, or a 400 that names what is wrong."""
    unknown = sorted(set(payload) - KNOWN_FIELDS)
    if unknown:
        raise InvalidRequestError(f"unknown field `{unknown[0]}`; an embeddings request takes "
                                  f"{sorted(KNOWN_FIELDS)}", param=unknown[0])
    texts = payload.get("input")
    if isinstance(texts, str):
        texts = [texts]
    if not isinstance(texts, list) or not texts:
        raise InvalidRequestError("`input` must be a string or a non-empty list of strings", param="input")
    if len(texts) > max_inputs:
        raise InvalidRequestError(f"`input` has {len(texts)} texts; the most per request is {max_inputs} "
                                  "(max_inputs)", param="input")
    for i, text in enumerate(texts):
        if isinstance(text, (int, list)):
            raise InvalidRequestError("token arrays are not taken: send the text itself", param="input")
        if not isinstance(text, str) or not text:
            raise InvalidRequestError(f"input[{i}] must be a non-empty string", param="input")
    encoding = payload.get("encoding_format") or "float"
    if encoding not in ("float", "base64"):
        raise InvalidRequestError("`encoding_format` must be `float` or `base64`", param="encoding_format")
    dimensions = payload.get("dimensions")
    if dimensions is not None and (dimension is None or dimensions != dimension):
        raise InvalidRequestError(
            f"`dimensions` is {dimensions}; this model's vectors have {dimension} and cannot be shortened",
            param="dimensions",
        )
    return EmbeddingRequest(texts=texts, encoding_format="base64" if encoding == "base64" else "float")


def embedding_response(model: str, vectors: np.ndarray, prompt_tokens: int, encoding: str) -> dict[str, Any]:
    """OpenAI's answer: one ``embedding`` object per text, in order, and the usage."""
    vectors = np.ascontiguousarray(vectors, dtype="<f4")
    if encoding == "base64":
        values: list[Any] = [base64.b64encode(row.tobytes()).decode("ascii") for row in vectors]
    else:
        values = vectors.tolist()
    return {
        "object": "list",
        "data": [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(values)],
        "model": model,
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
