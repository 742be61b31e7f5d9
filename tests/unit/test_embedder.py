"""The embedding service: the OpenAI request read and checked, a real (tiny) ONNX encoder run by
onnxruntime, the answer in OpenAI's shape, float or base64."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest

from aprendiz.errors import InvalidRequestError
from aprendiz.services.embedder.model import EmbeddingModelError, OnnxEmbedder
from aprendiz.services.embedder.protocol import embedding_response, read_request

WORDS = ["[PAD]", "[UNK]", "hola", "adiós", "cancer", "tumor", "sí", "no"]
DIMENSION = 4


@pytest.fixture(scope="module")
def tiny_encoder(tmp_path_factory):
    """A folder as `aprendiz build-embedding-model` writes it, with a tiny graph: each token's row of
    a table, the mean over the attention mask, L2-normalised (the real encoder's pooling, no BERT)."""
    import onnx
    from onnx import TensorProto, helper
    from tokenizers import Tokenizer, models, pre_tokenizers

    folder = tmp_path_factory.mktemp("encoder")
    table = np.random.default_rng(0).normal(size=(len(WORDS), DIMENSION)).astype(np.float32)
    nodes = [
        helper.make_node("Gather", ["table", "input_ids"], ["tokens"]),
        helper.make_node("Cast", ["attention_mask"], ["mask"], to=TensorProto.FLOAT),
        helper.make_node("Unsqueeze", ["mask", "last"], ["mask3"]),
        helper.make_node("Mul", ["tokens", "mask3"], ["masked"]),
        helper.make_node("ReduceSum", ["masked", "one"], ["summed"], keepdims=0),
        helper.make_node("ReduceSum", ["mask3", "one"], ["count"], keepdims=0),
        helper.make_node("Div", ["summed", "count"], ["mean"]),
        helper.make_node("LpNormalization", ["mean"], ["embeddings"], axis=1, p=2),
    ]
    graph = helper.make_graph(
        nodes, "tiny",
        [helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "sequence"]),
         helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "sequence"])],
        [helper.make_tensor_value_info("embeddings", TensorProto.FLOAT, ["batch", DIMENSION])],
        [helper.make_tensor("table", TensorProto.FLOAT, table.shape, table.flatten()),
         helper.make_tensor("last", TensorProto.INT64, [1], [2]), helper.make_tensor("one", TensorProto.INT64, [1], [1])],
    )
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), folder / "model.onnx")
    tokenizer = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.enable_padding(pad_id=0, pad_token="[PAD]")
    tokenizer.save(str(folder / "tokenizer.json"))
    (folder / "embedding.json").write_text(json.dumps({"dimension": DIMENSION, "max_input_tokens": 5,
                                                       "output": "embeddings"}))
    return folder, table


def test_texts_become_unit_vectors_whatever_the_batch_padding(tiny_encoder):
    folder, table = tiny_encoder
    model = OnnxEmbedder.load(folder)
    vectors, tokens = model.embed(["hola", "cancer tumor sí no", "hola adiós"])
    assert vectors.shape == (3, DIMENSION) and vectors.dtype == np.float32 and tokens == 1 + 4 + 2
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-6)
    expected = table[2] / np.linalg.norm(table[2])
    assert np.allclose(vectors[0], expected, atol=1e-6)
    alone, _ = model.embed(["hola adiós"])  # padding to a longer neighbour does not move a vector
    assert np.allclose(alone[0], vectors[2], atol=1e-6)


def test_a_text_over_the_token_limit_is_a_400_naming_it_not_cut(tiny_encoder):
    folder, _ = tiny_encoder
    with pytest.raises(InvalidRequestError, match=r"input\[1\] is 6 tokens; this model reads at most 5"):
        OnnxEmbedder.load(folder).embed(["hola", "hola hola hola hola hola hola"])


def test_a_folder_without_a_card_is_refused_with_the_command_that_builds_one(tmp_path):
    with pytest.raises(EmbeddingModelError, match="aprendiz build-embedding-model"):
        OnnxEmbedder.load(tmp_path)


@pytest.mark.parametrize(("payload", "param", "message"), [
    ({"input": []}, "input", "non-empty list"),
    ({"input": 3}, "input", "a string or a non-empty list"),
    ({"input": ["hola", ""]}, "input", "input[1] must be a non-empty string"),
    ({"input": [[1, 2, 3]]}, "input", "token arrays"),
    ({"input": ["a"] * 5}, "input", "the most per request is 4"),
    ({"input": "a", "encoding_format": "int8"}, "encoding_format", "`float` or `base64`"),
    ({"input": "a", "dimensions": 2}, "dimensions", "cannot be shortened"),
    ({"input": "a", "temperature": 1}, "temperature", "unknown field"),
])
def test_a_bad_request_is_a_400_that_names_the_field(payload, param, message):
    with pytest.raises(InvalidRequestError) as refused:
        read_request({"model": "m", **payload}, dimension=DIMENSION, max_inputs=4)
    assert refused.value.param == param and message in refused.value.message


def test_the_answer_in_openais_shape_as_floats_or_base64():
    vectors = np.array([[0.6, 0.8], [1.0, 0.0]], dtype=np.float32)
    floats = embedding_response("m", vectors, 5, "float")
    assert floats["object"] == "list" and floats["model"] == "m"
    assert floats["usage"] == {"prompt_tokens": 5, "total_tokens": 5}
    assert [d["index"] for d in floats["data"]] == [0, 1] and floats["data"][0]["embedding"] == pytest.approx([0.6, 0.8])
    packed = embedding_response("m", vectors, 5, "base64")["data"][1]["embedding"]
    assert np.frombuffer(base64.b64decode(packed), dtype="<f4").tolist() == [1.0, 0.0]
    request = read_request({"model": "m", "input": "hola", "dimensions": DIMENSION}, dimension=DIMENSION, max_inputs=4)
    assert request.texts == ["hola"] and request.encoding_format == "float"
