"""aprendiz.services.classifier.protocol: V1/V2 bodies decoded against a card, errors naming the field."""

from __future__ import annotations

import json

import numpy as np
import pytest

from aprendiz.errors import InvalidRequestError
from aprendiz.registry import Feature, ModelCard
from aprendiz.services.classifier import protocol

TABULAR = ModelCard(
    name="t", version="v1", kind="tabular", features=[Feature(name="a"), Feature(name="b")],
    labels=("no", "yes"), threshold=0.7, data_fingerprint="x", algorithm="lr",
)
TEXT = ModelCard(
    name="s", version="v1", kind="text", text_field="text", onnx_input="input_ids",
    labels=("english", "spanish"), data_fingerprint="x", algorithm="lr",
)


def test_v1_lists_and_objects_become_one_float32_matrix():
    rows = protocol.decode_instances({"instances": [[1, 2.5], {"b": 4, "a": 3}]}, TABULAR, 10)
    assert rows.dtype == np.float32 and rows.tolist() == [[1.0, 2.5], [3.0, 4.0]]


@pytest.mark.parametrize(
    "body, words",
    [
        ({"instances": [[1]]}, ["instances[0]", "1 values", "2 features"]),
        ({"instances": [[1, "2"]]}, ["instances[0][1] (b)", "number"]),
        ({"instances": [[1, True]]}, ["instances[0][1]", "bool"]),
        ({"instances": [[1, float("nan")]]}, ["finite"]),
        ({"instances": [[1, 1e39]]}, ["instances[0][1] (b)", "float32"]),  # finite, but infinity as float32
        ({"instances": [[-1e39, 1e39]]}, ["instances[0][0] (a)", "float32"]),
        ({"instances": [[1, 10**400]]}, ["instances[0][1] (b)", "float32"]),  # too big even for a float
        ({"instances": [{"a": 1, "b": 1e39}]}, ["instances[0].b", "float32"]),
        ({"instances": [{"a": 1}]}, ["missing features ['b']"]),
        ({"instances": [{"a": 1, "b": 2, "c": 3}]}, ["unknown features ['c']"]),
        ({"instances": ["text"]}, ["instances[0]", "list of 2 numbers"]),
        ({"instances": [[1, 2]] * 11}, ["11 items", "at most 10"]),
        ({"instances": {}}, ["non-empty list"]),
        ([[1, 2]], ['"instances"']),
    ],
)
def test_v1_errors_say_what_and_where(body, words):
    with pytest.raises(InvalidRequestError) as raised:
        protocol.decode_instances(body, TABULAR, 10)
    for word in words:
        assert word in raised.value.message


def test_v1_fast_and_careful_paths_agree():
    """Rows of plain numbers take a vectorised path; anything else is checked value by value: both
    give the same matrix."""
    rows = [[1, 2.5], [-3.25, 4], [0, 1e30]]
    fast = protocol.decode_instances({"instances": rows}, TABULAR, 10)
    careful = protocol.decode_instances({"instances": [{"a": a, "b": b} for a, b in rows]}, TABULAR, 10)
    assert fast.dtype == careful.dtype == np.float32
    assert fast.tolist() == careful.tolist()


def test_v1_answer_carries_probability_label_threshold_version():
    answer = protocol.encode_v1(np.array([0.9, 0.2]), ["yes", "no"], TABULAR)
    assert answer["predictions"][0] == {"probability": 0.9, "label": "yes", "threshold": 0.7, "model_version": "v1"}
    assert answer["model_version"] == "v1"


def test_text_instances_are_strings_or_objects_with_the_text_field():
    assert protocol.decode_instances({"instances": ["hola", {"text": "hello"}]}, TEXT, 10) == ["hola", "hello"]
    with pytest.raises(InvalidRequestError, match="classifies text"):
        protocol.decode_instances({"instances": [[1, 2]]}, TEXT, 10)


def v2(inputs) -> bytes:
    return json.dumps({"id": "r1", "inputs": inputs}).encode()


def test_v2_numeric_tensor():
    rows, request = protocol.decode_v2(
        v2([{"name": "input", "shape": [2, 2], "datatype": "FP64", "data": [1, 2, 3, 4]}]), None, TABULAR, 10
    )
    assert rows.tolist() == [[1, 2], [3, 4]] and rows.dtype == np.float32 and request.id == "r1"


@pytest.mark.parametrize(
    "inputs, words",
    [
        ([{"name": "input", "shape": [1, 3], "datatype": "FP32", "data": [1, 2, 3]}], ["shape [1, 3]", "[N, 2]"]),
        ([{"name": "input", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}], ["BYTES"]),
        ([{"name": "input", "shape": [1, 2], "datatype": "FP32"}], ["data"]),
        ([], ["exactly one input"]),
        ([{"name": "input", "shape": [11, 2], "datatype": "FP32", "data": [0] * 22}], ["11 rows"]),
        ([{"name": "input", "shape": [2, 2], "datatype": "FP32", "data": [1, 2, 3]}], ["does not match shape"]),
        ([{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 10**400]}], ["infinity"]),
        ([{"name": "input", "shape": [1, 2], "datatype": "FP64", "data": [1, 1e39]}],
         ["row 0 holds a non-finite", "float32", "(feature 'b')"]),
        ([{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, None]}],
         ["row 0 is missing", "required", "(feature 'b')"]),
    ],
)
def test_v2_errors(inputs, words):
    with pytest.raises(InvalidRequestError) as raised:
        protocol.decode_v2(v2(inputs), None, TABULAR, 10)
    for word in words:
        assert word in raised.value.message, raised.value.message


def test_v2_text_tensor_json_and_binary():
    from kserve import InferInput, InferRequest

    texts, _ = protocol.decode_v2(v2([{"name": "text", "shape": [2], "datatype": "BYTES", "data": ["hola", "hi"]}]), None, TEXT, 10)
    assert texts == ["hola", "hi"]
    tensor = InferInput(name="text", shape=[2, 1], datatype="BYTES")
    tensor.set_data_from_numpy(np.array([["¿qué tal?"], ["fine"]], dtype=np.object_), binary_data=True)
    body, json_length = InferRequest(model_name="s", infer_inputs=[tensor], request_id="b").to_rest()
    texts, _ = protocol.decode_v2(body, json_length, TEXT, 10)
    assert texts == ["¿qué tal?", "fine"]
    with pytest.raises(InvalidRequestError, match="takes BYTES"):
        protocol.decode_v2(v2([{"name": "x", "shape": [1], "datatype": "FP32", "data": [1]}]), None, TEXT, 10)


def test_v2_answer_uses_kserve_types():
    from kserve.protocol.infer_type import InferResponse

    _, request = protocol.decode_v2(v2([{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": [1, 2]}]), None, TABULAR, 10)
    body = protocol.encode_v2(np.array([0.8]), ["yes"], TABULAR, request)
    parsed = InferResponse.from_rest(body)
    assert parsed.model_version == "v1" and parsed.id == "r1"
    assert {o.name: o.data for o in parsed.outputs} == {"probability": [0.8], "label": ["yes"], "threshold": [0.7]}


def test_feedback_labels_by_name_or_index_and_optional_ids():
    rows, labels, ids = protocol.decode_feedback({"instances": [[1, 2], [3, 4]], "labels": ["yes", 0]}, TABULAR, 10)
    assert labels == [1, 0] and ids == [None, None] and rows.shape == (2, 2)
    with pytest.raises(InvalidRequestError, match="one label per instance"):
        protocol.decode_feedback({"instances": [[1, 2]], "labels": [1, 0]}, TABULAR, 10)
    with pytest.raises(InvalidRequestError, match="prediction_ids"):
        protocol.decode_feedback({"instances": [[1, 2]], "labels": [1], "prediction_ids": [3]}, TABULAR, 10)
    with pytest.raises(InvalidRequestError, match=r"labels\[0\]"):
        protocol.decode_feedback({"instances": [[1, 2]], "labels": ["maybe"]}, TABULAR, 10)


def test_metadata_describes_inputs_by_kind():
    assert protocol.v2_metadata(TABULAR)["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 2]}]
    assert protocol.v2_metadata(TEXT)["inputs"] == [{"name": "text", "datatype": "BYTES", "shape": [-1]}]


def test_v2_body_nested_too_deeply_is_a_client_error():
    deep = b'{"inputs": [{"name": "input", "shape": [1, 2], "datatype": "FP32", "data": ' + b"[" * 100_000 + b"]" * 100_000 + b"}]}"
    with pytest.raises(InvalidRequestError):
        protocol.decode_v2(deep, None, TABULAR, 10)


# -- properties (hypothesis): any JSON decodes to finite float32 rows, or to a 400 that names the field ---------
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

JSON_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True), st.sampled_from([1e39, -1e39, 3.4e38, 1e-45, -0.0]), st.text(max_size=6),
)
INSTANCES = st.lists(st.one_of(
    st.lists(JSON_SCALARS, max_size=3),
    st.dictionaries(st.sampled_from(["a", "b", "c"]), JSON_SCALARS, max_size=3),
    JSON_SCALARS,
), max_size=5)
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])


def _as_json(value) -> object:
    """What the ingress hands the decoder: the value through a JSON round trip (NaN and Infinity included)."""
    return json.loads(json.dumps(value))


@PROPERTY
@given(INSTANCES, st.integers(min_value=1, max_value=4))
def test_v1_any_instances_decode_or_name_what_is_wrong(instances, max_instances):
    try:
        rows = protocol.decode_instances(_as_json({"instances": instances}), TABULAR, max_instances)
    except InvalidRequestError as exc:
        assert exc.param and exc.param.startswith("instances"), exc.message
        return
    assert rows.dtype == np.float32 and rows.shape == (len(instances), 2) and np.isfinite(rows).all()


V2_DATA = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=4), max_leaves=12)


@PROPERTY
@given(
    st.lists(st.integers(min_value=-3, max_value=2**40), max_size=3),
    st.sampled_from(["FP32", "FP64", "INT64", "INT8", "UINT8", "BOOL", "BYTES", "FP16", "fp32", ""]),
    V2_DATA,
    st.one_of(st.none(), st.integers(min_value=-5, max_value=400)),
)
def test_v2_any_tensor_decodes_or_is_a_400(shape, datatype, data, header_length):
    body = json.dumps({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]}).encode()
    try:
        rows, _ = protocol.decode_v2(body, header_length, TABULAR, 8)
    except InvalidRequestError as exc:
        assert exc.message.startswith(("invalid V2", "inputs[0]", "V2 request")), exc.message
        return
    assert rows.dtype == np.float32 and rows.shape[1] == 2 and 1 <= rows.shape[0] <= 8 and np.isfinite(rows).all()


# -- image models ------------------------------------------------------------------------------

IMAGE = ModelCard(
    name="lesions", version="v1", kind="image", onnx_input="pixels", labels=("clear", "lesion"),
    image={"channels": "rgb", "resize": 36, "crop": 32}, data_fingerprint="x", algorithm="small_cnn",
)
LIMITS = protocol.ImageLimits(max_bytes=200_000, max_pixels=1_000_000)


def _png(width: int = 40, height: int = 30, fmt: str = "PNG") -> bytes:
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.new("RGB", (width, height), (200, 120, 90)).save(buffer, format=fmt)
    return buffer.getvalue()


def _b64(data: bytes) -> str:
    import base64

    return base64.b64encode(data).decode()


def test_v1_images_in_kserves_three_forms_decode_to_the_cards_layout():
    png, jpeg = _png(), _png(64, 48, "JPEG")
    body = {"instances": [{"b64": _b64(png)}, {"image": {"b64": _b64(jpeg)}},
                          {"image_bytes": {"b64": _b64(png)}, "key": "3"}]}
    encoded = protocol.decode_instances(body, IMAGE, 10, LIMITS)
    assert isinstance(encoded, protocol.EncodedImages) and encoded.items == [png, jpeg, png]
    pixels = encoded.pixels(IMAGE, LIMITS)
    assert pixels.shape == (3, 3, 32, 32) and pixels.dtype == np.float32


@pytest.mark.parametrize(
    "instance, words",
    [
        ([1, 2, 3], ["instances[0]", '{"b64": "..."}', "classifies images"]),
        ({"b64": "not base64!"}, ["instances[0].b64", "not valid base64"]),
        ({"b64": 12}, ["instances[0].b64", "base64 string"]),
        ({"image": {"b64": "A" * 400_000}}, ["instances[0].image.b64", "300,000 bytes", "limit is 200,000"]),
        ({"image_bytes": "x"}, ["instances[0]", "image_bytes"]),
        ({"b64": _b64(b"x"), "other": 1}, ["instances[0]"]),
    ],
)
def test_v1_image_errors_say_what_and_where(instance, words):
    with pytest.raises(InvalidRequestError) as raised:
        protocol.decode_instances({"instances": [instance]}, IMAGE, 10, LIMITS)
    for word in words:
        assert word in raised.value.message, raised.value.message


@pytest.mark.parametrize(
    "data, words",
    [
        (b"\x89PNG but not really", ["instances[1]", "cannot be decoded"]),
        (_png(1200, 1000), ["instances[1]", "1200x1000 pixels", "1,000,000"]),
        (_png(fmt="GIF"), ["instances[1]", "GIF", "PNG and JPEG"]),
    ],
)
def test_an_image_that_cannot_be_decoded_is_a_400_naming_it(data, words):
    encoded = protocol.decode_instances({"instances": [{"b64": _b64(_png())}, {"b64": _b64(data)}]}, IMAGE, 10, LIMITS)
    with pytest.raises(InvalidRequestError) as raised:
        encoded.pixels(IMAGE, LIMITS)
    for word in words:
        assert word in raised.value.message, raised.value.message


def test_v2_images_as_base64_json_or_binary_bytes_or_fp32_pixels():
    from kserve import InferInput, InferRequest

    png = _png()
    encoded, _ = protocol.decode_v2(v2([{"name": "image", "shape": [2], "datatype": "BYTES",
                                         "data": [_b64(png), _b64(png)]}]), None, IMAGE, 10, LIMITS)
    assert encoded.items == [png, png]
    tensor = InferInput(name="image", shape=[1], datatype="BYTES")
    tensor.set_data_from_numpy(np.array([png], dtype=np.object_), binary_data=True)
    body, json_length = InferRequest(model_name="lesions", infer_inputs=[tensor], request_id="b").to_rest()
    encoded, _ = protocol.decode_v2(body, json_length, IMAGE, 10, LIMITS)
    assert encoded.items == [png]
    pixels = np.random.default_rng(0).normal(size=(2, 3, 32, 32)).astype(np.float32)
    tensor = InferInput(name="pixels", shape=[2, 3, 32, 32], datatype="FP32")
    tensor.set_data_from_numpy(pixels, binary_data=True)
    body, json_length = InferRequest(model_name="lesions", infer_inputs=[tensor], request_id="c").to_rest()
    rows, _ = protocol.decode_v2(body, json_length, IMAGE, 10, LIMITS)
    assert np.array_equal(rows, pixels)


@pytest.mark.parametrize(
    "inputs, words",
    [
        ([{"name": "pixels", "shape": [1, 3, 28, 28], "datatype": "FP32", "data": [0.0] * 2352}],
         ["shape [1, 3, 28, 28]", "[N, 3, 32, 32]"]),
        ([{"name": "pixels", "shape": [1, 3072], "datatype": "FP32", "data": [0.0] * 3072}], ["shape [1, 3072]"]),
        ([{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "FP32", "data": [0.0] * 3071 + [None]}],
         ["non-finite"]),
        ([{"name": "pixels", "shape": [1, 3, 32, 32], "datatype": "INT64", "data": [0] * 3072}], ["INT64", "BYTES"]),
        ([{"name": "image", "shape": [1, 2], "datatype": "BYTES", "data": ["a", "b"]}], ["shape [1, 2]", "[N]"]),
        ([{"name": "image", "shape": [2], "datatype": "BYTES", "data": ["%%%"]}], ["holds 1 images", "says 2"]),
        ([{"name": "image", "shape": [1], "datatype": "BYTES", "data": ["%%%"]}], ["inputs[0] (image)[0]", "base64"]),
        ([{"name": "image", "shape": [11], "datatype": "BYTES", "data": ["a"] * 11}], ["11 images", "1 to 10"]),
    ],
)
def test_v2_image_errors(inputs, words):
    with pytest.raises(InvalidRequestError) as raised:
        protocol.decode_v2(v2(inputs), None, IMAGE, 10, LIMITS)
    for word in words:
        assert word in raised.value.message, raised.value.message


def test_v2_binary_image_over_the_byte_limit_is_refused_before_decoding():
    from kserve import InferInput, InferRequest

    tensor = InferInput(name="image", shape=[1], datatype="BYTES")
    tensor.set_data_from_numpy(np.array([b"\x89PNG" + b"\0" * 300_000], dtype=np.object_), binary_data=True)
    body, json_length = InferRequest(model_name="lesions", infer_inputs=[tensor], request_id="b").to_rest()
    with pytest.raises(InvalidRequestError, match=r"\[0\] is 300,004 bytes; the limit is 200,000"):
        protocol.decode_v2(body, json_length, IMAGE, 10, LIMITS)


def test_image_metadata_names_both_inputs_and_the_transform():
    meta = protocol.v2_metadata(IMAGE)
    assert meta["inputs"] == [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                              {"name": "pixels", "datatype": "FP32", "shape": [-1, 3, 32, 32]}]
    assert meta["parameters"]["kind"] == "image" and meta["parameters"]["image"]["crop"] == 32


def test_image_feedback_keeps_the_images_as_sent():
    png = _png()
    images, labels, ids = protocol.decode_feedback(
        {"instances": [{"b64": _b64(png)}], "labels": ["lesion"]}, IMAGE, 10, LIMITS)
    assert images.items == [png] and labels == [1] and ids == [None]
