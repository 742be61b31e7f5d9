"""KServe V1 and Open Inference Protocol V2 bodies, decoded against a model card.

V2 bodies are parsed and answered with the ``kserve`` package's own protocol types
(``InferRequest`` / ``InferResponse``), not by hand. Every decoding error is an
``InvalidRequestError`` naming the instance and field at fault.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import numpy as np

from aprendiz.errors import InvalidRequestError
from aprendiz.registry import ModelCard

V2_NUMERIC = {"FP32", "FP64", "INT32", "INT64"}


# The largest float32: a feature beyond it would reach the model as infinity.
FLOAT32_MAX = float(np.finfo(np.float32).max)
# The types a JSON number decodes to (bool, a subclass of int, is not one).
_JSON_NUMBERS = frozenset({int, float})


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


def decode_instance(instance: Any, card: ModelCard, where: str) -> list[float]:
    """One instance: a list of numbers in the card's feature order, or an object keyed by feature name."""
    names = [f.name for f in card.features]
    if isinstance(instance, dict):
        missing = [n for n in names if n not in instance]
        unknown = sorted(set(instance) - set(names))
        if missing or unknown:
            parts = []
            if missing:
                parts.append(f"missing features {missing[:5]}{' ...' if len(missing) > 5 else ''}")
            if unknown:
                parts.append(f"unknown features {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
            raise InvalidRequestError(f"{where}: {'; '.join(parts)}", param=where)
        return [_number(instance[n], f"{where}.{n}") for n in names]
    if isinstance(instance, list):
        if len(instance) != len(names):
            raise InvalidRequestError(
                f"{where} has {len(instance)} values; model {card.name} takes {len(names)} features", param=where
            )
        return [_number(v, f"{where}[{i}] ({names[i]})") for i, v in enumerate(instance)]
    raise InvalidRequestError(
        f"{where} must be a list of {len(names)} numbers or an object keyed by feature name", param=where
    )


def decode_instances(body: Any, card: ModelCard, max_instances: int) -> np.ndarray | list[str]:
    """The ``instances`` of a V1 body: float32 [N, F] for a tabular model, strings for a text model."""
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
    fast = _plain_rows(instances, len(card.features))
    if fast is not None:
        return fast
    rows = [decode_instance(x, card, f"instances[{i}]") for i, x in enumerate(instances)]
    return np.asarray(rows, dtype=np.float32)


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


def decode_v2(body: bytes, header_length: int | None, card: ModelCard, max_instances: int):
    """A V2 infer body (JSON, or JSON plus binary tensors) as (float32 [N, F], InferRequest)."""
    from kserve.errors import InferenceError, InvalidInput
    from kserve.protocol.infer_type import InferRequest

    try:
        request = InferRequest.from_bytes(body, header_length or len(body), card.name)
    except (InvalidInput, InferenceError) as exc:
        raise InvalidRequestError(f"invalid V2 request: {exc}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise InvalidRequestError(f"invalid V2 request: missing or malformed field {exc}", param="inputs") from None
    except RecursionError:
        raise InvalidRequestError("invalid V2 request: the body is nested too deeply to be read", param="inputs") from None
    if len(request.inputs) != 1:
        raise InvalidRequestError(f"V2 request must carry exactly one input tensor, not {len(request.inputs)}", param="inputs")
    tensor = request.inputs[0]
    where = f"inputs[0] ({tensor.name})"
    if card.kind == "text":
        return _decode_v2_texts(tensor, where, card, max_instances), request
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
    try:
        with np.errstate(over="ignore"):  # beyond float32 becomes inf, refused below
            array = tensor.as_numpy().astype(np.float32, copy=False)
    except OverflowError:
        raise InvalidRequestError(f"{where}: a number is too large even for a float (float32 is the model's type)",
                                  param="inputs") from None
    except (ValueError, TypeError, InvalidInput) as exc:
        raise InvalidRequestError(f"{where}: data does not match shape {shape}: {exc}", param="inputs") from None
    if not np.isfinite(array).all():
        row = int(np.argwhere(~np.isfinite(array))[0][0])
        raise InvalidRequestError(f"{where} row {row} holds a non-finite number or one beyond float32's range "
                                  "(about ±3.4e38)", param="inputs")
    return array, request


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
    if card.kind == "text":
        inputs = [{"name": card.text_field, "datatype": "BYTES", "shape": [-1]}]
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
            "labels": list(card.labels),
            "threshold": card.threshold,
        },
    }


def decode_feedback(body: Any, card: ModelCard, max_instances: int):
    """A feedback body as (rows float32 [N, F] or texts, labels [0/1], prediction ids or Nones)."""
    rows = decode_instances(body, card, max_instances)
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
