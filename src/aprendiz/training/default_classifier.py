"""The default classifier ``breast-cancer``: logistic regression on scikit-learn's bundled data.

The Wisconsin breast cancer data ships inside scikit-learn (no download), so the platform
can publish a working tabular model on any machine. The positive class is *malignant*
(scikit-learn's target 0), the labels are ("benign", "malignant"), and the 30 features keep
scikit-learn's names ("mean radius", ...). The metrics on the card are computed with
onnxruntime on the exported model, so they describe what serves.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from aprendiz.registry import Feature, ModelCard, ModelRegistry, new_version
from aprendiz.training.evaluation import binary_metrics
from aprendiz.training.onnx_export import TARGET_OPSET, export_onnx, onnx_probabilities  # noqa: F401 (re-exported)

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

DEFAULT_NAME = "breast-cancer"
LABELS = ("benign", "malignant")
TEST_SIZE = 0.25
THRESHOLD = 0.5
# Opsets every onnxruntime the platform supports (>= 1.20) runs.


@dataclass(frozen=True)
class DefaultFit:
    """The fitted scikit-learn pipeline and the split it was fitted on."""

    pipeline: Pipeline
    feature_names: list[str]
    x_train: np.ndarray
    x_test: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray


def fit_default_pipeline(seed: int = 0) -> DefaultFit:
    """Fit StandardScaler + LogisticRegression on a stratified split of the bundled data (float32)."""
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import StandardScaler

    data = load_breast_cancer()
    x = np.ascontiguousarray(data.data, dtype=np.float32)
    y = (data.target == 0).astype(np.int64)  # 0 is malignant in scikit-learn: make it the positive class
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=TEST_SIZE, stratify=y, random_state=seed)
    pipeline = Pipeline([("scale", StandardScaler()), ("model", LogisticRegression(max_iter=1000))])
    pipeline.fit(x_train, y_train)
    return DefaultFit(
        pipeline=pipeline,
        feature_names=[str(n) for n in data.feature_names],
        x_train=np.ascontiguousarray(x_train),
        x_test=np.ascontiguousarray(x_test),
        y_train=np.ascontiguousarray(y_train),
        y_test=np.ascontiguousarray(y_test),
    )


def _fingerprint(fit: DefaultFit) -> str:
    """sha256 of the training rows and their labels, as stored (float32, int64, C order)."""
    digest = hashlib.sha256()
    digest.update(fit.x_train.tobytes())
    digest.update(fit.y_train.tobytes())
    return digest.hexdigest()


def train_default_classifier(seed: int = 0, *, name: str = DEFAULT_NAME) -> tuple[ModelCard, bytes]:
    """Train the default model and return its card (a fresh version) and its ONNX bytes."""
    import sklearn

    fit = fit_default_pipeline(seed)
    onnx_bytes = export_onnx(fit.pipeline, len(fit.feature_names))
    positive = onnx_probabilities(onnx_bytes, fit.x_test)[:, 1]
    card = ModelCard(
        name=name,
        version=new_version(),
        kind="tabular",
        features=[Feature(name=n, type="float") for n in fit.feature_names],
        labels=LABELS,
        threshold=THRESHOLD,
        onnx_input="input",
        onnx_output="probabilities",
        metrics=binary_metrics(fit.y_test, positive, THRESHOLD),
        data_fingerprint=_fingerprint(fit),
        algorithm="logistic_regression",
        training={
            "dataset": "sklearn.datasets.load_breast_cancer",
            "positive_class": LABELS[1],
            "seed": seed,
            "test_size": TEST_SIZE,
            "n_train": int(len(fit.y_train)),
            "n_test": int(len(fit.y_test)),
            "scikit_learn": sklearn.__version__,
        },
    )
    return card, onnx_bytes


def publish_default_classifier(registry: ModelRegistry, name: str = DEFAULT_NAME, *, promote: bool = True) -> str | None:
    """Train, publish and (by default) promote the default model, unless ``name`` already has a champion.

    Returns the new version, or None when there was a champion and nothing was done.
    """
    if registry.champion(name) is not None:
        return None
    card, onnx_bytes = train_default_classifier(name=name)
    version = registry.publish(card, onnx_bytes)
    if promote:
        registry.promote(name, version, reason="default model")
    return version
