"""Every metric the platform defines, in one place: the catalogue below, and the classes built from it.

Inside Ray Serve replicas the metrics go through Ray's metrics API, so every
replica's series reach the node's Prometheus endpoint (Ray prefixes them with
``ray_`` and adds ``_total`` to counters). Metric objects are created when a
replica starts (never at import). Outside Ray (the training job) they go through
prometheus-client to a Pushgateway.

Naming follows Prometheus' rules (tests/unit/test_metrics.py checks them): base
units in the name (``_seconds``, ``_bytes``, ``_usd``), ``_total`` only on counters
(added at export), ``_info`` gauges for versions, ``_timestamp_seconds`` for times.
Labels are low-cardinality only: model name, model version, label, reason, key name.
"""

from __future__ import annotations

from dataclasses import dataclass

PROBABILITY_BUCKETS = [0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95]
BATCH_SIZE_BUCKETS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512]
LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5]
REQUEST_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0]
IMAGE_BYTES_BUCKETS = [1024, 4096, 16384, 65536, 262144, 1048576, 4194304, 16777216]
TOKEN_TIME_BUCKETS_S = [0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56]

RAY = "ray"  # exported by Ray's metrics agent from inside Serve replicas
PUSHGATEWAY = "pushgateway"  # pushed by a batch job (prometheus-client)


@dataclass(frozen=True)
class MetricSpec:
    """One metric: its defined name (without Ray's prefix or the counter's ``_total``), type, labels, help, buckets."""

    name: str
    type: str  # counter | gauge | histogram
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()
    exporter: str = RAY

    @property
    def series(self) -> str:
        """The name Prometheus stores: Ray prefixes ``ray_``; counters end in ``_total``."""
        name = f"ray_{self.name}" if self.exporter == RAY else self.name
        return f"{name}_total" if self.type == "counter" else name

    @property
    def samples(self) -> tuple[str, ...]:
        """The sample names a scrape shows for this metric."""
        if self.type == "histogram":
            return tuple(f"{self.series}_{suffix}" for suffix in ("bucket", "sum", "count"))
        return (self.series,)


def _spec(name: str, type: str, help: str, labels: tuple[str, ...] = (), buckets=(), exporter: str = RAY) -> MetricSpec:
    return MetricSpec(name, type, help, tuple(labels), tuple(buckets), exporter)


# -- ingress ---------------------------------------------------------------------------------
INGRESS_REQUESTS = _spec(
    "aprendiz_ingress_requests", "counter",
    "Requests answered by the entrance, by route template, model and HTTP status.",
    ("route", "model", "status"),
)
INGRESS_REQUEST_SECONDS = _spec(
    "aprendiz_ingress_request_seconds", "histogram",
    "Time from request to response headers (streams: to the first byte), by route, model, status.",
    ("route", "model", "status"), REQUEST_BUCKETS_S,
)

# -- gateway ---------------------------------------------------------------------------------
GATEWAY_REFUSALS = _spec(
    "aprendiz_gateway_refusals", "counter",
    "Requests refused by the gateway, by reason (missing_key, invalid_key, failed_attempts, model_not_allowed, "
    "feedback_not_allowed, requests_per_minute, tokens_per_minute) and key name.",
    ("reason", "key"),
)
GATEWAY_KEY_FILE_ERRORS = _spec(
    "aprendiz_gateway_key_file_errors", "counter",
    "Checks of the key file (one every keys_reload_s while requests come in) that found it unreadable or "
    "invalid, by reason: every key is refused meanwhile.",
    ("reason",),
)
GATEWAY_LIMITER_FAIL_OPEN = _spec(
    "aprendiz_gateway_limiter_fail_open", "counter",
    "Limiter calls that failed and let the request through unlimited (fail open), by call (admit or "
    "charge) and reason (timeout, unreachable).",
    ("call", "reason"),
)
GATEWAY_TOKENS = _spec(
    "aprendiz_gateway_tokens", "counter",
    "Tokens served, by model, backend (hosted or rented), key name, kind (prompt or completion) and feature "
    "(chat, tools, structured_outputs, embeddings).",
    ("model", "backend", "key", "kind", "feature"),
)
GATEWAY_REQUESTS = _spec(
    "aprendiz_gateway_requests", "counter",
    "Generation and embedding requests served, by model, backend and feature: embeddings, tools (a request "
    "with tools), structured_outputs (with a response_format schema), chat (the rest).",
    ("model", "backend", "feature"),
)
GATEWAY_COST_USD = _spec(
    "aprendiz_gateway_cost_usd", "counter",
    "Cost of requests in USD: billed tokens for rented models, a share of the replica's hourly "
    "price for hosted ones (the hosted total is aprendiz_replica_cost_usd).",
    ("model", "backend", "key"),
)
GATEWAY_FALLBACKS = _spec(
    "aprendiz_gateway_fallbacks", "counter",
    "Requests a model handed to its fallback, by model, fallback model and reason.",
    ("model", "fallback", "reason"),
)
GATEWAY_UPSTREAM_ERRORS = _spec(
    "aprendiz_gateway_upstream_errors", "counter",
    "Failed calls to rented models' providers, by model and reason (timeout, unreachable_or_failed).",
    ("model", "reason"),
)

# -- generators (seen at the entrance, hosted and rented alike) -------------------------------
GENERATOR_TIME_TO_FIRST_TOKEN = _spec(
    "aprendiz_generator_time_to_first_token_seconds", "histogram",
    "Time from request to the first generated token, seen at the entrance.",
    ("model", "backend"), REQUEST_BUCKETS_S,
)
GENERATOR_TIME_PER_OUTPUT_TOKEN = _spec(
    "aprendiz_generator_time_per_output_token_seconds", "histogram",
    "Mean time between output tokens after the first, per streamed request.",
    ("model", "backend"), TOKEN_TIME_BUCKETS_S,
)
GENERATOR_REQUEST_SECONDS = _spec(
    "aprendiz_generator_request_seconds", "histogram",
    "End-to-end time of a generation request, to its last token.",
    ("model", "backend"), REQUEST_BUCKETS_S,
)

# -- hosted replicas' cost ------------------------------------------------------------------------
_REPLICA_LABELS = ("model", "kind", "accelerator", "replica")
REPLICA_COST_USD = _spec(
    "aprendiz_replica_cost_usd", "counter",
    "USD accrued by hosted replicas at their hourly price, busy or idle (kind: generator or classifier).",
    _REPLICA_LABELS,
)
REPLICA_HOURLY_USD = _spec(
    "aprendiz_replica_hourly_usd", "gauge",
    "The hourly price of a running hosted replica (sum: the current burn rate).",
    _REPLICA_LABELS,
)

# -- classifiers ------------------------------------------------------------------------------
CLASSIFIER_PREDICTIONS = _spec(
    "aprendiz_classifier_predictions", "counter",
    "Predictions served, by model, version and predicted label.",
    ("model", "version", "label"),
)
CLASSIFIER_BATCH_SIZE = _spec(
    "aprendiz_classifier_batch_size", "histogram",
    "Instances per onnxruntime call (after Serve batching).",
    ("model",), BATCH_SIZE_BUCKETS,
)
CLASSIFIER_PROBABILITY = _spec(
    "aprendiz_classifier_probability", "histogram",
    "Predicted probability of the positive class (drift shows here first).",
    ("model", "version"), PROBABILITY_BUCKETS,
)
CLASSIFIER_INFERENCE_SECONDS = _spec(
    "aprendiz_classifier_inference_seconds", "histogram",
    "Time of one onnxruntime call.",
    ("model",), LATENCY_BUCKETS_S,
)
CLASSIFIER_IMAGE_BYTES = _spec(
    "aprendiz_classifier_image_bytes", "histogram",
    "Encoded size of each image a request sent to an image classifier.",
    ("model",), IMAGE_BYTES_BUCKETS,
)
CLASSIFIER_IMAGE_DECODE_SECONDS = _spec(
    "aprendiz_classifier_image_decode_seconds", "histogram",
    "Time to decode and transform one request's images (Pillow and numpy, on a worker thread).",
    ("model",), LATENCY_BUCKETS_S,
)
CLASSIFIER_FEEDBACK_EXAMPLES = _spec(
    "aprendiz_classifier_feedback_examples", "counter",
    "Labelled examples received as feedback and written to the store.",
    ("model", "label"),
)
CLASSIFIER_MODEL_VERSION_INFO = _spec(
    "aprendiz_classifier_model_version_info", "gauge",
    "1 for the version a replica serves, 0 for one it served before.",
    ("model", "version"),
)
CLASSIFIER_MODEL_LOAD_FAILURES = _spec(
    "aprendiz_classifier_model_load_failures", "counter",
    "Versions that failed to load or to pass the self-check, and were refused.",
    ("model", "version"),
)
CLASSIFIER_CHAMPION_TIMESTAMP = _spec(
    "aprendiz_classifier_champion_timestamp_seconds", "gauge",
    "Unix time at which the registry's current champion of the model was promoted.",
    ("model",),
)

# -- training job (Pushgateway: job="aprendiz-training", model=<name>) --------------------------
TRAINING_DURATION_SECONDS = _spec(
    "aprendiz_training_duration_seconds", "gauge", "Wall time of the training run.", exporter=PUSHGATEWAY
)
TRAINING_ROWS_READ = _spec(
    "aprendiz_training_rows_read", "gauge", "Dataset rows and feedback records read.", exporter=PUSHGATEWAY
)
TRAINING_ROWS_QUARANTINED = _spec(
    "aprendiz_training_rows_quarantined", "gauge", "Rows set aside as invalid (with their reason).", exporter=PUSHGATEWAY
)
TRAINING_CANDIDATES_TRAINED = _spec(
    "aprendiz_training_candidates_trained", "gauge", "Candidates trained, exported and evaluated.", exporter=PUSHGATEWAY
)
TRAINING_BEST_METRIC = _spec(
    "aprendiz_training_best_metric", "gauge",
    "The best candidate's selection metric on the test set.", ("metric",), exporter=PUSHGATEWAY,
)
TRAINING_PROMOTED = _spec(
    "aprendiz_training_promoted", "gauge", "1 when the run promoted a new champion, else 0.", exporter=PUSHGATEWAY
)
TRAINING_SUCCESS = _spec(
    "aprendiz_training_success", "gauge", "1 when the run finished (promoted or not), 0 when it failed.",
    exporter=PUSHGATEWAY,
)
TRAINING_LAST_SUCCESS = _spec(
    "aprendiz_training_last_success_timestamp_seconds", "gauge", "Unix time of the last run that finished.",
    exporter=PUSHGATEWAY,
)
# aprendiz evaluate, pushed per evaluation set and model (job="aprendiz-evaluation").
EVAL_QUALITY = _spec(
    "aprendiz_eval_quality", "gauge",
    "A model's quality on an evaluation set, 0 to 1 (scorer=\"overall\": the mean of the case scores; else one scorer).",
    ("scorer",), exporter=PUSHGATEWAY,
)
EVAL_COST_PER_1K = _spec(
    "aprendiz_eval_cost_per_1k_conversations_usd", "gauge",
    "What 1,000 of the evaluation's conversations cost on the model (rented prices, or the hosted replica's share).",
    exporter=PUSHGATEWAY,
)
EVAL_ERRORS = _spec(
    "aprendiz_eval_errors", "gauge", "Cases the model answered with an error in the last evaluation.", exporter=PUSHGATEWAY
)
EVAL_TTFT_P50 = _spec(
    "aprendiz_eval_ttft_p50_seconds", "gauge", "Median time to first token over the evaluation's cases.",
    exporter=PUSHGATEWAY,
)
EVAL_LAST_RUN = _spec(
    "aprendiz_eval_last_run_timestamp_seconds", "gauge", "Unix time of the evaluation run pushed last.", exporter=PUSHGATEWAY
)

CATALOGUE: tuple[MetricSpec, ...] = tuple(v for v in list(globals().values()) if isinstance(v, MetricSpec))


def by_name(name: str) -> MetricSpec:
    """The spec of a defined name or of the name Prometheus stores (``ray_..._total``)."""
    for spec in CATALOGUE:
        if name in (spec.name, spec.series, *spec.samples):
            return spec
    raise KeyError(name)


def _ray_metric(spec: MetricSpec):
    """A Ray metric object (``ray.util.metrics``) made from its spec; call inside a Ray worker."""
    from ray.util import metrics

    if spec.exporter != RAY:
        raise ValueError(f"{spec.name} is exported by the {spec.exporter}, not by Ray")
    if spec.type == "counter":
        return metrics.Counter(spec.name, description=spec.help, tag_keys=spec.labels)
    if spec.type == "gauge":
        return metrics.Gauge(spec.name, description=spec.help, tag_keys=spec.labels)
    return metrics.Histogram(spec.name, description=spec.help, boundaries=list(spec.buckets), tag_keys=spec.labels)


class ClassifierMetrics:
    """The classifier service's metrics (one instance per replica)."""

    # Ray evicts a gauge series that is not set again within two export intervals (20 s by
    # default): keep_alive() sets the gauges' current values again every few seconds.
    KEEP_ALIVE_S = 5.0

    def __init__(self, model: str):
        self.model = model
        self._versions: dict[str, int] = {}
        self._champion_promoted_at: float | None = None
        self.predictions = _ray_metric(CLASSIFIER_PREDICTIONS)
        self.batch_size = _ray_metric(CLASSIFIER_BATCH_SIZE)
        self.probability = _ray_metric(CLASSIFIER_PROBABILITY)
        self.inference_seconds = _ray_metric(CLASSIFIER_INFERENCE_SECONDS)
        self.feedback_examples = _ray_metric(CLASSIFIER_FEEDBACK_EXAMPLES)
        self.image_bytes = _ray_metric(CLASSIFIER_IMAGE_BYTES)
        self.image_decode_seconds = _ray_metric(CLASSIFIER_IMAGE_DECODE_SECONDS)
        self.model_version_info = _ray_metric(CLASSIFIER_MODEL_VERSION_INFO)
        self.model_load_failures = _ray_metric(CLASSIFIER_MODEL_LOAD_FAILURES)
        self.champion_timestamp = _ray_metric(CLASSIFIER_CHAMPION_TIMESTAMP)

    def served(self, version: str, labels: list[str], probabilities) -> None:
        for label in set(labels):
            self.predictions.inc(labels.count(label), tags={"model": self.model, "version": version, "label": label})
        for p in probabilities:
            self.probability.observe(float(p), tags={"model": self.model, "version": version})

    def inferred(self, seconds: float, rows: int) -> None:
        """One onnxruntime call: its time and its rows (a batch of requests in a replica)."""
        self.inference_seconds.observe(seconds, tags={"model": self.model})
        self.batch_size.observe(rows, tags={"model": self.model})

    def decoded(self, seconds: float, sizes: list[int]) -> None:
        """One request's images decoded and transformed: the time, and each image's encoded size."""
        self.image_decode_seconds.observe(seconds, tags={"model": self.model})
        for size in sizes:
            self.image_bytes.observe(size, tags={"model": self.model})

    def switched(self, old: str | None, new: str) -> None:
        if old:
            self._versions[old] = 0
        self._versions[new] = 1
        self._set_gauges()

    def champion_promoted(self, unix_s: float) -> None:
        """The registry's champion was promoted at ``unix_s`` (set on every champion check)."""
        self._champion_promoted_at = unix_s
        self._set_gauges()

    def _set_gauges(self) -> None:
        for version, serving in self._versions.items():
            self.model_version_info.set(serving, tags={"model": self.model, "version": version})
        if self._champion_promoted_at is not None:
            self.champion_timestamp.set(self._champion_promoted_at, tags={"model": self.model})

    async def keep_alive(self) -> None:
        """Set the gauges again every ``KEEP_ALIVE_S`` (run as a task for the replica's life)."""
        import asyncio

        while True:
            await asyncio.sleep(self.KEEP_ALIVE_S)
            self._set_gauges()


class IngressMetrics:
    """Every answer of the entrance: count and latency by route template, model and status."""

    def __init__(self):
        self.requests = _ray_metric(INGRESS_REQUESTS)
        self.request_seconds = _ray_metric(INGRESS_REQUEST_SECONDS)

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
        self.refusals = _ray_metric(GATEWAY_REFUSALS)
        self.key_file_errors = _ray_metric(GATEWAY_KEY_FILE_ERRORS)
        self.limiter_fail_open = _ray_metric(GATEWAY_LIMITER_FAIL_OPEN)
        self.tokens = _ray_metric(GATEWAY_TOKENS)
        self.requests = _ray_metric(GATEWAY_REQUESTS)
        self.cost_usd = _ray_metric(GATEWAY_COST_USD)
        self.fallbacks = _ray_metric(GATEWAY_FALLBACKS)
        self.upstream_errors = _ray_metric(GATEWAY_UPSTREAM_ERRORS)
        self.time_to_first_token = _ray_metric(GENERATOR_TIME_TO_FIRST_TOKEN)
        self.time_per_output_token = _ray_metric(GENERATOR_TIME_PER_OUTPUT_TOKEN)
        self.generation_seconds = _ray_metric(GENERATOR_REQUEST_SECONDS)

    def key_file_error(self, reason: str) -> None:
        self.key_file_errors.inc(1, tags={"reason": reason})

    def limiter_failed_open(self, call: str, reason: str) -> None:
        self.limiter_fail_open.inc(1, tags={"call": call, "reason": reason})

    def generated(
        self, *, model: str, backend: str, key: str, prompt_tokens: int, completion_tokens: int, cost_usd: float,
        seconds: float, first_token_s: float | None, feature: str = "chat",
    ) -> None:
        base = {"model": model, "backend": backend, "key": key}
        self._served(base, feature, prompt_tokens, completion_tokens, cost_usd)
        timing = {"model": model, "backend": backend}
        self.generation_seconds.observe(seconds, tags=timing)
        if first_token_s is not None:
            self.time_to_first_token.observe(first_token_s, tags=timing)
            if completion_tokens > 1:
                self.time_per_output_token.observe((seconds - first_token_s) / (completion_tokens - 1), tags=timing)

    def embedded(self, *, model: str, backend: str, key: str, prompt_tokens: int, cost_usd: float) -> None:
        """An embeddings request: its tokens (all prompt) and cost; no generation timing."""
        self._served({"model": model, "backend": backend, "key": key}, "embeddings", prompt_tokens, 0, cost_usd)

    def _served(self, base: dict[str, str], feature: str, prompt_tokens: int, completion_tokens: int,
                cost_usd: float) -> None:
        self.requests.inc(1, tags={"model": base["model"], "backend": base["backend"], "feature": feature})
        if prompt_tokens:
            self.tokens.inc(prompt_tokens, tags={**base, "kind": "prompt", "feature": feature})
        if completion_tokens:
            self.tokens.inc(completion_tokens, tags={**base, "kind": "completion", "feature": feature})
        if cost_usd > 0:
            self.cost_usd.inc(cost_usd, tags=base)


class ReplicaCostMetrics:
    """What one hosted replica costs while it is up: its hourly price, accrued as it runs."""

    def __init__(self, *, model: str, kind: str, accelerator: str, replica: str):
        self.tags = {"model": model, "kind": kind, "accelerator": accelerator, "replica": replica}
        if tuple(self.tags) != REPLICA_COST_USD.labels:
            raise ValueError(f"replica cost labels {tuple(self.tags)} differ from the catalogue's")
        self.cost_usd = _ray_metric(REPLICA_COST_USD)
        self.hourly_usd = _ray_metric(REPLICA_HOURLY_USD)

    def accrue(self, usd: float) -> None:
        self.cost_usd.inc(usd, tags=self.tags)

    def price(self, hourly_usd: float) -> None:
        self.hourly_usd.set(hourly_usd, tags=self.tags)


def _client_gauge(spec: MetricSpec, registry):
    """A prometheus-client gauge made from its spec (the training job's metrics are all gauges)."""
    from prometheus_client import Gauge

    if spec.exporter != PUSHGATEWAY or spec.type != "gauge":
        raise ValueError(f"{spec.name} is not a pushed gauge")
    return Gauge(spec.name, spec.help, spec.labels, registry=registry)


class PushedMetrics:
    """A batch job's gauges, in a registry of their own, pushed to a Prometheus Pushgateway: the job is
    gone before any scrape. Each push replaces the group named by ``JOB`` and ``grouping``."""

    JOB = ""

    def __init__(self, grouping: dict[str, str]):
        from prometheus_client import CollectorRegistry

        self.grouping = grouping
        self.registry = CollectorRegistry()

    def push(self, url: str, *, timeout: float = 5.0) -> None:
        """PUT this run's metrics to the Pushgateway at ``url`` (replacing the group's previous ones)."""
        from prometheus_client import push_to_gateway

        push_to_gateway(url, job=self.JOB, registry=self.registry, grouping_key=self.grouping, timeout=timeout)


class TrainingMetrics(PushedMetrics):
    """The training job's metrics for one run: one group per model (job="aprendiz-training", model=<name>)."""

    JOB = "aprendiz-training"

    def __init__(self, model: str):
        super().__init__({"model": model})
        self.model = model
        self.duration_seconds = _client_gauge(TRAINING_DURATION_SECONDS, self.registry)
        self.rows_read = _client_gauge(TRAINING_ROWS_READ, self.registry)
        self.rows_quarantined = _client_gauge(TRAINING_ROWS_QUARANTINED, self.registry)
        self.candidates_trained = _client_gauge(TRAINING_CANDIDATES_TRAINED, self.registry)
        self.best_metric = _client_gauge(TRAINING_BEST_METRIC, self.registry)
        self.promoted = _client_gauge(TRAINING_PROMOTED, self.registry)
        self.success = _client_gauge(TRAINING_SUCCESS, self.registry)
        self.last_success = _client_gauge(TRAINING_LAST_SUCCESS, self.registry)

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


class EvaluationMetrics(PushedMetrics):
    """One evaluation run's figures for one model: one group per evaluation set and model
    (job="aprendiz-evaluation", eval=<set>, model=<model>)."""

    JOB = "aprendiz-evaluation"

    def __init__(self, eval_name: str, model: str):
        super().__init__({"eval": eval_name, "model": model})
        self.quality = _client_gauge(EVAL_QUALITY, self.registry)
        self.cost = _client_gauge(EVAL_COST_PER_1K, self.registry)
        self.errors = _client_gauge(EVAL_ERRORS, self.registry)
        self.ttft = _client_gauge(EVAL_TTFT_P50, self.registry)
        self.last_run = _client_gauge(EVAL_LAST_RUN, self.registry)

    def record(self, *, quality: float, scorers: dict[str, float], usd_per_1k: float | None, errors: int,
               ttft_p50_s: float | None) -> None:
        self.quality.labels(scorer="overall").set(quality)
        for name, value in scorers.items():
            self.quality.labels(scorer=name).set(value)
        if usd_per_1k is not None:
            self.cost.set(usd_per_1k)
        self.errors.set(errors)
        if ttft_p50_s is not None:
            self.ttft.set(ttft_p50_s)
        self.last_run.set_to_current_time()
