"""aprendiz.training.onnx_export: scoring a whole evaluation set in slices gives the one-call answer."""

from __future__ import annotations

import numpy as np
from sklearn.datasets import make_classification
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from aprendiz.training.onnx_export import export_onnx, onnx_probabilities


def test_chunked_scoring_equals_one_call_for_a_knn():
    """k-NN is the export whose one-call memory grows with test rows x training rows."""
    x, y = make_classification(n_samples=300, n_features=6, random_state=0)
    x = x.astype(np.float32)
    model = make_pipeline(StandardScaler(), KNeighborsClassifier(n_neighbors=5)).fit(x[:200], y[:200])
    onnx_bytes = export_onnx(model, n_features=6)
    whole = onnx_probabilities(onnx_bytes, x[200:], chunk_rows=1000)
    sliced = onnx_probabilities(onnx_bytes, x[200:], chunk_rows=7)  # 100 rows: 15 slices, the last of 2
    assert sliced.shape == whole.shape == (100, 2)
    np.testing.assert_allclose(sliced, whole, rtol=0, atol=1e-6)
    np.testing.assert_allclose(whole, model.predict_proba(x[200:]), atol=1e-5)
