"""Generator measurements: vLLM's benchmark client against aprendiz and plain vLLM, alternated;
streaming against non-streaming; the profile of the ingress under load."""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

from benchmarks import vllm_bench
from benchmarks.common import WORK, cpu_during, summary
from benchmarks.loadgen import http_post_factory, run_closed_loop
from benchmarks.servers import MODEL_ID, model_path

INPUT_LEN = 128
OUTPUT_LEN = 64
FIGURES = ("output_throughput", "request_throughput", "total_token_throughput",
           "p50_ttft_ms", "p99_ttft_ms", "p50_tpot_ms", "p99_tpot_ms", "p50_itl_ms", "p99_itl_ms",
           "p50_e2el_ms", "p99_e2el_ms", "failed")


def prompts_for(concurrency: int, quick: bool) -> int:
    """Enough requests that every client sends several (at least 2 waves beyond the engine's batch)."""
    return max(8 if quick else 12, concurrency * (3 if quick else 4))


def one_run(url: str, concurrency: int, *, quick: bool, seed: int, api_key: str | None = None) -> dict[str, Any]:
    argv = vllm_bench.bench_args(
        base_url=url, model=MODEL_ID, tokenizer=str(model_path()), concurrency=concurrency,
        num_prompts=prompts_for(concurrency, quick), input_len=INPUT_LEN, output_len=OUTPUT_LEN, seed=seed,
    )
    return vllm_bench.run(argv, api_key=api_key)


def alternated(targets: dict[str, tuple[str, str | None]], concurrencies: list[int], rounds: int, *, quick: bool,
               log=print) -> dict[str, Any]:
    """``targets``: name -> (base URL, API key). Each round runs every target at every concurrency,
    the targets' order reversed every other round; returns per target and concurrency the runs
    and their median/min/max for each figure."""
    runs: dict[str, dict[int, list[dict[str, Any]]]] = {t: {c: [] for c in concurrencies} for t in targets}
    names = list(targets)
    for r in range(rounds):
        for c in concurrencies:
            for name in names if r % 2 == 0 else list(reversed(names)):
                url, key = targets[name]
                result = one_run(url, c, quick=quick, seed=r, api_key=key)
                runs[name][c].append(result)
                log(f"bench: generator {name} c={c} round {r + 1}/{rounds}: "
                    f"{result['output_throughput']:.0f} tok/s, p50 TTFT {result['p50_ttft_ms']:.1f} ms, "
                    f"failed {result['failed']}")
    return {
        name: {
            str(c): {"figures": {f: summary([x.get(f) for x in runs[name][c]]) for f in FIGURES},
                     "runs": runs[name][c]}
            for c in concurrencies
        }
        for name in names
    }


# The generator's targets against plain vLLM (issue #21), measured in one run: output tokens/s at
# least 0.95 of vLLM's; p50 TTFT within 5 ms of vLLM's at concurrency 1 and within 10 % of it above.
THROUGHPUT_TARGET = 0.95


def ttft_limit_ms(concurrency: int | str, vllm_p50_ttft_ms: float | None) -> float | None:
    """How far aprendiz's p50 TTFT may be above plain vLLM's at ``concurrency`` (ms)."""
    if int(concurrency) == 1:
        return 5.0
    return None if vllm_p50_ttft_ms is None else 0.1 * vllm_p50_ttft_ms


def short_of_targets(results: dict[str, Any], ratio: dict[str, Any], *, baseline: str = "vllm") -> bool:
    """Whether any concurrency misses the throughput or the TTFT target."""
    for c, x in ratio.items():
        limit = ttft_limit_ms(c, results[baseline][c]["figures"]["p50_ttft_ms"]["median"])
        if (x["output_throughput"] or 0) < THROUGHPUT_TARGET or (
                limit is not None and (x["p50_ttft_ms_delta"] or 0) > limit):
            return True
    return False


def ratios(results: dict[str, Any], numerator: str, denominator: str) -> dict[str, Any]:
    """numerator/denominator of the medians, per concurrency; TTFT as a difference in ms."""
    out = {}
    for c, data in results[numerator].items():
        a, b = data["figures"], results[denominator][c]["figures"]
        out[c] = {
            "output_throughput": _div(a["output_throughput"]["median"], b["output_throughput"]["median"]),
            "request_throughput": _div(a["request_throughput"]["median"], b["request_throughput"]["median"]),
            "p50_ttft_ms_delta": _sub(a["p50_ttft_ms"]["median"], b["p50_ttft_ms"]["median"]),
            "p50_tpot_ms_delta": _sub(a["p50_tpot_ms"]["median"], b["p50_tpot_ms"]["median"]),
        }
    return out


def _div(a, b):
    return None if a is None or not b else a / b


def _sub(a, b):
    return None if a is None or b is None else a - b


def streaming(targets: dict[str, tuple[str, str | None]], concurrencies: list[int], rounds: int, duration_s: float,
              log=print) -> dict[str, Any]:
    """Completed requests/s and end-to-end latency of the same completion, streamed and not."""
    out: dict[str, Any] = {}
    names = list(targets)
    raw: dict[tuple, list] = {}
    for r in range(rounds):
        for c in concurrencies:
            for name in names if r % 2 == 0 else list(reversed(names)):
                url, key = targets[name]
                for stream in (True, False):
                    body = {"model": MODEL_ID, "prompt": "Hola, ¿cómo estás? " * 8, "max_tokens": OUTPUT_LEN,
                            "ignore_eos": True, "stream": stream}
                    headers = {"Authorization": f"Bearer {key}"} if key else {}
                    result = run_closed_loop(
                        http_post_factory(f"{url}/v1/completions", json.dumps(body).encode(), headers, stream=stream),
                        concurrency=c, duration_s=duration_s, warmup_s=1.0,
                    )
                    raw.setdefault((name, c, stream), []).append(result)
                    log(f"bench: {'stream' if stream else 'no-stream'} {name} c={c}: {result['rps']:.1f} req/s, "
                        f"p50 {result['p50_ms']:.0f} ms, errors {result['errors']}")
    for (name, c, stream), results in raw.items():
        out.setdefault(name, {}).setdefault(str(c), {})["stream" if stream else "no_stream"] = {
            "rps": summary([x["rps"] for x in results]),
            "p50_ms": summary([x["p50_ms"] for x in results]),
            "p99_ms": summary([x["p99_ms"] for x in results]),
            "errors": sum(x["errors"] for x in results),
        }
    return out


def token_cost(server, url: str, concurrency: int, *, seed: int, api_key: str | None = None) -> dict[str, Any]:
    """One run of vLLM's client at ``concurrency``: its figures, and the CPU each kind of the server's
    processes spent per output token (ms), and as a share of a core over the run."""
    result, roles, elapsed = cpu_during(
        server.server.pids, lambda: one_run(url, concurrency, quick=False, seed=seed, api_key=api_key)
    )
    tokens = result.get("total_output_tokens") or 0
    per_role = {
        role: {"processes": e["processes"], "cpu_pct": round(100 * e["cpu_s"] / elapsed, 1),
               "cpu_ms_per_token": round(1000 * e["cpu_s"] / tokens, 3) if tokens else None}
        for role, e in roles.items()
    }
    total = sum(e["cpu_s"] for e in roles.values())
    return {"figures": result, "seconds": round(elapsed, 2), "by_process": per_role,
            "cpu_ms_per_token": round(1000 * total / tokens, 3) if tokens else None}


def profile_ingress(server, url: str, *, seconds: int = 8, concurrency: int = 16, log=print) -> dict[str, Any]:
    """py-spy on the ingress replica and Serve's Python proxy (absent from the path under HAProxy)
    while vLLM's client runs ``concurrency`` streams."""
    report = profile_processes(
        server, {"ingress": "ServeReplica:aprendiz:Ingress", "proxy": "ProxyActor"},
        lambda: one_run(url, concurrency, quick=True, seed=99), seconds=seconds, log=log,
    )
    return {**report, "concurrency": concurrency}


def profile_processes(server, wanted: dict[str, str], load, *, seconds: int = 8, log=print) -> dict[str, Any]:
    """py-spy on the processes whose command line holds each marker of ``wanted`` (role -> marker)
    while ``load()`` runs in a thread: the functions most often on the stack (inclusive) and at its
    top (self), idle waits excluded."""
    import shutil
    import threading

    import psutil

    py_spy = shutil.which("py-spy") or str(Path(__file__).resolve().parent.parent / ".venv" / "bin" / "py-spy")
    if not Path(py_spy).exists():
        return {"skipped": "py-spy is not installed (pip install py-spy)"}
    pids: dict[str, int] = {}
    for pid in server.server.pids():
        try:
            cmd = " ".join(psutil.Process(pid).cmdline())
        except psutil.NoSuchProcess:
            continue
        for role, marker in wanted.items():
            if marker in cmd and role not in pids:
                pids[role] = pid
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(2)
    procs = {}
    for role, pid in pids.items():
        out = WORK / f"py-spy-{role}.txt"
        procs[role] = (subprocess.Popen(
            [py_spy, "record", "--pid", str(pid), "--duration", str(seconds), "--rate", "200", "--format", "raw",
             "--nonblocking", "--output", str(out)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        ), out)
    report: dict[str, Any] = {"pids": pids, "seconds": seconds}
    for role, (proc, out) in procs.items():
        _, err = proc.communicate(timeout=seconds + 60)
        if proc.returncode != 0 or not out.exists():
            report[role] = {"error": err.decode(errors="replace")[-500:]}
            continue
        report[role] = summarize_collapsed(out.read_text())
    worker.join(timeout=120)
    log(f"bench: profiled {sorted(pids)}")
    return report


IDLE_MARKERS = ("select (selectors.py", "_run_once (asyncio", "epoll", "wait (threading.py", "_worker (concurrent",
                "poll (selectors.py", "main_loop (ray", "sleep (")


def summarize_collapsed(text: str, top: int = 15) -> dict[str, Any]:
    """Collapsed stacks ("f1;f2;f3 N" lines) -> busy share and the top functions, inclusive and self."""
    inclusive: Counter = Counter()
    self_time: Counter = Counter()
    total = busy = 0
    for line in text.splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        n = int(count)
        total += n
        frames = stack.split(";")
        leaf = frames[-1]
        if any(m in leaf for m in IDLE_MARKERS):
            continue
        busy += n
        self_time[leaf] += n
        for frame in set(frames):
            inclusive[frame] += n
    share = (lambda n: round(100.0 * n / busy, 1)) if busy else (lambda n: 0.0)
    return {
        "samples": total,
        "busy_share_pct": round(100.0 * busy / total, 1) if total else 0.0,
        "top_inclusive_pct_of_busy": [[f, share(n)] for f, n in inclusive.most_common(top)],
        "top_self_pct_of_busy": [[f, share(n)] for f, n in self_time.most_common(top)],
    }
