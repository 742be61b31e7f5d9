"""One sentence encoder: ``load`` from its folder, ``embed`` texts to unit vectors (onnxruntime).

The folder is what ``aprendiz build-embedding-model`` writes: ``model.onnx`` (input_ids and
attention_mask int64 [N, L] -> float32 [N, D]), ``tokenizer.json`` and the ``embedding.json``
card. A text over the card's ``max_input_tokens`` is refused (a 400 naming it), never cut.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from aprendiz.errors import InvalidRequestError
from aprendiz.registry import ATTENTION_MASK, INPUT_IDS, TOKENIZER_FILE
from aprendiz.training.embedder import CARD_FILE, MODEL_FILE

# Texts per onnxruntime call: a batch is padded to its longest text, so a long one costs the
# whole call; slicing keeps memory bounded.
CHUNK_TEXTS = 32


class EmbeddingModelError(RuntimeError):
    """The folder does not hold a usable embedding model."""


def read_card(folder: Path) -> dict[str, Any]:
    try:
        card = json.loads((Path(folder) / CARD_FILE).read_text("utf-8"))
    except (OSError, ValueError) as exc:
        raise EmbeddingModelError(f"{folder}: no readable {CARD_FILE} ({exc}); build it with "
                                  "`aprendiz build-embedding-model`") from None
    for key in ("dimension", "max_input_tokens", "output"):
        if key not in card:
            raise EmbeddingModelError(f"{folder}/{CARD_FILE} has no `{key}`")
    return card


class OnnxEmbedder:
    def __init__(self, card: dict[str, Any], session: Any, tokenizer: Any):
        self.card = card
        self.dimension: int = int(card["dimension"])
        self.max_input_tokens: int = int(card["max_input_tokens"])
        self._session = session
        self._tokenizer = tokenizer
        self._output = card["output"]

    @classmethod
    def load(cls, folder: Path, *, threads: int = 1) -> "OnnxEmbedder":
        import onnxruntime as ort
        from tokenizers import Tokenizer

        folder = Path(folder)
        card = read_card(folder)
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, threads)
        try:
            session = ort.InferenceSession(str(folder / MODEL_FILE), options, providers=["CPUExecutionProvider"])
            tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        except Exception as exc:
            raise EmbeddingModelError(f"{folder}: cannot load the model ({type(exc).__name__}: {exc})") from None
        outputs = {o.name for o in session.get_outputs()}
        if card["output"] not in outputs:
            raise EmbeddingModelError(f"{folder}: the graph has no output `{card['output']}` ({sorted(outputs)})")
        return cls(card, session, tokenizer)

    def embed(self, texts: list[str]) -> tuple[np.ndarray, int]:
        """float32 [N, D] unit vectors, and the tokens the texts took (the usage)."""
        encodings = self._tokenizer.encode_batch(texts)
        lengths = [int(sum(e.attention_mask)) for e in encodings]
        for i, length in enumerate(lengths):
            if length > self.max_input_tokens:
                raise InvalidRequestError(
                    f"input[{i}] is {length} tokens; this model reads at most {self.max_input_tokens}", param="input"
                )
        parts = []
        for start in range(0, len(encodings), CHUNK_TEXTS):
            chunk = lengths[start : start + CHUNK_TEXTS]
            ids = np.zeros((len(chunk), max(chunk)), dtype=np.int64)
            mask = np.zeros_like(ids)
            for row, n in enumerate(chunk):  # padded per chunk, not to the whole request's longest
                ids[row, :n] = encodings[start + row].ids[:n]
                mask[row, :n] = 1
            parts.append(self._session.run([self._output], {INPUT_IDS: ids, ATTENTION_MASK: mask})[0])
        return np.concatenate(parts).astype(np.float32, copy=False), sum(lengths)
