"""Writes the Grafana dashboards (charts/aprendiz/files/dashboards/*.json) from the definitions below.

    .venv/bin/python scripts/dashboards.py          # write the JSON files
    .venv/bin/python scripts/dashboards.py --check  # exit 1 if a file differs from what this writes

Every panel queries the data source chosen in the ``datasource`` variable. Queries use the metric
names of aprendiz/metrics.py (as Prometheus stores them: ``ray_`` prefix, ``_total`` on counters),
Serve's ``ray_serve_*``, vLLM's ``ray_vllm_*`` and the recording rules of files/rules/. Each query
is run against a real Prometheus by tests/integration/test_observability.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "charts" / "aprendiz" / "files" / "dashboards"
DS = {"type": "prometheus", "uid": "${datasource}"}
RI = "$__rate_interval"
M = 'model=~"$model"'


def q(expr: str, legend: str = "", **extra) -> dict:
    return {"expr": expr, "legendFormat": legend, **extra}


def quantiles(metric: str, by: str, selector: str, qs=(0.5, 0.95, 0.99)) -> list[dict]:
    return [
        q(f"histogram_quantile({x}, sum by ({by}, le) (rate({metric}_bucket{{{selector}}}[{RI}])))",
          f"p{int(x * 100)} {{{{{by.split(',')[0]}}}}}")
        for x in qs
    ]


def panel(title: str, targets: list[dict], *, kind: str = "timeseries", unit: str = "short", w: int = 12,
          h: int = 8, description: str = "", **options) -> dict:
    return {"title": title, "type": kind, "targets": targets, "unit": unit, "w": w, "h": h,
            "description": description, **options}


def stat(title: str, expr: str, unit: str = "short", **options) -> dict:
    return panel(title, [q(expr)], kind="stat", unit=unit, w=6, h=4, **options)


def dashboard(uid: str, title: str, description: str, panels: list[dict], model_from: str | None) -> dict:
    templating = [{
        "name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
        "current": {}, "hide": 0, "refresh": 1, "options": [], "regex": "",
    }]
    if model_from:
        definition = f"label_values({model_from}, model)"
        templating.append({
            "name": "model", "label": "Model", "type": "query", "datasource": DS,
            "definition": definition, "query": {"query": definition, "refId": "model"},
            "includeAll": True, "multi": True, "allValue": ".*", "current": {}, "refresh": 2, "sort": 1,
            "options": [], "regex": "", "hide": 0,
        })
    laid, x, y, row_h = [], 0, 0, 0
    for i, p in enumerate(panels, start=1):
        if x + p["w"] > 24:
            x, y, row_h = 0, y + row_h, 0
        targets = [{"refId": chr(ord("A") + j), "datasource": DS, **t} for j, t in enumerate(p["targets"])]
        body = {
            "id": i, "type": p["type"], "title": p["title"], "description": p["description"], "datasource": DS,
            "gridPos": {"h": p["h"], "w": p["w"], "x": x, "y": y}, "targets": targets,
            "fieldConfig": {"defaults": {"unit": p["unit"], **p.get("defaults", {})}, "overrides": []},
            "options": p.get("options", {}),
        }
        laid.append(body)
        x, row_h = x + p["w"], max(row_h, p["h"])
    return {
        "uid": uid, "title": title, "description": description, "tags": ["aprendiz"], "editable": True,
        "schemaVersion": 39, "version": 1, "refresh": "30s", "time": {"from": "now-3h", "to": "now"},
        "timezone": "", "graphTooltip": 1, "annotations": {"list": []}, "links": [],
        "templating": {"list": templating}, "panels": laid,
    }


REQUESTS = "ray_aprendiz_ingress_requests_total"
HEALTHY = 'ray_serve_deployment_replica_healthy{application="aprendiz"'
COST = "ray_aprendiz_gateway_cost_usd_total"
TOKENS = "ray_aprendiz_gateway_tokens_total"
PREDICTIONS = "ray_aprendiz_classifier_predictions_total"
CLASSIFIER_ROUTES = 'route=~".*(:predict|/infer)"'
STATUS = {"mappings": [{"type": "value", "options": {"0": {"text": "failed", "color": "red"},
                                                     "1": {"text": "finished", "color": "green"}}}]}
YES_NO = {"mappings": [{"type": "value", "options": {"0": {"text": "no"}, "1": {"text": "promoted", "color": "green"}}}]}


def overview() -> dict:
    errors = (f'(sum by (model) (rate({REQUESTS}{{{M}, status=~"5.."}}[{RI}])) '
              f"or 0 * sum by (model) (rate({REQUESTS}{{{M}}}[{RI}]))) / sum by (model) (rate({REQUESTS}{{{M}}}[{RI}]))")
    return dashboard("aprendiz-overview", "aprendiz / Overview",
                     "Traffic, errors, latency per model, replicas, refusals and firing alerts.", [
        stat("Requests per second", f"sum(rate({REQUESTS}{{{M}}}[{RI}]))", "reqps"),
        stat("5xx ratio", f'(sum(rate({REQUESTS}{{{M}, status=~"5.."}}[{RI}])) or vector(0)) '
                          f"/ sum(rate({REQUESTS}{{{M}}}[{RI}]))", "percentunit"),
        stat("Healthy replicas", f"sum({HEALTHY}}})"),
        stat("Spend, USD per hour", "aprendiz:cost_usd:per_hour", "currencyUSD"),
        panel("Requests per second by model and status",
              [q(f"sum by (model, status) (rate({REQUESTS}{{{M}}}[{RI}]))", "{{model}} {{status}}")], unit="reqps"),
        panel("Requests per second by route",
              [q(f"sum by (route) (rate({REQUESTS}{{{M}}}[{RI}]))", "{{route}}")], unit="reqps"),
        panel("Error ratio (5xx) by model", [q(errors, "{{model}}")], unit="percentunit"),
        panel("Latency to response headers by model (p50, p95, p99)",
              quantiles("ray_aprendiz_ingress_request_seconds", "model", M), unit="s",
              description="Streams count to their first byte; the Generator dashboard has the end-to-end time."),
        panel("SLO burn rate over 1 h (1 = budget spent exactly in 30 days)", [
            q(f"aprendiz:slo_errors:ratio_rate1h{{{M}}} / 0.005", "availability {{model}}"),
            q(f"aprendiz:slo_latency:ratio_rate1h{{{M}}} / 0.01", "latency {{model}}"),
        ], description="The alert rules page at 14.4 (1 h and 5 min) and 6 (6 h and 30 min)."),
        panel("Healthy replicas by deployment", [q(f"sum by (deployment) ({HEALTHY}}})", "{{deployment}}")]),
        panel("Requests in flight at replicas by deployment",
              [q('sum by (deployment) (ray_serve_num_ongoing_requests_at_replicas{application="aprendiz"})',
                 "{{deployment}}")]),
        panel("Gateway refusals per second by reason",
              [q(f"sum by (reason) (rate(ray_aprendiz_gateway_refusals_total[{RI}]))", "{{reason}}")], unit="reqps"),
        panel("Rate limiter failing open per second by reason",
              [q(f"sum by (call, reason) (rate(ray_aprendiz_gateway_limiter_fail_open_total[{RI}]))",
                 "{{call}} {{reason}}")], unit="reqps",
              description="Requests let through unlimited because the RateLimiter failed or was slow "
                          "(AprendizRateLimiterFailingOpen)."),
        panel("Key file errors per second by reason",
              [q(f"sum by (reason) (rate(ray_aprendiz_gateway_key_file_errors_total[{RI}]))", "{{reason}}")],
              unit="ops", description="Checks that found the key file unreadable or invalid: every key is refused "
                                      "until it is fixed (AprendizKeyFileBroken)."),
        panel("Firing alerts", [q('sum by (alertname, severity) (ALERTS{alertstate="firing", alertname=~"Aprendiz.*"})',
                                  "{{alertname}} ({{severity}})", format="table", instant=True)], kind="table", w=24),
    ], REQUESTS)


def generator() -> dict:
    engine = 'model_name=~"$model"'
    return dashboard("aprendiz-generator", "aprendiz / Generator",
                     "Generation as clients see it (time to first token, time per output token, tokens), "
                     "and the vLLM engines behind the hosted models (queue, KV cache).", [
        panel("Time to first token (p50, p95, p99)",
              quantiles("ray_aprendiz_generator_time_to_first_token_seconds", "model", M), unit="s",
              description="Streamed requests, at the entrance: hosted and rented models alike."),
        panel("Time per output token (p50, p95)",
              quantiles("ray_aprendiz_generator_time_per_output_token_seconds", "model", M, (0.5, 0.95)), unit="s"),
        panel("End-to-end generation time (p50, p95, p99)",
              quantiles("ray_aprendiz_generator_request_seconds", "model", M), unit="s"),
        panel("Tokens per second by model and kind",
              [q(f"sum by (model, kind) (rate({TOKENS}{{{M}}}[{RI}]))", "{{model}} {{kind}}")]),
        panel("Tokens per second, hosted and rented",
              [q(f"sum by (backend, kind) (rate({TOKENS}{{{M}}}[{RI}]))", "{{backend}} {{kind}}")]),
        panel("Requests per second by feature",
              [q(f"sum by (feature) (rate(ray_aprendiz_gateway_requests_total{{{M}}}[{RI}]))", "{{feature}}")],
              unit="reqps", description="chat, tools (requests with tools), structured_outputs (with a "
              "response_format schema), embeddings (POST /v1/embeddings)."),
        panel("Tokens per second by feature",
              [q(f"sum by (feature, kind) (rate({TOKENS}{{{M}}}[{RI}]))", "{{feature}} {{kind}}")]),
        panel("Engine: requests running and waiting", [
            q(f"sum by (model_name) (ray_vllm_num_requests_running{{{engine}}})", "running {{model_name}}"),
            q(f"sum by (model_name) (ray_vllm_num_requests_waiting{{{engine}}})", "waiting {{model_name}}"),
        ]),
        panel("Engine: KV-cache use", [q(f"max by (model_name) (ray_vllm_kv_cache_usage_perc{{{engine}}})",
                                          "{{model_name}}")], unit="percentunit"),
        panel("Engine: queue wait (p50, p95)",
              quantiles("ray_vllm_request_queue_time_seconds", "model_name", engine, (0.5, 0.95)), unit="s"),
        panel("Engine: time to first token (p95)",
              quantiles("ray_vllm_time_to_first_token_seconds", "model_name", engine, (0.95,)), unit="s"),
        panel("Engine: prompt and generated tokens per second", [
            q(f"sum by (model_name) (rate(ray_vllm_prompt_tokens_total{{{engine}}}[{RI}]))", "prompt {{model_name}}"),
            q(f"sum by (model_name) (rate(ray_vllm_generation_tokens_total{{{engine}}}[{RI}]))",
              "generated {{model_name}}"),
        ]),
        panel("Serve: requests queued at handles", [q(
            'sum by (deployment) (ray_serve_deployment_queued_queries{application="aprendiz", deployment=~"LLMServer:.*"})',
            "{{deployment}}")]),
        panel("Serve: healthy generator replicas",
              [q(f'sum by (deployment) ({HEALTHY}, deployment=~"LLMServer:.*"}})', "{{deployment}}")]),
        panel("Fallbacks per second", [q(
            f"sum by (model, fallback, reason) (rate(ray_aprendiz_gateway_fallbacks_total{{{M}}}[{RI}]))",
            "{{model}} → {{fallback}} ({{reason}})")], unit="reqps"),
        panel("Rented providers' errors per second", [q(
            f"sum by (model, reason) (rate(ray_aprendiz_gateway_upstream_errors_total{{{M}}}[{RI}]))",
            "{{model}} {{reason}}")], unit="reqps"),
    ], "ray_aprendiz_generator_request_seconds_count")


def classifier() -> dict:
    rate_p = f"rate({PREDICTIONS}{{{M}}}[{RI}])"
    return dashboard("aprendiz-classifier", "aprendiz / Classifier",
                     "Predictions, label mix, probability distribution (drift), batching, versions and feedback.", [
        stat("Predictions per second", f"sum({rate_p})", "reqps"),
        stat("Feedback examples per second",
             f"sum(rate(ray_aprendiz_classifier_feedback_examples_total{{{M}}}[{RI}])) or vector(0)"),
        stat("Champion age (oldest)",
             f"max(time() - max by (model) (ray_aprendiz_classifier_champion_timestamp_seconds{{{M}}}))", "s"),
        stat("Version load failures in range",
             f"sum(increase(ray_aprendiz_classifier_model_load_failures_total{{{M}}}[$__range])) or vector(0)"),
        panel("Predictions per second by model and label",
              [q(f"sum by (model, label) ({rate_p})", "{{model}} {{label}}")], unit="reqps"),
        panel("Label mix", [q(f"sum by (model, label) ({rate_p}) / ignoring (label) group_left sum by (model) ({rate_p})",
                              "{{model}} {{label}}")], unit="percentunit"),
        panel("Probability of the positive class (distribution)", [q(
            f"sum by (le) (increase(ray_aprendiz_classifier_probability_bucket{{{M}}}[{RI}]))", "{{le}}",
            format="heatmap")], kind="heatmap",
            description="A shift here, with the label mix, is the first sign of drift."),
        panel("Mean probability by model and version", [q(
            f"sum by (model, version) (rate(ray_aprendiz_classifier_probability_sum{{{M}}}[{RI}])) "
            f"/ sum by (model, version) (rate(ray_aprendiz_classifier_probability_count{{{M}}}[{RI}]))",
            "{{model}} {{version}}")], unit="percentunit"),
        panel("Batch size (p50, p95)", quantiles("ray_aprendiz_classifier_batch_size", "model", M, (0.5, 0.95))),
        panel("Inference time (p50, p95)",
              quantiles("ray_aprendiz_classifier_inference_seconds", "model", M, (0.5, 0.95)), unit="s"),
        panel("Image size (p50, p95)", quantiles("ray_aprendiz_classifier_image_bytes", "model", M, (0.5, 0.95)),
              unit="bytes", description="Encoded size of each image sent to an image classifier."),
        panel("Image decode and transform time per request (p50, p95)",
              quantiles("ray_aprendiz_classifier_image_decode_seconds", "model", M, (0.5, 0.95)), unit="s",
              description="Pillow and numpy, on a worker thread, before the batch reaches onnxruntime."),
        panel("Latency at the entrance, V1 and V2 (p95)", quantiles(
            "ray_aprendiz_ingress_request_seconds", "model", f"{CLASSIFIER_ROUTES}, {M}", (0.95,)), unit="s"),
        panel("Serving version", [q(f"max by (model, version) (ray_aprendiz_classifier_model_version_info{{{M}}}) == 1",
                                    "{{model}} {{version}}", format="table", instant=True)], kind="table"),
        panel("Feedback examples per second by model and label", [q(
            f"sum by (model, label) (rate(ray_aprendiz_classifier_feedback_examples_total{{{M}}}[{RI}]))",
            "{{model}} {{label}}")]),
        panel("Refused versions", [q(
            f"sum by (model, version) (ray_aprendiz_classifier_model_load_failures_total{{{M}}})",
            "{{model}} {{version}}", format="table", instant=True)], kind="table",
            description="Versions that failed to load or their self-check; the previous version kept serving."),
        panel("Healthy classifier replicas",
              [q(f'sum by (deployment) ({HEALTHY}, deployment=~"Classifier:.*"}})', "{{deployment}}")]),
    ], PREDICTIONS)


def cost() -> dict:
    rented_per_hour = f'sum(rate({COST}{{backend="rented"}}[1h])) * 3600 or vector(0)'
    return dashboard("aprendiz-cost", "aprendiz / Cost",
                     "USD per hour, per million tokens (hosted against rented), per thousand predictions, per key.", [
        stat("Spend now, USD per hour", "aprendiz:cost_usd:per_hour", "currencyUSD"),
        stat("Hosted replicas, USD per hour", "sum(ray_aprendiz_replica_hourly_usd)", "currencyUSD"),
        stat("Rented models, USD per hour (last hour)", rented_per_hour, "currencyUSD"),
        stat("Spent in range, USD", f"sum(increase(ray_aprendiz_replica_cost_usd_total[$__range])) "
                                    f'+ (sum(increase({COST}{{backend="rented"}}[$__range])) or vector(0))', "currencyUSD"),
        panel("Spend against the budget, USD per hour", [
            q("aprendiz:cost_usd:per_hour", "spend"),
            q("vector(100)", "budget (alert AprendizCostOverBudget)"),
        ], unit="currencyUSD"),
        panel("Hosted replicas' price by model, USD per hour",
              [q("sum by (model, kind) (ray_aprendiz_replica_hourly_usd)", "{{model}} ({{kind}})")], unit="currencyUSD"),
        panel("USD per million tokens, hosted against rented", [q(
            f"sum by (backend) (rate({COST}[{RI}]) and on (model) {TOKENS}) / sum by (backend) (rate({TOKENS}[{RI}])) * 1e6",
            "{{backend}}")], unit="currencyUSD",
            description="What requests are charged: rented at the provider's prices, hosted at their share of the "
                        "replica's time while they ran."),
        panel("Hosted: replica cost per million tokens served (idle time included)", [q(
            'sum by (model) (rate(ray_aprendiz_replica_cost_usd_total{kind="generator"}[' + RI + "])) "
            f'/ sum by (model) (rate({TOKENS}{{backend="hosted"}}[{RI}])) * 1e6', "{{model}}")], unit="currencyUSD"),
        panel("USD per thousand predictions by classifier", [q(
            'sum by (model) (rate(ray_aprendiz_replica_cost_usd_total{kind="classifier"}[' + RI + "])) "
            f"/ sum by (model) (rate({PREDICTIONS}[{RI}])) * 1000", "{{model}}")], unit="currencyUSD"),
        panel("Requests' cost by model and backend, USD per hour", [q(
            f"sum by (model, backend) (rate({COST}[{RI}])) * 3600", "{{model}} ({{backend}})")], unit="currencyUSD"),
        panel("Cost by key in range, USD", [q(f"sum by (key) (increase({COST}[$__range]))", "{{key}}",
                                              format="table", instant=True)], kind="table", unit="currencyUSD"),
        panel("Tokens by key in range", [q(f"sum by (key, kind) (increase({TOKENS}[$__range]))", "{{key}} {{kind}}",
                                           format="table", instant=True)], kind="table"),
        panel("Replica cost accrued in range by model, USD", [q(
            "sum by (model, kind) (increase(ray_aprendiz_replica_cost_usd_total[$__range]))", "{{model}} ({{kind}})",
            format="table", instant=True)], kind="table", unit="currencyUSD", w=24),
        panel("Quality per dollar: evaluation quality per USD of 1,000 conversations (aprendiz evaluate)", [q(
            'aprendiz_eval_quality{scorer="overall"} / ignoring(scorer) (aprendiz_eval_cost_per_1k_conversations_usd > 0)',
            "{{model}} on {{eval}}", format="table", instant=True)], kind="table", w=12,
            description="The last pushed evaluation of each model: its mean score (0 to 1) over what 1,000 of the "
                        "set's conversations cost on it. Higher is better value; the report has the intervals."),
        panel("Last evaluations: quality, USD per 1,000 conversations, errors, TTFT p50, age", [
            q('aprendiz_eval_quality{scorer="overall"}', "quality {{model}} on {{eval}}", format="table", instant=True),
            q("aprendiz_eval_cost_per_1k_conversations_usd", "USD {{model}} on {{eval}}", format="table", instant=True),
            q("aprendiz_eval_errors", "errors {{model}} on {{eval}}", format="table", instant=True),
            q("aprendiz_eval_ttft_p50_seconds", "TTFT {{model}} on {{eval}}", format="table", instant=True),
            q("time() - aprendiz_eval_last_run_timestamp_seconds", "age {{model}} on {{eval}}", format="table",
              instant=True),
        ], kind="table", w=12),
    ], None)


def training() -> dict:
    return dashboard("aprendiz-training", "aprendiz / Training",
                     "The training job's runs, as pushed to the Pushgateway: last run, promotion, metric over time.", [
        panel("Last run", [q(f"aprendiz_training_success{{{M}}}", "{{model}}", instant=True)], kind="stat", w=6,
              defaults=STATUS),
        panel("Promoted a new champion", [q(f"aprendiz_training_promoted{{{M}}}", "{{model}}", instant=True)],
              kind="stat", w=6, defaults=YES_NO),
        panel("Since the last finished run", [q(
            f"time() - aprendiz_training_last_success_timestamp_seconds{{{M}}} "
            f"and aprendiz_training_last_success_timestamp_seconds{{{M}}} > 0", "{{model}}", instant=True)],
            kind="stat", w=6, unit="s"),
        panel("Since the last push", [q(f'time() - push_time_seconds{{job="aprendiz-training", {M}}}', "{{model}}",
                                         instant=True)], kind="stat", w=6, unit="s"),
        panel("Best candidate's metric over time", [q(f"aprendiz_training_best_metric{{{M}}}", "{{model}} {{metric}}")]),
        panel("Run duration", [q(f"aprendiz_training_duration_seconds{{{M}}}", "{{model}}")], unit="s"),
        panel("Rows read and quarantined", [
            q(f"aprendiz_training_rows_read{{{M}}}", "read {{model}}"),
            q(f"aprendiz_training_rows_quarantined{{{M}}}", "quarantined {{model}}"),
        ]),
        panel("Candidates trained", [q(f"aprendiz_training_candidates_trained{{{M}}}", "{{model}}")]),
        panel("Failed last runs", [q(f"aprendiz_training_success{{{M}}} == 0", "{{model}}", format="table",
                                     instant=True)], kind="table", w=24,
              description="Each model whose last run failed (alert AprendizTrainingJobFailed)."),
    ], "aprendiz_training_success")


DASHBOARDS = {"overview": overview, "generator": generator, "classifier": classifier, "cost": cost,
              "training": training}


def render() -> dict[str, str]:
    return {f"aprendiz-{name}.json": json.dumps(build(), indent=2, ensure_ascii=False) + "\n"
            for name, build in DASHBOARDS.items()}


def main(argv: list[str]) -> int:
    files = render()
    if "--check" in argv:
        stale = [n for n, text in files.items() if not (OUT / n).is_file() or (OUT / n).read_text() != text]
        extra = sorted(p.name for p in OUT.glob("*.json") if p.name not in files)
        if stale or extra:
            print(f"dashboards out of date: {stale}, not generated: {extra}; run scripts/dashboards.py", file=sys.stderr)
            return 1
        return 0
    OUT.mkdir(parents=True, exist_ok=True)
    for name, text in files.items():
        (OUT / name).write_text(text)
        print(f"wrote {OUT / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
