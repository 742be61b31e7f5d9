"""Image networks that need torchvision (issue #18): MobileNetV3-Small, a small vision transformer and a
semi-supervised GAN, trained in the image-training environment.

torchvision's PyPI wheels do not load beside the main environment's CPU torch, so these networks train in
a worker process run by another interpreter: the Kubernetes training image's own, or locally the virtual
environment that ``make image-venv`` makes (``APRENDIZ_IMAGE_PYTHON``).

- :mod:`~aprendiz.training.vision.torchfit`: the training loop (early stopping on validation loss, a
  progress bar per epoch), torch's probabilities and the ONNX export, shared with the CNN and MLP baselines;
- :mod:`~aprendiz.training.vision.networks`: the three networks and the GAN's training epoch;
- :mod:`~aprendiz.training.vision.worker`: ``python -m aprendiz.training.vision.worker REQUEST_DIR``;
- :mod:`~aprendiz.training.vision.remote`: the main environment's side (no torch): ``RemoteImageNetwork``,
  a scikit-learn-like estimator that runs the worker, for ``candidates.train_with``.

Everything here but ``remote`` imports only numpy, torch, torchvision, onnx, onnxruntime and tqdm (and
nothing of aprendiz outside this package), so the worker's environment needs nothing else.
"""
