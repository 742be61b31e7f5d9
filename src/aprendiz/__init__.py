"""aprendiz: Kubernetes-native model serving on Ray Serve.

One source tree, one import root:

- ``aprendiz.*`` (this folder): the core library (settings, the platform config schema,
  errors, metrics, keys, the object store and the model registry, costs);
- ``aprendiz.services``: the Ray Serve services, one subpackage each;
- ``aprendiz.training``: the training job and the default generator's builder;
- ``aprendiz.cli``: the application shell (the ``aprendiz`` command and the local runner).
  Nothing in the core, the services or training imports it.
"""

__version__ = "0.1.0"
