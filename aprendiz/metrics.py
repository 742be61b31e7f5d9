"""Every metric the platform defines, in one place.

Inside Ray Serve replicas the metrics go through Ray's metrics API, so every
replica's series reach the node's Prometheus endpoint (Ray prefixes them with
``ray_``). Metric objects are created when a replica starts (never at import).
Labels are low-cardinality only: model name, model version, label, reason.
"""

from __future__ import annotations

PROBABILITY_BUCKETS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]


class ClassifierMetrics:
    """The classifier service's metrics (one instance per replica)."""

    def __init__(self, model: str):
        from ray.util import metrics

        self.model = model
        self.predictions = metrics.Counter(
            "aprendiz_classifier_predictions",
            description="Predictions served, by model, version and predicted label.",
            tag_keys=("model", "version", "label"),
        )
        self.batch_size = metrics.Histogram(
            "aprendiz_classifier_batch_size",
            description="Instances per onnxruntime call (after Serve batching).",
            boundaries=BATCH_SIZE_BUCKETS,
            tag_keys=("model",),
        )
        self.probability = metrics.Histogram(
            "aprendiz_classifier_probability",
            description="Predicted probability of the positive class (drift shows here first).",
            boundaries=PROBABILITY_BUCKETS,
            tag_keys=("model", "version"),
        )
        self.inference_seconds = metrics.Histogram(
            "aprendiz_classifier_inference_seconds",
            description="Time of one onnxruntime call.",
            boundaries=LATENCY_BUCKETS_S,
            tag_keys=("model",),
        )
        self.feedback_examples = metrics.Counter(
            "aprendiz_classifier_feedback_examples",
            description="Labelled examples received as feedback and written to the store.",
            tag_keys=("model", "label"),
        )
        self.model_version_info = metrics.Gauge(
            "aprendiz_classifier_model_version_info",
            description="1 for the version a replica serves, 0 for one it served before.",
            tag_keys=("model", "version"),
        )
        self.model_load_failures = metrics.Counter(
            "aprendiz_classifier_model_load_failures",
            description="Versions that failed to load or to pass the self-check, and were refused.",
            tag_keys=("model", "version"),
        )

    def served(self, version: str, labels: list[str], probabilities) -> None:
        for label in set(labels):
            self.predictions.inc(labels.count(label), tags={"model": self.model, "version": version, "label": label})
        for p in probabilities:
            self.probability.observe(float(p), tags={"model": self.model, "version": version})

    def switched(self, old: str | None, new: str) -> None:
        if old:
            self.model_version_info.set(0, tags={"model": self.model, "version": old})
        self.model_version_info.set(1, tags={"model": self.model, "version": new})
