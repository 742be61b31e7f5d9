"""A tabular model's columns: the values a row holds, the matrix its model is fit on, and the
ONNX nodes that turn the one into the other. Shared by the training job and the classifier service.

The model matrix (float32 [N, W]): one column per number (NaN where it is missing), and per
category one column per level, 1.0 at the row's level; a missing value, and an unseen one the
card ignores, set no level (all 0.0).

Inputs. A model of numbers only takes ``input`` float32 [N, F], NaN where a value is missing (the
graph's imputer, or the trees' missing-value branch, handles it). A model with a category takes
one input per feature, named by the feature: float32 [N, 1] for a number (NaN: missing), string
[N, 1] for a category ("" is missing). Its graph begins with the ENCODER nodes below (a
LabelEncoder per category, then a one-hot comparison), so what serves is the same function the
training job verified, and serving never encodes anything itself.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np
import pandas as pd

from aprendiz.registry import OUTPUT, TABULAR_INPUT, Feature, has_categories

ENCODED = "encoded"  # the encoder's output: the model matrix
MODEL_PREFIX = "model/"  # the fitted model's own names, inside the merged graph
MISSING_TEXT = ""  # a missing category, as the string input carries it
ML_OPSET = 3  # the ai.onnx.ml opset the encoder's LabelEncoder is written for


def spans(features: list[Feature]) -> list[tuple[int, int]]:
    """Each feature's columns of the model matrix, as (start, stop)."""
    out, start = [], 0
    for feature in features:
        stop = start + (len(feature.levels or ()) if feature.type == "category" else 1)
        out.append((start, stop))
        start = stop
    return out


def width(features: list[Feature]) -> int:
    """The model matrix's column count."""
    return spans(features)[-1][1] if features else 0


def category_text(value: Any) -> str | None:
    """A category's value as its level text: a string stripped, an integer (or an integral
    float) in decimal, a boolean as "true" / "false"; None when missing (null, NaN, pandas' NA or blank).
    ValueError for anything else (a fraction, a list, an object)."""
    if value is None or value is pd.NA or value is pd.NaT:  # pandas' own markers, in Arrow-backed columns
        return None
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (Integral, np.integer)):
        return str(int(value))
    if isinstance(value, (Real, np.floating)):
        number = float(value)
        if math.isnan(number):
            return None
        if number.is_integer():
            return str(int(number))
    raise ValueError(f"{value!r} is not a category level (a string, or an integer)")


def one_hot(texts: list[str | None], levels: list[str]) -> np.ndarray:
    """float32 [N, L]: 1.0 at each text's level; no level for None or a text not in ``levels``."""
    index = {level: i for i, level in enumerate(levels)}
    codes = np.fromiter((index.get(t, -1) if t is not None else -1 for t in texts), dtype=np.int64, count=len(texts))
    return (codes[:, None] == np.arange(len(levels))[None, :]).astype(np.float32)


def feeds_from_matrix(x: np.ndarray, features: list[Feature]) -> dict[str, np.ndarray]:
    """The ONNX inputs that encode to ``x`` (model-matrix rows of these features): ``input`` for a
    model of numbers, else one input per feature, each category's level decoded from its one-hot
    columns (no level set: missing)."""
    x = np.asarray(x, dtype=np.float32)
    if not has_categories(features):
        return {TABULAR_INPUT: x}
    feeds = {}
    for feature, (start, stop) in zip(features, spans(features)):
        if feature.type != "category":
            feeds[feature.name] = np.ascontiguousarray(x[:, start:stop])
            continue
        block = x[:, start:stop]
        levels = np.asarray(list(feature.levels or ()) + [MISSING_TEXT], dtype=object)
        chosen = np.where(block.max(axis=1, initial=0.0) > 0, block.argmax(axis=1), len(levels) - 1)
        feeds[feature.name] = levels[chosen].reshape(-1, 1)
    return feeds


@dataclass
class Columns:
    """A served batch of a model with categories: one array [N, 1] per feature (float32, or object
    strings with "" for missing), in the card's feature order; concatenable across requests."""

    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return len(next(iter(self.values.values()))) if self.values else 0

    @staticmethod
    def concat(parts: list["Columns"]) -> "Columns":
        return Columns({name: np.concatenate([p.values[name] for p in parts]) for name in parts[0].values})


def records(batch: np.ndarray | Columns, features: list[Feature]) -> list[dict[str, float | str | None]]:
    """A served batch as one {feature: value} per row, None where a value is missing (feedback's form)."""
    def value(v: Any) -> float | str | None:
        if isinstance(v, str):
            return v or None
        number = float(v)
        return None if math.isnan(number) else number

    if isinstance(batch, Columns):
        columns = [batch.values[f.name][:, 0] for f in features]
    else:
        columns = [np.asarray(batch)[:, j] for j in range(len(features))]
    return [{f.name: value(c[i]) for f, c in zip(features, columns)} for i in range(len(batch))]


def probe(features: list[Feature]) -> np.ndarray | Columns:
    """One harmless row (zeros, each category's first level) for a loaded model's self-check."""
    if not has_categories(features):
        return np.zeros((1, len(features)), dtype=np.float32)
    return Columns({
        f.name: (np.asarray([[(f.levels or [MISSING_TEXT])[0]]], dtype=object) if f.type == "category"
                 else np.zeros((1, 1), dtype=np.float32))
        for f in features
    })


def input_name_problem(features: list[Feature]) -> str | None:
    """Why these feature names cannot be ONNX input names beside the graph's own, or None."""
    for feature in features:
        if feature.name in (OUTPUT, ENCODED) or feature.name.startswith((MODEL_PREFIX, "encode/")):
            return f"feature name {feature.name!r} is reserved in the model graph; rename the column"
    return None


def attach_encoder(model, features: list[Feature]):
    """The fitted model's graph (an onnx ModelProto taking ``input`` [N, W]) behind the encoder:
    the result takes one input per feature and gives the same ``probabilities``."""
    import onnx
    from onnx import TensorProto, compose, helper

    problem = input_name_problem(features)
    if problem:
        raise ValueError(problem)
    nodes, inputs, pieces = [], [], []
    for i, (feature, (start, stop)) in enumerate(zip(features, spans(features))):
        if feature.type != "category":
            inputs.append(helper.make_tensor_value_info(feature.name, TensorProto.FLOAT, [None, 1]))
            pieces.append(feature.name)
            continue
        levels = list(feature.levels or ())
        inputs.append(helper.make_tensor_value_info(feature.name, TensorProto.STRING, [None, 1]))
        codes, arange, hits, hot = (f"encode/{i}/{part}" for part in ("codes", "levels", "hits", "one_hot"))
        nodes += [
            helper.make_node("LabelEncoder", [feature.name], [codes], domain="ai.onnx.ml", name=f"encode/{i}/label",
                             keys_strings=levels, values_int64s=list(range(len(levels))), default_int64=-1),
            helper.make_node("Constant", [], [arange], name=f"encode/{i}/arange",
                             value=helper.make_tensor(arange, TensorProto.INT64, [len(levels)], list(range(len(levels))))),
            helper.make_node("Equal", [codes, arange], [hits], name=f"encode/{i}/equal"),
            helper.make_node("Cast", [hits], [hot], name=f"encode/{i}/cast", to=TensorProto.FLOAT),
        ]
        pieces.append(hot)
    nodes.append(helper.make_node("Concat", pieces, [ENCODED], name="encode/concat", axis=1))
    graph = helper.make_graph(nodes, "encoder", inputs,
                              [helper.make_tensor_value_info(ENCODED, TensorProto.FLOAT, [None, width(features)])])
    # LabelEncoder takes keys_strings from ai.onnx.ml 2 on; the model may import an older ml opset
    # (its own operators unchanged since), and both halves of a merge must import the same.
    ml = [entry for entry in model.opset_import if entry.domain == "ai.onnx.ml"]
    if ml:
        ml[0].version = max(ml[0].version, ML_OPSET)
    else:
        model.opset_import.append(helper.make_opsetid("ai.onnx.ml", ML_OPSET))
    encoder = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    prefixed = compose.add_prefix(model, MODEL_PREFIX)
    merged = compose.merge_models(encoder, prefixed, io_map=[(ENCODED, MODEL_PREFIX + TABULAR_INPUT)],
                                  outputs=[MODEL_PREFIX + OUTPUT])
    inner = MODEL_PREFIX + OUTPUT
    for node in merged.graph.node:
        node.output[:] = [OUTPUT if name == inner else name for name in node.output]
    for output in merged.graph.output:
        if output.name == inner:
            output.name = OUTPUT
    onnx.checker.check_model(merged)
    return merged
