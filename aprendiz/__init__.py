"""aprendiz: Kubernetes-native model serving on Ray Serve.

The shared core lives here (settings, the platform configuration schema, the CLI);
services live in ``aprendiz.services`` (source folder ``services/``) and training
code in ``aprendiz.training`` (source folder ``training/``).
"""

__version__ = "0.1.0"
