"""KServe V1 and Open Inference Protocol V2 bodies, decoded against a model card.

V2 bodies are parsed and answered with the ``kserve`` package's own protocol types
(``InferRequest`` / ``InferResponse``), not by hand. Every decoding error is an
``InvalidRequestError`` naming the instance and field at fault.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Real
from typing import Any

import numpy as np

from aprendiz import images
from aprendiz.columns import MISSING_TEXT, Columns, category_text
from aprendiz.errors import InvalidRequestError
from aprendiz.images import ImageLimits
from aprendiz.registry import Feature, ModelCard, has_categories

V2_NUMERIC = {"FP32", "FP64", "INT32", "INT64"}


# The largest float32: a feature beyond it would reach the model as infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The types a JSON number decodes to (bool, a subclass of int, is not one).
_JSON_NUMBERS = frozenset({int, float})


@dataclass(frozen=True)
class EncodedImages:
    """A request's images as the client sent them (PNG or JPEG bytes), not decoded yet: the service
    decodes them off the event loop with the card's transform (``images.to_pixels``), and feedback
    stores them as they came."""

    items: list[bytes]
    where: str  # how the request names them in an error: "instances", "inputs[0] (image)"

    def __len__(self) -> int:
        return len(self.items)

    def pixels(self, card: ModelCard, limits: ImageLimits) -> np.ndarray:
        assert card.image is not None
        return images.to_pixels(self.items, card.image, limits, what=self.where)


# KServe's image instances in V1: {"b64": ...} (its custom-model examples), {"image": {"b64": ...}} and
# {"image_bytes": {"b64": ...}} (its TensorFlow examples), each optionally with a client "key".
V1_IMAGE_FORMS = '{"b64": "..."}, {"image": {"b64": "..."}} or {"image_bytes": {"b64": "..."}}'


def decode_image_instance(instance: Any, limits: ImageLimits, where: str) -> bytes:
    """One V1 image instance: its encoded bytes (decoded from base64, checked against the byte limit)."""
    if isinstance(instance, dict):
        fields = {k: v for k, v in instance.items() if k != "key"}
        if set(fields) == {"b64"}:
            return images.from_base64(fields["b64"], limits, what=f"{where}.b64")
        if len(fields) == 1:
            (name, inner), = fields.items()
            if name in ("image", "image_bytes") and isinstance(inner, dict) and set(inner) == {"b64"}:
                return images.from_base64(inner["b64"], limits, what=f"{where}.{name}.b64")
    raise InvalidRequestError(f"{where} must be an image as {V1_IMAGE_FORMS}: the model classifies images", param=where)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, Real):
        raise InvalidRequestError(f"{where} must be a number, not {type(value).__name__} {value!r}", param=where)
    try:
        number = float(value)
    except OverflowError:  # an integer of hundreds of digits
        number = math.inf if value > 0 else -math.inf  # type: ignore[operator]  # an int here
    if math.isnan(number) or (math.isinf(number) and isinstance(value, float)):
        raise InvalidRequestError(f"{where} must be a finite number, not {value!r}", param=where)
    if abs(number) > FLOAT32_MAX:
        raise InvalidRequestError(
            f"{where} is {_short(value)}, beyond what a float32 feature holds (±{FLOAT32_MAX:.3g})", param=where
        )
    return number


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 24 else f"{text[:12]}...({len(text)} digits)"


def decode_text(instance: Any, card: ModelCard, where: str) -> str:
    """One text instance: a string, or an object holding it under the card's text field."""
    if isinstance(instance, dict) and set(instance) == {card.text_field}:
        instance = instance[card.text_field]
        where = f"{where}.{card.text_field}"
    if not isinstance(instance, str):
        raise InvalidRequestError(
            f'{where} must be a string or {{"{card.text_field}": "..."}}; model {card.name} classifies text', param=where
        )
    return instance


def _feature_value(feature: Feature, value: Any, where: str) -> float | str:
    """One feature's value: a float (NaN: missing) for a number, the level text ("": missing) for a category."""
    if value is None or (feature.missing and isinstance(value, float) and math.isnan(value)):
        return _missing(feature, where)
    if feature.type != "category":
        return _number(value, where)
    return _level(feature, value, where)


def _missing(feature: Feature, where: str) -> float | str:
    """A missing value as the model takes it (NaN, or "" for a category); a 400 when the feature is required."""
    if not feature.missing:
        raise InvalidRequestError(f"{where} is missing; feature {feature.name!r} is required (the model was "
                                  "trained with a value in every row)", param=where)
    return MISSING_TEXT if feature.type == "category" else math.nan


def _level(feature: Feature, value: Any, where: str) -> str:
    """A category's value checked against its levels ("" when missing and allowed)."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidRequestError(f"{where} is not UTF-8 text", param=where) from None
    levels = feature.levels or []
    try:
        text = category_text(value)
    except ValueError:
        raise InvalidRequestError(f"{where} must be a level of category {feature.name!r} (a string such as "
                                  f"{levels[0]!r}), not {type(value).__name__} {_short(value)}", param=where) from None
    if text is None:
        return str(_missing(feature, where))
    if feature.unseen == "refuse" and text not in levels:
        shown = ", ".join(map(repr, levels[:10])) + (" ..." if len(levels) > 10 else "")
        raise InvalidRequestError(f"{where}: {_short(text)} is not a level of category {feature.name!r} "
                                  f"(its levels: {shown})", param=where)
    return text


def decode_instance(instance: Any, card: ModelCard, where: str) -> list[float | str]:
    """One instance: a list of values in the card's feature order, or an object keyed by feature
    name (a feature that may be missing may be left out, or null)."""
    features = card.features
    names = [f.name for f in features]
    if isinstance(instance, dict):
        missing = [f.name for f in features if f.name not in instance and not f.missing]
        unknown = sorted(set(instance) - set(names))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing features {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unknown:
                parts.append(f"unknown features {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
            raise InvalidRequestError(f"{where}: {'; '.join(parts)}", param=where)
        return [_feature_value(f, instance.get(f.name), f"{where}.{f.name}") for f in features]
    if isinstance(instance, list):
        if len(instance) != len(names):
            raise InvalidRequestError(
                f"{where} has {len(instance)} values; model {card.name} takes {len(names)} features", param=where
            )
        return [_feature_value(f, v, f"{where}[{i}] ({f.name})") for i, (f, v) in enumerate(zip(features, instance))]
    raise InvalidRequestError(
        f"{where} must be a list of {len(names)} {'values' if has_categories(features) else 'numbers'} "
        "or an object keyed by feature name", param=where
    )


def _batch(rows: list[list[float | str]], card: ModelCard) -> np.ndarray | Columns:
    """Decoded instances as the model's batch: float32 [N, F], or Columns for a model with categories."""
    if not has_categories(card.features):
        return np.asarray(rows, dtype=np.float32)
    return Columns({
        f.name: np.asarray([[row[j]] for row in rows], dtype=object if f.type == "category" else np.float32)
        for j, f in enumerate(card.features)
    })


def decode_instances(body: Any, card: ModelCard, max_instances: int,
                     limits: ImageLimits = ImageLimits()) -> np.ndarray | Columns | list[str] | EncodedImages:
    """The ``instances`` of a V1 body: float32 [N, F] (NaN: missing) for a model of numbers,
    Columns for one with categories, strings for a text model, EncodedImages for an image model."""
    if not isinstance(body, dict) or "instances" not in body:
        raise InvalidRequestError('the body must be a JSON object with "instances": [...]', param="instances")
    instances = body["instances"]
    if not isinstance(instances, list) or not instances:
        raise InvalidRequestError('"instances" must be a non-empty list', param="instances")
    if len(instances) > max_instances:
        raise InvalidRequestError(
            f'"instances" has {len(instances)} items; at most {max_instances} per request', param="instances"
        )
    if card.kind == "text":
        return [decode_text(x, card, f"instances[{i}]") for i, x in enumerate(instances)]
    if card.kind == "image":
        return EncodedImages([decode_image_instance(x, limits, f"instances[{i}]") for i, x in enumerate(instances)],
                             "instances")
    if not has_categories(card.features):
        fast = _plain_rows(instances, len(card.features))
        if fast is not None:
            return fast
    return _batch([decode_instance(x, card, f"instances[{i}]") for i, x in enumerate(instances)], card)


def _plain_rows(instances: list, width: int) -> np.ndarray | None:
    """The common case, vectorised: every instance a list of ``width`` JSON numbers, all finite as
    float32. None for anything else, which ``decode_instance`` then checks value by value (and
    names what is wrong)."""
    for instance in instances:
        if type(instance) is not list or len(instance) != width or not _JSON_NUMBERS.issuperset(map(type, instance)):
            return None
    try:
        with np.errstate(over="ignore"):  # a value beyond float32 becomes inf, refused below
            rows = np.asarray(instances, dtype=np.float32)
    except OverflowError:
        return None
    return rows if np.isfinite(rows).all() else None


def encode_v1(probabilities: np.ndarray, labels: list[str], card: ModelCard) -> dict[str, Any]:
    return {
        "predictions": [
            {"probability": float(p), "label": label, "threshold": card.threshold, "model_version": card.version}
            for p, label in zip(probabilities, labels)
        ],
        "model_version": card.version,
    }


def decode_v2(body: bytes, header_length: int | None, card: ModelCard, max_instances: int,
              limits: ImageLimits = ImageLimits()):
    """A V2 infer body (JSON, or JSON plus binary tensors) as (the model's batch, InferRequest): float32
    [N, F] or Columns (tabular), strings (text), EncodedImages or float32 [N, C, H, W] (image)."""
    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.infer_type import InferRequest

    try:
        request = (_binary_bytes_request(body, header_length, card.name) if card.kind == "image" and header_length
                   else None) or InferRequest.from_bytes(body, header_length or len(body), card.name)
    except (InvalidInput, InferenceError) as exc:
        raise InvalidRequestError(f"invalid V2 request: {exc}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(f"invalid V2 request: missing or malformed field {exc}", param="inputs") from None
    except RecursionError:
        raise InvalidRequestError("invalid V2 request: the body is nested too deeply to be read", param="inputs") from None
    names = [f.name for f in card.features]
    if card.kind == "tabular" and (has_categories(card.features) or len(request.inputs) > 1
                                   or (request.inputs and request.inputs[0].name in names)):
        return _decode_v2_columns(request.inputs, card, max_instances), request
    if len(request.inputs) != 1:
        raise InvalidRequestError(f"V2 request must carry exactly one input tensor, not {len(request.inputs)}", param="inputs")
    tensor = request.inputs[0]
    where = f"inputs[0] ({tensor.name})"
    if card.kind == "text":
        return _decode_v2_texts(tensor, where, card, max_instances), request
    if card.kind == "image":
        return _decode_v2_images(tensor, where, card, max_instances, limits), request
    if tensor.datatype not in V2_NUMERIC:
        raise InvalidRequestError(
            f"{where} has datatype {tensor.datatype}; model {card.name} takes {sorted(V2_NUMERIC)}", param="inputs"
        )
    shape = list(tensor.shape)
    n_features = len(card.features)
    if len(shape) != 2 or shape[1] != n_features:
        raise InvalidRequestError(f"{where} has shape {shape}; model {card.name} takes [N, {n_features}]", param="inputs")
    if not 1 <= shape[0] <= max_instances:
        raise InvalidRequestError(f"{where} has {shape[0]} rows; 1 to {max_instances} per request", param="inputs")
    return _v2_numbers(tensor, where, shape, card.features), request


def _binary_bytes_request(body: bytes, header_length: int, model_name: str):
    """A request whose one input is a BYTES tensor in the binary extension, read here: kserve's
    ``InferRequest.from_bytes`` turns binary BYTES back into JSON strings and fails on any element that
    is not UTF-8, which an encoded image never is (the same defect as kserve/kserve#3731 in gRPC).
    None for any other request (kserve parses it)."""
    import orjson
    from kserve.protocol.infer_type import InferInput, InferRequest, deserialize_bytes_tensor

    try:
        header = orjson.loads(body[:header_length])
        (tensor,) = header["inputs"]
        size = tensor.get("parameters", {})["binary_data_size"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, AttributeError):
        return None
    if tensor.get("datatype") != "BYTES" or "data" in tensor or not isinstance(size, int) or size < 0:
        return None
    raw = body[header_length : header_length + size]
    if len(raw) != size:
        raise InvalidRequestError(f"the binary data of input {tensor.get('name')!r} holds {len(raw)} bytes; "
                                  f"its binary_data_size says {size}", param="inputs")
    try:
        items = list(deserialize_bytes_tensor(raw))
    except Exception:  # struct.error, or numpy's, on lengths that run past the data
        raise InvalidRequestError(f"the binary data of input {tensor.get('name')!r} is not a BYTES tensor (each "
                                  "element a 4-byte little-endian length, then its bytes)", param="inputs") from None
    infer_input = InferInput(name=str(tensor.get("name")), shape=list(tensor.get("shape") or []), datatype="BYTES",
                             data=items)
    return InferRequest(model_name=model_name, infer_inputs=[infer_input], request_id=header.get("id"),
                        parameters=header.get("parameters"))


def _v2_numbers(tensor, where: str, shape: list[int], features: list[Feature]) -> np.ndarray:
    """A numeric tensor of these features' columns as float32 (a JSON null reads as NaN); a 400 for a
    non-finite value, or a missing one where the feature is required."""
    array = _v2_float32(tensor, where, shape).reshape(-1, len(features))
    may_miss = np.asarray([f.missing for f in features], dtype=bool)
    bad = ~np.isfinite(array) & ~(np.isnan(array) & may_miss[None, :])
    if bad.any():
        row, column = (int(i) for i in np.argwhere(bad)[0])
        what = "is missing (NaN or null), and the feature is required" if np.isnan(array[row, column]) else (
            "holds a non-finite number or one beyond float32's range (about ±3.4e38)")
        named = f" (feature {features[column].name!r})" if len(features) > 1 else ""
        raise InvalidRequestError(f"{where} row {row} {what}{named}", param="inputs")
    return array


def _v2_float32(tensor, where: str, shape: list[int]) -> np.ndarray:
    from kserve.errors import InvalidInput

    try:
        with np.errstate(over="ignore", invalid="ignore"):  # beyond float32 becomes inf, refused by _v2_numbers
            return tensor.as_numpy().astype(np.float32, copy=False)
    except OverflowError:
        raise InvalidRequestError(f"{where}: a number is too large even for a float (float32 is the model's type)",
                                  param="inputs") from None
    except (ValueError, TypeError, InvalidInput) as exc:
        raise InvalidRequestError(f"{where}: data does not match shape {shape}: {exc}", param="inputs") from None


def _decode_v2_columns(inputs: list, card: ModelCard, max_instances: int) -> np.ndarray | Columns:
    """One named input per feature (KServe's and MLServer's pandas-codec convention), each of shape
    [N] or [N, 1]: a numeric datatype for a number (NaN or null: missing), BYTES for a category.
    The model's batch: float32 [N, F] for a model of numbers, else Columns."""
    by_name = {tensor.name: tensor for tensor in inputs}
    names = [f.name for f in card.features]
    absent = [f.name for f in card.features if f.name not in by_name]
    unknown = sorted(set(by_name) - set(names))
    if absent or unknown or len(by_name) != len(inputs):
        parts = [f"missing inputs {absent[:5]}"] if absent else []
        parts += [f"unknown inputs {unknown[:5]}"] if unknown else []
        parts += ["an input named twice"] if len(by_name) != len(inputs) else []
        raise InvalidRequestError(f"V2 request for model {card.name} takes one input per feature {names[:8]}"
                                  f"{' ...' if len(names) > 8 else ''}: {'; '.join(parts)}", param="inputs")
    columns: dict[str, np.ndarray] = {}
    rows = None
    for feature in card.features:
        tensor = by_name[feature.name]
        where = f"input {feature.name!r}"
        shape = list(tensor.shape)
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidRequestError(f"{where} has shape {shape}; each feature's input is [N] or [N, 1]", param="inputs")
        if rows is None:
            rows = shape[0]
            if not 1 <= rows <= max_instances:
                raise InvalidRequestError(f"{where} has {rows} rows; 1 to {max_instances} per request", param="inputs")
        elif shape[0] != rows:
            raise InvalidRequestError(f"{where} has {shape[0]} rows, the first input {rows}: every input holds the "
                                      "same rows", param="inputs")
        if feature.type == "category":
            if tensor.datatype != "BYTES":
                raise InvalidRequestError(f"{where} has datatype {tensor.datatype}; category {feature.name!r} takes "
                                          "BYTES (strings)", param="inputs")
            values = _flatten(tensor.data) if tensor._raw_data is None else tensor.as_numpy().reshape(-1).tolist()
            if len(values) != rows:
                raise InvalidRequestError(f"{where} holds {len(values)} values; its shape says {rows}", param="inputs")
            texts = [_level(feature, v, f"{where} row {i}") for i, v in enumerate(values)]
            columns[feature.name] = np.asarray(texts, dtype=object).reshape(-1, 1)
            continue
        if tensor.datatype not in V2_NUMERIC:
            raise InvalidRequestError(f"{where} has datatype {tensor.datatype}; number {feature.name!r} takes "
                                      f"{sorted(V2_NUMERIC)}", param="inputs")
        columns[feature.name] = _v2_numbers(tensor, where, shape, [feature])
    if not has_categories(card.features):
        return np.ascontiguousarray(np.concatenate([columns[n] for n in names], axis=1))
    return Columns(columns)


def _decode_v2_texts(tensor, where: str, card: ModelCard, max_instances: int) -> list[str]:
    """A BYTES tensor of shape [N] or [N, 1], from JSON data or the binary extension."""
    shape = list(tensor.shape)
    if tensor.datatype != "BYTES":
        raise InvalidRequestError(f"{where} has datatype {tensor.datatype}; model {card.name} takes BYTES (text)", param="inputs")
    if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
        raise InvalidRequestError(f"{where} has shape {shape}; model {card.name} takes [N] or [N, 1] texts", param="inputs")
    if not 1 <= shape[0] <= max_instances:
        raise InvalidRequestError(f"{where} has {shape[0]} texts; 1 to {max_instances} per request", param="inputs")
    values = _flatten(tensor.data)  # kserve decodes binary BYTES tensors into this list too
    texts = []
    for i, value in enumerate(values):
        if isinstance(value, bytes):
            try:
                value = value.decode("utf-8")
            except UnicodeDecodeError:
                raise InvalidRequestError(f"{where} item {i} is not UTF-8 text", param="inputs") from None
        if not isinstance(value, str):
            raise InvalidRequestError(f"{where} item {i} must be a string, not {type(value).__name__}", param="inputs")
        texts.append(value)
    if len(texts) != shape[0]:
        raise InvalidRequestError(f"{where} holds {len(texts)} texts; its shape says {shape[0]}", param="inputs")
    return texts


def _decode_v2_images(tensor, where: str, card: ModelCard, max_instances: int,
                      limits: ImageLimits) -> EncodedImages | np.ndarray:
    """BYTES of shape [N] (or [N, 1]): one encoded image per element, base64 in JSON or raw bytes in
    the binary extension; or FP32 of shape [N, C, H, W], already in the model's layout."""
    assert card.image is not None
    shape = list(tensor.shape)
    layout = [*card.image.shape]
    if tensor.datatype == "BYTES":
        if not (len(shape) == 1 or (len(shape) == 2 and shape[1] == 1)):
            raise InvalidRequestError(f"{where} has shape {shape}; model {card.name} takes [N] encoded images (PNG or "
                                      f"JPEG) or FP32 [N, {', '.join(map(str, layout))}]", param="inputs")
        if not 1 <= shape[0] <= max_instances:
            raise InvalidRequestError(f"{where} has {shape[0]} images; 1 to {max_instances} per request", param="inputs")
        values = _flatten(tensor.data)
        if len(values) != shape[0]:
            raise InvalidRequestError(f"{where} holds {len(values)} images; its shape says {shape[0]}", param="inputs")
        items = []
        for i, value in enumerate(values):
            if isinstance(value, bytes):  # the binary extension: the image's own bytes
                if len(value) > limits.max_bytes:
                    raise InvalidRequestError(f"{where}[{i}] is {len(value):,} bytes; the limit is {limits.max_bytes:,}",
                                              param="inputs")
                items.append(value)
            else:
                items.append(images.from_base64(value, limits, what=f"{where}[{i}]"))
        return EncodedImages(items, where)
    if tensor.datatype not in ("FP32", "FP64"):
        raise InvalidRequestError(f"{where} has datatype {tensor.datatype}; model {card.name} takes BYTES (encoded "
                                  "images) or FP32 (pixels in its layout)", param="inputs")
    if len(shape) != 4 or shape[1:] != layout:
        raise InvalidRequestError(f"{where} has shape {shape}; model {card.name} takes FP32 "
                                  f"[N, {', '.join(map(str, layout))}] (its transform's channels, height, width)",
                                  param="inputs")
    if not 1 <= shape[0] <= max_instances:
        raise InvalidRequestError(f"{where} has {shape[0]} images; 1 to {max_instances} per request", param="inputs")
    pixels = _v2_float32(tensor, where, shape).reshape(shape)
    if not np.isfinite(pixels).all():
        raise InvalidRequestError(f"{where} holds a non-finite value (NaN, infinity, or beyond float32)", param="inputs")
    return np.ascontiguousarray(pixels)


def _flatten(data: Any) -> list:
    if isinstance(data, list):
        return [x for item in data for x in _flatten(item)] if any(isinstance(i, list) for i in data) else list(data)
    return [data]


def encode_v2(probabilities: np.ndarray, labels: list[str], card: ModelCard, request) -> dict[str, Any]:
    from kserve.protocol.infer_type import InferOutput, InferResponse

    outputs = [
        InferOutput("probability", [len(labels)], "FP64", data=[float(p) for p in probabilities]),
        InferOutput("label", [len(labels)], "BYTES", data=list(labels)),
        InferOutput("threshold", [1], "FP64", data=[card.threshold]),
    ]
    response = InferResponse(
        response_id=request.id or "",
        model_name=card.name,
        model_version=card.version,
        infer_outputs=outputs,
        parameters={"threshold": card.threshold},
    )
    body, _ = response.to_rest()
    return body


def v2_metadata(card: ModelCard) -> dict[str, Any]:
    parameters: dict[str, Any] = {}
    if card.kind == "text":
        inputs = [{"name": card.text_field, "datatype": "BYTES", "shape": [-1]}]
    elif card.image is not None:  # either input: encoded images, or pixels in the model's layout
        inputs = [{"name": "image", "datatype": "BYTES", "shape": [-1]},
                  {"name": card.onnx_input, "datatype": "FP32", "shape": [-1, *card.image.shape]}]
        parameters["image"] = card.image.model_dump()
    elif has_categories(card.features):
        inputs = [{"name": f.name, "datatype": "BYTES" if f.type == "category" else "FP32", "shape": [-1, 1]}
                  for f in card.features]
    else:
        inputs = [{"name": card.onnx_input, "datatype": "FP32", "shape": [-1, len(card.features)]}]
    return {
        "name": card.name,
        "versions": [card.version],
        "platform": "onnxruntime",
        "inputs": inputs,
        "outputs": [
            {"name": "probability", "datatype": "FP64", "shape": [-1]},
            {"name": "label", "datatype": "BYTES", "shape": [-1]},
            {"name": "threshold", "datatype": "FP64", "shape": [1]},
        ],
        "parameters": {
            "kind": card.kind,
            "features": [f.name for f in card.features],
            "schema": [f.model_dump(exclude_none=True) for f in card.features],
            "labels": list(card.labels),
            "threshold": card.threshold,
            **parameters,
        },
    }


def decode_feedback(body: Any, card: ModelCard, max_instances: int, limits: ImageLimits = ImageLimits()):
    """A feedback body as (rows float32 [N, F], texts or EncodedImages, labels [0/1], prediction ids or Nones)."""
    rows = decode_instances(body, card, max_instances, limits)
    labels = body.get("labels")
    if not isinstance(labels, list) or len(labels) != len(rows):
        raise InvalidRequestError(
            f'"labels" must be a list with one label per instance ({len(rows)})', param="labels"
        )
    decoded = []
    for i, label in enumerate(labels):
        try:
            decoded.append(card.label_index(label))
        except ValueError as exc:
            raise InvalidRequestError(f"labels[{i}]: {exc}", param=f"labels[{i}]") from None
    ids = body.get("prediction_ids")
    if ids is None:
        ids = [None] * len(rows)
    elif not isinstance(ids, list) or len(ids) != len(rows) or not all(i is None or isinstance(i, str) for i in ids):
        raise InvalidRequestError(
            f'"prediction_ids" must be a list of strings with one per instance ({len(rows)})', param="prediction_ids"
        )
    return rows, decoded, ids
