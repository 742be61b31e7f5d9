"""KServe's own Python model server hosting the same ONNX classifier, for comparison.

A ``kserve.Model`` subclass runs the model with onnxruntime in the server's process (one
intra-op thread, like aprendiz's replicas) and answers KServe V1 (``{"instances": ...}``) and
V2 (Open Inference Protocol) with the same fields aprendiz returns (probability, label,
threshold). Run: ``python -m benchmarks.kserve_server --model-file model.onnx --port 8080``.
"""

from __future__ import annotations

import argparse
import uuid
from typing import Any

import numpy as np

LABELS = ("benign", "malignant")
THRESHOLD = 0.5


def make_model(name: str, onnx_bytes: bytes):
    import kserve
    import onnxruntime as ort
    from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse

    class OnnxKServeModel(kserve.Model):
        def __init__(self) -> None:
            super().__init__(name)
            self.session = None

        def load(self) -> bool:
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            self.session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])
            self.input_name = self.session.get_inputs()[0].name
            self.ready = True
            return self.ready

        def _positive(self, rows: np.ndarray) -> np.ndarray:
            probabilities = self.session.run(["probabilities"], {self.input_name: rows.astype(np.float32)})[0]
            return probabilities[:, 1]

        async def predict(self, payload: Any, headers: dict[str, str] | None = None,
                          response_headers: dict[str, str] | None = None):
            if isinstance(payload, InferRequest):
                positive = self._positive(payload.inputs[0].as_numpy())
                labels = np.array([LABELS[int(p >= THRESHOLD)] for p in positive], dtype=object)
                outputs = [
                    InferOutput("probability", [len(positive)], "FP32", positive.tolist()),
                    InferOutput("label", [len(labels)], "BYTES", labels.tolist()),
                    InferOutput("threshold", [1], "FP32", [THRESHOLD]),
                ]
                return InferResponse(str(uuid.uuid4()), self.name, infer_outputs=outputs)
            positive = self._positive(np.asarray(payload["instances"], dtype=np.float32))
            return {
                "predictions": [
                    {"probability": float(p), "label": LABELS[int(p >= THRESHOLD)], "threshold": THRESHOLD}
                    for p in positive
                ]
            }

    return OnnxKServeModel()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model-file", required=True)
    parser.add_argument("--name", default="breast-cancer")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args()
    import kserve

    with open(args.model_file, "rb") as f:
        model = make_model(args.name, f.read())
    model.load()
    # KServe's defaults (its access and latency logging included), one worker, no gRPC port.
    kserve.ModelServer(http_port=args.port, workers=1, enable_grpc=False).start([model])


if __name__ == "__main__":
    main()
