"""Closed-loop load generators: wrk (Debian's package, with benchmarks/wrk_post.lua) when it is
installed, and an asyncio loop in Python (for in-process callables, streaming, and as a fallback).

Closed loop: each of ``concurrency`` clients sends its next request as soon as its previous
one is answered, for ``duration_s`` after a ``warmup_s`` whose requests are not counted.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from benchmarks.common import percentile

WRK_SCRIPT = Path(__file__).with_name("wrk_post.lua")


def latency_summary(latencies_s: list[float], errors: int, elapsed_s: float) -> dict[str, Any]:
    """requests/s over the measured window, latency percentiles in ms."""
    n = len(latencies_s)
    return {
        "requests": n,
        "errors": errors,
        "elapsed_s": round(elapsed_s, 3),
        "rps": n / elapsed_s if elapsed_s > 0 else 0.0,
        "p50_ms": percentile(latencies_s, 50) * 1000 if n else None,
        "p99_ms": percentile(latencies_s, 99) * 1000 if n else None,
        "mean_ms": (sum(latencies_s) / n) * 1000 if n else None,
    }


async def closed_loop(
    call: Callable[[], Awaitable[Any]], *, concurrency: int, duration_s: float, warmup_s: float = 0.0
) -> dict[str, Any]:
    """Run ``call`` from ``concurrency`` concurrent clients; count what starts after the warm-up."""
    loop = asyncio.get_running_loop()
    begin = loop.time()
    measure_from = begin + warmup_s
    deadline = measure_from + duration_s
    latencies: list[float] = []
    errors = 0
    last_end = measure_from

    async def client() -> None:
        nonlocal errors, last_end
        while True:
            start = loop.time()
            if start >= deadline:
                return
            try:
                await call()
                ok = True
            except Exception:
                ok = False
            end = loop.time()
            if start >= measure_from:
                last_end = max(last_end, end)
                if ok:
                    latencies.append(end - start)
                else:
                    errors += 1

    await asyncio.gather(*(client() for _ in range(concurrency)))
    return latency_summary(latencies, errors, max(last_end, deadline) - measure_from)


def run_closed_loop(call_factory, **kwargs) -> dict[str, Any]:
    """``closed_loop`` in a fresh event loop; ``call_factory`` builds the call inside it (clients)."""

    async def main():
        call, close = await call_factory()
        try:
            return await closed_loop(call, **kwargs)
        finally:
            await close()

    return asyncio.run(main())


def http_post_factory(url: str, body: bytes, headers: dict[str, str] | None = None, *, stream: bool = False):
    """A call factory for ``run_closed_loop``: POST ``body`` and read the whole answer (non-2xx raises)."""

    async def factory():
        import httpx

        client = httpx.AsyncClient(
            timeout=60, limits=httpx.Limits(max_connections=1024, max_keepalive_connections=1024)
        )
        all_headers = {"Content-Type": "application/json", **(headers or {})}

        async def call():
            if stream:
                async with client.stream("POST", url, content=body, headers=all_headers) as r:
                    async for _ in r.aiter_raw():
                        pass
                    r.raise_for_status()
            else:
                r = await client.post(url, content=body, headers=all_headers)
                r.raise_for_status()

        return call, client.aclose

    return factory


# -- wrk -------------------------------------------------------------------------------
def wrk_available() -> bool:
    return shutil.which("wrk") is not None


def parse_wrk(output: str) -> dict[str, Any]:
    """The WRK_JSON line that benchmarks/wrk_post.lua prints when wrk is done."""
    for line in output.splitlines():
        if line.startswith("WRK_JSON "):
            raw = json.loads(line[len("WRK_JSON "):])
            elapsed = raw["duration_us"] / 1e6
            errors = raw["errors_connect"] + raw["errors_read"] + raw["errors_write"] + raw["errors_timeout"]
            errors += raw["errors_status"]
            ok = raw["requests"] - raw["errors_status"]
            return {
                "requests": raw["requests"],
                "errors": errors,
                "elapsed_s": round(elapsed, 3),
                "rps": ok / elapsed if elapsed > 0 else 0.0,
                "p50_ms": raw["p50_us"] / 1000,
                "p99_ms": raw["p99_us"] / 1000,
                "mean_ms": raw["mean_us"] / 1000,
                "tool": "wrk",
            }
    raise ValueError(f"no WRK_JSON line in wrk's output:\n{output[-2000:]}")


def wrk(url: str, body: bytes | None, *, concurrency: int, duration_s: float, headers: dict[str, str] | None = None,
        content_type: str = "application/json") -> dict[str, Any]:
    """One wrk run (one thread: the client must not take the server's cores) with a POST body
    (``body`` None: GET)."""
    with tempfile.NamedTemporaryFile("wb", suffix=".body", delete=False) as f:
        f.write(body or b"")
        body_path = f.name
    env = {
        **os.environ,
        "WRK_METHOD": "GET" if body is None else "POST",
        "WRK_BODY_FILE": body_path,
        "WRK_CONTENT_TYPE": content_type,
        "WRK_HEADERS": json.dumps(headers or {}),
    }
    seconds = max(1, round(duration_s))
    argv = ["wrk", "-t1", f"-c{concurrency}", f"-d{seconds}s", "--timeout", "30s", "-s", str(WRK_SCRIPT), url]
    try:
        out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=seconds + 60)
    finally:
        os.unlink(body_path)
    return parse_wrk(out.stdout + out.stderr)


def http_load(url: str, body: bytes | None, *, concurrency: int, duration_s: float, warmup_s: float,
              headers: dict[str, str] | None = None) -> dict[str, Any]:
    """Closed-loop POST load (``body`` None: GET): wrk if installed (warm-up run discarded), else the
    Python loop, which only posts (a GET measures a server's floor, and a Python client would measure itself)."""
    if body is None and not wrk_available():
        raise RuntimeError("GET load needs wrk (Debian's wrk package)")
    if wrk_available():
        if warmup_s > 0:
            wrk(url, body, concurrency=concurrency, duration_s=warmup_s, headers=headers)
        return wrk(url, body, concurrency=concurrency, duration_s=duration_s, headers=headers)
    result = run_closed_loop(
        http_post_factory(url, body, headers), concurrency=concurrency, duration_s=duration_s, warmup_s=warmup_s
    )
    return result | {"tool": "python-httpx"}


def time_calls(fn: Callable[[], Any], *, duration_s: float, warmup_s: float = 0.0) -> dict[str, Any]:
    """Sequential in-process calls of ``fn`` (the floor: no network, no server)."""
    end_warm = time.perf_counter() + warmup_s
    while time.perf_counter() < end_warm:
        fn()
    latencies: list[float] = []
    begin = time.perf_counter()
    deadline = begin + duration_s
    while True:
        start = time.perf_counter()
        if start >= deadline:
            break
        fn()
        latencies.append(time.perf_counter() - start)
    return latency_summary(latencies, 0, time.perf_counter() - begin) | {"tool": "in-process"}
