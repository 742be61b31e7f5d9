"""The platform's services, one subpackage each (installed as ``aprendiz.services``).

- ``generator``: hosted text generators (ray.serve.llm LLMServer on vLLM).
- ``ingress``: the one OpenAI-compatible entrance at route prefix ``/``.
- ``app``: ``build_app(args)``, the Serve application builder shared by the CLI,
  Serve config files and the Helm chart.
"""
