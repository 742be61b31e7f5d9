"""The default text classifier ``es-or-en``: is this message Spanish? (positive = Spanish).

Trained offline, on this machine, from what ships with the project: every message of the
tiny chat model's corpus (``training/tinyllm/corpus/conversations.jsonl``, roughly half
Spanish and half English; user, assistant and system messages alike).

Labels. The corpus has no language labels, so each message is labelled by a rule
(:func:`language_of`), documented here because it *is* the training data:

* the text is lower-cased and split into words (runs of letters);
* Spanish evidence = the words in :data:`SPANISH_WORDS` (Spanish function words and
  greetings: "de", "el", "qué", "hola", ...), plus every word that contains a letter English
  does not use (á é í ó ú ü ñ), plus every "¿" and "¡";
* English evidence = the words in :data:`ENGLISH_WORDS` ("the", "of", "is", "what", "hello", ...);
* Spanish when the Spanish evidence is larger, English when the English evidence is larger;
  a tie (including 0 to 0, as in "Holaa") is undecided and the message is dropped.

The two word lists are disjoint and leave out words common to both languages ("a", "me",
"no", "hay", "son", "come", ...), so that names such as "La Paz" or "Bogotá" inside an
English sentence do not outvote its English words.

Exact duplicate messages (after stripping whitespace) are kept once, so a text cannot be in
both the training and the held-out split. On the shipped corpus this keeps 818 of the 821
distinct messages (412 Spanish, 406 English); the rule drops "A panda eats mostly bamboo.",
"Holaa" and "Hey, hola".

Model. A ``tokenizers`` BPE tokenizer (NFKC + lower-case, split on whitespace and
punctuation; vocabulary of at most :data:`VOCAB_SIZE`, though the small corpus stops the
trainer near 1,900, when every training word is one token; "[PAD]" = 0 and "[UNK]" = 1;
truncation to 128 tokens, padding to the longest text of a batch) is trained on the
training split; a scikit-learn LogisticRegression is fitted on the token counts of each
text (the bag of token ids of its encoding). The ONNX graph, built by hand, computes
exactly that model's probability::

    p = sigmoid(b + sum_t attention_mask[n, t] * w[input_ids[n, t]])
    probabilities = [1 - p, p]

in float64 (cast to float32 at the end), so padding columns (mask 0) change nothing. The
metrics on the card are computed with onnxruntime on the held-out split.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aprendiz.registry import ModelCard, ModelRegistry, new_version
from aprendiz.training.evaluation import binary_metrics

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

DEFAULT_NAME = "es-or-en"
LABELS = ("english", "spanish")
TEXT_FIELD = "text"
THRESHOLD = 0.5
TEST_SIZE = 0.25
ALGORITHM = "bag_of_tokens_logistic_regression"
INPUT_IDS, ATTENTION_MASK, OUTPUT = "input_ids", "attention_mask", "probabilities"
TOKENIZER_FILE = "tokenizer.json"
PAD_TOKEN, UNK_TOKEN = "[PAD]", "[UNK]"
PAD_ID, UNK_ID = 0, 1
VOCAB_SIZE = 4000
MAX_LENGTH = 128
C = 1.0  # LogisticRegression's inverse L2 strength
OPSET = 17
# IR 8 is the lowest that opset 17 allows, so every onnxruntime the platform supports (>= 1.20) loads it.
IR_VERSION = 8

# -- labelling rule ------------------------------------------------------------------------

SPANISH_WORDS = frozenset(
    """
    de la el los las un una unos unas y o que qué es son está están estás estoy soy eres del al en con por para
    como cómo cuál cuáles cuánto cuántos cuántas dónde cuándo quién porque pero muy más menos también sí
    se su sus mi mis tu tus te lo le les nos yo tú usted ella ellos ellas este esta esto ese esa tiene tengo
    puedo puede hace va hola gracias buenas días tardes noches adiós bien sobre todo cuando donde ni sin ya
    hasta luego nada algo algunos algunas dime necesito ayuda vale chao llamo
    """.split()
)
ENGLISH_WORDS = frozenset(
    """
    the of and is are am was were be to in on at for with from by as that this these those it its
    what which who whom whose where when why how do does did can could will would should i you he she we they
    my your his her our their him us them an not yes or but if so than then there here have has had
    hello hi hey thanks thank please sorry ok okay good bye goodbye morning evening night afternoon after before
    some explain
    """.split()
)
_WORD = re.compile(r"[^\W\d_]+")
_SPANISH_LETTER = re.compile(r"[áéíóúüñ]")


def language_evidence(text: str) -> tuple[int, int]:
    """(Spanish evidence, English evidence) of ``text`` under the labelling rule (see the module docstring)."""
    low = text.lower()
    words = _WORD.findall(low)
    spanish = sum(1 for w in words if w in SPANISH_WORDS or _SPANISH_LETTER.search(w))
    spanish += low.count("¿") + low.count("¡")
    english = sum(1 for w in words if w in ENGLISH_WORDS)
    return spanish, english


def language_of(text: str) -> int | None:
    """1 for Spanish, 0 for English, None when the rule cannot decide (the message is dropped)."""
    spanish, english = language_evidence(text)
    if spanish == english:
        return None
    return int(spanish > english)


def labelled_corpus() -> tuple[list[str], np.ndarray]:
    """Every distinct message of the shipped corpus that the rule labels, in corpus order, and its label (int64)."""
    from aprendiz.training.tinyllm.build import load_corpus

    texts: list[str] = []
    labels: list[int] = []
    seen: set[str] = set()
    for conversation in load_corpus():
        for message in conversation:
            text = message["content"].strip()
            if not text or text in seen:
                continue
            seen.add(text)
            label = language_of(text)
            if label is not None:
                texts.append(text)
                labels.append(label)
    return texts, np.asarray(labels, dtype=np.int64)


# -- tokenizer -----------------------------------------------------------------------------


def train_tokenizer(texts: list[str], vocab_size: int = VOCAB_SIZE) -> bytes:
    """A BPE tokenizer trained on ``texts``, with truncation and padding on, as tokenizer.json bytes.

    Plain BPE (no "##" continuing-subword prefix, no end-of-word suffix) because its training
    is deterministic: the same texts give the same tokenizer.json, byte for byte. WordPiece
    (and BPE with a prefix or suffix) is not: the trainer numbers those tokens in hash-map
    order, which changes merge tie-breaks from run to run (huggingface/tokenizers#1794).
    Merges never cross words (whitespace and punctuation split first), and a character never
    seen in training becomes "[UNK]".
    """
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token=UNK_TOKEN))
    tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[PAD_TOKEN, UNK_TOKEN], show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    if tokenizer.token_to_id(PAD_TOKEN) != PAD_ID or tokenizer.token_to_id(UNK_TOKEN) != UNK_ID:
        raise RuntimeError("the tokenizer's special tokens did not get ids 0 ([PAD]) and 1 ([UNK])")
    tokenizer.enable_truncation(max_length=MAX_LENGTH)
    tokenizer.enable_padding(pad_id=PAD_ID, pad_token=PAD_TOKEN)  # to the longest text of the batch
    return tokenizer.to_str().encode("utf-8")


def _load_tokenizer(tokenizer_json: bytes):
    from tokenizers import Tokenizer

    return Tokenizer.from_str(tokenizer_json.decode("utf-8"))


def encode_texts(tokenizer_json: bytes, texts: list[str]) -> dict[str, np.ndarray]:
    """The model's feeds for ``texts``: {"input_ids", "attention_mask"}, both int64 [N, L].

    L is the longest encoding in the batch (at most 128) and at least 1: a batch of empty
    texts gets one padding column (mask 0), so the arrays are never [N, 0].
    """
    encodings = _load_tokenizer(tokenizer_json).encode_batch(list(texts))
    width = max([len(e.ids) for e in encodings], default=0)
    width = max(width, 1)
    ids = np.full((len(encodings), width), PAD_ID, dtype=np.int64)
    mask = np.zeros((len(encodings), width), dtype=np.int64)
    for row, encoding in enumerate(encodings):
        ids[row, : len(encoding.ids)] = encoding.ids
        mask[row, : len(encoding.attention_mask)] = encoding.attention_mask
    return {INPUT_IDS: ids, ATTENTION_MASK: mask}


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


# -- model ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextFit:
    """The trained tokenizer, the fitted scikit-learn model and the split they were fitted on."""

    tokenizer_json: bytes
    vocab_size: int
    model: LogisticRegression
    texts_train: list[str]
    texts_test: list[str]
    y_train: np.ndarray
    y_test: np.ndarray

    def counts(self, texts: list[str]):
        """The token-count matrix the scikit-learn model takes, for any texts."""
        return token_counts(encode_texts(self.tokenizer_json, texts), self.vocab_size)


def fit_text_classifier(seed: int = 0) -> TextFit:
    """Label the corpus, split it (stratified), fit the tokenizer and the logistic regression on the training part."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split

    texts, labels = labelled_corpus()
    texts_train, texts_test, y_train, y_test = train_test_split(
        texts, labels, test_size=TEST_SIZE, stratify=labels, random_state=seed
    )
    tokenizer_json = train_tokenizer(texts_train)
    vocab_size = _load_tokenizer(tokenizer_json).get_vocab_size(with_added_tokens=True)
    model = LogisticRegression(C=C, max_iter=2000)
    model.fit(token_counts(encode_texts(tokenizer_json, texts_train), vocab_size), y_train)
    return TextFit(
        tokenizer_json=tokenizer_json,
        vocab_size=vocab_size,
        model=model,
        texts_train=list(texts_train),
        texts_test=list(texts_test),
        y_train=np.ascontiguousarray(y_train, dtype=np.int64),
        y_test=np.ascontiguousarray(y_test, dtype=np.int64),
    )


def export_onnx(weights: np.ndarray, bias: float) -> bytes:
    """The bag-of-tokens logistic regression as ONNX (opset 17), built by hand.

    Inputs ``input_ids`` and ``attention_mask``, int64 [N, L]; output ``probabilities``,
    float32 [N, 2], column 1 = sigmoid(bias + sum over unmasked positions of weights[id]).
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    weights = np.ascontiguousarray(weights, dtype=np.float64).reshape(-1)
    initializers = [
        numpy_helper.from_array(weights, "token_weights"),
        numpy_helper.from_array(np.array([bias], dtype=np.float64), "bias"),
        numpy_helper.from_array(np.array([1], dtype=np.int64), "sequence_axis"),
        numpy_helper.from_array(np.array([1.0], dtype=np.float64), "one"),
    ]
    nodes = [
        helper.make_node("Gather", ["token_weights", INPUT_IDS], ["token_scores"], axis=0),  # [N, L]
        helper.make_node("Cast", [ATTENTION_MASK], ["mask"], to=TensorProto.DOUBLE),
        helper.make_node("Mul", ["token_scores", "mask"], ["masked_scores"]),
        helper.make_node("ReduceSum", ["masked_scores", "sequence_axis"], ["score_sum"], keepdims=1),  # [N, 1]
        helper.make_node("Add", ["score_sum", "bias"], ["logit"]),
        helper.make_node("Sigmoid", ["logit"], ["positive"]),
        helper.make_node("Sub", ["one", "positive"], ["negative"]),
        helper.make_node("Concat", ["negative", "positive"], ["probabilities_double"], axis=1),  # [N, 2]
        helper.make_node("Cast", ["probabilities_double"], [OUTPUT], to=TensorProto.FLOAT),
    ]
    graph = helper.make_graph(
        nodes,
        "bag_of_tokens_logistic_regression",
        inputs=[
            helper.make_tensor_value_info(INPUT_IDS, TensorProto.INT64, ["batch", "sequence"]),
            helper.make_tensor_value_info(ATTENTION_MASK, TensorProto.INT64, ["batch", "sequence"]),
        ],
        outputs=[helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 2])],
        initializer=initializers,
    )
    model = helper.make_model(
        graph,
        opset_imports=[helper.make_opsetid("", OPSET)],
        ir_version=IR_VERSION,
        producer_name="aprendiz",
        doc_string="P(spanish) = sigmoid(bias + sum_t attention_mask_t * token_weights[input_ids_t])",
    )
    onnx.checker.check_model(model, full_check=True)
    return model.SerializeToString()


def text_probabilities(onnx_bytes: bytes, tokenizer_json: bytes, texts: list[str]) -> np.ndarray:
    """Tokenise ``texts`` and run the model with onnxruntime on CPU: float32 [N, 2] probabilities."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return session.run([OUTPUT], encode_texts(tokenizer_json, texts))[0]


def fingerprint(texts: list[str], labels: np.ndarray) -> str:
    """sha256 of the training examples, in order, one UTF-8 line each: json.dumps([text, label], ensure_ascii=False)."""
    digest = hashlib.sha256()
    for text, label in zip(texts, labels, strict=True):
        digest.update((json.dumps([text, int(label)], ensure_ascii=False) + "\n").encode("utf-8"))
    return digest.hexdigest()


def train_text_classifier(seed: int = 0, *, name: str = DEFAULT_NAME) -> tuple[ModelCard, bytes, bytes]:
    """Train the text model; return its card (a fresh version), its ONNX bytes and its tokenizer.json bytes."""
    import sklearn
    import tokenizers

    fit = fit_text_classifier(seed)
    onnx_bytes = export_onnx(fit.model.coef_.reshape(-1), float(fit.model.intercept_[0]))
    positive = text_probabilities(onnx_bytes, fit.tokenizer_json, fit.texts_test)[:, 1]
    card = ModelCard(
        name=name,
        version=new_version(),
        kind="text",
        features=[],
        text_field=TEXT_FIELD,
        labels=LABELS,
        threshold=THRESHOLD,
        onnx_input=INPUT_IDS,
        onnx_output=OUTPUT,
        metrics=binary_metrics(fit.y_test, positive, THRESHOLD),
        data_fingerprint=fingerprint(fit.texts_train, fit.y_train),
        algorithm=ALGORITHM,
        training={
            "dataset": "aprendiz.training.tinyllm corpus/conversations.jsonl (distinct messages, rule-labelled)",
            "labelling": "aprendiz.training.text_classifier.language_of: Spanish vs English word lists, "
            "Spanish-only letters and ¿ ¡; ties dropped",
            "positive_class": LABELS[1],
            "seed": seed,
            "test_size": TEST_SIZE,
            "n_train": int(len(fit.y_train)),
            "n_test": int(len(fit.y_test)),
            "vocab_size": int(fit.vocab_size),
            "max_length": MAX_LENGTH,
            "C": C,
            "scikit_learn": sklearn.__version__,
            "tokenizers": tokenizers.__version__,
        },
    )
    return card, onnx_bytes, fit.tokenizer_json


def publish_text_classifier(registry: ModelRegistry, name: str = DEFAULT_NAME, *, promote: bool = True) -> str | None:
    """Train, publish (with tokenizer.json) and (by default) promote the text model, unless ``name`` has a champion.

    Returns the new version, or None when there was a champion and nothing was done.
    """
    if registry.champion(name) is not None:
        return None
    card, onnx_bytes, tokenizer_json = train_text_classifier(name=name)
    version = registry.publish(card, onnx_bytes, extra_files={TOKENIZER_FILE: tokenizer_json})
    if promote:
        registry.promote(name, version, reason="default model")
    return version
