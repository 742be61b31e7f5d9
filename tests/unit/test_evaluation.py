"""aprendiz.evaluation: cases, scorers, the runner's retries and resumption, figures, the front and the
recommendation (the run through a real platform is tests/integration/test_evaluation.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from aprendiz.config import PlatformConfig
from aprendiz.evaluation import cases as cases_module
from aprendiz.evaluation import judge, scorers, summary
from aprendiz.evaluation.cases import EvalError, load_cases, parse_cases, select
from aprendiz.evaluation.runner import RESULTS, Entrance, Evaluation, ask, read_rows
from aprendiz.store import ObjectStore


def _case(**score) -> str:
    return json.dumps({"id": "c1", "messages": [{"role": "user", "content": "hola"}], "score": score})


def test_the_shipped_set_is_bilingual_customer_service_of_at_least_100_cases(tmp_path):
    store = ObjectStore(str(tmp_path))
    cases = load_cases(store, "customer-service")
    assert store.exists("evals/customer-service/cases.jsonl")  # written to the store the first time
    assert len(cases) >= 100
    assert {c.tags["language"] for c in cases} == {"es", "en"}
    assert {"corpus", "held-out", "triage"} <= {c.tags["source"] for c in cases}
    assert all(c.score.rubric for c in cases if c.tags["source"] != "triage")
    assert len(select(cases, {"language": "es"})) == len(cases) // 2
    assert len(select(cases, {"language": "es"}, limit=3)) == 3


@pytest.mark.parametrize(("line", "message"), [
    ("{", "line 1: not JSON"),
    (json.dumps({"id": "c1", "messages": [{"role": "user", "content": "x"}], "score": {}}), "at least one scorer"),
    (_case(regex="("), "does not compile"),
    (_case(json_schema={"type": "bogus"}), "not a JSON schema"),
    (json.dumps({"id": "c1", "messages": [{"role": "robot", "content": "x"}], "score": {"exact": "x"}}), "messages.0.role"),
    (json.dumps({"id": "c1", "messages": [{"role": "user", "content": "x"}], "score": {"exact": "x"},
                 "request": {"model": "other"}}), "not allowed"),
    (_case(exact="a") + "\n" + _case(exact="b"), "line 2: case id 'c1' appears twice"),
])
def test_a_bad_case_is_named_with_its_line(line, message):
    with pytest.raises(EvalError, match=message):
        parse_cases(line, "evals/x/cases.jsonl")


def test_an_unknown_set_and_a_bad_name_are_refused(tmp_path):
    with pytest.raises(EvalError, match="no evaluation set 'nope'"):
        load_cases(ObjectStore(str(tmp_path)), "nope")
    with pytest.raises(EvalError, match="use lowercase"):
        cases_module.cases_key("../etc")


def test_scorers():
    (case,) = parse_cases(_case(exact={"a": 1}, normalised="Sí, claro", contains=["14 días"], regex=r"\d+ días",
                                reference="Los reembolsos tardan 14 días.", json_schema={"type": "object"}), "x")
    good = scorers.score(case, '{"a": 1}')
    assert good["exact"] == 1.0 and good["json_schema"] == 1.0 and good["contains"] == 0.0
    answer = "Los reembolsos tardan 14 DÍAS."
    got = scorers.score(case, answer)
    assert got["contains"] == 1.0 and got["regex"] == 0.0  # the regex is case-sensitive, as Python's
    assert got["rouge_l"] == pytest.approx(1.0) and 0.7 < got["chrf"] < 1.0  # chrF is case-sensitive
    assert scorers.score(case, "sí,   CLARO!")["normalised"] == 1.0
    unrelated = scorers.score(case, "The sky is blue.")
    assert unrelated["chrf"] < 0.2 and unrelated["rouge_l"] == 0.0 and unrelated["json_schema"] == 0.0


def test_the_judge_is_asked_for_a_verdict_under_a_schema():
    (case,) = parse_cases(_case(rubric="Says 14 days"), "x")
    body = judge.request("judge-model", case, "14 días")
    assert body["response_format"]["json_schema"]["schema"] == judge.VERDICT_SCHEMA
    assert "Says 14 days" in body["messages"][1]["content"] and "14 días" in body["messages"][1]["content"]
    assert judge.verdict('{"verdict": "pass"}') == 1.0 and judge.verdict('{"verdict": "fail"}') == 0.0
    assert judge.verdict("maybe") is None and judge.verdict('{"verdict": "perhaps"}') is None


def _transport(script: list[httpx.Response], seen: list[dict]):
    """A unit fake of the entrance: answers each request with the next scripted response."""

    def handle(request: httpx.Request) -> httpx.Response:
        seen.append(json.loads(request.content))
        return script.pop(0)

    return httpx.MockTransport(handle)


def _stream(*texts: str, usage=(5, 2)) -> httpx.Response:
    chunks = [{"choices": [{"delta": {"content": t}}]} for t in texts]
    chunks.append({"choices": [], "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1]}})
    body = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())


def test_ask_retries_429_and_503_after_retry_after_and_keeps_other_errors():
    seen: list[dict] = []
    waits: list[float] = []

    async def sleep(seconds):
        waits.append(seconds)

    script = [httpx.Response(429, headers={"retry-after": "2"}, json={"error": {"message": "slow down"}}),
              httpx.Response(503, headers={"retry-after": "1"}, json={"error": {"message": "busy"}}),
              _stream("Hola", ", ¿qué tal?")]

    async def go(script):
        async with httpx.AsyncClient(transport=_transport(script, seen), base_url="http://entrance") as client:
            return await ask(client, {"model": "m", "messages": []}, sleep=sleep)

    answer = asyncio.run(go(script))
    assert answer.error is None and answer.text == "Hola, ¿qué tal?" and answer.attempts == 3
    assert waits == [2.0, 1.0] and answer.completion_tokens == 2 and answer.ttft_s is not None
    assert seen[0]["stream"] is True and seen[0]["stream_options"] == {"include_usage": True}
    failed = asyncio.run(go([httpx.Response(502, json={"error": {"message": "provider down"}})]))
    assert failed.error == "HTTP 502: provider down" and failed.attempts == 1


def test_an_interrupted_run_resumes_and_errors_are_kept(tmp_path):
    cases = parse_cases("\n".join(json.dumps({"id": f"c{i}", "messages": [{"role": "user", "content": "q"}],
                                              "score": {"exact": "yes"}}) for i in range(4)), "x")
    seen: list[dict] = []
    script = [_stream("yes"), _stream("no"), httpx.Response(502, json={"error": {"message": "down"}}), _stream("yes")]
    transport = _transport(script, seen)

    class Local(Entrance):
        def client(self, concurrency):
            return httpx.AsyncClient(transport=transport, base_url="http://entrance")

    def run(chosen):
        asyncio.run(Evaluation(Local("http://entrance"), chosen, ["m"], tmp_path, concurrency=1, progress=False).run())

    run(cases[:2])
    (tmp_path / RESULTS).open("a").write('{"model": "m", "case": "c9", "ok"')  # a line cut by the interruption
    run(cases)
    rows = read_rows(tmp_path / RESULTS)
    assert [r["case"] for r in rows] == ["c0", "c1", "c2", "c3"] and len(seen) == 4  # c0, c1 not asked again
    assert [r["ok"] for r in rows] == [True, True, False, True] and rows[2]["error"] == "HTTP 502: down"
    segments = read_rows(tmp_path / "segments.jsonl")
    assert [s["cases"] for s in segments] == [2, 2]  # each run segment counts what it answered
    figures = summary.figures("m", cases, rows, segments, [], summary.Pricing("unknown"))
    assert figures.errors == 1 and figures.missing == 0 and figures.quality.value == pytest.approx(0.5)


def test_bootstrap_interval_brackets_the_mean():
    values = [1.0] * 30 + [0.0] * 10
    interval = summary.bootstrap(values)
    assert interval.low < interval.value == 0.75 < interval.high
    assert summary.bootstrap([1.0, 1.0]).low == 1.0


def _figures(model, backend, quality, usd, per_hour=None, hourly=0.0):
    return summary.ModelFigures(
        model=model, backend=backend, cases=10, errors=0, missing=0, quality=summary.Interval(quality, quality - .1, quality + .1),
        scorers={}, tags={}, judge=None, ttft_p50_s=None, ttft_p95_s=None, tpot_p50_s=None, tpot_p95_s=None,
        prompt_tokens=0, completion_tokens=0, usd_per_1k_conversations=usd, conversations_per_hour=per_hour,
        hourly_usd=hourly, accelerator="1 L4",
    )


def test_pareto_front_and_the_recommendation():
    models = [_figures("cheap", "hosted", 0.5, 0.1, per_hour=36_000, hourly=0.8), _figures("dear", "rented", 0.9, 2.0),
              _figures("dominated", "rented", 0.4, 3.0), _figures("unpriced", "unknown", 0.99, None)]
    assert summary.pareto(models) == ["cheap", "dear"]
    lines = summary.recommendation(models)
    assert lines[0].startswith("from 0.1 USD per 1,000 conversations up to 2: host cheap")
    assert lines[1].startswith("from 2 USD per 1,000 conversations up: rent dear")
    assert "no cost for unpriced" in lines[2]
    # one replica: 0.8 USD/h, 19.2 USD a day; renting dear costs 0.002 USD a conversation: 9,600 a day
    assert lines[3] == "above 9,600 conversations a day, host cheap on one 1 L4 replica; below, rent dear."
    with_upkeep = summary.recommendation(models, upkeep_usd_per_month=730.0)[3]  # +24 USD a day
    assert with_upkeep.startswith("above 21,600 conversations a day") and "upkeep 730 USD a month" in with_upkeep


def test_pricing_from_the_config():
    config = PlatformConfig.model_validate({
        "generators": [{"id": "tiny", "source": "/m", "num_cpus": 2}],
        "rented": [{"id": "gpt", "base_url": "https://api.example.com/v1", "upstream_model": "gpt",
                    "input_usd_per_million": 1.0, "output_usd_per_million": 3.0}],
        "gateway": {"hourly_prices_usd": {"cpu": 0.05}},
    })
    assert summary.Pricing.of(config, "tiny:adapter") == summary.Pricing("hosted", hourly_usd=0.1, accelerator="2 CPU")
    assert summary.Pricing.of(config, "gpt").backend == "rented"
    assert summary.Pricing.of(config, "other").backend == "unknown"
