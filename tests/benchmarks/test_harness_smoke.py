"""Smoke of the benchmark harness (benchmarks/): its pure parts and a tiny in-process
measurement, in seconds. No Ray, no vLLM, no server is started here."""

from __future__ import annotations

import asyncio
import json
import time

import pytest

from benchmarks import common, loadgen, report
from benchmarks.generator import summarize_collapsed


def test_percentile_and_summary():
    assert common.percentile([1, 2, 3, 4], 50) == 2.5
    assert common.percentile([5], 99) == 5
    s = common.summary([3.0, 1.0, 2.0, None])
    assert (s["median"], s["min"], s["max"], s["n"]) == (2.0, 1.0, 3.0, 3)
    assert common.summary([])["median"] is None
    with pytest.raises(ValueError):
        common.percentile([], 50)


def test_closed_loop_counts_only_after_warmup():
    calls = 0

    async def call():
        nonlocal calls
        calls += 1
        await asyncio.sleep(0.002)

    result = asyncio.run(loadgen.closed_loop(call, concurrency=4, duration_s=0.3, warmup_s=0.1))
    assert 0 < result["requests"] < calls  # warm-up calls are not counted
    assert result["errors"] == 0
    assert result["p50_ms"] >= 2.0 and result["p99_ms"] >= result["p50_ms"]
    assert result["rps"] > 100  # 4 clients of ~2 ms each


def test_closed_loop_counts_errors():
    async def fail():
        raise RuntimeError("no")

    result = asyncio.run(loadgen.closed_loop(fail, concurrency=2, duration_s=0.05))
    assert result["requests"] == 0 and result["errors"] > 0


def test_in_process_onnx_measurement(trained_classifier):
    """The classifier floor: the trained model's ONNX, run in-process for a fraction of a second."""
    from benchmarks import classifier

    registry, name, version = trained_classifier
    floor = classifier.in_process(registry.load(name, version).onnx_bytes, classifier.sample_row(), duration_s=0.2, rounds=2)
    assert floor["rps"]["n"] == 2 and floor["rps"]["median"] > 100
    assert floor["p50_ms"]["median"] < 50
    body = json.loads(classifier.v2_body(classifier.sample_row()))
    assert body["inputs"][0]["shape"] == [1, 30]


def test_parse_wrk_output():
    line = ('WRK_JSON {"requests": 1000, "duration_us": 2000000, "errors_connect": 0, "errors_read": 0, '
            '"errors_write": 0, "errors_status": 10, "errors_timeout": 0, "p50_us": 1500, "p90_us": 2000, '
            '"p99_us": 4000, "mean_us": 1600.5, "max_us": 9000}')
    parsed = loadgen.parse_wrk("Running 2s test\n" + line + "\n")
    assert parsed["rps"] == pytest.approx(495.0)
    assert parsed["errors"] == 10 and parsed["p50_ms"] == 1.5 and parsed["p99_ms"] == 4.0
    with pytest.raises(ValueError):
        loadgen.parse_wrk("no summary")


def test_collapsed_stack_summary():
    text = "a (m.py:1);b (m.py:2) 30\na (m.py:1);select (selectors.py:469) 70\n"
    s = summarize_collapsed(text)
    assert s["samples"] == 100 and s["busy_share_pct"] == 30.0
    assert s["top_self_pct_of_busy"][0] == ["b (m.py:2)", 100.0]


def _s(values):
    return common.summary(values)


def _gen_figures(tok):
    f = {k: _s([1.0, 2.0, 3.0]) for k in ("request_throughput", "total_token_throughput", "p50_ttft_ms", "p99_ttft_ms",
                                         "p50_tpot_ms", "p99_tpot_ms", "p50_itl_ms", "p99_itl_ms", "p50_e2el_ms",
                                         "p99_e2el_ms", "failed")}
    f["output_throughput"] = _s(tok)
    return {"figures": f, "runs": []}


def test_report_renders_from_result_files(tmp_path):
    """docs/benchmarks.md comes from the result files only: a synthetic result renders every table."""
    from benchmarks.generator import ratios

    gen = {"aprendiz": {"1": _gen_figures([90.0, 95.0, 99.0])}, "vllm": {"1": _gen_figures([100.0, 100.0, 101.0])}}
    clf_entry = {"rps": _s([100.0, 110.0]), "p50_ms": _s([1.0, 1.1]), "p99_ms": _s([2.0, 2.5]), "errors": 0,
                 "tool": "wrk", "runs": []}
    head = {
        "benchmark": "head", "mode": "quick", "finished_at": "2026-01-01T00:00:00+00:00", "duration_s": 1.0,
        "git_commit": "abc", "machine": common.machine(), "versions": {"python": "3.11"},
        "machine_state": {"idle": True, "loadavg_1m": 0.1},
        "settings": {"generator_rounds": 3, "input_len": 128, "output_len": 64, "engine": {},
                     "classifier_rounds": 2, "classifier_duration_s": 3.0, "classifier_warmup_s": 1.0},
        "generator": {"results": gen, "ratios_aprendiz_over_vllm": ratios(gen, "aprendiz", "vllm")},
        "streaming": {"aprendiz": {"16": {"stream": clf_entry, "no_stream": clf_entry}}},
        "profile": {"skipped": "targets met"},
        "classifier": {"results": {"aprendiz-v1": {"1": clf_entry}, "kserve-v1": {"1": clf_entry}},
                       "in_process": clf_entry, "ingress_floor": {"1": clf_entry}},
        "cold_start": {"plain_vllm_s": 20.0},
    }
    provenance = {k: head[k] for k in ("mode", "finished_at", "duration_s", "git_commit", "machine", "versions",
                                       "machine_state")}
    batching = {**provenance, "settings": {"concurrency": [1, 32]}, "batching": {
        "64/0ms": {"1": clf_entry, "32": clf_entry}, "64/2ms": {"error": "RuntimeError: did not start"}}}
    cold = {**provenance, "settings": {"repeats": 2}, "kinds": {
        "classifier": {"ready_s": _s([20.0, 22.0]), "first_answer_s": _s([20.5, 22.4]), "runs": [{}, {}]},
        "generator": {"ready_s": _s([60.0]), "first_answer_s": _s([61.0]),
                      "runs": [{"first_answer_s": 61.0, "stages": {"ray": 7.9, "serve": 17.2, "application": 60.0},
                                "cpu_s": {"VLLM::EngineCore": {"cpu_s": 10.0}, "VLLM::Worker": {"cpu_s": 9.0},
                                          "ray::ServeReplica:a:LLMServer:m": {"cpu_s": 14.0},
                                          "ray::ServeReplica:a:Ingress": {"cpu_s": 12.0},
                                          "ray::ServeController": {"cpu_s": 3.0}, "python": {"cpu_s": 12.0},
                                          "raylet": {"cpu_s": 1.0}, "gcs_server": {"cpu_s": 1.0}}}]},
        "plain-vllm": {"ready_s": _s([29.0, 31.0]), "first_answer_s": _s([30.0, 32.0]),
                       "runs": [{"first_answer_s": 30.0, "cpu_s": {"VLLM::EngineCore": {"cpu_s": 10.0},
                                                                   "python": {"cpu_s": 12.0}}},
                                {"first_answer_s": 32.0, "cpu_s": {"VLLM::EngineCore": {"cpu_s": 12.0},
                                                                   "python": {"cpu_s": 12.0}}}]}}}
    swap = {"before": clf_entry | {"p50_ms": 1.0, "p99_ms": 2.0}, "during": clf_entry | {"p50_ms": 1.2, "p99_ms": 3.0},
            "swapped": True, "failed_requests": 0}
    paths = {**provenance, "settings": {"classifier_rounds": 2, "classifier_duration_s": 3.0, "classifier_warmup_s": 1.0},
             "variants": {
                 "ingress": {"placement": "ingress", "swap": swap,
                             "classifier": {"aprendiz-v1": {"1": clf_entry}, "kserve-v1": {"1": clf_entry}}},
                 "own replica": {"error": "RuntimeError: did not start"}},
             "text": {"es-or-en": {"placement": "ingress"}, "results": {"es-or-en": {"1": clf_entry}}}}
    gc = {**provenance, "settings": {"classifier_rounds": 2, "classifier_duration_s": 3.0, "classifier_warmup_s": 1.0},
          "variants": {
              "50000 (shipped)": {"classifier": {"aprendiz-v2": {"32": clf_entry}, "kserve-v2": {"32": clf_entry}},
                                  "python_client_c1": {"aprendiz": clf_entry}},
              "700 (Python's default)": {"error": "RuntimeError: did not start"}}}
    streams = {**provenance, "settings": {"generator_rounds": 3}, "modes": {
        "adaptive": {"generator": head["generator"]}, "fixed": {"generator": {"results": gen, "ratios_aprendiz_over_vllm": {
            "1": {"output_throughput": 0.9, "p50_ttft_ms_delta": 40.0}}}},
        "off": {"error": "RuntimeError: did not start"}}}
    idle = {**provenance, "settings": {"settle_s": 20.0, "sample_s": 30.0, "rounds": 1, "shipped_env": {"A": "1"}},
            "variants": {"shipped": {"runs": [{"by_process": {"raylet": {"cpu_pct": 0.8}}, "total_pct": 9.0,
                                               "by_thread": [
                                                   {"process": "ray::ProxyActor", "thread": "ray::ProxyActor",
                                                    "main": True, "cpu_pct": 0.5},
                                                   {"process": "VLLM::Worker", "thread": "gloo_tcp_loop",
                                                    "main": False, "cpu_pct": 1.4}]}],
                                     "total_pct": _s([9.0])},
                         "Ray's defaults": {"runs": [{"by_process": {"raylet": {"cpu_pct": 1.5},
                                                                     "gcs_server": {"cpu_pct": 2.0}}}],
                                            "total_pct": _s([20.0])}},
            "plain_vllm": {"by_process": {}, "total_pct": 1.0, "by_thread": [
                {"process": "VLLM::Worker", "thread": "gloo_tcp_loop", "main": False, "cpu_pct": 1.3}]}}
    def cost_run(tok_s: float, by_process: dict[str, float]) -> dict:
        return {"figures": {"output_throughput": tok_s}, "cpu_ms_per_token": sum(by_process.values()),
                "by_process": {role: {"cpu_ms_per_token": ms} for role, ms in by_process.items()}}

    token_cost = {**provenance, "settings": {"rounds": 1, "concurrency": [64], "input_len": 128, "output_len": 64},
                  "results": {"aprendiz": {"64": [cost_run(800.0, {"VLLM::EngineCore": 1.0, "VLLM::Worker": 0.5,
                                                                   "ray::ServeReplica:a:LLMServer:m": 0.3,
                                                                   "ray::ServeReplica:a:Ingress": 0.2,
                                                                   "raylet": 0.5})]},
                              "vllm": {"64": [cost_run(1000.0, {"VLLM::EngineCore": 1.2, "VLLM::Worker": 0.5,
                                                                "python": 0.3})]}},
                  "profile": {"skipped": "quick"}}
    out = report.write_report({"head": head, "batching": batching, "cold-start": cold, "classifier-paths": paths,
                               "gc-threshold": gc, "stream-batching": streams, "idle": idle,
                               "token-cost": token_cost},
                              tmp_path / "benchmarks.md")
    text = out.read_text()
    assert "| 1 | aprendiz | 95 (90–99) |" in text
    assert "0.95" in text  # the ratio of the medians
    assert "aprendiz ingress alone" in text and "At concurrency 1 the ingress alone" in text
    assert "| 64/0ms | 105 (100–110) |" in text and "| 64/2ms | failed: RuntimeError: did not start |" in text
    assert "| tabular classifier (breast-cancer, ONNX) | 21.0 (20.0–22.0) | 21.4 (20.5–22.4) | 0 |" in text
    assert "| ingress | ingress | 1 | V1 | 105 (100–110) | 105 (100–110) | 1.00 | 1.05 / 2.25 | 1.05 / 2.25 | met |" in text
    assert "| own replica | – | – | – | failed: RuntimeError: did not start |" in text
    assert "swapped: True; failed requests: 0" in text and "| es-or-en | ingress | 1 | 105 (100–110) |" in text
    assert "| 50000 (shipped) | 32 | V2 | 105 (100–110) | 105 (100–110) | 1.00 | 1.05 / 2.25 (2.00–2.50) |" in text
    assert "| 50000 (shipped) | aprendiz | 105 (100–110) | 1.05 (1.00–1.10) |" in text
    assert "| 700 (Python's default) | – | – | failed: RuntimeError: did not start |" in text
    assert "| adaptive | 1 | 95 (90–99) | 0.950 |" in text and "| off | failed: RuntimeError: did not start" in text
    assert "Best by these figures (throughput ratio to 0.01, then TTFT): `adaptive`" in text
    assert "| run | ray | serve | application | first answer |" in text and "| 1 | 7.9 | 17.2 | 60.0 | 61.0 |" in text
    assert ("The generator's first answer: 61.0 s against the target of 30 s: **missed**; plain vLLM's own, on the "
            "same machine in the same run: 31.0 s (30.0 s more for aprendiz).") in text
    assert "| aprendiz | 19.0 | 14.0 | 12.0 | 3.0 | 12.0 | 2.0 | 62.0 | 61.0 | 1.02 |" in text
    assert "| plain vLLM | 11.0 | – | – | – | 12.0 | – | 23.0 | 31.0 | 0.74 |" in text
    assert "**On a GPU (public figures, not measured here).**" in text
    assert "| raylet | 0.80 | 1.50 |" in text and "| gcs_server | – | 2.00 |" in text
    assert "Shipped aprendiz: 9.0% against the target of 10%: met." in text
    assert "| VLLM::Worker | gloo_tcp_loop | 1.40 |" in text and "| ray::ProxyActor | main thread | 0.50 |" in text
    assert "Ray workers' main threads together: 0.50% of a core" in text
    assert "Plain vLLM's busiest threads, idle: VLLM::Worker `gloo_tcp_loop` 1.30%" in text
    assert "| 64 | aprendiz | 800 | 2.50 | 1.500 | 0.300 | 0.200 | – | – | 0.500 |" in text
    assert "at 64, 0.80 measured against 0.80 from the CPU per token" in text
    assert "## Not measured yet" in text and "serve-modes" in text


def test_a_process_kind_is_the_same_while_it_runs_a_method():
    assert common.process_role("ray::ServeController.listen_for_change") == "ray::ServeController"
    assert common.process_role("ray::ServeReplica:app:LLMServer:llama-3.1") == "ray::ServeReplica:app:LLMServer:llama-3.1"
    assert common.process_role("ray::ServeReplica:app:Ingress.handle_request_streaming") == "ray::ServeReplica:app:Ingress"


def test_cpu_by_thread_names_this_process_threads():
    import ctypes
    import os
    import threading

    stop = threading.Event()

    def spin() -> None:
        ctypes.CDLL(None).prctl(15, b"spinner", 0, 0, 0)  # PR_SET_NAME: the name /proc shows, as Ray's threads set theirs
        while not stop.is_set():
            sum(range(1000))

    worker = threading.Thread(target=spin, name="spinner")
    worker.start()
    try:
        before = common.thread_sample([os.getpid()])
        time.sleep(0.3)
        rows = common.thread_cpu(before, common.thread_sample([os.getpid()]), 0.3)
    finally:
        stop.set()
        worker.join()
    assert rows[0]["thread"] == "spinner" and not rows[0]["main"] and rows[0]["cpu_pct"] > 20
    assert all(set(row) == {"process", "thread", "main", "cpu_pct"} for row in rows)


def test_start_stages_from_a_platform_log():
    log = ("2026-12-07 00:32:30,449\tINFO worker.py:2038 -- Started a local Ray instance.\n"
           "(pid=1) (EngineCore pid=2) INFO 12-07 00:33:07 [core.py:123] Initializing a V1 LLM engine (v0.29.0)\n"
           "INFO 2026-12-07 00:33:30,225 serve 3758 -- Application 'aprendiz' is ready at http://127.0.0.1:1/.\n")
    started = time.mktime((2026, 12, 7, 0, 32, 22, 0, 0, -1))
    assert common.start_stages(log, started) == {"ray": 8.4, "engine process": 45.0, "application": 68.2}


def test_free_ports_are_distinct_bindable_and_outside_the_ephemeral_range():
    """The harness picked each port by binding port 0 and closing it: a port from the ephemeral range,
    which the kernel hands to the next outgoing connection (Ray's workers make many) before the server
    binds it, and which the next pick could return again. Now the ports come from below that range,
    several at once and distinct."""
    import socket

    low, _ = common.ephemeral_range()
    ports = common.free_ports(6)
    assert len(set(ports)) == 6 and all(1024 <= port < low for port in ports)
    for port in ports:
        with socket.socket() as s:
            s.bind(("127.0.0.1", port))


def test_the_peers_run_at_the_niceness_of_rays_workers(tmp_path):
    """aprendiz's replicas and engine run at Ray's worker niceness (15); plain vLLM and KServe are started
    at the same, so the load generator (niceness 0) is not favoured over one server more than the other."""
    import psutil

    from benchmarks.common import Server
    from benchmarks.servers import PEER_NICENESS

    server = Server("sleeper", ["sleep", "30"], log_dir=tmp_path, niceness=PEER_NICENESS).start()
    try:
        assert psutil.Process(server.process.pid).nice() == PEER_NICENESS == 15
    finally:
        server.process.kill()
        server.process.wait()
