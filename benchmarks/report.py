"""docs/benchmarks.md, regenerated from benchmarks/results/*.json (never edited by hand).

    python -m benchmarks.report
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from benchmarks.common import RESULTS, ROOT
from benchmarks.generator import THROUGHPUT_TARGET, ttft_limit_ms

DOC = ROOT / "docs" / "benchmarks.md"


def load_results(folder: Path = RESULTS) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return str(value)


def spread(s: dict[str, Any] | None, digits: int = 1) -> str:
    """median (min–max, n runs)."""
    if not s or s.get("median") is None:
        return "–"
    if s["n"] == 1:
        return fmt(s["median"], digits)
    return f"{fmt(s['median'], digits)} ({fmt(s['min'], digits)}–{fmt(s['max'], digits)})"


def provenance(r: dict[str, Any]) -> list[str]:
    m, v, state = r["machine"], r["versions"], r.get("machine_state", {})
    others = state.get("other_processes", {})
    idle = "yes" if state.get("idle") else f"no (other Ray clusters / pytest runs seen: {others}, after: {state.get('other_processes_after')})"
    versions = ", ".join(f"{k} {val}" for k, val in v.items() if val)
    return [
        f"*{r['mode']} run, finished {r['finished_at']} in {fmt(r['duration_s'], 0)} s, commit `{r['git_commit']}`; "
        f"{m['cpu']}, {m['cores']} cores, {m['memory_gib']} GiB, {m['os']}; machine otherwise idle: {idle}; "
        f"load average at start {state.get('loadavg_1m')}.*",
        "",
        f"*Versions: {versions}.*",
        "",
    ]


def _verdict(ok: bool | None) -> str:
    return "–" if ok is None else ("met" if ok else "**missed**")


def head_section(r: dict[str, Any]) -> list[str]:
    s = r["settings"]
    gen = r["generator"]["results"]
    lines = ["## Generator: aprendiz against plain vLLM", ""] + provenance(r)
    lines += [
        f"Same checkpoint (`{r['settings']['engine']}`), both servers up, measured alternately "
        f"({s['generator_rounds']} rounds, the order reversed every other round) with vLLM's own client "
        f"(`vllm.benchmarks.serve`, `--backend openai`, `/v1/completions`, random prompts of {s['input_len']} tokens, "
        f"{s['output_len']} output tokens with `--ignore-eos`, `--request-rate inf --max-concurrency C`). "
        "Figures are medians of the rounds, (min–max) across them. Idle CPU of each server while another was "
        f"measured (% of one core): {r.get('idle_cpu_pct_of_core')}."
        + (f" Plain vLLM and KServe run at nice {r['settings']['peer_niceness']}, the niceness Ray gives its workers "
           "(aprendiz's replicas and engine), so the load generator on the same cores is favoured over each "
           "server alike." if r["settings"].get("peer_niceness") else
           " Plain vLLM and KServe ran at nice 0 and aprendiz's replicas and engine at Ray's worker niceness, 15: "
           "the load generator on the same cores was favoured over aprendiz only."),
        "",
        "| C | server | output tok/s | requests/s | TTFT p50 ms | TTFT p99 ms | TPOT p50 ms | TPOT p99 ms | ITL p50 ms | ITL p99 ms | failed |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in gen["aprendiz"]:
        for name in ("vllm", "aprendiz"):
            f = gen[name][c]["figures"]
            lines.append(
                f"| {c} | {'plain vLLM' if name == 'vllm' else 'aprendiz'} | {spread(f['output_throughput'], 0)} | "
                f"{spread(f['request_throughput'], 2)} | {spread(f['p50_ttft_ms'])} | {spread(f['p99_ttft_ms'])} | "
                f"{spread(f['p50_tpot_ms'], 2)} | {spread(f['p99_tpot_ms'], 2)} | {spread(f['p50_itl_ms'], 2)} | "
                f"{spread(f['p99_itl_ms'], 2)} | {fmt(f['failed']['median'], 0)} |"
            )
    lines += ["", "Ratios of the medians, aprendiz / plain vLLM, against the targets (output tokens/s at least "
              f"{THROUGHPUT_TARGET} of vLLM's; p50 TTFT within 5 ms of vLLM's at concurrency 1 and within 10 % of it "
              "above):", "",
              "| C | output tok/s ratio | requests/s ratio | p50 TTFT Δ ms | TTFT Δ allowed ms | p50 TPOT Δ ms | throughput target | TTFT target |",
              "|---|---|---|---|---|---|---|---|"]
    for c, x in r["generator"]["ratios_aprendiz_over_vllm"].items():
        limit = ttft_limit_ms(c, gen["vllm"][c]["figures"]["p50_ttft_ms"]["median"])
        t_ok = None if x["output_throughput"] is None else x["output_throughput"] >= THROUGHPUT_TARGET
        l_ok = None if x["p50_ttft_ms_delta"] is None or limit is None else x["p50_ttft_ms_delta"] <= limit
        lines.append(f"| {c} | {fmt(x['output_throughput'], 2)} | {fmt(x['request_throughput'], 2)} | "
                     f"{fmt(x['p50_ttft_ms_delta'])} | {fmt(limit)} | {fmt(x['p50_tpot_ms_delta'], 2)} | "
                     f"{_verdict(t_ok)} | {_verdict(l_ok)} |")
    lines += ["", "### Streaming against non-streaming", "",
              "The same completion (64 tokens, `ignore_eos`) from a closed loop in Python (httpx), streamed "
              "(server-sent events, read to the end) and not; requests/s and end-to-end latency.", "",
              "| C | server | streamed req/s | streamed p50 ms | non-streamed req/s | non-streamed p50 ms | errors |",
              "|---|---|---|---|---|---|---|"]
    for name, per_c in r["streaming"].items():
        for c, modes in per_c.items():
            st, ns = modes.get("stream", {}), modes.get("no_stream", {})
            lines.append(f"| {c} | {name} | {spread(st.get('rps'))} | {spread(st.get('p50_ms'), 0)} | "
                         f"{spread(ns.get('rps'))} | {spread(ns.get('p50_ms'), 0)} | "
                         f"{st.get('errors', 0) + ns.get('errors', 0)} |")
    lines += analysis_lines(r)
    lines += profile_lines(r.get("profile") or {})
    lines += classifier_lines(r)
    cold = r.get("cold_start", {})
    lines += ["", "## Cold start (from process start to the first answer)", "",
              "| server | seconds |", "|---|---|"]
    lines += [f"| {k.replace('_s', '').replace('_', ' ')} | {fmt(v)} |" for k, v in cold.items()]
    lines += ["", "One start each, in the same run as the figures above (not a median)."]
    return lines


def analysis_lines(r: dict[str, Any]) -> list[str]:
    """What the figures say, with the numbers taken from this result."""
    gen = r["generator"]["results"]
    low = min(gen["aprendiz"], key=int)
    a, v = gen["aprendiz"][low]["figures"], gen["vllm"][low]["figures"]
    delta = _sub(a["p50_ttft_ms"]["median"], v["p50_ttft_ms"]["median"])
    idle = (r.get("idle_cpu_pct_of_core") or {}).get("aprendiz")
    return ["", "### Where the generator's gap comes from", "",
            f"- TTFT at concurrency {low}: aprendiz is {fmt(delta)} ms behind plain vLLM. Ray Serve LLM's `LLMServer` "
            "batches a stream's chunks for `stream_batching_interval_ms` (default 50 ms, "
            "`RAYLLM_MODEL_RESPONSE_BATCH_TIMEOUT_MS`) before sending them, so the first token waits for that window; "
            f"the ITL figures show it too: aprendiz's p50 ITL is {fmt(a['p50_itl_ms']['median'], 2)} ms (tokens arrive "
            f"together) and its p99 ITL {fmt(a['p99_itl_ms']['median'], 1)} ms (the window). A 10 ms window "
            "(`stream_batching_interval_ms: 10` on the generator) halved the gap but cost throughput "
            "(benchmarks/results/experiments/). The adaptive stream batcher (`stream_batching: adaptive`, the "
            "default since commit 1f1c53b) sends the first token and a token after a pause at once and batches "
            "the rest within the 50 ms window; the section *Stream batching* below measures the three modes "
            "against plain vLLM (a head-to-head result older than that commit was measured with Ray's batcher).",
            f"- Background: an idle aprendiz (Ray's GCS, raylet, Serve controller, HAProxy manager and replicas, "
            f"metrics) used {fmt(idle)}% of one core of this 2-core machine while the others were measured; plain "
            "vLLM and KServe used about 1% or less. That CPU is taken from the engine on a machine this small.",
            "- Every streamed token crosses two Python processes besides the engine's own loop (the generator "
            "replica, the ingress replica with the gateway) and HAProxy, all on the same 2 cores as the engine; "
            "plain vLLM answers from the engine's own process. The profile below shows where the ingress's time "
            "goes under load: Serve's router loop, the ASGI stack and the response streaming, not aprendiz's "
            "gateway code.",
            ]


def profile_lines(profile: dict[str, Any], *, title: str = "Where the ingress's time goes (py-spy)",
                  load: str = "") -> list[str]:
    if not profile or "skipped" in profile:
        return ["", f"Profile: {profile.get('skipped', 'not taken')}."] if profile else []
    load = load or f"vLLM's client ran {profile.get('concurrency')} concurrent streams"
    roles = [r for r in ("proxy", "ingress", "generator", "classifier") if r in profile]
    lines = ["", f"### {title}", "",
             f"py-spy sampled {', '.join(roles)} for {profile.get('seconds')} s while {load}. Shares are of the "
             "samples that were not idle waits. Serve's Python proxy (`proxy`) is only in the path with "
             "`APRENDIZ_SERVE_INGRESS=proxy`; under the default HAProxy it idles."]
    for role in roles:
        p = profile.get(role)
        if not p or "error" in p:
            lines += ["", f"- {role}: {p.get('error', 'no samples') if p else 'no process found'}"]
            continue
        lines += ["", f"**{role}** ({p['samples']} samples, {p['busy_share_pct']}% busy). Top functions, inclusive:", ""]
        frames = [f for f in p["top_inclusive_pct_of_busy"] if " (" in f[0] and "threading.py" not in f[0]][:10]
        lines += [f"- {pct}% `{name[:140]}`" for name, pct in frames]
        lines += ["", "Top self time:", ""]
        lines += [f"- {pct}% `{name[:140]}`" for name, pct in p["top_self_pct_of_busy"][:8]]
    return lines


def _against_kserve(clf: dict[str, Any]):
    """(protocol, concurrency, aprendiz's figures, KServe's) for each point both were measured at."""
    for proto in ("v1", "v2"):
        a, k = clf.get(f"aprendiz-{proto}"), clf.get(f"kserve-{proto}")
        if a and k:
            for c in a:
                yield proto, c, a[c], k[c]


def _classifier_targets(clf: dict[str, Any]) -> list[str]:
    """aprendiz against KServe per protocol and concurrency: the ratio, the p99 gap, the verdict."""
    lines = ["", "Target: aprendiz at least KServe's requests/s at equal or lower p99 (same protocol):", "",
              "| C | protocol | requests/s ratio aprendiz/KServe | p99 aprendiz − KServe ms | target |", "|---|---|---|---|---|"]
    for proto, c, a, k in _against_kserve(clf):
        ratio = _div(a["rps"]["median"], k["rps"]["median"])
        delta = _sub(a["p99_ms"]["median"], k["p99_ms"]["median"])
        ok = None if ratio is None else (ratio >= 1.0 and (delta or 0) <= 0)
        lines.append(f"| {c} | {proto.upper()} | {fmt(ratio, 2)} | {fmt(delta, 2)} | {_verdict(ok)} |")
    return lines


def classifier_lines(r: dict[str, Any]) -> list[str]:
    clf = r["classifier"]["results"]
    s = r["settings"]
    floor = r["classifier"]["in_process"]
    lines = ["", "## Classifier: aprendiz against KServe's ModelServer and in-process onnxruntime", "",
             "The same ONNX model (breast-cancer, as the training job's shipped defaults train it) behind aprendiz's KServe V1 and V2 "
             "routes, behind KServe 0.21's own `ModelServer` (a `kserve.Model` subclass in "
             "`benchmarks/kserve_server.py`, onnxruntime in its process, its default logging, one worker) and called "
             "in-process. One row a request. Closed loop: "
             f"{'wrk, one thread, C connections' if _tool(clf) == 'wrk' else 'Python httpx clients'}; "
             f"{s['classifier_rounds']} rounds of {s['classifier_duration_s']:g} s after a "
             f"{s['classifier_warmup_s']:g} s warm-up, targets alternated. Median (min–max).", "",
             "| C | server | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for c in next(iter(clf.values())):
        for name, per_c in clf.items():
            x = per_c[c]
            lines.append(f"| {c} | {name} | {spread(x['rps'], 0)} | {spread(x['p50_ms'], 2)} | "
                         f"{spread(x['p99_ms'], 2)} | {x['errors']} |")
    lines.append(f"| 1 | onnxruntime in-process (floor) | {spread(floor['rps'], 0)} | {spread(floor['p50_ms'], 3)} | "
                 f"{spread(floor['p99_ms'], 3)} | 0 |")
    alone = r["classifier"].get("ingress_floor") or {}
    for c, x in ({} if "skipped" in alone else alone).items():
        lines.append(f"| {c} | aprendiz ingress alone (GET /v2/health/live, no model call) | {spread(x['rps'], 0)} | "
                     f"{spread(x['p50_ms'], 2)} | {spread(x['p99_ms'], 2)} | {x['errors']} |")
    lines += _classifier_targets(clf)
    a1, k1 = clf.get("aprendiz-v1"), clf.get("kserve-v1")
    if a1 and k1:
        c = min(a1, key=int)
        lines += ["", f"The model is not the cost: in-process it answers in {fmt(floor['p50_ms']['median'], 3)} ms. At "
                  f"concurrency {c} aprendiz's V1 p50 is {fmt(a1[c]['p50_ms']['median'], 2)} ms against KServe's "
                  f"{fmt(k1[c]['p50_ms']['median'], 2)} ms. KServe is one uvicorn process that parses the request and "
                  "calls onnxruntime. aprendiz's request goes HAProxy (a process of its own) → the ingress replica's "
                  "HTTP server (uvicorn, Ray Serve's per-request wrapper: request id, queue and ongoing-request "
                  "accounting, a task watching for the client's disconnect, Serve's request metrics) → the app (plain "
                  "Starlette routes for predictions, the gateway's key check and route table, request metrics) → "
                  "onnxruntime in the same process (placement: ingress; a model in a replica of its own adds a "
                  "deployment-handle call, see the classifier-paths section) → back the same way. The profile below "
                  "shows where the ingress replica spends its time."]
    if a1 and alone and "skipped" not in alone:
        hi = max(alone, key=int)
        if hi in a1:
            lines += ["", f"At concurrency {hi} the ingress alone (a GET answered by FastAPI, no model) answers "
                      f"{fmt(alone[hi]['rps']['median'], 0)} req/s (KServe V1 with its model: "
                      f"{fmt(k1[hi]['rps']['median'], 0) if hi in k1 else '–'}), a V1 prediction through it "
                      f"{fmt(a1[hi]['rps']['median'], 0)}."]
    prof = r["classifier"].get("profile")
    if prof:
        lines += profile_lines(prof, title="Where the classifier path's time goes (py-spy)",
                               load=f"a closed loop of {prof.get('concurrency')} clients posted V1 requests")
    return lines


def _tool(clf: dict[str, Any]) -> str | None:
    for per_c in clf.values():
        for x in per_c.values():
            return x.get("tool")
    return None


def _div(a, b):
    return None if a is None or not b else a / b


def _sub(a, b):
    return None if a is None or b is None else a - b


def table_head(*cells: str) -> list[str]:
    return ["| " + " | ".join(cells) + " |", "|" + "---|" * len(cells)]


def failed_row(name: str, error: str, columns: int) -> str:
    """A table row for a variant that failed: its name, the error's end, the other cells empty."""
    return f"| {name} | failed: {error[-200:].replace('|', '/').replace(chr(10), ' ')} |" + " |" * (columns - 2)


def serve_modes_section(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Ray Serve modes and the gateway's own cost", ""] + provenance(r)
    lines += ["Each variant is a fresh `aprendiz serve` (one Ray cluster at a time) measured alternately against "
              "plain vLLM and KServe, both up for the whole section, so every ratio is from the same minutes. "
              "Variants: `default` (as shipped: Serve's HAProxy ingress and throughput mode, "
              "`APRENDIZ_SERVE_INGRESS=haproxy`); `keys` (the same with gateway.keys_file set: every request "
              "authenticated against scrypt-hashed keys, rate-limited through the RateLimiter deployment and "
              "metered); `proxy` (Serve's Python HTTP proxy, `APRENDIZ_SERVE_INGRESS=proxy`, Ray's own default); "
              "`throughput` (that proxy with `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`). Checks: a V1 and a V2 answer "
              "and a streamed chat (events, `[DONE]`, usage) through the variant.", "",
              "| variant | checks | C | output tok/s ratio to vLLM | p50 TTFT Δ ms | aprendiz V1 req/s | V1 p99 ms | "
              "aprendiz V2 req/s | V2 p99 ms | KServe V1 req/s | KServe V1 p99 ms |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        if "error" in v:
            lines.append(failed_row(name, v["error"], 11))
            continue
        checks = v.get("checks", {})
        ok = checks.get("v1_ok") and checks.get("v2_ok") and checks.get("stream", {}).get("ok")
        ratios = v["generator"]["ratios_aprendiz_over_vllm"]
        clf = v["classifier"]
        cs = sorted(set(ratios) | set(next(iter(clf.values()))), key=int)
        for c in cs:
            g = ratios.get(c, {})
            a1, a2, k1 = (clf.get(n, {}).get(c) for n in ("aprendiz-v1", "aprendiz-v2", "kserve-v1"))
            lines.append(
                f"| {name} | {'ok' if ok else 'FAILED'} | {c} | {fmt(g.get('output_throughput'), 2)} | "
                f"{fmt(g.get('p50_ttft_ms_delta'))} | {spread(a1 and a1['rps'], 0)} | {spread(a1 and a1['p99_ms'], 2)} | "
                f"{spread(a2 and a2['rps'], 0)} | {spread(a2 and a2['p99_ms'], 2)} | {spread(k1 and k1['rps'], 0)} | "
                f"{spread(k1 and k1['p99_ms'], 2)} |")
    lines += ["", "### Is HAProxy the right default?", ""] + haproxy_verdict(r["variants"])
    return lines


def stream_batching_section(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Stream batching: adaptive, fixed, off", ""] + provenance(r)
    lines += ["Each mode is a fresh `aprendiz serve` with the generator's `stream_batching` set (window 50 ms), "
              "measured alternately against plain vLLM (up for the whole section) with vLLM's own client, "
              f"{r['settings']['generator_rounds']} rounds at every concurrency; medians with the spread. "
              "`adaptive` sends a chunk that finds the stream quiet for a window (the first, the first after a "
              "pause) at once and batches the chunks behind it within the window; `fixed` is Ray Serve LLM's "
              "batcher (everything every 50 ms, the first token included); `off` sends every token alone.", "",
             ] + table_head("mode", "C", "output tok/s", "ratio to vLLM", "p50 TTFT ms", "vLLM p50 TTFT ms",
                            "p50 TTFT Δ ms", "p50 ITL ms", "p99 ITL ms", "failed")
    for mode, v in r["modes"].items():
        if "error" in v:
            lines.append(failed_row(mode, v["error"], 10))
            continue
        gen, ratios = v["generator"]["results"], v["generator"]["ratios_aprendiz_over_vllm"]
        for c in sorted(gen["aprendiz"], key=int):
            a, b = gen["aprendiz"][c]["figures"], gen["vllm"][c]["figures"]
            lines.append(
                f"| {mode} | {c} | {spread(a['output_throughput'], 0)} | {fmt(ratios[c]['output_throughput'], 3)} | "
                f"{spread(a['p50_ttft_ms'])} | {spread(b['p50_ttft_ms'])} | {fmt(ratios[c]['p50_ttft_ms_delta'])} | "
                f"{spread(a['p50_itl_ms'], 2)} | {spread(a['p99_itl_ms'], 1)} | "
                f"{sum(x.get('failed') or 0 for x in gen['aprendiz'][c]['runs'])} |")
    lines += [""] + stream_batching_verdict(r["modes"])
    return lines


def stream_batching_verdict(modes: dict[str, Any]) -> list[str]:
    """Which mode is the default, from the figures: the best worst-case throughput ratio, TTFT as
    the tie-break."""
    scored = {}
    for mode, v in modes.items():
        ratios = (v.get("generator") or {}).get("ratios_aprendiz_over_vllm") or {}
        if ratios:
            scored[mode] = (min(x["output_throughput"] or 0 for x in ratios.values()),
                            max(x["p50_ttft_ms_delta"] or 0 for x in ratios.values()))
    if not scored:
        return ["No mode was measured."]
    from aprendiz.config import GeneratorModel

    text = "; ".join(f"{m}: worst throughput ratio {fmt(t, 3)}, worst p50 TTFT gap {fmt(d)} ms"
                     for m, (t, d) in scored.items())
    best = max(scored, key=lambda m: (round(scored[m][0], 2), -scored[m][1]))
    shipped = GeneratorModel.model_fields["stream_batching"].default
    return [f"Across the concurrencies, {text}. Best by these figures (throughput ratio to 0.01, then TTFT): "
            f"`{best}`; the shipped default (src/aprendiz/config.py) is `{shipped}`"
            + (": the same." if best == shipped else ": they differ, so the default needs another look.")]


IDLE_TARGET_PCT = 10.0


def idle_section(r: dict[str, Any]) -> list[str]:
    settings = r["settings"]
    lines = ["", "## An idle platform's CPU", ""] + provenance(r)
    lines += [f"`aprendiz serve` with the shipped generator and breast-cancer, after one short load and "
              f"{fmt(settings['settle_s'], 0)} s of rest: the CPU each kind of process used over "
              f"{fmt(settings['sample_s'], 0)} s, in % of one core ({settings['rounds']} round(s), the variants "
              "alternating). `shipped` sets these variables for a local cluster (and the chart for its RayService "
              "pods): " + ", ".join(f"`{k}={v}`" for k, v in settings["shipped_env"].items())
              + "; `Ray's defaults` sets them back to Ray's values. Plain vLLM's server, idle, beside them.", ""]
    variants = r["variants"]
    roles = sorted({role for v in variants.values() for run in v["runs"] for role in run.get("by_process", {})},
                   key=lambda role: -max(run.get("by_process", {}).get(role, {}).get("cpu_pct", 0)
                                         for v in variants.values() for run in v["runs"]))
    lines += table_head("process", *variants)

    def cell(v: dict[str, Any], role: str) -> str:
        values = [run["by_process"][role]["cpu_pct"] for run in v["runs"] if role in run.get("by_process", {})]
        return fmt(sorted(values)[len(values) // 2], 2) if values else "–"

    for role in roles:
        lines.append(f"| {role} | " + " | ".join(cell(v, role) for v in variants.values()) + " |")
    lines.append("| **total** | " + " | ".join(f"**{spread(v['total_pct'])}**" for v in variants.values()) + " |")
    shipped = (variants.get("shipped") or {}).get("total_pct", {}).get("median")
    lines += ["", f"Plain vLLM, idle: {fmt(r['plain_vllm']['total_pct'])}% of a core. Shipped aprendiz: "
              f"{fmt(shipped)}% against the target of {fmt(IDLE_TARGET_PCT, 0)}%: "
              f"{_verdict(None if shipped is None else shipped <= IDLE_TARGET_PCT)}."]
    return lines + idle_threads_lines(variants.get("shipped", {}).get("runs", []), r["plain_vllm"].get("by_thread", []))


IDLE_THREAD_ROWS = 12


def idle_threads_lines(runs: list[dict[str, Any]], plain: list[dict[str, Any]]) -> list[str]:
    """The shipped platform's busiest threads while idle (median over the runs), and what Ray's
    workers' main threads cost together."""
    measured = [run["by_thread"] for run in runs if run.get("by_thread")]
    if not measured:
        return []
    cells: dict[tuple[str, str, bool], list[float]] = {}
    for rows in measured:
        for row in rows:
            cells.setdefault((row["process"], row["thread"], row["main"]), []).append(row["cpu_pct"])

    def median(values: list[float]) -> float:
        values = sorted(values + [0.0] * (len(measured) - len(values)))  # absent from a run's busiest: ~0
        return values[len(values) // 2]

    ranked = sorted(((key, median(v)) for key, v in cells.items()), key=lambda kv: -kv[1])
    main_total = sum(pct for (process, _, main), pct in ranked if main and process.startswith("ray::"))
    lines = ["", "The shipped platform's busiest threads, idle (median over the runs; a thread's name as the kernel "
             "has it, Ray's C++ threads naming themselves):", ""] + table_head("process", "thread", "% of a core")
    for (process, thread, main), pct in ranked[:IDLE_THREAD_ROWS]:
        lines.append(f"| {process} | {'main thread' if main else thread} | {fmt(pct, 2)} |")
    lines += ["", f"Ray workers' main threads together: {fmt(main_total, 2)}% of a core. Each Ray worker's main thread "
              "runs its core worker's task loop, which checks for Python signals every 10 ms (Ray's `CoreWorker::"
              "RunTaskExecutionLoop`, a fixed period with no setting): 100 wake-ups a second, each taking the GIL, "
              "in every actor (the controller, the proxy, the HAProxy manager, each replica). `strace` of the idle "
              "generator replica's main thread (by hand, once, not part of this run) showed `epoll_wait` returning "
              "every 10.1 ms. That cost is Ray's, "
              "and grows with the number of actors, not with traffic."]
    if plain:
        lines += ["", "Plain vLLM's busiest threads, idle: " + ", ".join(
            f"{row['process']} `{'main thread' if row['main'] else row['thread']}` {fmt(row['cpu_pct'], 2)}%"
            for row in plain[:3]) + " (vLLM's engine worker polls its `gloo_tcp_loop` in both servers)."]
    return lines


TOKEN_COST_GROUPS = (
    ("engine", ("VLLM::EngineCore", "VLLM::Worker")),
    ("generator replica", ("LLMServer",)),
    ("ingress", (":Ingress",)),
    ("HAProxy", ("haproxy",)),
    ("API server or driver", ("python",)),
)


def token_cost_group(role: str) -> str:
    """The column a process kind of the token-cost section counts in (Ray's own daemons: the rest)."""
    return next((group for group, markers in TOKEN_COST_GROUPS if any(m in role for m in markers)), "Ray's daemons")


def _token_cost_cells(runs: list[dict[str, Any]]) -> dict[str, float | None]:
    """Median over runs of the CPU ms per output token of each group, the total and the throughput."""
    def median(values: list[float]) -> float | None:
        return sorted(values)[len(values) // 2] if values else None

    per_run = []
    for run in runs:
        groups: dict[str, float] = {}
        for role, entry in run["by_process"].items():
            if entry.get("cpu_ms_per_token") is not None:
                group = token_cost_group(role)
                groups[group] = groups.get(group, 0.0) + entry["cpu_ms_per_token"]
        per_run.append(groups)
    names = [g for g, _ in TOKEN_COST_GROUPS] + ["Ray's daemons"]
    cells = {g: median([x[g] for x in per_run if g in x]) for g in names}
    cells["total"] = median([r["cpu_ms_per_token"] for r in runs if r.get("cpu_ms_per_token") is not None])
    cells["tok/s"] = median([r["figures"]["output_throughput"] for r in runs if r["figures"].get("output_throughput")])
    return cells


def token_cost_section(r: dict[str, Any]) -> list[str]:
    settings = r["settings"]
    lines = ["", "## What a streamed token costs, process by process", ""] + provenance(r)
    lines += [f"vLLM's client at each concurrency ({settings['input_len']} prompt and {settings['output_len']} output "
              "tokens per request), against aprendiz (the shipped generator alone, HAProxy ingress) and plain vLLM, one "
              "server up at a time: the CPU time each kind of process spent over the run, per output token (ms), "
              f"median of {settings['rounds']} run(s). `engine` is vLLM's EngineCore and its worker in both; "
              "`Ray's daemons` are the raylet, GCS, dashboard and its agents, Serve's controller and the log monitor.",
              ""]
    groups = [g for g, _ in TOKEN_COST_GROUPS] + ["Ray's daemons"]
    lines += table_head("concurrency", "server", "output tok/s", "CPU ms/token", *groups)
    for c in map(str, settings["concurrency"]):
        for server in ("aprendiz", "vllm"):
            runs = r["results"].get(server, {}).get(c) or []
            if not runs:
                continue
            cells = _token_cost_cells(runs)
            lines.append(f"| {c} | {server} | {fmt(cells['tok/s'], 0)} | {fmt(cells['total'], 2)} | "
                         + " | ".join(fmt(cells[g], 3) if cells[g] is not None else "–" for g in groups) + " |")
    rows = []
    for c in map(str, settings["concurrency"]):
        a, v = (r["results"].get(s, {}).get(c) or [] for s in ("aprendiz", "vllm"))
        if a and v:
            ca, cv = _token_cost_cells(a), _token_cost_cells(v)
            if ca["total"] and cv["total"] and ca["tok/s"] and cv["tok/s"]:
                rows.append(f"at {c}, {fmt(ca['tok/s'] / cv['tok/s'], 2)} measured against "
                            f"{fmt(cv['total'] / ca['total'], 2)} from the CPU per token")
    if rows:
        lines += ["", "On this machine every process shares the same 2 cores with the engine, whose busy loop takes "
                  "what is left: throughput is about the cores over the CPU a token costs in all, so the throughput "
                  "ratio follows the inverse ratio of CPU per token (" + "; ".join(rows) + "). What aprendiz adds per "
                  "token is the second Python hop (the generator replica does the work of vLLM's API server, and the "
                  "ingress passes each chunk on through a handle's gRPC stream, the gateway and HTTP), HAProxy, and "
                  "Ray's daemons. On a GPU node the engine's step runs on the GPU and the frontend's processes have "
                  "cores of their own, so this CPU competes with nothing; it shows as the TTFT gap instead."]
    lines += profile_lines(r.get("profile") or {}, title="Where the generator replica's and the ingress's time goes "
                           "(py-spy)", load=f"vLLM's client ran {(r.get('profile') or {}).get('concurrency')} "
                           "concurrent streams")
    return lines


def _median(entry: dict[str, Any], target: str, c: str, figure: str = "rps") -> float | None:
    try:
        return entry["classifier"][target][c][figure]["median"]
    except (KeyError, TypeError):
        return None


def haproxy_verdict(variants: dict[str, Any]) -> list[str]:
    """The evidence, computed from the section's figures: classifier requests/s and p99 at the highest
    concurrency and the generator's throughput ratio, HAProxy (the default) against Serve's Python proxy."""
    h, d = variants.get("default", {}), variants.get("proxy", {})
    if "error" in h or "error" in d or not h or not d:
        return [f"Not decided: the {'default' if 'error' in h or not h else 'proxy'} variant did not run "
                "(see the table)."]
    c = max(next(iter(h["classifier"].values())), key=int)
    checks = h.get("checks", {})
    correct = bool(checks.get("v1_ok") and checks.get("v2_ok") and checks.get("stream", {}).get("ok"))
    rps_ratio = _div(_median(h, "aprendiz-v1", c), _median(d, "aprendiz-v1", c))
    p99_h, p99_d = _median(h, "aprendiz-v1", c, "p99_ms"), _median(d, "aprendiz-v1", c, "p99_ms")
    gen_c = max(h["generator"]["ratios_aprendiz_over_vllm"], key=int)
    gen_h = h["generator"]["ratios_aprendiz_over_vllm"][gen_c]["output_throughput"]
    gen_d = d["generator"]["ratios_aprendiz_over_vllm"][gen_c]["output_throughput"]
    faster = rps_ratio is not None and rps_ratio > 1.0 and (gen_h or 0) >= (gen_d or 0) * 0.97
    lines = [
        f"- Classifier V1 at concurrency {c}: HAProxy {fmt(_median(h, 'aprendiz-v1', c), 0)} req/s against "
        f"{fmt(_median(d, 'aprendiz-v1', c), 0)} with Serve's Python proxy ({fmt(rps_ratio, 2)}×), p99 "
        f"{fmt(p99_h, 2)} against {fmt(p99_d, 2)} ms.",
        f"- Generator at concurrency {gen_c}: output tokens/s ratio to plain vLLM {fmt(gen_h, 2)} with HAProxy, "
        f"{fmt(gen_d, 2)} with the Python proxy.",
        f"- Through HAProxy: V1 answer {'ok' if checks.get('v1_ok') else 'WRONG'}, V2 answer "
        f"{'ok' if checks.get('v2_ok') else 'WRONG'}, streamed chat "
        f"{'ok (events, [DONE], usage)' if checks.get('stream', {}).get('ok') else 'WRONG: ' + str(checks.get('stream'))}.",
    ]
    if faster and correct:
        lines += ["", "**HAProxy stays the default**: faster in this run, and correct here and in the whole "
                  "test suite, which runs on it (`make test`). `APRENDIZ_SERVE_INGRESS=proxy` (chart: "
                  "`ray.serveIngress: proxy`) goes back to Serve's Python proxy. The HAProxy ingress binds the "
                  "configured host (loopback by default); HAProxy's own stats and metrics pages (ports 8404 and "
                  "9101, `RAY_SERVE_HAPROXY_STATS_PORT`, `RAY_SERVE_HAPROXY_METRICS_PORT`) listen on every "
                  "interface and show routing figures only, no model API."]
    else:
        lines += ["", "**This run argues against the default**: "
                  + ("HAProxy was not faster." if not faster else "a check through it failed.")
                  + " Set `APRENDIZ_SERVE_INGRESS=proxy` until it is understood."]
    return lines


def batching_section(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Classifier: `@serve.batch` settings", ""] + provenance(r)
    cs = [str(c) for c in r["settings"]["concurrency"]]
    lines += ["V1, classifier-only platform (one classifier replica), a fresh platform per setting; `max_batch_size` "
              "and `batch_wait_timeout_s` are the classifier's config fields (the shipped default is 64 and no wait; it was 2 ms until this "
              "section measured it). "
              "Median (min–max) of the rounds.", "",
              "| max_batch_size / wait | " + " | ".join(f"C={c} req/s | C={c} p50 ms | C={c} p99 ms" for c in cs) + " | errors |",
              "|---|" + "---|---|---|" * len(cs) + "---|"]
    for name, x in r["batching"].items():
        if "error" in x:
            lines.append(f"| {name} | failed: {x['error'][-160:].replace('|', '/').replace(chr(10), ' ')} |")
            continue
        cells = " | ".join(f"{spread(x[c]['rps'], 0)} | {spread(x[c]['p50_ms'], 2)} | {spread(x[c]['p99_ms'], 2)}"
                           for c in cs)
        lines.append(f"| {name} | {cells} | {sum(x[c]['errors'] for c in cs)} |")
    ok = {n: x for n, x in r["batching"].items() if "error" not in x}
    if ok:
        hi = cs[-1]
        best = max(ok, key=lambda n: ok[n][hi]["rps"]["median"] or 0)
        lines += ["", f"Highest requests/s at C={hi}: `{best}`. At C=1 a request waits the whole timeout for "
                  "companions that never come, so the wait is pure latency there; under load the batch fills and "
                  "one onnxruntime call serves many requests."]
    return lines


def cold_start_section(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Cold start per model kind", ""] + provenance(r)
    lines += [f"A platform serving one kind of model, started {r['settings']['repeats']} times each: `ready` is "
              "from `aprendiz serve` to its banner and `/readyz` 200 (Ray up, every replica healthy), `first "
              "answer` to the first 200 from that model. Median (min–max).", "",
              "| kind | ready s | first answer s | failed starts |", "|---|---|---|---|"]
    names = {"classifier": "tabular classifier (breast-cancer, ONNX)",
             "text-classifier": "text classifier (es-or-en: MiniLM tokenizer + ONNX)",
             "generator": "generator (tiny Llama on vLLM, CPU)",
             "plain-vllm": "plain vLLM, the same checkpoint and engine settings (its OpenAI server)"}
    for kind, x in r["kinds"].items():
        failed = sum(1 for run in x["runs"] if "error" in run)
        lines.append(f"| {names.get(kind, kind)} | {spread(x['ready_s'])} | {spread(x['first_answer_s'])} | {failed} |")
    generator = (r["kinds"].get("generator") or {}).get("first_answer_s", {}).get("median")
    plain = (r["kinds"].get("plain-vllm") or {}).get("first_answer_s", {}).get("median")
    if generator is not None:
        lines += ["", f"The generator's first answer: {fmt(generator)} s against the target of "
                  f"{fmt(COLD_START_TARGET_S, 0)} s: {_verdict(generator <= COLD_START_TARGET_S)}"
                  + (f"; plain vLLM's own, on the same machine in the same run: {fmt(plain)} s "
                     f"({fmt(generator - plain)} s more for aprendiz)." if plain is not None else ".")]
    lines += start_stage_lines(r) + start_cpu_lines(r) + GPU_START_EXPECTATION
    return lines


COLD_START_TARGET_S = 30.0
# What a start spends its CPU on: the process kinds of start_cpu_lines' table (Ray's own: the rest).
START_CPU_GROUPS = (
    ("engine (EngineCore and worker)", ("VLLM::EngineCore", "VLLM::Worker")),
    ("generator replica", ("LLMServer",)),
    ("ingress replica", (":Ingress",)),
    ("Serve's controller, proxy, HAProxy", ("ServeController", "ProxyActor", "HAProxyManager", "haproxy")),
    ("`aprendiz serve` or vLLM's API server", ("python",)),
)


def start_cpu_lines(r: dict[str, Any]) -> list[str]:
    """The CPU seconds each kind of process had used by the first answer, generator platform against
    plain vLLM (median over runs), and the cores busy on average."""
    kinds = [(name, [run for run in (r["kinds"].get(kind) or {}).get("runs", []) if run.get("cpu_s")])
             for kind, name in (("generator", "aprendiz"), ("plain-vllm", "plain vLLM"))]
    kinds = [(name, runs) for name, runs in kinds if runs]
    if not kinds:
        return []
    groups = [g for g, _ in START_CPU_GROUPS] + ["Ray's daemons"]

    def group_of(role: str) -> str:
        return next((g for g, markers in START_CPU_GROUPS if any(m in role for m in markers)), "Ray's daemons")

    def median(values: list[float]) -> float | None:
        return statistics.median(values) if values else None

    lines = ["", "CPU seconds each kind of process had used by the first answer (processes still running then; "
             "median over the starts), and the cores busy on average (all the CPU over the wall time). Every "
             "Python process of the start (`aprendiz serve`, the ingress and generator replicas, vLLM's engine and "
             "worker; vLLM's API server, engine and worker) imports torch and vLLM, about 8 s of one core each here.",
             ""] + table_head("server", *groups, "all", "first answer s", "cores busy")
    for name, runs in kinds:
        per_run = []
        for run in runs:
            cells: dict[str, float] = {}
            for role, entry in run["cpu_s"].items():
                cells[group_of(role)] = cells.get(group_of(role), 0.0) + entry["cpu_s"]
            per_run.append(cells)
        cells = {g: median([x[g] for x in per_run if g in x]) for g in groups}
        total = median([sum(x.values()) for x in per_run])
        wall = median([run["first_answer_s"] for run in runs])
        busy = total / wall if total is not None and wall else None
        lines.append(f"| {name} | " + " | ".join(fmt(cells[g]) for g in groups)
                     + f" | {fmt(total)} | {fmt(wall)} | {fmt(busy, 2)} |")
    return lines


# Not measured here (no GPU): what public figures say a GPU start spends, marked as such.
GPU_START_EXPECTATION = [
    "", "**On a GPU (public figures, not measured here).** The start is the same chain, with two stages that "
    "grow with the model and one that the CPU engine does not have: loading the weights, `torch.compile`, and "
    "CUDA graph capture (Ray Serve LLM's *Deployment Initialization* guide lists them, with node provisioning and "
    "the image pull before them). What aprendiz does about each:",
    "",
    "- Weights: an `s3://` or `gs://` source on GPU is read by vLLM's Run:ai model streamer (`load_format: "
    "runai_streamer`, the default there; README, *Weights streamed from the store*). NVIDIA's published benchmark "
    "(Run:ai Model Streamer whitepaper, Llama 3 8B on an A10G, AWS g5.12xlarge) loaded the weights in 14.3 s "
    "from a GP3 SSD against 48.0 s with vLLM's default safetensors loader, and in 7.5 s from an IO2 SSD; it "
    "reports the largest gains from S3, where the default path first downloads the files. Those are their "
    "figures, for their model and storage.",
    "- `torch.compile`: the compile cache on a volume (`ray.compileCache.existingClaim` in the chart) is loaded "
    "instead of compiling again. vLLM's torch.compile design notes say the cache directory can be copied to a "
    "deployment for that reason; Baseten's documentation of the same kind of cache puts a start that loads it at "
    "about 5-20 s of compilation, depending on the model. Here, on CPU, compiling again cost 16 s of the tiny "
    "model's start (measured, before the cache was made to load).",
    "- The fixed part (Ray, Serve, the replica's and the engine's imports) is the same code as measured above, "
    "on nodes with more cores, so it runs with less contention than on these 2 cores.",
]


def start_stage_lines(r: dict[str, Any]) -> list[str]:
    """The generator platform's start, stage by stage (seconds from `aprendiz serve`), per run."""
    runs = [run for run in (r["kinds"].get("generator") or {}).get("runs", []) if run.get("stages")]
    if not runs:
        return []
    stages = list(runs[0]["stages"])
    lines = ["", "The generator platform's start, stage by stage: seconds from `aprendiz serve` to each stage's first "
             "line in its log (Ray up; Serve up; vLLM's engine process started; its worker process loading the "
             "model; the engine initialised, compile cache included; the replica's engine started; the "
             "application ready).", ""] + table_head("run", *stages, "first answer")
    for i, run in enumerate(runs, 1):
        lines.append(f"| {i} | " + " | ".join(fmt(run["stages"].get(s)) for s in stages)
                     + f" | {fmt(run['first_answer_s'])} |")
    return lines


def replicas_section(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Classifier replicas and a model swap under load", ""] + provenance(r)
    lines += [f"V1 at concurrency {r['concurrency']}, classifier-only platform, the classifier in replicas of its own "
              "(placement: replica), replicas fixed.", "",
              "| replicas | requests/s | p50 ms | p99 ms | cold start s |", "|---|---|---|---|---|"]
    for n, x in r["replicas"].items():
        lines.append(f"| {n} | {spread(x['rps'], 0)} | {spread(x['p50_ms'], 2)} | {spread(x['p99_ms'], 2)} | {fmt(x['ready_s'])} |")
    s = r.get("swap") or {}
    if s:  # results from before the swap moved to the classifier-paths section
        lines += ["", f"Model swap under load (1 replica, concurrency 8, a new champion promoted while loaded): "
                  f"p50 {fmt(s['before']['p50_ms'], 2)} ms / p99 {fmt(s['before']['p99_ms'], 2)} ms before, "
                  f"p50 {fmt(s['during']['p50_ms'], 2)} ms / p99 {fmt(s['during']['p99_ms'], 2)} ms during; "
                  f"swapped: {s['swapped']}; failed requests: {s['failed_requests']}."]
    return lines


def _variant_rows(variants: dict[str, Any], columns: int, blank: int, row) -> list[str]:
    """One table row per point each variant was measured at against KServe (``row(name, variant,
    protocol, concurrency, aprendiz's figures, KServe's)``), or, for a variant that failed, one row of
    ``columns`` cells: its name, ``blank`` dashes, the failure."""
    lines = []
    for name, v in variants.items():
        if "error" in v:
            lines.append(f"| {name} | " + "– | " * blank + f"failed: {v['error'][-200:]} |" + " |" * (columns - blank - 2))
            continue
        lines += [row(name, v, proto, c, a, k) for proto, c, a, k in _against_kserve(v["classifier"])]
    return lines


def classifier_paths_section(r: dict[str, Any]) -> list[str]:
    s = r["settings"]
    lines = ["", "## Classifier paths: in the ingress, with API keys, 2 ingress replicas, a replica of its own", ""]
    lines += provenance(r)
    lines += ["Classifier-only platforms (no generator), one at a time, each against KServe's ModelServer taking "
              f"turns in the same run. One row a request; {s['classifier_rounds']} rounds of "
              f"{s['classifier_duration_s']:g} s after a {s['classifier_warmup_s']:g} s warm-up. Median (min–max).", "",
              "| variant | placement | C | protocol | aprendiz requests/s | KServe requests/s | ratio | aprendiz p50 / p99 ms "
              "| KServe p50 / p99 ms | p99 target | errors |", "|---|---|---|---|---|---|---|---|---|---|---|"]

    def row(name, v, proto, c, a, k) -> str:
        p99_ok = (a["p99_ms"]["median"] or 0) <= (k["p99_ms"]["median"] or 0)
        return (f"| {name} | {v.get('placement')} | {c} | {proto.upper()} | {spread(a['rps'], 0)} | "
                f"{spread(k['rps'], 0)} | {fmt(_div(a['rps']['median'], k['rps']['median']), 2)} | "
                f"{fmt(a['p50_ms']['median'], 2)} / {fmt(a['p99_ms']['median'], 2)} | "
                f"{fmt(k['p50_ms']['median'], 2)} / {fmt(k['p99_ms']['median'], 2)} | {_verdict(p99_ok)} | "
                f"{a['errors']} |")

    lines += _variant_rows(r["variants"], 11, 3, row)
    swap = (r["variants"].get("ingress") or {}).get("swap")
    if swap:
        lines += ["", f"Model swap under load with the model in the ingress (concurrency 8, a new champion promoted "
                  f"while loaded, the ingress polling every 5 s): p50 {fmt(swap['before']['p50_ms'], 2)} ms / p99 "
                  f"{fmt(swap['before']['p99_ms'], 2)} ms before, p50 {fmt(swap['during']['p50_ms'], 2)} ms / p99 "
                  f"{fmt(swap['during']['p99_ms'], 2)} ms during; swapped: {swap['swapped']}; failed requests: "
                  f"{swap['failed_requests']}."]
    batching = r.get("ingress_batching")
    if batching:
        lines += ["", "Batching in the ingress: the classifier service's own work a request (decode, onnxruntime, "
                  "encode, metrics), in one process, inline against `@serve.batch` (64, no wait), µs a request:", "",
                  "| concurrent requests | inline | @serve.batch |", "|---|---|---|"]
        for c in ("1", "32"):
            lines.append(f"| {c} | {spread(batching['inline'][c], 1)} | {spread(batching['serve.batch'][c], 1)} |")
    text = r.get("text") or {}
    if "results" in text:
        lines += ["", "Text classifiers, es-or-en trained as each kind by the training job, one text a V1 request, "
                  "the two models taking turns on one platform:", "",
                  "| model | placement | C | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|---|"]
        for model, per_c in text["results"].items():
            for c, x in per_c.items():
                lines.append(f"| {model} | {text.get(model, {}).get('placement')} | {c} | {spread(x['rps'], 0)} | "
                             f"{spread(x['p50_ms'], 2)} | {spread(x['p99_ms'], 2)} | {x['errors']} |")
    elif "error" in text:
        lines += ["", f"Text classifiers: failed: {text['error'][-300:]}"]
    return lines


def gc_threshold_section(r: dict[str, Any]) -> list[str]:
    s = r["settings"]
    lines = ["", "## The ingress's garbage collector: the classifier path's tail", ""]
    lines += provenance(r)
    lines += [
        "Serve collects and freezes a replica's heap once its constructor returns, so startup objects are not "
        "scanned again. What remained of the tail was the request path's own allocations: with Python's young "
        "threshold (700), the ingress ran a full collection about twice a second under load at concurrency 32. "
        "A probe in the ingress replica (a `gc.callbacks` timer and a 1 ms `asyncio.sleep` lag timer, temporary "
        "instrumentation, 2026-12-02) saw each such collection take 8–12 ms in the collector and the replica's "
        "event loop stall 85–110 ms around it, twice a second: in that run the p99 at concurrency 32 was that stall (V2: 93–105 ms). With the young threshold "
        "at 50000 (`ingress.gc_young_threshold`, the shipped default) no collection ran during the measured "
        "load and the stalls went, apart from one about 100 ms stall at the end of a run.",
        "",
        f"The model in the ingress, one ingress replica, against KServe's ModelServer taking turns; "
        f"{s['classifier_rounds']} rounds of {s['classifier_duration_s']:g} s after a "
        f"{s['classifier_warmup_s']:g} s warm-up, wrk. Median (min–max).", "",
        "| young threshold | C | protocol | aprendiz requests/s | KServe requests/s | ratio | aprendiz p50 / p99 ms "
        "| KServe p50 / p99 ms | errors |", "|---|---|---|---|---|---|---|---|---|"]

    def row(name, v, proto, c, a, k) -> str:
        return (f"| {name} | {c} | {proto.upper()} | {spread(a['rps'], 0)} | {spread(k['rps'], 0)} | "
                f"{fmt(_div(a['rps']['median'], k['rps']['median']), 2)} | {fmt(a['p50_ms']['median'], 2)} / "
                f"{spread(a['p99_ms'], 2)} | {fmt(k['p50_ms']['median'], 2)} / {spread(k['p99_ms'], 2)} | "
                f"{a['errors']} |")

    lines += _variant_rows(r["variants"], 9, 2, row)
    variants = [v for v in r["variants"].values() if "classifier" in v]
    if len(variants) == 2:
        shipped, python = (dict(((p, c), (a["p99_ms"]["median"], a["rps"]["median"]))
                                for p, c, a, _ in _against_kserve(v["classifier"])) for v in variants)
        top = max(c for _, c in shipped)
        lines += ["", f"In this run, at concurrency {top}: " + "; ".join(
            f"{p.upper()} p99 {fmt(shipped[(p, top)][0], 2)} ms with the shipped threshold against "
            f"{fmt(python[(p, top)][0], 2)} ms with Python's ({fmt(shipped[(p, top)][1], 0)} against "
            f"{fmt(python[(p, top)][1], 0)} requests/s)" for p in ("v1", "v2") if (p, top) in shipped and (p, top) in python) + "."]
    lines += ["", "At concurrency 1, V1, the Python client (httpx, one request at a time) as a second opinion on "
              "wrk's tail (an earlier ad-hoc run, with the probe in the ingress, had wrk report a 30–60 ms p99 at "
              "concurrency 1 whose mean times its request count exceeded the run's duration):", "",
              "| young threshold | server | requests/s | p50 ms | p99 ms | errors |", "|---|---|---|---|---|---|"]
    for name, v in r["variants"].items():
        for server, x in (v.get("python_client_c1") or {}).items():
            lines.append(f"| {name} | {server} | {spread(x['rps'], 0)} | {spread(x['p50_ms'], 2)} | "
                         f"{spread(x['p99_ms'], 2)} | {x['errors']} |")
    return lines


TRAINING_TARGET_S = 180.0  # issue #17: 1M rows x 30 features, every default candidate, within 3 minutes
GROWTH_PNG = "training-growth.png"


def training_section(r: dict[str, Any]) -> list[str]:
    lines = ["", "## Training: wall time and peak memory against rows", ""] + provenance(r)
    st = r["settings"]
    lines += [f"The training job (`run_training`, the default tabular candidates) on a synthetic set of "
              f"{st['features']} features (scikit-learn's `make_classification`), each size in its own process; "
              f"{st['repeats']} runs each ({st.get('large_repeats', 1)} at the largest size). Per-candidate fit "
              "seconds include each candidate's small grid search. Peak RSS is the worker process's maximum, the "
              "job's imports included (most of the smallest size's figure).", ""]
    names = sorted({n for x in r["rows"].values() for n in x["fit_seconds"]})
    lines += ["| rows | wall s | peak RSS MiB | " + " | ".join(f"{n} fit s" for n in names) + " |",
              "|---|---|---|" + "---|" * len(names)]
    for rows, x in r["rows"].items():
        cells = " | ".join("left out" if n in x.get("without", []) else spread(x["fit_seconds"].get(n), 2)
                           for n in names)
        lines.append(f"| {int(rows):,} | {spread(x['wall_s'])} | {spread(x['peak_rss_mib'], 0)} | {cells} |")
    million = r["rows"].get("1000000")
    if million and million["wall_s"].get("median") is not None and not million.get("without"):
        median = million["wall_s"]["median"]
        lines += ["", f"1M rows x {st['features']} features with every default candidate: median "
                  f"{fmt(median)} s against the target of {fmt(TRAINING_TARGET_S, 0)} s: "
                  f"{_verdict(median <= TRAINING_TARGET_S)}."]
    large = [f"{int(rows):,}" for rows, x in r["rows"].items() if x.get("without")]
    if large:
        lines += ["", f"{', '.join(large)} rows: without "
                  f"{', '.join(sorted({n for x in r['rows'].values() for n in x.get('without', [])}))}."]
    for rows, x in (r.get("ray_local") or {}).items():
        inprocess = (r["rows"].get(rows) or {}).get("wall_s", {}).get("median")
        lines += ["", f"The same {int(rows):,} rows with the candidates' grid points as Ray tasks on a local Ray "
                  f"(`aprendiz train --ray local`, one run): {spread(x['wall_s'])} s, against {fmt(inprocess)} s in "
                  "one process. On 2 cores the tasks contend for the same CPUs and Ray's start is paid; the Ray "
                  "path is for a cluster (the chart's RayJob), not for one small machine."]
    lines += distributed_lines(r)
    if _growth_plot(r):
        lines += ["", f"![Training time and memory against rows]({GROWTH_PNG})"]
    return lines


def distributed_lines(r: dict[str, Any]) -> list[str]:
    runs = {rows: x["runs"][0] for rows, x in (r.get("distributed") or {}).items() if x["runs"] and
            "error" not in x["runs"][0]}
    if not runs:
        return []
    st = r["settings"]
    lines = ["", "### Beyond one machine: Parquet shards, Ray Data and Ray Train", "",
             f"The distributed path (`distributed:` in training.yaml): the rows generated as Parquet shards of "
             f"{st.get('shard_rows', 0):,} rows in a local store, read and encoded by Ray Data, one XGBoost (200 trees "
             f"of depth 6) fit by Ray Train's XGBoostTrainer with {st.get('distributed_workers')} workers, scored on "
             "every validation and test row where the rows are. One run per size, on a local Ray with this machine's "
             "2 CPUs. Memory is sampled every 0.5 s in every process of the run; *private* is resident minus shared "
             "pages (the object store's shared memory counts in every process that maps it).", "",
             "| rows | Parquet MiB | model matrix MiB | wall s | Ray Train fit s | ROC AUC | rows per worker | "
             "job (driver) private MiB | largest private MiB (process) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for rows, run in runs.items():
        (candidate,) = run["candidates"].values()
        processes = run.get("processes") or {}
        driver = (processes.get("job (driver)") or {}).get("peak_private_mib")
        role, largest = max(((k, v["peak_private_mib"]) for k, v in processes.items() if k != "job (driver)"),
                            key=lambda kv: kv[1], default=("–", None))
        lines.append(f"| {int(rows):,} | {fmt(run['parquet_mib'], 0)} | {fmt(run['matrix_mib'], 0)} | "
                     f"{fmt(run['wall_s'])} | {fmt(candidate['fit_seconds'])} | {fmt(candidate['roc_auc'], 4)} | "
                     f"{' + '.join(f'{w:,}' for w in candidate['worker_rows'])} | {fmt(driver, 0)} | "
                     f"{fmt(largest, 0)} ({role}) |")
    rows, run = max(runs.items(), key=lambda kv: int(kv[0]))
    processes = run.get("processes") or {}
    lines += ["", f"Every process of the {int(rows):,}-row run, by kind (the highest peak among processes of a kind):",
              "", "| process | count | peak RSS MiB | peak private MiB |", "|---|---|---|---|"]
    lines += [f"| {k} | {v['processes']} | {fmt(v['peak_rss_mib'], 0)} | {fmt(v['peak_private_mib'], 0)} |"
              for k, v in processes.items()]
    private = [v["peak_private_mib"] for v in processes.values()]
    if private:
        bounded = max(private) < run["matrix_mib"]
        lines += ["", f"Bounded: no process held more than {fmt(max(private), 0)} MiB of its own, against "
                  f"{fmt(run['matrix_mib'], 0)} MiB for the model matrix alone: {_verdict(bounded)}. The job's "
                  "process holds labels and probabilities only; a Ray Train worker holds its share of the training "
                  "rows (and XGBoost's quantised copy); Ray Data's workers hold a block at a time. The rows "
                  "themselves sit in Ray's object store, which a cluster spreads over its nodes."]
    return lines


def _growth_plot(r: dict[str, Any], folder: Path = DOC.parent) -> bool:
    """docs/training-growth.png: wall time and peak memory against rows, in one process and distributed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inprocess = [(int(k), x["wall_s"]["median"], x["peak_rss_mib"]["median"]) for k, x in r["rows"].items()
                 if x["wall_s"].get("median") is not None]
    distributed = []
    for k, x in (r.get("distributed") or {}).items():
        ok = [run for run in x["runs"] if "error" not in run]
        if ok:
            largest = max((v["peak_private_mib"] for v in (ok[0].get("processes") or {}).values()), default=None)
            distributed.append((int(k), ok[0]["wall_s"], largest))
    if not inprocess:
        return False
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for series, label, marker in ((inprocess, "one process (default candidates; RSS)", "o"),
                                  (distributed, "distributed (XGBoost, Ray Train, 2 workers;\nlargest private)", "s")):
        if series:
            left.plot([s[0] for s in series], [s[1] for s in series], marker=marker, label=label)
            right.plot([s[0] for s in series], [s[2] for s in series], marker=marker, label=label)
    left.set(xscale="log", yscale="log", xlabel="rows", ylabel="wall s (median)", title="Training time")
    right.set(xscale="log", yscale="log", xlabel="rows", ylabel="MiB",
              title="Peak memory per process")
    for axis in (left, right):
        axis.grid(True, which="both", alpha=0.3)
        axis.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(folder / GROWTH_PNG, dpi=100)
    plt.close(fig)
    return True


NOT_YET = [
    "`RAY_SERVE_LLM_ENABLE_DIRECT_STREAMING`: not measured; it streams from the generator replica to the client "
    "without the ingress, which would bypass the gateway's keys, limits and metering.",
    "The same number of cores for each server is by sharing the machine's 2 cores, not by pinning (taskset).",
    "The token-cost section is one quick run on a machine whose figures moved by a fifth between runs (plain vLLM "
    "at concurrency 64: 1,065 and 1,349 tok/s); `--only token-cost` without `--quick` takes two rounds.",
    "The stream-batching and token-cost sections were measured before the peers ran at Ray's worker niceness "
    "(plain vLLM at nice 0, aprendiz's replicas and engine at 15, the load generator at 0 on the same cores): "
    "their ratios lean against aprendiz; the generator head-to-head above is the fair one.",
    "Cold start of a GPU generator (weights streamed from the store, the compile cache on a volume): no GPU here; "
    "the cold-start section quotes public figures instead.",
]


def write_report(results: dict[str, dict[str, Any]] | None = None, path: Path = DOC) -> Path:
    results = load_results() if results is None else results
    lines = [
        "# Benchmarks",
        "",
        "<!-- Generated by `python -m benchmarks.report` from benchmarks/results/*.json; do not edit. -->",
        "",
        "`make bench` runs everything (about an hour here) and `make bench-quick` a shorter set (generator and "
        "classifier head to head, training at 1k and 10k rows); both rewrite the JSON results in `benchmarks/results/` and this page from "
        "them. `make test` runs only a smoke of the harness (tests/benchmarks). The harness waits until no other "
        "Ray cluster or pytest run is on the machine (up to 10 minutes) and records whether it was idle.",
        "",
        "Every figure is the median of several runs after a warm-up, with the spread (min–max) beside it; "
        "ratios compare figures measured in the same run, the servers taking turns. "
        "`aprendiz cost --benchmark benchmarks/results/cost-input.json` prices the hosted model at the measured peak.",
    ]
    if "head" in results:
        lines += [""] + head_section(results["head"])
    if "classifier-paths" in results:
        lines += classifier_paths_section(results["classifier-paths"])
    if "serve-modes" in results:
        lines += serve_modes_section(results["serve-modes"])
    if "stream-batching" in results:
        lines += stream_batching_section(results["stream-batching"])
    if "token-cost" in results:
        lines += token_cost_section(results["token-cost"])
    if "idle" in results:
        lines += idle_section(results["idle"])
    if "replicas" in results:
        lines += replicas_section(results["replicas"])
    if "batching" in results:
        lines += batching_section(results["batching"])
    if "cold-start" in results:
        lines += cold_start_section(results["cold-start"])
    if "gc-threshold" in results:
        lines += gc_threshold_section(results["gc-threshold"])
    if "training" in results:
        lines += training_section(results["training"])
    missing = [name for name in ("head", "classifier-paths", "gc-threshold", "serve-modes", "stream-batching", "token-cost", "idle",
                                 "replicas", "batching", "cold-start", "training")
               if name not in results]
    lines += ["", "## Not measured yet", ""]
    lines += [f"- Section `{m}`: no result file yet (`python -m benchmarks.run --only {m}`)." for m in missing]
    lines += [f"- {x}" for x in NOT_YET]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")
    return path


if __name__ == "__main__":
    print(write_report())
