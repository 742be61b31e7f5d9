"""The training job's per-model configuration: ``datasets/<name>/training.yaml`` in the store.

Every field has a default, so a dataset without a training.yaml is trained with the tabular
defaults below (a text dataset, one text column, with the text defaults of
:func:`aprendiz.training.text_candidates.default_text_candidates` unless ``candidates`` is set). Example::

    label_column: label
    labels: [benign, malignant]          # (negative, positive) names on the card
    selection_metric: roc_auc
    margin: 0.005                        # a challenger must beat the champion by this much
    floors: {roc_auc: 0.9, brier: 0.1}   # minimums; for lower-is-better metrics, maximums
    min_precision: 0.9
    candidates:
      - {name: logreg, algorithm: logistic_regression, search: {C: [0.1, 1, 10]}}
      - {name: gbt, algorithm: hist_gradient_boosting, params: {max_iter: 50}}

``features`` (the schema) is optional: when it is not declared, it is inferred on the first
run and kept in ``datasets/<name>/schema.json``, which later runs reuse.
"""

from __future__ import annotations

from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, model_validator

from aprendiz import yaml12
from aprendiz.images import ImageTransform
from aprendiz.registry import Feature, ModelCard, dataset_prefix
from aprendiz.store import KeyNotFoundError, ObjectStore
from aprendiz.strict import Strict

CONFIG_FILE = "training.yaml"
SCHEMA_FILE = "schema.json"

# Tabular algorithms, then text ones (a dataset of one text column; see aprendiz.training.text_candidates),
# then image ones (a dataset of images; see aprendiz.training.image_candidates).
Algorithm = Literal[
    "knn", "logistic_regression", "mlp", "hist_gradient_boosting", "gradient_boosting", "xgboost",
    "minilm_logreg", "minilm_mlp", "tfidf_logreg",
    "small_cnn", "pixel_mlp", "mobilenet_v3_small", "vit", "ssgan",
]
# The last three need torchvision: they train in the image-training environment (aprendiz.training.vision).
IMAGE_ALGORITHMS = ("small_cnn", "pixel_mlp", "mobilenet_v3_small", "vit", "ssgan")
# Metrics a run computes on the held-out test set.
HIGHER_IS_BETTER = ("roc_auc", "pr_auc", "f1", "precision", "recall", "recall_at_precision", "accuracy")
LOWER_IS_BETTER = ("brier", "latency_ms", "size_bytes")
SelectionMetric = Literal["roc_auc", "pr_auc", "f1", "precision", "recall", "recall_at_precision", "accuracy", "brier"]


class TrainingConfigError(ValueError):
    """training.yaml or schema.json cannot be used."""


class CandidateConfig(Strict):
    """One candidate: an algorithm, fixed hyperparameters, and an optional small grid searched on validation data."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
    algorithm: Algorithm
    params: dict[str, Any] = Field(default_factory=dict, description="Passed to the estimator.")
    search: dict[str, list[Any]] = Field(
        default_factory=dict, description="Grid of estimator parameters; each combination is scored on validation."
    )
    max_train_rows: int | None = Field(
        None, ge=10,
        description=(
            "Fit on a seeded, stratified sample of at most this many training rows (the report says so); "
            "validation and test stay whole. k-NN's default is 20,000: it keeps every row it fits on, "
            "in memory and in its ONNX graph."
        ),
    )

    @model_validator(mode="after")
    def _grid(self) -> "CandidateConfig":
        for key, values in self.search.items():
            if not values:
                raise ValueError(f"candidate {self.name!r}: search.{key} is an empty list")
        size = 1
        for values in self.search.values():
            size *= len(values)
        if size > 64:
            raise ValueError(f"candidate {self.name!r}: the search grid has {size} combinations (at most 64)")
        return self


# k-NN's training rows are its model: 20,000 rows of 30 features are a 2.4 MB ONNX graph, and
# every prediction is measured against each of them.
KNN_MAX_TRAIN_ROWS = 20_000


def default_candidates() -> list[CandidateConfig]:
    """The tabular defaults: k-nearest neighbours, logistic regression, an MLP, gradient boosting (histogram-based)."""
    return [
        CandidateConfig(name="knn", algorithm="knn", search={"n_neighbors": [5, 15, 31]}, max_train_rows=KNN_MAX_TRAIN_ROWS),
        CandidateConfig(name="logistic_regression", algorithm="logistic_regression", search={"C": [0.1, 1.0, 10.0]}),
        CandidateConfig(name="mlp", algorithm="mlp", params={"hidden_layer_sizes": [32]}, search={"alpha": [1e-4, 1e-2]}),
        # Histogram-based (binned features): about as accurate as scikit-learn's classic
        # GradientBoostingClassifier (still available as `gradient_boosting`) and far faster on many rows.
        CandidateConfig(name="gradient_boosting", algorithm="hist_gradient_boosting",
                        params={"max_iter": 100, "max_depth": 3}),
    ]


class DistributedConfig(Strict):
    """Training beyond one machine (:mod:`aprendiz.training.distributed`): one XGBoost candidate
    trained data-parallel by Ray Train across ``workers``, on the dataset's Parquet shards read by
    Ray Data. Set it for a dataset too large for one machine's memory; the in-process candidates
    are then not trained."""

    workers: int = Field(2, ge=1, le=256, description="Ray Train workers; each holds its share of the training rows.")
    cpus_per_worker: float = Field(1.0, gt=0, description="Ray CPUs per worker (XGBoost's threads).")
    candidate: CandidateConfig = Field(
        default_factory=lambda: CandidateConfig(name="xgboost", algorithm="xgboost"),
        description="The candidate: algorithm xgboost; params as XGBoost's scikit-learn names (n_estimators, "
                    "max_depth, learning_rate, ...). No search grid.",
    )
    schema_sample_rows: int = Field(
        100_000, ge=100, description="An undeclared schema is inferred from the first shard's first rows, this many.")

    @model_validator(mode="after")
    def _xgboost(self) -> "DistributedConfig":
        if self.candidate.algorithm != "xgboost":
            raise ValueError(f"distributed.candidate: algorithm {self.candidate.algorithm!r} cannot train across "
                             "workers; use xgboost")
        if self.candidate.search:
            raise ValueError("distributed.candidate: a search grid is not supported across workers; set params")
        return self


class TrainingConfig(Strict):
    """How ``aprendiz train`` trains, evaluates and promotes one model."""

    label_column: str = Field("label", min_length=1)
    labels: tuple[str, str] | None = Field(
        None, description="(negative, positive) names for the card; unset: the champion's, else (negative, positive)."
    )
    features: list[Feature] | None = Field(None, description="The schema; unset: inferred once, kept in schema.json.")
    unseen_categories: Literal["ignore", "refuse"] = Field(
        "ignore", description="An inferred category's answer to a value not among its levels: encode it as no "
        "level (ignore) or refuse the request with a 400 (refuse).")
    candidates: list[CandidateConfig] = Field(default_factory=default_candidates, min_length=1)
    selection_metric: SelectionMetric = "roc_auc"
    margin: float = Field(0.005, ge=0, description="How much better than the champion a challenger must be.")
    floors: dict[str, float] = Field(
        default_factory=dict, description="Metric -> minimum (maximum for brier, latency_ms, size_bytes) on test."
    )
    min_precision: float = Field(0.9, gt=0, le=1, description="recall_at_precision: the threshold's precision target.")
    min_rows: int = Field(50, ge=10, description="Fewer valid rows stop the run.")
    seed: int = 0
    test_fraction: float = Field(0.2, gt=0, lt=0.5)
    validation_fraction: float = Field(0.2, gt=0, lt=0.5)
    onnx_tolerance: float = Field(1e-4, gt=0, description="Max |onnxruntime - scikit-learn| probability difference.")
    image: ImageTransform = Field(
        default_factory=ImageTransform,
        description="Image datasets: how an image becomes the model's input (resize the shorter side, crop the "
                    "centre, normalise); recorded in the card and applied the same way at serving.")
    distributed: DistributedConfig | None = Field(
        None, description="Train one XGBoost candidate across Ray Train workers on Parquet shards (data beyond one machine).")

    @model_validator(mode="after")
    def _check(self) -> "TrainingConfig":
        names = [c.name for c in self.candidates]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"candidate names appear twice: {duplicates}")
        known = set(HIGHER_IS_BETTER) | set(LOWER_IS_BETTER)
        unknown = sorted(set(self.floors) - known)
        if unknown:
            raise ValueError(f"floors name unknown metrics {unknown} (known: {sorted(known)})")
        if self.features is not None:
            feature_names = [f.name for f in self.features]
            if not feature_names:
                raise ValueError("features, when given, must list at least one column")
            if self.label_column in feature_names:
                raise ValueError(f"the label column {self.label_column!r} is also listed as a feature")
            if len(set(feature_names)) != len(feature_names):
                raise ValueError("a feature is listed twice")
        if self.test_fraction + self.validation_fraction >= 0.8:
            raise ValueError("test_fraction + validation_fraction must leave at least 20% of rows for training")
        return self

    @classmethod
    def load(cls, store: ObjectStore, name: str) -> "TrainingConfig":
        """``datasets/<name>/training.yaml`` when it exists, else the defaults."""
        key = dataset_prefix(name) + CONFIG_FILE
        try:
            text = store.read_bytes(key).decode("utf-8")
        except KeyNotFoundError:
            return cls()
        try:
            data = yaml12.load(text)  # labels as written: No, Yes, on, off, 01 stay strings
        except yaml.YAMLError as exc:
            raise TrainingConfigError(f"{key} is not valid YAML: {exc}") from None
        if data is None:
            return cls()
        if not isinstance(data, dict):
            raise TrainingConfigError(f"{key} must hold a mapping, not {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise TrainingConfigError(f"{key} is not a valid training config:\n{field_errors(exc)}") from None


# What to do about a validation error, by pydantic's error type.
_FIXES = {
    "too_long": "list exactly two (negative, positive)",
    "too_short": "list exactly two (negative, positive)",
    "float_parsing": "write a number, e.g. 0.01",
    "float_type": "write a number, e.g. 0.01",
    "int_parsing": "write a whole number, e.g. 50",
    "int_type": "write a whole number, e.g. 50",
    "string_type": "write it as text; quote it if YAML reads it otherwise",
    "literal_error": "use one of the values listed",
    "extra_forbidden": "remove it, or fix its spelling (see the fields in aprendiz.training.config)",
}


def field_errors(exc: ValidationError) -> str:
    """One line per wrong field: ``field.path: what is wrong (got X); the fix``."""
    lines = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(part) for part in error["loc"]) or "(the file)"
        got = error.get("input")
        shown = f" (got {got!r})" if not isinstance(got, dict | list) else ""
        fix = _FIXES.get(error["type"])
        lines.append(f"  {where}: {error['msg']}{shown}" + (f"; {fix}" if fix else ""))
    return "\n".join(lines)


DEFAULT_LABELS = ("negative", "positive")


def run_labels(config: TrainingConfig, champion_card: ModelCard | None) -> tuple[str, str]:
    """The (negative, positive) names a run gives the labels: training.yaml's, else the
    champion's, else the defaults."""
    return config.labels or (champion_card.labels if champion_card else DEFAULT_LABELS)


def schema_key(name: str) -> str:
    return dataset_prefix(name) + SCHEMA_FILE


def load_schema(store: ObjectStore, name: str) -> list[Feature] | None:
    """The kept schema (inferred by an earlier run), or None."""
    key = schema_key(name)
    try:
        data = store.read_json(key)
    except KeyNotFoundError:
        return None
    try:
        return [Feature.model_validate(f) for f in data["features"]]
    except (KeyError, TypeError, ValidationError) as exc:
        raise TrainingConfigError(f"{key} is not a valid schema: {exc}") from None


def save_schema(store: ObjectStore, name: str, features: list[Feature], label_column: str) -> None:
    store.write_json(
        schema_key(name), {"features": [f.model_dump() for f in features], "label_column": label_column}
    )
