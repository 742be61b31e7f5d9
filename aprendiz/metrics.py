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


class TrainingMetrics:
    """The training job's metrics for one run, pushed to a Prometheus Pushgateway (prometheus-client).

    A batch job is gone before any scrape, so it pushes: one group per model
    (job="aprendiz-training", model=<name>), replaced by each run's push.
    """

    JOB = "aprendiz-training"

    def __init__(self, model: str):
        from prometheus_client import CollectorRegistry, Gauge

        self.model = model
        self.registry = CollectorRegistry()
        self.duration_seconds = Gauge(
            "aprendiz_training_duration_seconds", "Wall time of the training run.", registry=self.registry
        )
        self.rows_read = Gauge(
            "aprendiz_training_rows_read", "Dataset rows and feedback records read.", registry=self.registry
        )
        self.rows_quarantined = Gauge(
            "aprendiz_training_rows_quarantined", "Rows set aside as invalid (with their reason).", registry=self.registry
        )
        self.candidates_trained = Gauge(
            "aprendiz_training_candidates_trained", "Candidates trained, exported and evaluated.", registry=self.registry
        )
        self.best_metric = Gauge(
            "aprendiz_training_best_metric",
            "The best candidate's selection metric on the test set.",
            ("metric",),
            registry=self.registry,
        )
        self.promoted = Gauge(
            "aprendiz_training_promoted", "1 when the run promoted a new champion, else 0.", registry=self.registry
        )
        self.success = Gauge(
            "aprendiz_training_success", "1 when the run finished (promoted or not), 0 when it failed.", registry=self.registry
        )
        self.last_success = Gauge(
            "aprendiz_training_last_success_timestamp_seconds",
            "Unix time of the last run that finished.",
            registry=self.registry,
        )

    def record(
        self,
        *,
        duration_s: float,
        success: bool,
        rows_read: int = 0,
        rows_quarantined: int = 0,
        candidates_trained: int = 0,
        metric: str | None = None,
        best_metric: float | None = None,
        promoted: bool = False,
    ) -> None:
        self.duration_seconds.set(duration_s)
        self.rows_read.set(rows_read)
        self.rows_quarantined.set(rows_quarantined)
        self.candidates_trained.set(candidates_trained)
        if metric is not None and best_metric is not None:
            self.best_metric.labels(metric=metric).set(best_metric)
        self.promoted.set(1 if promoted else 0)
        self.success.set(1 if success else 0)
        if success:
            self.last_success.set_to_current_time()

    def push(self, url: str, *, timeout: float = 5.0) -> None:
        """PUT this run's metrics to the Pushgateway at ``url`` (replacing the model's previous group)."""
        from prometheus_client import push_to_gateway

        push_to_gateway(url, job=self.JOB, registry=self.registry, grouping_key={"model": self.model}, timeout=timeout)
