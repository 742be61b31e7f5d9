"""The platform's Ray Serve services, one subpackage each.

- ``ingress``: the one entrance at route prefix ``/`` (OpenAI, KServe V1 and V2 routes, probes);
- ``gateway``: the layer every model request passes: keys, limits, routing to a backend,
  fallback, metering and cost;
- ``generator``: hosted text generators (``ray.serve.llm`` LLMServer on vLLM), LoRA adapters;
- ``classifier``: binary classifiers (ONNX on onnxruntime) with champion swaps and feedback;
- ``raycompat``: the one module that touches Ray's private APIs;
- ``app``: ``build_app(args)``, the Serve application builder shared by the CLI, Serve config
  files and the Helm chart.
"""
