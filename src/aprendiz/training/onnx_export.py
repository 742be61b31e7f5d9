"""Exporting scikit-learn classifiers to the registry's ONNX contract, and checking exports.

The contract: output ``probabilities`` float32 [N, 2], no ZipMap, opsets ``TARGET_OPSET``;
input ``input`` float32 [N, F] for a model of numbers, else one input per feature behind the
encoder of :mod:`aprendiz.columns`. Every export is checked against the model it came from
before it may be published.
"""

from __future__ import annotations

import numpy as np

from aprendiz.columns import attach_encoder, feeds_from_matrix, width
from aprendiz.registry import OUTPUT, TABULAR_INPUT, Feature, has_categories

TARGET_OPSET = {"": 17, "ai.onnx.ml": 3}


def export_onnx(pipeline, features: list[Feature] | int) -> bytes:
    """The pipeline (fit on the model matrix of ``features``) as ONNX: "input" float32 [None, F]
    when every feature is a number (an int: that many numbers), else one input per feature and the
    encoder before the model; output "probabilities" float32 [None, 2]."""
    from skl2onnx import to_onnx
    from skl2onnx.common.data_types import FloatTensorType

    if isinstance(features, int):
        features = [Feature(name=f"f{i}") for i in range(features)]
    final = pipeline.steps[-1][1]
    if type(final).__module__.startswith("xgboost"):
        _register_xgboost()
    model = to_onnx(
        pipeline,
        initial_types=[(TABULAR_INPUT, FloatTensorType([None, width(features)]))],
        options={type(final): {"zipmap": False}},  # plain tensors, not a list of dicts
        target_opset=TARGET_OPSET,
    )
    _dedupe_opsets(model)
    outputs = [o.name for o in model.graph.output]
    if OUTPUT not in outputs:
        raise RuntimeError(f"skl2onnx gave outputs {outputs}, without 'probabilities'")
    if has_categories(features):
        model = attach_encoder(model, features)
    return model.SerializeToString()


def _register_xgboost() -> None:
    """Teach skl2onnx XGBoost's classifier, with onnxmltools' converter (a TreeEnsembleClassifier;
    a missing value takes the branch XGBoost learnt for it)."""
    from onnxmltools.convert.xgboost.operator_converters.XGBoost import convert_xgboost
    from skl2onnx import update_registered_converter
    from skl2onnx.common.shape_calculator import calculate_linear_classifier_output_shapes
    from xgboost import XGBClassifier

    update_registered_converter(
        XGBClassifier, "XGBoostXGBClassifier", calculate_linear_classifier_output_shapes, convert_xgboost,
        options={"nocl": [True, False], "zipmap": [True, False, "columns"]},
    )


def _dedupe_opsets(model) -> None:
    """skl2onnx may list a domain twice in opset_import; keep one entry, the highest version, per domain."""
    highest: dict[str, int] = {}
    for entry in model.opset_import:
        highest[entry.domain] = max(entry.version, highest.get(entry.domain, 0))
    del model.opset_import[:]
    for domain, version in sorted(highest.items()):
        entry = model.opset_import.add()
        entry.domain, entry.version = domain, version


# Rows per onnxruntime call when a whole evaluation set is scored. An exported k-NN holds its
# training rows and computes every distance of a call at once: 20,000 test rows against 80,000
# training rows in one call took 10 GiB (docs/benchmarks.md, training at 100k rows).
CHUNK_ROWS = 1024


def run_in_chunks(session, output_name: str, feeds: dict[str, np.ndarray], rows: int = CHUNK_ROWS) -> np.ndarray:
    """``session.run`` over slices of ``rows`` of every feed (first axis), concatenated: the same
    answer as one call, with memory bounded by the slice."""
    n = len(next(iter(feeds.values())))
    if n <= rows:
        return session.run([output_name], feeds)[0]
    return np.concatenate([
        session.run([output_name], {k: v[start : start + rows] for k, v in feeds.items()})[0]
        for start in range(0, n, rows)
    ])


def onnx_probabilities(
    onnx_bytes: bytes, x: np.ndarray, features: list[Feature] | None = None, *, input_name: str = TABULAR_INPUT,
    output_name: str = OUTPUT, chunk_rows: int = CHUNK_ROWS,
) -> np.ndarray:
    """Run the exported model with onnxruntime on CPU on model-matrix rows ``x`` of ``features``
    (fed as the inputs they encode from; None: numbers only): float [N, 2] class probabilities."""
    import onnxruntime as ort

    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    return run_in_chunks(session, output_name, model_feeds(x, features, input_name), chunk_rows)


def model_feeds(x: np.ndarray, features: list[Feature] | None, input_name: str = TABULAR_INPUT) -> dict[str, np.ndarray]:
    """The graph's inputs for model-matrix rows ``x``: one per feature when it has categories, else
    ``input_name`` float32 [N, F] (``features`` None: numbers only)."""
    if features is not None and has_categories(features):
        return feeds_from_matrix(x, features)
    return {input_name: np.asarray(x, dtype=np.float32)}


# A vote-based model (k-NN) may differ by one neighbour's vote in at most this share of rows:
# float32 (onnxruntime) and float64 (scikit-learn) distances can order two nearly equidistant
# neighbours differently.
VOTE_FLIPS_ALLOWED = 0.001


def check_export(got: np.ndarray, expected: np.ndarray, tolerance: float, *, vote: float | None = None) -> float:
    """The largest difference between the export's and the original model's probabilities;
    RuntimeError when the shapes differ or it is over ``tolerance``. ``vote`` (1/k for k-NN): a
    difference of one vote is allowed in at most VOTE_FLIPS_ALLOWED of the rows."""
    if got.shape != expected.shape:
        raise RuntimeError(f"onnxruntime gave shape {got.shape}, the trained model {expected.shape}")
    if not len(got):
        return 0.0
    per_row = np.max(np.abs(got - expected), axis=1)
    difference = float(per_row.max())
    allowed = tolerance if vote is None else vote + tolerance
    if not difference <= allowed:
        raise RuntimeError(
            f"the ONNX export disagrees with the trained model by {difference:.2e} (tolerance {tolerance:.0e}"
            + (f", or one vote of {vote:.2e} in a few rows)" if vote is not None else ")")
        )
    flipped = int(np.sum(per_row > tolerance))
    if flipped > VOTE_FLIPS_ALLOWED * len(per_row):
        raise RuntimeError(
            f"the ONNX export differs from the trained model by one vote in {flipped} of {len(per_row)} rows "
            f"(at most {VOTE_FLIPS_ALLOWED:.1%} may, from near-ties between neighbours)"
        )
    return difference
