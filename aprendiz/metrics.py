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
REQUEST_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
TOKEN_TIME_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56]


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


class IngressMetrics:
    """Every answer of the entrance: count and latency by route template, model and status."""

    def __init__(self):
        from ray.util import metrics

        self.requests = metrics.Counter(
            "aprendiz_ingress_requests",
            description="Requests answered by the entrance, by route template, model and HTTP status.",
            tag_keys=("route", "model", "status"),
        )
        self.request_seconds = metrics.Histogram(
            "aprendiz_ingress_request_seconds",
            description="Time from request to response headers (streams: to the first byte), by route, model, status.",
            boundaries=REQUEST_BUCKETS_S,
            tag_keys=("route", "model", "status"),
        )

    def answered(self, route: str, model: str, status: int, seconds: float) -> None:
        tags = {"route": route, "model": model, "status": str(status)}
        self.requests.inc(1, tags=tags)
        self.request_seconds.observe(seconds, tags=tags)


class GatewayMetrics:
    """The gateway's metrics (one instance per ingress replica): refusals, tokens, cost, generation timing.

    ``key`` is the tenant name of the API key (``anonymous`` without authentication,
    ``unknown`` for a refused key), never the key itself.
    """

    def __init__(self):
        from ray.util import metrics

        self.refusals = metrics.Counter(
            "aprendiz_gateway_refusals",
            description="Requests refused by the gateway, by reason (missing_key, invalid_key, model_not_allowed, "
            "requests_per_minute, tokens_per_minute) and key name.",
            tag_keys=("reason", "key"),
        )
        self.tokens = metrics.Counter(
            "aprendiz_gateway_tokens",
            description="Tokens served, by model, backend (hosted or rented), key name and kind (prompt or completion).",
            tag_keys=("model", "backend", "key", "kind"),
        )
        self.cost_usd = metrics.Counter(
            "aprendiz_gateway_cost_usd",
            description="Cost of requests in USD: billed tokens for rented models, a share of the replica's hourly "
            "price for hosted ones (the hosted total is aprendiz_replica_cost_usd).",
            tag_keys=("model", "backend", "key"),
        )
        self.fallbacks = metrics.Counter(
            "aprendiz_gateway_fallbacks",
            description="Requests a model handed to its fallback, by model, fallback model and reason.",
            tag_keys=("model", "fallback", "reason"),
        )
        self.upstream_errors = metrics.Counter(
            "aprendiz_gateway_upstream_errors",
            description="Failed calls to rented models' providers, by model and reason (unreachable, timeout, status).",
            tag_keys=("model", "reason"),
        )
        self.time_to_first_token = metrics.Histogram(
            "aprendiz_generator_time_to_first_token_seconds",
            description="Time from request to the first generated token, seen at the entrance.",
            boundaries=REQUEST_BUCKETS_S,
            tag_keys=("model", "backend"),
        )
        self.time_per_output_token = metrics.Histogram(
            "aprendiz_generator_time_per_output_token_seconds",
            description="Mean time between output tokens after the first, per streamed request.",
            boundaries=TOKEN_TIME_BUCKETS_S,
            tag_keys=("model", "backend"),
        )
        self.generation_seconds = metrics.Histogram(
            "aprendiz_generator_request_seconds",
            description="End-to-end time of a generation request, to its last token.",
            boundaries=REQUEST_BUCKETS_S,
            tag_keys=("model", "backend"),
        )

    def generated(
        self, *, model: str, backend: str, key: str, prompt_tokens: int, completion_tokens: int, cost_usd: float,
        seconds: float, first_token_s: float | None,
    ) -> None:
        base = {"model": model, "backend": backend, "key": key}
        if prompt_tokens:
            self.tokens.inc(prompt_tokens, tags={**base, "kind": "prompt"})
        if completion_tokens:
            self.tokens.inc(completion_tokens, tags={**base, "kind": "completion"})
        if cost_usd > 0:
            self.cost_usd.inc(cost_usd, tags=base)
        timing = {"model": model, "backend": backend}
        self.generation_seconds.observe(seconds, tags=timing)
        if first_token_s is not None:
            self.time_to_first_token.observe(first_token_s, tags=timing)
            if completion_tokens > 1:
                self.time_per_output_token.observe((seconds - first_token_s) / (completion_tokens - 1), tags=timing)


class ReplicaCostMetrics:
    """What one hosted replica costs while it is up: its hourly price, accrued as it runs."""

    def __init__(self, *, model: str, kind: str, accelerator: str, replica: str):
        from ray.util import metrics

        self.tags = {"model": model, "kind": kind, "accelerator": accelerator, "replica": replica}
        tag_keys = tuple(self.tags)
        self.cost_usd = metrics.Counter(
            "aprendiz_replica_cost_usd",
            description="USD accrued by hosted replicas at their hourly price, busy or idle (kind: generator or "
            "classifier).",
            tag_keys=tag_keys,
        )
        self.hourly_usd = metrics.Gauge(
            "aprendiz_replica_hourly_usd",
            description="The hourly price of a running hosted replica (sum: the current burn rate).",
            tag_keys=tag_keys,
        )

    def accrue(self, usd: float) -> None:
        self.cost_usd.inc(usd, tags=self.tags)

    def price(self, hourly_usd: float) -> None:
        self.hourly_usd.set(hourly_usd, tags=self.tags)


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
