"""One loaded classifier version: ``load`` / ``ready`` / ``predict`` over an onnxruntime session.

Three kinds, one contract (the registry's card says which):

- tabular: float32 [N, F] in the card's feature order -> the ONNX input ``card.onnx_input``;
- text: strings, tokenised with the ``tokenizer.json`` stored beside ``model.onnx`` (the
  ``tokenizers`` library) -> ``input_ids`` and ``attention_mask`` int64 [N, L];
- image: float32 [N, C, H, W], made from the client's images by the card's transform (the
  protocol decodes them) -> the ONNX input ``card.onnx_input``.

Either way the output ``card.onnx_output`` is float [N, 2], column 1 the positive class.
Artifacts are ONNX only: a pickle or joblib file from the store would run code when
loaded, so none is ever read.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from aprendiz import columns
from aprendiz.registry import ATTENTION_MASK, INPUT_IDS, TOKENIZER_FILE, LoadedArtifact, ModelCard
from aprendiz.training.onnx_export import CHUNK_ROWS, run_in_chunks

# Rows per onnxruntime call: an exported k-NN holds its training rows and computes every distance
# of a call at once; serving slices a large batch as the training job slices its scoring.
PREDICT_CHUNK_ROWS = CHUNK_ROWS


# model.onnx is read whole and parsed by protobuf (2 GiB at most); the classifiers trained here are far
# smaller (the largest, an exported k-NN over 100k rows, is about 12 MiB).
MAX_ONNX_BYTES = 512 * 1024 * 1024


class ModelLoadError(RuntimeError):
    """A version cannot serve: unreadable graph, wrong inputs or outputs, or a failed self-check."""


def check_onnx_bytes(card: ModelCard, data: bytes) -> None:
    """Refuse, before onnxruntime sees them, bytes that are not a self-contained ONNX graph of a sane size."""
    import onnx

    where = f"{card.name} {card.version}: model.onnx"
    if len(data) > MAX_ONNX_BYTES:
        raise ModelLoadError(f"{where} is {len(data)} bytes, over the limit of {MAX_ONNX_BYTES}")
    if data[:1] == b"\x80":  # the PROTO opcode that pickle protocols 2 to 5 (and joblib files) begin with
        raise ModelLoadError(f"{where} is a pickle, not ONNX: refused unread (unpickling runs code)")
    try:
        graph = onnx.load_from_string(data).graph  # from bytes: external data is named, never read
    except Exception as exc:  # protobuf's DecodeError, or onnx's own
        raise ModelLoadError(f"{where} is not an ONNX model: {exc}") from exc
    if any(t.data_location == onnx.TensorProto.EXTERNAL for t in _tensors(graph)):
        raise ModelLoadError(f"{where} keeps tensors in external data (files of the machine that loads it): "
                             "export it with its weights inside")


def _tensors(graph) -> Iterator[Any]:
    """Every tensor of a graph: initializers and node attributes, subgraphs included."""
    import onnx

    yield from graph.initializer
    yield from (sparse.values for sparse in graph.sparse_initializer)
    for node in graph.node:
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.TENSOR:
                yield attribute.t
            yield from attribute.tensors
            for subgraph in ([attribute.g] if attribute.type == onnx.AttributeProto.GRAPH else []) + list(attribute.graphs):
                yield from _tensors(subgraph)


def _check_image_input(card: ModelCard, session) -> None:
    """The graph's image input must take the card's transform's [C, H, W] (a fixed dimension that
    differs would fail every request)."""
    assert card.image is not None
    declared = next(i for i in session.get_inputs() if i.name == card.onnx_input).shape
    expected = card.image.shape
    fixed = [d if isinstance(d, int) else None for d in declared[1:]]
    if len(declared) != 4 or any(d is not None and d != e for d, e in zip(fixed, expected)):
        raise ModelLoadError(f"{card.name} {card.version}: graph input {card.onnx_input!r} is {declared}; the card's "
                             f"transform makes [N, {', '.join(map(str, expected))}]")


class OnnxClassifier:
    """A binary classifier: a batch in (rows or texts), the positive class's probability out."""

    def __init__(self, card: ModelCard, session, tokenizer=None) -> None:
        self.card = card
        self._session = session
        self._tokenizer = tokenizer
        self._inputs = {i.name for i in session.get_inputs()}

    @property
    def session(self):
        """The onnxruntime session (its ``get_providers()`` says where it runs)."""
        return self._session

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def signature(self) -> tuple:
        """What a request must look like; a swap must keep it (a new schema is a new model name)."""
        image = self.card.image.shape if self.card.image else None
        return (self.card.kind, tuple((f.name, f.type == "category") for f in self.card.features), self.card.text_field,
                image)

    @classmethod
    def load(cls, artifact: LoadedArtifact, *, threads: int = 1,
             providers: Sequence[str] = ("CPUExecutionProvider",)) -> "OnnxClassifier":
        """Build the session from the artifact's bytes and check it before anyone is served by it.
        ``providers``: onnxruntime's execution providers in order of preference (the CUDA provider
        first on a GPU replica, the CPU one last as the fallback)."""
        import onnxruntime as ort

        card = artifact.card
        check_onnx_bytes(card, artifact.onnx_bytes)
        tokenizer = None
        if card.kind == "text":
            if TOKENIZER_FILE not in artifact.files:
                raise ModelLoadError(f"{card.name} {card.version}: a text model needs {TOKENIZER_FILE} beside model.onnx")
            from tokenizers import Tokenizer

            try:
                tokenizer = Tokenizer.from_str(artifact.files[TOKENIZER_FILE].decode("utf-8"))
            except Exception as exc:  # tokenizers raises plain Exceptions
                raise ModelLoadError(f"{card.name} {card.version}: {TOKENIZER_FILE} does not load: {exc}") from exc
            if tokenizer.padding is None:
                tokenizer.enable_padding(pad_id=0)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(artifact.onnx_bytes, options, providers=list(providers))
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{card.name} {card.version}: onnxruntime cannot load model.onnx: {exc}") from exc
        inputs = {i.name for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        needed = {INPUT_IDS, ATTENTION_MASK} if card.kind == "text" else set(card.graph_inputs())
        if not needed <= inputs:
            raise ModelLoadError(f"{card.name} {card.version}: graph inputs {sorted(inputs)} lack {sorted(needed - inputs)}")
        if card.onnx_output not in outputs:
            raise ModelLoadError(f"{card.name} {card.version}: graph has no output {card.onnx_output!r} (has {sorted(outputs)})")
        if card.image is not None:
            _check_image_input(card, session)
        model = cls(card, session, tokenizer)
        model.self_check()
        return model

    def self_check(self) -> None:
        """One probe (a zero row, or a short text): one finite probability in [0, 1]."""
        if self.card.image is not None:
            probe: Any = np.zeros((1, *self.card.image.shape), dtype=np.float32)
        else:
            probe = ["hola"] if self.card.kind == "text" else columns.probe(self.card.features)
        try:
            probability = self.predict(probe)
        except Exception as exc:
            raise ModelLoadError(f"{self.card.name} {self.version}: self-check failed: {exc}") from exc
        if probability.shape != (1,) or not np.isfinite(probability).all() or not 0 <= probability[0] <= 1:
            raise ModelLoadError(f"{self.card.name} {self.version}: self-check gave {probability!r}")

    @staticmethod
    def stack(parts: list) -> Any:
        """Join several requests' inputs into one batch (arrays or lists of texts)."""
        if isinstance(parts[0], np.ndarray):
            return np.concatenate(parts)
        if isinstance(parts[0], columns.Columns):
            return columns.Columns.concat(parts)
        return [text for part in parts for text in part]

    def _feeds(self, batch: Any) -> dict[str, np.ndarray]:
        if isinstance(batch, columns.Columns):
            return batch.values
        if self._tokenizer is None:
            return {self.card.onnx_input: batch}
        encodings = self._tokenizer.encode_batch(list(batch))
        feeds = {
            INPUT_IDS: np.asarray([e.ids for e in encodings], dtype=np.int64),
            ATTENTION_MASK: np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
        }
        return {k: v for k, v in feeds.items() if k in self._inputs}

    def predict(self, batch: Any) -> np.ndarray:
        """Probability of the positive class for each row (float32 [N, F]) or text, scored
        ``PREDICT_CHUNK_ROWS`` rows an onnxruntime call (memory bounded by the slice)."""
        probabilities = np.asarray(
            run_in_chunks(self._session, self.card.onnx_output, self._feeds(batch), PREDICT_CHUNK_ROWS)
        )
        return probabilities[:, 1] if probabilities.ndim == 2 else probabilities.reshape(-1)

    def labels_for(self, probabilities: np.ndarray) -> list[str]:
        return [self.card.label_for(float(p)) for p in probabilities]
