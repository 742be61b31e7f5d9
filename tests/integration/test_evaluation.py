"""`aprendiz evaluate` through the running platform: two hosted tiny models (the default, trained on the
corpus, and the random FLOR-family one), an adapter, the rented model (the plain vLLM provider) and a
rented model whose provider never answers, on 40 cases spread over the shipped customer-service set,
with the default model as the judge. The run is interrupted once and resumed.

Uses the session's platform and rented provider (conftest.py).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration

HOSTED, FAMILY, ADAPTER = "aprendiz-tiny-chat", "tiny-flor", "aprendiz-tiny-chat:alpaca-a"
RENTED, SILENT = "rented-tiny", "rented-silent"
MODELS = [HOSTED, FAMILY, ADAPTER, RENTED, SILENT]
CASES = 40
INTERRUPT_AFTER_ROWS = 30
RUN_TIMEOUT_S = 420


class Run:
    def __init__(self, output: Path, first_rows: int, stdout: str, returncode: int):
        self.output = output
        self.first_rows = first_rows
        self.stdout = stdout
        self.returncode = returncode
        self.summary = json.loads((output / "summary.json").read_text())
        self.models = {m["model"]: m for m in self.summary["models"]}
        self.rows = [json.loads(line) for line in (output / "results.jsonl").read_text().splitlines()]


def _rows(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


@pytest.fixture(scope="module")
def evaluated(platform, provider, platform_config, s3_credentials, tmp_path_factory) -> Run:
    output = tmp_path_factory.mktemp("evaluation")
    command = [str(Path(sys.executable).parent / "aprendiz"), "evaluate", "--eval", "customer-service",
               "--models", ",".join(MODELS), "--judge", HOSTED, "--url", platform.base_url,
               "--config", str(platform_config), "--output", str(output), "--limit", str(CASES)]
    env = {**os.environ, **s3_credentials, "APRENDIZ_API_KEY": platform.api_key}
    # Interrupted (Ctrl-C) once some answers are in ...
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + RUN_TIMEOUT_S
    while _rows(output / "results.jsonl") < INTERRUPT_AFTER_ROWS and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    first.send_signal(signal.SIGINT)
    first_output = first.communicate(timeout=60)[0]
    assert first.returncode != 0, f"the run ended before it could be interrupted:\n{first_output[-3000:]}"
    first_rows = _rows(output / "results.jsonl")
    # ... and run again to the end, resuming.
    second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=RUN_TIMEOUT_S)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return Run(output, first_rows, second.stdout, second.returncode)


def test_an_interrupted_run_resumes_without_asking_again(evaluated):
    pairs = [(r["model"], r["case"]) for r in evaluated.rows]
    assert INTERRUPT_AFTER_ROWS <= evaluated.first_rows < len(MODELS) * CASES
    assert len(pairs) == len(set(pairs)) == len(MODELS) * CASES  # nothing asked twice, nothing missing
    assert all(m["missing"] == 0 and m["cases"] == CASES for m in evaluated.models.values())


def test_the_model_trained_on_the_corpus_beats_the_random_family_model(evaluated):
    trained, random_ = evaluated.models[HOSTED], evaluated.models[FAMILY]
    corpus = {name: evaluated.models[name]["tags"]["source"]["corpus"]["value"] for name in (HOSTED, FAMILY)}
    assert corpus[HOSTED] > corpus[FAMILY] + 0.1, corpus
    assert trained["quality"]["value"] > random_["quality"]["value"]
    assert trained["quality"]["low"] <= trained["quality"]["value"] <= trained["quality"]["high"]
    # The printed ranking puts the trained model above the random one.
    order = [line.split()[0] for line in evaluated.stdout.splitlines() if line.split() and line.split()[0] in MODELS]
    assert order.index(HOSTED) < order.index(FAMILY), evaluated.stdout
    # Structured answers (the triage cases) validate: guided decoding holds even for the random model.
    assert evaluated.models[FAMILY]["scorers"]["json_schema"]["value"] == 1.0


def test_a_failing_providers_cases_are_counted_as_errors(evaluated):
    silent = evaluated.models[SILENT]
    assert silent["errors"] == CASES and silent["missing"] == 0 and silent["quality"]["value"] == 0.0
    assert any("HTTP 504" in e for e in silent["error_examples"])
    assert all(evaluated.models[m]["errors"] == 0 for m in (HOSTED, FAMILY, ADAPTER, RENTED))


def test_cost_per_thousand_conversations_and_latency(evaluated, provider_settings):
    rented = evaluated.models[RENTED]
    prices = provider_settings.rented_prices
    answered = [r for r in evaluated.rows if r["model"] == RENTED and r["ok"]]
    expected = sum(r["prompt_tokens"] * prices["input_usd_per_million"] + r["completion_tokens"] * prices["output_usd_per_million"]
                   for r in answered) / 1e6 / len(answered) * 1000
    assert rented["backend"] == "rented" and rented["usd_per_1k_conversations"] == pytest.approx(expected)
    for name in (HOSTED, FAMILY, ADAPTER):
        hosted = evaluated.models[name]
        assert hosted["backend"] == "hosted" and hosted["conversations_per_hour"] > 0
        # the replica's hourly price over the conversations it answered in that hour
        assert hosted["usd_per_1k_conversations"] == pytest.approx(hosted["hourly_usd"] / hosted["conversations_per_hour"] * 1000)
        assert hosted["ttft_p50_s"] > 0 and hosted["ttft_p95_s"] >= hosted["ttft_p50_s"]
    assert evaluated.summary["pareto"] and set(evaluated.summary["pareto"]) <= set(MODELS) - {SILENT}
    assert evaluated.summary["recommendation"] and "USD per 1,000 conversations" in evaluated.summary["recommendation"][0]


def test_the_judge_grades_and_its_agreement_is_reported(evaluated):
    judgements = [json.loads(line) for line in (evaluated.output / "judgements.jsonl").read_text().splitlines()]
    answered_with_rubric = {(r["model"], r["case"]) for r in evaluated.rows if r["ok"] and "chrf" in r["scores"]}
    assert {(j["model"], j["case"]) for j in judgements} == answered_with_rubric
    judge = evaluated.summary["judge"]
    assert judge["cases"] > 0 and 0.0 <= judge["agreement"] <= 1.0
    page = (evaluated.output / "report.html").read_text()
    assert "Judge: <code>aprendiz-tiny-chat</code>" in page and "verdict" in page and "Pareto front" in page


def test_the_report_is_published_to_the_store(evaluated, stores):
    reports = [k for k in stores.s3.store.list("evals/customer-service/reports/") if k.endswith("report.html")]
    assert reports, stores.s3.store.list("evals/")
    assert stores.s3.store.exists("evals/customer-service/cases.jsonl")  # the shipped set, seeded


def test_an_unknown_set_is_refused_plainly(platform, platform_config, s3_credentials):
    done = subprocess.run(
        [str(Path(sys.executable).parent / "aprendiz"), "evaluate", "--eval", "nope", "--models", HOSTED,
         "--config", str(platform_config), "--url", platform.base_url],
        env={**os.environ, **s3_credentials}, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 2 and "no evaluation set 'nope'" in done.stderr and "Traceback" not in done.stderr
