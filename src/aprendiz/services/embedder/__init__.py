"""The embedding service: ``POST /v1/embeddings`` on a sentence encoder (ONNX on onnxruntime)."""
