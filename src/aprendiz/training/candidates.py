"""Candidates: build, search (on validation), pick a threshold (on validation), export, verify, evaluate (on test).

Each candidate is a scikit-learn Pipeline (StandardScaler + estimator; gradient boosting
without the scaler), fitted on the train split. A candidate's ``search`` grid is tried
combination by combination: each is fitted on train and scored on validation by the selection
metric; the best is kept (no refit on train + validation, so the validation data stay unseen
for the threshold choice).

Decision threshold. Chosen on VALIDATION data: the threshold with the highest recall whose
precision is at least ``min_precision``; when no threshold reaches that precision on
validation, the F1-best threshold is used and ``recall_at_precision`` is 0 (the target was
not met). On TEST, f1 / precision / recall / accuracy / confusion matrix are computed at
that threshold, and ``recall_at_precision`` is the test recall there.

Every candidate is exported to ONNX (the project's conventions: input "input" float32 [N, F],
output "probabilities" float32 [N, 2], no ZipMap, opsets ``TARGET_OPSET``), and the export is
checked: onnxruntime's probabilities on the test rows must match scikit-learn's within
``onnx_tolerance``. Test metrics are computed from onnxruntime's output, i.e. on what would
serve; a test split over ``EXPORT_CHECK_ROWS`` is checked on a stratified sample of that many
and evaluated with the fitted model's probabilities (the candidate's note says so). A candidate that fails to fit, export or verify is reported with its error and left out.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from aprendiz.columns import feeds_from_matrix
from aprendiz.registry import OUTPUT, Feature
from aprendiz.training.config import LOWER_IS_BETTER, CandidateConfig, TrainingConfig
from aprendiz.training.dataset import Split
from aprendiz.training.onnx_export import check_export, export_onnx, onnx_probabilities

LATENCY_ROWS = 200
LATENCY_BUDGET_S = 1.0  # single-row calls are timed for at most this long (at least one)
# The export is scored by onnxruntime on every test row up to this many; past it, on a seeded stratified
# sample of this many (its agreement with the fitted model checked there), and the test metrics are the
# fitted model's on every test row. A k-NN graph computes every distance at once: at 1M rows its
# 200,000 test rows took onnxruntime about 130 s of a 260 s run on this machine, scikit-learn a fifth of it.
EXPORT_CHECK_ROWS = 20_000
# Below this share of the rarer class, algorithms that take class weights get balanced ones
# (unless the candidate sets class_weight itself), and the report leads with PR-AUC.
IMBALANCED_BELOW = 0.10
CLASS_WEIGHTED = frozenset({"logistic_regression", "hist_gradient_boosting", "xgboost"})


MIN_TEST_POSITIVES = 30


def is_imbalanced(y: np.ndarray) -> bool:
    rate = float(np.mean(y)) if len(y) else 0.5
    return min(rate, 1 - rate) < IMBALANCED_BELOW


def label_warnings(y_test: np.ndarray) -> list[str]:
    """What the test split's labels make doubtful (logged by the job, listed in the report)."""
    positives = int(np.sum(y_test))
    if positives < MIN_TEST_POSITIVES:
        return [f"the test split holds {positives} positives, fewer than {MIN_TEST_POSITIVES}: its metrics are noisy; "
                "more positive examples (or feedback) would make them firm"]
    return []


@dataclass
class CandidateResult:
    name: str
    algorithm: str
    params: dict[str, Any] = field(default_factory=dict)
    search: list[dict[str, Any]] = field(default_factory=list)  # [{"params": ..., "validation": score}]
    validation_score: float = float("nan")
    threshold: float = 0.5
    threshold_rule: str = ""
    test_metrics: dict[str, float] = field(default_factory=dict)
    confusion: list[list[int]] = field(default_factory=list)  # [[tn, fp], [fn, tp]] on test
    test_probabilities: np.ndarray | None = None  # positive class, onnxruntime, test rows
    onnx_bytes: bytes | None = None
    onnx_max_diff: float = float("nan")
    fit_seconds: float = 0.0
    train_rows: int = 0  # the training rows it was fit on ...
    train_rows_available: int = 0  # ... of these (fewer: a sample, see max_train_rows)
    pipeline: Any = None
    error: str | None = None
    files: dict[str, bytes] = field(default_factory=dict)  # published beside model.onnx (text: tokenizer.json)
    node: str | None = None  # the Ray node that trained it (RayRunner), None in this process
    metrics_note: str = ""  # set when the test metrics are not onnxruntime's (a test split over EXPORT_CHECK_ROWS)
    worker_rows: list[int] = field(default_factory=list)  # the training rows of each Ray Train worker (distributed)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def note(self) -> str:
        """How it was trained, when not on every training row, and evaluated, when not by onnxruntime."""
        notes = [self.metrics_note] if self.metrics_note else []
        if self.train_rows < self.train_rows_available:
            notes.insert(0, f"fit on a stratified sample of {self.train_rows:,} of {self.train_rows_available:,} "
                            "training rows (max_train_rows)")
        return "; ".join(notes)


# How each algorithm meets a missing number: the training rows' median, imputed inside the pipeline
# (and so inside the exported graph), except for histogram boosting, whose trees learn a branch for it.
NATIVE_MISSING = "native: the trees learn which branch a missing value takes"
MISSING_HANDLING = {"hist_gradient_boosting": NATIVE_MISSING, "xgboost": NATIVE_MISSING}
IMPUTED = "imputed with the training rows' median (inside the graph)"


def build_estimator(algorithm: str, params: dict[str, Any], seed: int, *, impute: bool = False):
    """A scikit-learn Pipeline for one algorithm and its parameters. ``impute``: a number may be
    missing (NaN), so a median imputer leads the pipeline of an algorithm that needs one."""
    from sklearn.ensemble import GradientBoostingClassifier, HistGradientBoostingClassifier
    from sklearn.impute import SimpleImputer
    from sklearn.linear_model import LogisticRegression
    from sklearn.neighbors import KNeighborsClassifier
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    params = dict(params)
    steps: list[tuple[str, Any]] = []
    if impute and algorithm not in MISSING_HANDLING:
        steps.append(("impute", SimpleImputer(strategy="median", keep_empty_features=True)))
    if algorithm in ("knn", "logistic_regression", "mlp"):
        steps.append(("scale", StandardScaler()))
    if algorithm == "knn":
        return Pipeline(steps + [("model", KNeighborsClassifier(**params))])
    if algorithm == "logistic_regression":
        params.setdefault("max_iter", 1000)
        return Pipeline(steps + [("model", LogisticRegression(**params))])
    if algorithm == "mlp":
        if "hidden_layer_sizes" in params:
            sizes = params["hidden_layer_sizes"]
            params["hidden_layer_sizes"] = tuple(sizes) if isinstance(sizes, (list, tuple)) else (int(sizes),)
        params.setdefault("max_iter", 500)
        params.setdefault("random_state", seed)
        return Pipeline(steps + [("model", MLPClassifier(**params))])
    if algorithm == "hist_gradient_boosting":
        params.setdefault("random_state", seed)
        return Pipeline(steps + [("model", HistGradientBoostingClassifier(**params))])
    if algorithm == "gradient_boosting":
        params.setdefault("random_state", seed)
        return Pipeline(steps + [("model", GradientBoostingClassifier(**params))])
    if algorithm == "xgboost":
        return Pipeline(steps + [("model", xgboost_classifier(params, seed))])
    raise ValueError(f"unknown algorithm {algorithm!r}")


# XGBoost's defaults here: histogram trees (as Ray Train's distributed candidate grows them), one thread
# per fit (candidates and grid points are the parallel unit, see aprendiz.training.parallel).
XGBOOST_DEFAULTS = {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1, "tree_method": "hist", "n_jobs": 1}


def xgboost_classifier(params: dict[str, Any], seed: int):
    """An ``xgboost.XGBClassifier`` with the defaults above."""
    from xgboost import XGBClassifier

    return XGBClassifier(**{**XGBOOST_DEFAULTS, "random_state": seed, **params})


def class_weights(algorithm: str, params: dict[str, Any], negatives: int, positives: int) -> dict[str, Any]:
    """The parameters that balance the classes, for an algorithm that takes them on imbalanced
    labels (unless the candidate sets them itself): scikit-learn's ``class_weight: balanced``, or
    XGBoost's ``scale_pos_weight`` of negatives / positives."""
    total = negatives + positives
    if algorithm not in CLASS_WEIGHTED or not total or min(negatives, positives) / total >= IMBALANCED_BELOW:
        return {}
    if algorithm == "xgboost":
        return {} if "scale_pos_weight" in params else {"scale_pos_weight": negatives / max(positives, 1)}
    return {} if "class_weight" in params else {"class_weight": "balanced"}


def choose_threshold(y_val: np.ndarray, p_val: np.ndarray, min_precision: float) -> tuple[float, str, bool]:
    """(threshold, rule, met): highest recall with precision >= min_precision on validation, else best F1."""
    from sklearn.metrics import precision_recall_curve

    precision, recall, thresholds = precision_recall_curve(y_val, p_val)
    precision, recall = precision[:-1], recall[:-1]  # the last point has no threshold
    reaching = np.flatnonzero(precision >= min_precision)
    if reaching.size:
        best_recall = recall[reaching].max()
        index = reaching[recall[reaching] == best_recall].max()  # the highest such threshold
        return float(thresholds[index]), f"max recall at validation precision >= {min_precision}", True
    f1 = np.where(precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0)
    index = int(np.argmax(f1))
    return float(thresholds[index]), f"best validation F1 (precision {min_precision} not reachable)", False


def evaluate(y: np.ndarray, positive: np.ndarray, threshold: float, *, target_met: bool = True) -> tuple[dict[str, float], list[list[int]]]:
    """Threshold-free and threshold metrics of positive-class probabilities; and the confusion matrix."""
    from sklearn.metrics import (
        accuracy_score,
        average_precision_score,
        brier_score_loss,
        confusion_matrix,
        f1_score,
        precision_score,
        recall_score,
        roc_auc_score,
    )

    positive = np.clip(np.asarray(positive, dtype=np.float64), 0.0, 1.0)
    predicted = (positive >= threshold).astype(np.int64)
    recall = float(recall_score(y, predicted, zero_division=0))
    metrics = {
        "roc_auc": float(roc_auc_score(y, positive)),
        "pr_auc": float(average_precision_score(y, positive)),
        "f1": float(f1_score(y, predicted, zero_division=0)),
        "precision": float(precision_score(y, predicted, zero_division=0)),
        "recall": recall,
        "recall_at_precision": recall if target_met else 0.0,
        "accuracy": float(accuracy_score(y, predicted)),
        "brier": float(brier_score_loss(y, positive)),
    }
    confusion = confusion_matrix(y, predicted, labels=[0, 1]).astype(int).tolist()
    return metrics, confusion


def score(metrics: dict[str, float], metric: str) -> float:
    """A metric as "higher is better"."""
    value = metrics[metric]
    return -value if metric in LOWER_IS_BETTER else value


def onnx_latency_ms(onnx_bytes: bytes, x: np.ndarray, features: list[Feature], rows: int = LATENCY_ROWS) -> float:
    """Mean time of one single-row onnxruntime call (one thread), in milliseconds."""
    return feeds_latency_ms(onnx_bytes, feeds_from_matrix(x[:rows], features))


def feeds_latency_ms(onnx_bytes: bytes, feeds: dict[str, np.ndarray], rows: int = LATENCY_ROWS) -> float:
    """Mean time of one onnxruntime call on one row of ``feeds`` (one thread), in milliseconds: the
    first ``rows`` rows, or as many as ``LATENCY_BUDGET_S`` allows (at least one)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
    count = min(rows, len(next(iter(feeds.values()))))
    session.run([OUTPUT], {k: v[:1] for k, v in feeds.items()})  # warm-up
    start = time.perf_counter()
    for i in range(count):
        session.run([OUTPUT], {k: v[i : i + 1] for k, v in feeds.items()})
        if time.perf_counter() - start > LATENCY_BUDGET_S:  # a slow graph (a k-NN's): enough calls to know
            count = i + 1
            break
    return (time.perf_counter() - start) * 1000.0 / max(count, 1)


@dataclass
class Inputs:
    """What one kind of candidate (tabular, text, later image) trains on and how its export serves.

    ``x_*``: the model's inputs per split; ``estimator(params)``: an unfitted scikit-learn
    estimator; ``export(model)``: the fitted model as ONNX bytes and the files stored beside
    it; ``served(onnx_bytes, index)``: onnxruntime's probabilities [N, 2] on those test rows, as the
    serving side computes them; ``latency_ms(onnx_bytes)``: one row's time.
    """

    x_train: Any
    x_val: Any
    x_test: Any
    estimator: Callable[[dict[str, Any]], Any]
    export: Callable[[Any], tuple[bytes, dict[str, bytes]]]
    served: Callable[[bytes, np.ndarray], np.ndarray]
    latency_ms: Callable[[bytes], float]


@dataclass
class _Best:
    value: float
    params: dict[str, Any]
    model: Any
    threshold: float
    rule: str
    met: bool
    validation: float


def _search(candidate: CandidateConfig, inputs: Inputs, split: Split, config: TrainingConfig,
            result: CandidateResult) -> _Best:
    """Fit every combination of the search grid on train, score it on validation; the best wins."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import ParameterGrid

    x_train, y_train = _training_rows(candidate, inputs.x_train, split.y_train, config.seed, result)
    positives = int(np.sum(split.y_train))
    weights = class_weights(candidate.algorithm, candidate.params, len(split.y_train) - positives, positives)
    best: _Best | None = None
    for extra in ParameterGrid(candidate.search):
        params = {**candidate.params, **weights, **extra}
        model = inputs.estimator(params)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            model.fit(x_train, y_train)
        p_val = model.predict_proba(inputs.x_val)[:, 1]
        threshold, rule, met = choose_threshold(split.y_val, p_val, config.min_precision)
        val_metrics, _ = evaluate(split.y_val, p_val, threshold, target_met=met)
        value = score(val_metrics, config.selection_metric)
        result.search.append({"params": dict(extra), "validation": val_metrics[config.selection_metric]})
        if best is None or value > best.value:
            best = _Best(value, params, model, threshold, rule, met, val_metrics[config.selection_metric])
    assert best is not None  # ParameterGrid({}) is one empty combination
    return best


def _check_rows(y_test: np.ndarray, seed: int) -> np.ndarray:
    """The test rows the export is checked on: all of them, or a seeded stratified EXPORT_CHECK_ROWS."""
    if len(y_test) <= EXPORT_CHECK_ROWS:
        return np.arange(len(y_test))
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y_test)), train_size=EXPORT_CHECK_ROWS, stratify=y_test,
                               random_state=seed)
    return np.sort(keep)


def _training_rows(candidate: CandidateConfig, x: Any, y: np.ndarray, seed: int,
                   result: CandidateResult) -> tuple[Any, np.ndarray]:
    """The rows ``candidate`` fits on: all of them, or past its ``max_train_rows`` a seeded,
    stratified sample (noted in the result)."""
    cap = candidate.max_train_rows
    result.train_rows = result.train_rows_available = len(y)
    if cap is None or len(y) <= cap:
        return x, y
    from sklearn.model_selection import train_test_split

    keep, _ = train_test_split(np.arange(len(y)), train_size=cap, stratify=y, random_state=seed)
    keep = np.sort(keep)
    result.train_rows = cap
    sampled = x[keep] if isinstance(x, np.ndarray) else [x[i] for i in keep]
    return sampled, y[keep]


def train_with(candidate: CandidateConfig, split: Split, config: TrainingConfig,
               inputs_for: Callable[[], Inputs]) -> CandidateResult:
    """The one skeleton every kind of candidate goes through: search (validation), threshold
    (validation), export, verify the export against the model (test), evaluate what serves (test).
    Errors are recorded in the result, not raised: a broken candidate is reported, the others go on."""
    result = CandidateResult(name=candidate.name, algorithm=candidate.algorithm)
    start = time.perf_counter()
    try:
        inputs = inputs_for()
        best = _search(candidate, inputs, split, config, result)
        result.fit_seconds = time.perf_counter() - start
        result.params, result.pipeline, result.validation_score = best.params, best.model, float(best.validation)
        result.threshold, result.threshold_rule = best.threshold, best.rule
        onnx_bytes, result.files = inputs.export(best.model)
        checked = _check_rows(split.y_test, config.seed)
        got = inputs.served(onnx_bytes, checked)
        expected = best.model.predict_proba(inputs.x_test)
        final = best.model.steps[-1][1] if hasattr(best.model, "steps") else best.model
        neighbours = getattr(final, "n_neighbors", None)  # k-NN: probabilities are votes of 1/k
        result.onnx_max_diff = check_export(got, expected[checked], config.onnx_tolerance,
                                            vote=1 / neighbours if neighbours else None)
        result.onnx_bytes = onnx_bytes
        if len(checked) == len(split.y_test):
            result.test_probabilities = got[:, 1].astype(np.float64)
        else:
            result.test_probabilities = expected[:, 1].astype(np.float64)
            result.metrics_note = (f"test metrics from the fitted model on all {len(split.y_test):,} test rows; the "
                                   f"export agrees within the tolerance on a stratified {len(checked):,}-row sample")
        result.test_metrics, result.confusion = evaluate(
            split.y_test, result.test_probabilities, best.threshold, target_met=best.met
        )
        result.test_metrics["latency_ms"] = inputs.latency_ms(onnx_bytes)
        result.test_metrics["size_bytes"] = float(len(onnx_bytes))
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        result.fit_seconds = time.perf_counter() - start
    return result


def tabular_inputs(candidate: CandidateConfig, split: Split, config: TrainingConfig, features: list[Feature]) -> Inputs:
    impute = any(f.missing and f.type != "category" for f in features)
    return Inputs(
        split.x_train, split.x_val, split.x_test,
        estimator=lambda params: build_estimator(candidate.algorithm, params, config.seed, impute=impute),
        export=lambda pipeline: (export_onnx(pipeline, features), {}),
        served=lambda onnx_bytes, index: onnx_probabilities(onnx_bytes, split.x_test[index], features),
        latency_ms=lambda onnx_bytes: onnx_latency_ms(onnx_bytes, split.x_test, features),
    )


def train_candidate(candidate: CandidateConfig, split: Split, config: TrainingConfig,
                    features: list[Feature]) -> CandidateResult:
    """Search, fit, threshold, export, verify and evaluate one tabular candidate."""
    return train_with(candidate, split, config, lambda: tabular_inputs(candidate, split, config, features))


def meets_floors(metrics: dict[str, float], floors: dict[str, float]) -> list[str]:
    """The floors a candidate misses (empty when it meets them all)."""
    missed = []
    for metric, bound in sorted(floors.items()):
        value = metrics.get(metric)
        if value is None:
            missed.append(f"{metric} unknown")
        elif metric in LOWER_IS_BETTER and value > bound:
            missed.append(f"{metric} {value:.4g} > {bound:.4g}")
        elif metric not in LOWER_IS_BETTER and value < bound:
            missed.append(f"{metric} {value:.4g} < {bound:.4g}")
    return missed
