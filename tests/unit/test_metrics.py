"""The metric catalogue follows Prometheus' naming rules, and the classes services use are built from it."""

from __future__ import annotations

import re

import pytest

from aprendiz import metrics
from aprendiz.metrics import CATALOGUE, PUSHGATEWAY, RAY, MetricSpec

NAME = re.compile(r"^aprendiz_[a-z][a-z0-9_]*[a-z0-9]$")
LABEL = re.compile(r"^[a-z][a-z0-9_]*$")
# Units that are not base units: Prometheus wants seconds and bytes (and we add USD).
NON_BASE_UNITS = ("_ms", "_milliseconds", "_microseconds", "_us", "_ns", "_minutes", "_hours", "_days",
                  "_kb", "_mb", "_gb", "_kilobytes", "_megabytes", "_percent", "_cents")
# Labels whose values are unbounded (one series per request, user, text or address), or reserved.
FORBIDDEN_LABELS = {"request_id", "id", "prediction_id", "trace_id", "span_id", "prompt", "text", "message",
                    "user", "user_id", "email", "ip", "client_ip", "path", "url", "query", "api_key", "secret",
                    "job", "instance", "le", "quantile"}
TIME_WORDS = ("seconds", "latency", "duration", "time")


def naming_problems(spec: MetricSpec) -> list[str]:
    """What breaks Prometheus' naming rules in one spec (empty: nothing)."""
    problems = []
    if not NAME.match(spec.name):
        problems.append("names are snake_case and start with aprendiz_")
    if spec.type not in ("counter", "gauge", "histogram") or spec.exporter not in (RAY, PUSHGATEWAY):
        problems.append(f"unknown type {spec.type} or exporter {spec.exporter}")
    if spec.name.endswith("_total"):
        problems.append("_total is added at export, to counters only")
    if spec.name.endswith(("_count", "_sum", "_bucket")):
        problems.append("ends like a histogram's sample")
    problems += [f"not a base unit ({unit})" for unit in NON_BASE_UNITS
                 if spec.name.endswith(unit) or f"{unit}_" in spec.name]
    if (any(word in spec.name for word in TIME_WORDS) or "timestamp" in spec.name) and not spec.name.endswith("_seconds"):
        problems.append("times are in seconds, and the name says so")
    if spec.name.endswith("_info") and spec.type != "gauge":
        problems.append("_info metrics are gauges")
    if not spec.help.strip().endswith((".", ")")):
        problems.append("help is a sentence")
    for label in spec.labels:
        if not LABEL.match(label) or label.startswith("__"):
            problems.append(f"bad label name {label!r}")
        if label in FORBIDDEN_LABELS:
            problems.append(f"label {label!r} is high-cardinality or reserved")
    if len(set(spec.labels)) != len(spec.labels):
        problems.append("a label twice")
    if spec.type == "histogram":
        if not spec.buckets or list(spec.buckets) != sorted(set(spec.buckets)) or spec.buckets[0] <= 0:
            problems.append("a histogram needs positive, strictly increasing buckets")
    elif spec.buckets:
        problems.append("only histograms have buckets")
    return problems


@pytest.mark.parametrize("spec", CATALOGUE, ids=lambda s: s.name)
def test_each_metric_follows_the_naming_rules(spec: MetricSpec):
    assert naming_problems(spec) == [], spec.name


@pytest.mark.parametrize(
    "bad",
    [
        MetricSpec("aprendiz_requests_total", "counter", "Requests."),
        MetricSpec("aprendiz_latency_ms", "histogram", "Latency.", buckets=(1, 2)),
        MetricSpec("aprendiz_request_duration", "gauge", "Duration."),
        MetricSpec("aprendiz_predictions", "counter", "Predictions.", labels=("model", "request_id")),
        MetricSpec("aprendiz_size", "histogram", "Sizes.", buckets=(2, 1)),
        MetricSpec("aprendiz_version_info", "counter", "Versions."),
        MetricSpec("AprendizThing", "gauge", "Things."),
    ],
    ids=lambda s: s.name,
)
def test_the_rules_catch_a_bad_name(bad: MetricSpec):
    assert naming_problems(bad), f"{bad} passed the naming rules"


def test_names_are_unique_and_no_sample_name_collides():
    samples = [s for spec in CATALOGUE for s in spec.samples]
    assert len(samples) == len(set(samples)), "two metrics export the same sample name"
    assert len({s.name for s in CATALOGUE}) == len(CATALOGUE)


def test_exported_names_are_what_prometheus_stores():
    assert metrics.INGRESS_REQUESTS.series == "ray_aprendiz_ingress_requests_total"
    assert metrics.INGRESS_REQUEST_SECONDS.samples[0] == "ray_aprendiz_ingress_request_seconds_bucket"
    assert metrics.REPLICA_HOURLY_USD.series == "ray_aprendiz_replica_hourly_usd"
    assert metrics.TRAINING_SUCCESS.series == "aprendiz_training_success"
    assert metrics.by_name("ray_aprendiz_gateway_tokens_total") is metrics.GATEWAY_TOKENS
    with pytest.raises(KeyError):
        metrics.by_name("ray_aprendiz_gateway_tokens")


class FakeRayMetric:
    made: list[tuple[str, str, tuple[str, ...], list | None]] = []

    def __init__(self, kind: str, name: str, description: str = "", tag_keys=(), boundaries=None):
        FakeRayMetric.made.append((kind, name, tuple(tag_keys), boundaries))
        self.values: list[tuple[float, dict]] = []

    def inc(self, value=1.0, tags=None):
        self.values.append((value, tags))

    set = observe = inc


@pytest.fixture
def fake_ray_metrics(monkeypatch):
    from ray.util import metrics as ray_metrics

    FakeRayMetric.made = []
    for kind in ("Counter", "Gauge", "Histogram"):
        monkeypatch.setattr(ray_metrics, kind, lambda *a, _k=kind.lower(), **kw: FakeRayMetric(_k, *a, **kw))
    return FakeRayMetric.made


def test_the_service_classes_make_exactly_the_catalogues_ray_metrics(fake_ray_metrics):
    metrics.ClassifierMetrics("m")
    metrics.IngressMetrics()
    metrics.GatewayMetrics()
    metrics.ReplicaCostMetrics(model="m", kind="classifier", accelerator="cpu", replica="r")
    made = {name: (kind, labels, boundaries) for kind, name, labels, boundaries in fake_ray_metrics}
    expected = {
        s.name: (s.type, s.labels, list(s.buckets) if s.type == "histogram" else None)
        for s in CATALOGUE if s.exporter == RAY
    }
    assert made == expected


def test_classifier_metrics_record_with_the_declared_labels(fake_ray_metrics):
    m = metrics.ClassifierMetrics("breast-cancer")
    m.served("v1", ["benign", "benign", "malignant"], [0.1, 0.2, 0.9])
    m.switched("v0", "v1")
    m.champion_promoted(1_700_000_000.0)
    assert sorted(v for v, _ in m.predictions.values) == [1, 2]
    assert m.model_version_info.values[-2:] == [(0, {"model": "breast-cancer", "version": "v0"}),
                                                (1, {"model": "breast-cancer", "version": "v1"})]
    assert m.champion_timestamp.values[-1] == (1_700_000_000.0, {"model": "breast-cancer"})
    for metric, spec in ((m.predictions, metrics.CLASSIFIER_PREDICTIONS), (m.probability, metrics.CLASSIFIER_PROBABILITY)):
        assert all(set(tags) == set(spec.labels) for _, tags in metric.values)


def test_training_metrics_expose_the_catalogues_names():
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    run = metrics.TrainingMetrics("breast-cancer")
    run.record(duration_s=3.5, success=True, rows_read=569, candidates_trained=3, metric="roc_auc", best_metric=0.99)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(run.registry).decode())}
    pushed = {s.name: s for s in CATALOGUE if s.exporter == PUSHGATEWAY and s.name.startswith("aprendiz_training_")}
    assert set(families) == set(pushed)
    for name, family in families.items():
        assert family.type == pushed[name].type
        assert family.documentation == pushed[name].help
        assert {k for sample in family.samples for k in sample.labels} == set(pushed[name].labels)
    assert families["aprendiz_training_best_metric"].samples[0].labels == {"metric": "roc_auc"}


def test_evaluation_metrics_expose_the_catalogues_names():
    from prometheus_client import generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    run = metrics.EvaluationMetrics("customer-service", "tiny")
    run.record(quality=0.6, scorers={"chrf": 0.5, "contains": 0.7}, usd_per_1k=0.02, errors=1, ttft_p50_s=0.05)
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(run.registry).decode())}
    pushed = {s.name: s for s in CATALOGUE if s.exporter == PUSHGATEWAY and s.name.startswith("aprendiz_eval_")}
    assert set(families) == set(pushed)
    for name, family in families.items():
        assert family.type == pushed[name].type and family.documentation == pushed[name].help
        assert {k for sample in family.samples for k in sample.labels} == set(pushed[name].labels)
    assert {s.labels["scorer"]: s.value for s in families["aprendiz_eval_quality"].samples} == {
        "overall": 0.6, "chrf": 0.5, "contains": 0.7}
    assert run.grouping == {"eval": "customer-service", "model": "tiny"}


def test_classifier_gauges_are_set_again_while_the_replica_lives(fake_ray_metrics, monkeypatch):
    import asyncio

    m = metrics.ClassifierMetrics("clf")
    monkeypatch.setattr(m, "KEEP_ALIVE_S", 0.01)
    m.switched(None, "v1")
    m.switched("v1", "v2")
    m.champion_promoted(1_700_000_000.0)
    m.model_version_info.values.clear()
    m.champion_timestamp.values.clear()

    async def run_a_while():
        task = asyncio.create_task(m.keep_alive())
        await asyncio.sleep(0.1)
        task.cancel()

    asyncio.run(run_a_while())
    assert {(v, tags["version"]) for v, tags in m.model_version_info.values} == {(0, "v1"), (1, "v2")}
    assert len(m.model_version_info.values) >= 4  # set again, more than once
    assert m.champion_timestamp.values and all(v == 1_700_000_000.0 for v, _ in m.champion_timestamp.values)
