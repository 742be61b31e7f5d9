"""Held-out evaluation shared by every classifier the project trains."""

from __future__ import annotations

import numpy as np


def binary_metrics(y_true: np.ndarray, positive: np.ndarray, threshold: float) -> dict[str, float]:
    """ROC-AUC on the positive class's probability; accuracy and F1 of the labels under ``threshold``."""
    from sklearn.metrics import accuracy_score, f1_score, roc_auc_score

    predicted = (positive >= threshold).astype(np.int64)
    return {
        "roc_auc": float(roc_auc_score(y_true, positive)),
        "accuracy": float(accuracy_score(y_true, predicted)),
        "f1": float(f1_score(y_true, predicted)),
    }
