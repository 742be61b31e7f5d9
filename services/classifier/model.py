"""One loaded classifier version: ``load`` / ``ready`` / ``predict`` over an onnxruntime session.

Artifacts are ONNX only: a pickle or joblib file from the store would run code when
loaded, so none is ever read.
"""

from __future__ import annotations

import numpy as np

from aprendiz.registry import LoadedArtifact, ModelCard


class ModelLoadError(RuntimeError):
    """A version cannot serve: unreadable graph, wrong inputs or outputs, or a failed self-check."""


class OnnxClassifier:
    """A tabular binary classifier: float32 [N, F] in, probability of the positive class out."""

    def __init__(self, card: ModelCard, session) -> None:
        self.card = card
        self._session = session
        self._input = card.onnx_input
        self._output = card.onnx_output

    @property
    def version(self) -> str:
        return self.card.version

    @property
    def n_features(self) -> int:
        return len(self.card.features)

    @classmethod
    def load(cls, artifact: LoadedArtifact, *, threads: int = 1) -> "OnnxClassifier":
        """Build the session from the artifact's bytes and check it before anyone is served by it."""
        import onnxruntime as ort

        card = artifact.card
        if card.kind != "tabular":
            raise ModelLoadError(f"{card.name} {card.version}: kind {card.kind!r} is not served yet (tabular only)")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            session = ort.InferenceSession(artifact.onnx_bytes, options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ModelLoadError(f"{card.name} {card.version}: onnxruntime cannot load model.onnx: {exc}") from exc
        inputs = {i.name: i for i in session.get_inputs()}
        outputs = {o.name for o in session.get_outputs()}
        if card.onnx_input not in inputs:
            raise ModelLoadError(f"{card.name} {card.version}: graph has no input {card.onnx_input!r} (has {sorted(inputs)})")
        if card.onnx_output not in outputs:
            raise ModelLoadError(f"{card.name} {card.version}: graph has no output {card.onnx_output!r} (has {sorted(outputs)})")
        model = cls(card, session)
        model.self_check()
        return model

    def self_check(self) -> None:
        """Run one zero row: the answer must be one finite probability in [0, 1]."""
        try:
            probability = self.predict(np.zeros((1, self.n_features), dtype=np.float32))
        except Exception as exc:
            raise ModelLoadError(f"{self.card.name} {self.version}: self-check failed: {exc}") from exc
        if probability.shape != (1,) or not np.isfinite(probability).all() or not 0 <= probability[0] <= 1:
            raise ModelLoadError(f"{self.card.name} {self.version}: self-check gave {probability!r}")

    def ready(self) -> bool:
        return self._session is not None

    def predict(self, features: np.ndarray) -> np.ndarray:
        """Probability of the positive class for each row of ``features`` (float32 [N, F])."""
        (probabilities,) = self._session.run([self._output], {self._input: features})
        probabilities = np.asarray(probabilities)
        return probabilities[:, 1] if probabilities.ndim == 2 else probabilities.reshape(-1)

    def labels_for(self, probabilities: np.ndarray) -> list[str]:
        return [self.card.label_for(float(p)) for p in probabilities]
