"""The proof against a real Prometheus: Debian's `prometheus` scrapes the running platform and a real
Pushgateway, loads the shipped alert rules, and answers every PromQL expression of the dashboards and
rules after a known load; the counters match the load exactly.

Uses the session's platform (no other Ray cluster); needs nothing of the rented provider.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "monitoring"))

from promql_queries import RULES, dashboard_queries, rule_queries  # noqa: E402

pytestmark = pytest.mark.integration

HOSTED = "aprendiz-tiny-chat"
SCRAPE_S = 2
QUIET_S = 12  # Ray exports every 10 s: counters unchanged this long have nothing of earlier tests in flight
ARRIVAL_TIMEOUT_S = 60
RATE_WINDOW = "1m"
RATE_SETTLE_S = 5 * SCRAPE_S  # a series that arrived in one scrape has a rate() two scrapes later
FAILING_MODEL = "observability-no-dataset"
MESSAGES = [{"role": "user", "content": "Hola, ¿quién eres?"}]

# Dashboard queries whose data cannot exist in this test, and why (every other one must return a series).
MAY_BE_EMPTY = {
    "aprendiz-classifier.json / Refused versions / A":
        "a refused version needs a broken champion; the lifecycle tests publish one, this test does not",
    "aprendiz-overview.json / Rate limiter failing open per second by reason / A":
        "the limiter fails open only while its replica is gone or slow; this test keeps it up",
    "aprendiz-overview.json / Key file errors per second by reason / A":
        "a key file error needs the key file broken; the unit tests break theirs, this test does not",
}
# Counters whose sum this test follows: {name: PromQL}. Deltas are taken between a quiet moment
# before the load and the moment the load has arrived.
FOLLOWED = {
    "requests": "sum by (route, status) (ray_aprendiz_ingress_requests_total)",
    "predictions": "sum by (model) (ray_aprendiz_classifier_predictions_total)",
    "feedback": "sum by (model) (ray_aprendiz_classifier_feedback_examples_total)",
    "refusals": "sum by (reason) (ray_aprendiz_gateway_refusals_total)",
    "upstream_errors": "sum by (model) (ray_aprendiz_gateway_upstream_errors_total)",
    "fallbacks": "sum by (model) (ray_aprendiz_gateway_fallbacks_total)",
}


def _free_port() -> int:
    """A port below the ephemeral range (benchmarks.common.free_ports says why)."""
    from benchmarks.common import free_port

    return free_port()


def _wait_ready(url: str, process: subprocess.Popen, log: Path, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"{what} exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"{what} not ready at {url} after {timeout}s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=5)


class Prometheus:
    def __init__(self, url: str):
        self.url = url

    def query(self, promql: str) -> dict:
        """The API's answer (status, data or error), without judging it."""
        answer = httpx.get(f"{self.url}/api/v1/query", params={"query": promql}, timeout=30)
        return answer.json()

    def vector(self, promql: str) -> list[dict]:
        answer = self.query(promql)
        assert answer["status"] == "success", f"{promql}: {answer.get('error')}"
        return answer["data"]["result"]

    def by(self, promql: str) -> dict[tuple, float]:
        """{label values (sorted by label name): value} of an instant vector."""
        return {tuple(v for _, v in sorted(r["metric"].items())): float(r["value"][1]) for r in self.vector(promql)}

    def value(self, promql: str) -> float | None:
        result = self.vector(promql)
        return float(result[0]["value"][1]) if result else None


@pytest.fixture(scope="module")
def prometheus(platform, tmp_path_factory):
    """Debian's prometheus and prometheus-pushgateway on free loopback ports, scraping the platform every 2 s."""
    for binary in ("prometheus", "prometheus-pushgateway"):
        if shutil.which(binary) is None:
            pytest.fail(f"no {binary}: run `make prometheus-tools` (make test does it)")
    work = tmp_path_factory.mktemp("prometheus")
    push_port, prom_port = _free_port(), _free_port()
    config = {
        "global": {"scrape_interval": f"{SCRAPE_S}s", "scrape_timeout": f"{SCRAPE_S}s",
                   "evaluation_interval": f"{SCRAPE_S}s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "aprendiz-ray", "static_configs": [{"targets": [urlsplit(platform.metrics_url).netloc]}]},
            {"job_name": "pushgateway", "honor_labels": True,
             "static_configs": [{"targets": [f"127.0.0.1:{push_port}"]}]},
        ],
    }
    (work / "prometheus.yml").write_text(yaml.safe_dump(config))
    push_log, prom_log = work / "pushgateway.log", work / "prometheus.log"
    with open(push_log, "wb") as out:
        pushgateway = subprocess.Popen(
            ["prometheus-pushgateway", f"--web.listen-address=127.0.0.1:{push_port}"], stdout=out,
            stderr=subprocess.STDOUT,
        )
    with open(prom_log, "wb") as out:
        server = subprocess.Popen(
            ["prometheus", f"--config.file={work / 'prometheus.yml'}", f"--storage.tsdb.path={work / 'data'}",
             f"--web.listen-address=127.0.0.1:{prom_port}", "--storage.tsdb.retention.time=1h"],
            stdout=out, stderr=subprocess.STDOUT,
        )
    try:
        _wait_ready(f"http://127.0.0.1:{push_port}/-/ready", pushgateway, push_log, "prometheus-pushgateway")
        _wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", server, prom_log, "prometheus")
        prom = Prometheus(f"http://127.0.0.1:{prom_port}")
        prom.pushgateway = f"http://127.0.0.1:{push_port}"
        yield prom
    finally:
        _stop(server)
        _stop(pushgateway)


def _wait(what: str, check, timeout: float):
    """Poll ``check`` (returns a value or None) until it gives a value."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout}s")
        time.sleep(1)


def _snapshot(prom: Prometheus) -> dict[str, dict[tuple, float]]:
    return {name: prom.by(promql) for name, promql in FOLLOWED.items()}


def _quiet_snapshot(prom: Prometheus) -> dict[str, dict[tuple, float]]:
    """The followed counters once the platform has scraped and nothing has changed for QUIET_S."""
    _wait("Prometheus scrapes the platform", lambda: prom.value('up{job="aprendiz-ray"} == 1'), 30)
    last, since = _snapshot(prom), time.monotonic()
    deadline = since + 90
    while time.monotonic() - since < QUIET_S:
        if time.monotonic() > deadline:
            pytest.fail("the platform's counters never settled: is another test sending load?")
        time.sleep(SCRAPE_S)
        now = _snapshot(prom)
        if now != last:
            last, since = now, time.monotonic()
    return last


def _delta(after: dict[tuple, float], before: dict[tuple, float]) -> dict[tuple, float]:
    changed = {k: round(v - before.get(k, 0.0), 6) for k, v in after.items()}
    return {k: v for k, v in changed.items() if v}


class Load:
    """Requests sent, with what the platform should count for them."""

    def __init__(self, platform, key: str):
        self.base = platform.base_url
        self.auth = {"Authorization": f"Bearer {key}"}
        self.client = httpx.Client(timeout=120)
        self.requests: Counter = Counter()  # (route template, status)
        self.predictions: Counter = Counter()  # model -> instances predicted
        self.feedback: Counter = Counter()
        self.refusals: Counter = Counter()
        self.upstream_errors: Counter = Counter()
        self.fallbacks: Counter = Counter()
        self.tokens: Counter = Counter()  # kind -> tokens reported in answers

    def _sent(self, route: str, answer: httpx.Response, expected: int | tuple[int, ...]) -> httpx.Response:
        allowed = expected if isinstance(expected, tuple) else (expected,)
        assert answer.status_code in allowed, f"{route}: {answer.status_code} {answer.text[:300]}"
        self.requests[(route, str(answer.status_code))] += 1
        return answer

    def _usage(self, usage: dict) -> None:
        self.tokens["prompt"] += usage["prompt_tokens"]
        self.tokens["completion"] += usage["completion_tokens"]

    def chat(self, model: str = HOSTED, expected: int | tuple[int, ...] = 200, headers=None) -> httpx.Response:
        body = {"model": model, "messages": MESSAGES, "max_tokens": 8}
        answer = self.client.post(f"{self.base}/v1/chat/completions", json=body,
                                  headers=self.auth if headers is None else headers)
        self._sent("/v1/chat/completions", answer, expected)
        if answer.status_code == 200:
            self._usage(answer.json()["usage"])
        return answer

    def stream(self) -> None:
        body = {"model": HOSTED, "messages": MESSAGES, "max_tokens": 12, "stream": True,
                "stream_options": {"include_usage": True}}
        usage = None
        with self.client.stream("POST", f"{self.base}/v1/chat/completions", json=body, headers=self.auth) as answer:
            self._sent("/v1/chat/completions", answer, 200)
            for line in answer.iter_lines():
                if line.startswith("data: {"):
                    usage = json.loads(line[len("data: "):]).get("usage") or usage
        assert usage, "the stream carried no usage"
        self._usage(usage)

    def completion(self) -> None:
        answer = self.client.post(f"{self.base}/v1/completions", headers=self.auth,
                                  json={"model": HOSTED, "prompt": "Hola", "max_tokens": 6})
        self._sent("/v1/completions", answer, 200)
        self._usage(answer.json()["usage"])

    def predict_v1(self, model: str, instances: list, expected: int = 200) -> None:
        answer = self.client.post(f"{self.base}/v1/models/{model}:predict", headers=self.auth,
                                  json={"instances": instances})
        self._sent("/v1/models/{name}:predict", answer, expected)
        if expected == 200:
            assert len(answer.json()["predictions"]) == len(instances)
            self.predictions[model] += len(instances)

    def infer_v2(self, model: str, rows: list[list[float]]) -> None:
        tensor = {"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP32",
                  "data": [x for row in rows for x in row]}
        answer = self.client.post(f"{self.base}/v2/models/{model}/infer", headers=self.auth, json={"inputs": [tensor]})
        self._sent("/v2/models/{name}/infer", answer, 200)
        self.predictions[model] += len(rows)

    def give_feedback(self, model: str, rows: list[list[float]], labels: list[str]) -> None:
        answer = self.client.post(f"{self.base}/v1/models/{model}/feedback", headers=self.auth,
                                  json={"instances": rows, "labels": labels})
        self._sent("/v1/models/{name}/feedback", answer, 200)
        assert answer.json()["accepted"] == len(rows)
        self.feedback[model] += len(rows)


def lesion_pngs(count: int) -> list[str]:
    import base64

    from aprendiz.training.images import lesion_images

    return [base64.b64encode(item.data).decode() for item in lesion_images(count=count, labelled=count, seed=4)]


def test_every_dashboard_and_rule_query_runs_on_real_data(platform, prometheus, platform_config, gateway_keys, tmp_path):
    from sklearn.datasets import load_breast_cancer

    from aprendiz.keys import KeyFile

    started = time.monotonic()
    # A key of this test's own: its tokens, cost and refusals are this test's alone.
    allowed = [HOSTED, "breast-cancer", "breast-cancer-local", "es-or-en", "lesions", "rented-silent", "rented-tiny-fb"]
    key, _ = KeyFile(gateway_keys.path).create("observability", models=allowed, feedback=True)

    # The training runs push to the Pushgateway while the platform's counters settle: one that
    # finishes, one that fails (no dataset).
    env = {**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
           "AWS_DEFAULT_REGION": "us-east-1"}
    aprendiz = str(Path(sys.executable).parent / "aprendiz")
    runs = {
        model: subprocess.Popen(
            [aprendiz, "train", "--model", model, "--config", str(platform_config),
             "--pushgateway", prometheus.pushgateway],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        for model in ("breast-cancer-local", FAILING_MODEL)
    }
    # A small evaluation pushes its figures (the Cost dashboard's quality-per-dollar panels), before the
    # quiet snapshot: its requests are not part of the load counted below.
    evaluation = subprocess.run(
        [aprendiz, "evaluate", "--eval", "customer-service", "--models", HOSTED, "--limit", "4", "--no-publish",
         "--config", str(platform_config), "--url", platform.base_url, "--output", str(tmp_path / "evaluation"),
         "--pushgateway", prometheus.pushgateway],
        env={**env, "APRENDIZ_API_KEY": platform.api_key}, capture_output=True, text=True, timeout=180,
    )
    assert evaluation.returncode == 0, evaluation.stdout[-2000:] + evaluation.stderr[-2000:]
    before = _quiet_snapshot(prometheus)
    quiet_at = time.monotonic()

    data = load_breast_cancer().data.astype(float).round(4).tolist()
    load = Load(platform, key)  # created before the quiet wait: the platform re-reads the key file every second
    for _ in range(2):
        load.chat()
        load.stream()
    load.completion()
    load.predict_v1("breast-cancer", data[0:2])
    load.predict_v1("breast-cancer", data[2:5])
    load.predict_v1("breast-cancer-local", data[5:6])
    load.predict_v1("es-or-en", ["Hola, ¿cómo estás hoy?", "Hello, how are you today?"])
    load.predict_v1("lesions", [{"b64": image} for image in lesion_pngs(2)])  # the image size and decode panels
    load.predict_v1("no-such-classifier", data[0:1], expected=404)
    load.infer_v2("breast-cancer", data[6:9])
    load.infer_v2("breast-cancer-local", data[9:11])
    load.give_feedback("breast-cancer-local", data[11:13], ["malignant", "benign"])
    # Refused: no key, a wrong key, a model the key may not call.
    load.chat(expected=401, headers={})
    load.chat(expected=401, headers={"Authorization": "Bearer apz_00000000_not-a-key"})
    load.chat(model="rented-tiny", expected=403)
    load.refusals.update(["missing_key", "invalid_key", "model_not_allowed"])
    # A provider that never answers (504), and a rented model whose provider is down (its fallback answers).
    load.chat(model="rented-silent", expected=504)
    load.upstream_errors["rented-silent"] += 1
    fallback = load.chat(model="rented-tiny-fb", expected=(200, 502))
    provider_down = fallback.headers.get("x-aprendiz-served-by") == HOSTED
    if provider_down:
        load.upstream_errors["rented-tiny-fb"] += 1
        load.fallbacks["rented-tiny-fb"] += 1
    may_be_empty = dict(MAY_BE_EMPTY)
    if not provider_down:  # the gateway tests' provider answered: no fallback to see
        may_be_empty["aprendiz-generator.json / Fallbacks per second / A"] = "the rented provider answered"
    load_s = time.monotonic() - quiet_at

    expected = {
        "requests": {k: float(v) for k, v in load.requests.items()},
        "predictions": {(m,): float(n) for m, n in load.predictions.items()},
        "feedback": {(m,): float(n) for m, n in load.feedback.items()},
        "refusals": {(r,): float(n) for r, n in load.refusals.items()},
        "upstream_errors": {(m,): float(n) for m, n in load.upstream_errors.items()},
        "fallbacks": {(m,): float(n) for m, n in load.fallbacks.items()},
    }

    def arrived():
        now = _snapshot(prometheus)
        deltas = {name: _delta(now[name], before[name]) for name in FOLLOWED}
        return deltas if deltas == expected else None

    deadline = time.monotonic() + ARRIVAL_TIMEOUT_S
    while (deltas := arrived()) is None and time.monotonic() < deadline:
        time.sleep(1)
    if deltas is None:
        now = _snapshot(prometheus)
        got = {name: _delta(now[name], before[name]) for name in FOLLOWED}
        wrong = {n: {"sent": expected[n], "counted": got[n]} for n in FOLLOWED if got[n] != expected[n]}
        pytest.fail(f"the counters in Prometheus do not match the load after {ARRIVAL_TIMEOUT_S}s: {wrong}")
    arrived_s = time.monotonic() - quiet_at - load_s

    # This test's key: exactly the tokens the answers reported, one refusal, some cost.
    tokens = _wait("the key's tokens", lambda: prometheus.by(
        'sum by (kind) (ray_aprendiz_gateway_tokens_total{key="observability"})') or None, 30)
    assert tokens == {(kind,): float(n) for kind, n in load.tokens.items()}, (tokens, load.tokens)
    assert prometheus.by('sum by (reason) (ray_aprendiz_gateway_refusals_total{key="observability"})') == {
        ("model_not_allowed",): 1.0}
    assert (prometheus.value('sum(ray_aprendiz_gateway_cost_usd_total{key="observability"})') or 0) > 0

    # The training runs: one finished, one failed; both pushed, and the failure fires its alert.
    outputs = {m: p.communicate(timeout=180)[0] for m, p in runs.items()}
    assert runs["breast-cancer-local"].returncode == 0, outputs["breast-cancer-local"][-3000:]
    assert runs[FAILING_MODEL].returncode == 1, outputs[FAILING_MODEL][-3000:]
    _wait("the failed run's alert fires", lambda: prometheus.value(
        f'ALERTS{{alertname="AprendizTrainingJobFailed", model="{FAILING_MODEL}", alertstate="firing"}}'), 30)
    assert prometheus.by('sum by (model) (aprendiz_training_success{job="aprendiz-training"})') == {
        ("breast-cancer-local",): 1.0, (FAILING_MODEL,): 0.0}
    assert prometheus.value('aprendiz_training_candidates_trained{model="breast-cancer-local"}') >= 1
    assert prometheus.value('aprendiz_training_rows_read{model="breast-cancer-local"}') >= 569
    # The evaluation's figures, pushed per set and model.
    quality = prometheus.value(f'aprendiz_eval_quality{{eval="customer-service", model="{HOSTED}", scorer="overall"}}')
    assert quality is not None and 0.0 <= quality <= 1.0
    assert prometheus.value(f'aprendiz_eval_cost_per_1k_conversations_usd{{model="{HOSTED}"}}') > 0

    # Every rule evaluates in Prometheus without an error, on this data.
    groups = httpx.get(f"{prometheus.url}/api/v1/rules", timeout=30).json()["data"]["groups"]
    rules = [r for g in groups for r in g["rules"]]
    assert len(rules) == len(rule_queries())
    assert not [(r["name"], r["lastError"]) for r in rules if r["health"] != "ok"]
    # The recorded SLIs have a series for every model the load reached. (Their values may be NaN here:
    # a counter series born with the load shows no increase to rate() until it changes again.)
    loaded = {HOSTED, "breast-cancer", "breast-cancer-local", "es-or-en", "rented-silent", "rented-tiny-fb"}
    latency = {HOSTED, "breast-cancer", "breast-cancer-local", "es-or-en"}  # classifier calls and streams
    for record, models in (("aprendiz:slo_errors:ratio_rate5m", loaded), ("aprendiz:slo_errors:ratio_rate1h", loaded),
                           ("aprendiz:slo_latency:ratio_rate5m", latency)):
        def covered(record=record, models=models):
            return models <= {r["metric"].get("model") for r in prometheus.vector(record)} or None

        _wait(f"{record} has a series for each of {sorted(models)}", covered, 30)

    # Every query of the dashboards and rules parses; every dashboard query returns a series.
    problems, empty = [], []
    queries = [*dashboard_queries(), *rule_queries()]
    for q in queries:
        answer = prometheus.query(q.promql(rate_interval=RATE_WINDOW))
        if answer["status"] != "success":
            problems.append(f"{q.source}: {answer.get('errorType')}: {answer.get('error')}")
        elif q.kind in ("panel", "variable") and not answer["data"]["result"] and q.source not in may_be_empty:
            empty.append(q)
    assert not problems, "queries Prometheus refused:\n" + "\n".join(problems)
    # A counter born with the load (the feedback labels of breast-cancer-local) can have arrived in
    # a single scrape: rate() has a value one scrape later. Empty queries get a few scrapes more.
    deadline = time.monotonic() + RATE_SETTLE_S
    while empty and time.monotonic() < deadline:
        time.sleep(SCRAPE_S)
        empty = [q for q in empty if not prometheus.vector(q.promql(rate_interval=RATE_WINDOW))]
    assert not empty, "dashboard queries with no series after the load:\n" + "\n".join(
        f"{q.source}: {q.promql(rate_interval=RATE_WINDOW)}" for q in empty)
    print(f"\nobservability: {len(queries)} queries; quiet after {quiet_at - started:.1f}s, load {load_s:.1f}s, "
          f"counted in Prometheus {arrived_s:.1f}s later, whole test {time.monotonic() - started:.1f}s")


def test_cost_command_reads_measured_figures_from_prometheus(platform, prometheus, platform_config, provider_settings):
    """`aprendiz cost --prometheus`: the hosted replica's price and measured throughput, beside the rented prices."""
    # Ray exports a counter's series from its first increment on, so rate() sees only what comes after:
    # serve twice, a scrape apart, and wait until Prometheus holds a rate for the hosted model.
    body = {"model": HOSTED, "prompt": "Hola", "max_tokens": 16, "ignore_eos": True}
    for _ in range(2):
        for _ in range(3):
            httpx.post(f"{platform.base_url}/v1/completions", json=body, headers=platform.headers, timeout=120)
        time.sleep(12)
    from aprendiz.costs import queries

    peak = queries("10m")["peak_tokens_per_s"]  # what `aprendiz cost` reads (a subquery on 15 s steps)

    def measured():
        return next((float(r["value"][1]) for r in prometheus.vector(peak) if r["metric"].get("model") == HOSTED
                     and float(r["value"][1]) > 0), None)

    _wait("a peak rate of hosted tokens in Prometheus", measured, 60)
    aprendiz = Path(sys.executable).parent / "aprendiz"
    result = subprocess.run(
        [str(aprendiz), "cost", "--prometheus", prometheus.url, "--window", "10m", "--config", str(platform_config),
         "--json"],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    figures = json.loads(result.stdout)
    hosted = {h["model"]: h for h in figures["hosted"]}
    assert hosted[HOSTED]["replica_hourly_usd"] == pytest.approx(provider_settings.cpu_hourly_usd)
    assert hosted[HOSTED]["tokens_per_s"] > 0 and 0 < hosted[HOSTED]["prompt_share"] < 1
    assert hosted[HOSTED]["observed_usd_per_million"] > 0
    rented = {r["model"]: r for r in figures["rented"]}
    assert rented["rented-tiny"]["input_usd_per_million"] == provider_settings.rented_prices["input_usd_per_million"]
    assert f"{HOSTED} vs rented-tiny" in figures["break_even_tokens_per_day"]
