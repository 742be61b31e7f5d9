"""Binary classifiers served from the model registry (ONNX on onnxruntime), KServe V1 and V2."""
