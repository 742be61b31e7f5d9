"""Sending an evaluation set through the platform's entrance, model after model.

Every case is a streamed chat completion, as an app sends it, with the evaluation's API key: keys,
limits, metering and fallback apply as in production. A model's cases run with bounded
concurrency; a 429 or 503 is retried after its Retry-After; any other failure is the case's error,
kept and counted (never dropped). Each result is appended to ``results.jsonl`` in the output folder
as it arrives, so an interrupted run resumes where it stopped (the cases already answered are
skipped). A model's wall time per run segment is kept in ``segments.jsonl``: a hosted replica's
cost is its hourly price over that time.

The judge runs after the answers, over every answered case with a rubric (``judgements.jsonl``).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import httpx
from httpx_sse import SSEError, aconnect_sse

from aprendiz.evaluation import judge as judging
from aprendiz.evaluation.cases import Case
from aprendiz.evaluation.scorers import score

log = logging.getLogger(__name__)

RETRIED = (429, 503)
MAX_RETRY_WAIT_S = 30.0
RESULTS, JUDGEMENTS, SEGMENTS = "results.jsonl", "judgements.jsonl", "segments.jsonl"


@dataclass(frozen=True)
class Entrance:
    """Where the platform answers (``http://host:port``, its OpenAI routes under /v1) and the key to use."""

    url: str
    api_key: str | None = None
    timeout_s: float = 120.0

    def client(self, concurrency: int) -> httpx.AsyncClient:
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        limits = httpx.Limits(max_connections=concurrency + 2, max_keepalive_connections=concurrency + 2)
        return httpx.AsyncClient(base_url=self.url.rstrip("/"), headers=headers, limits=limits,
                                 timeout=httpx.Timeout(self.timeout_s, connect=10.0))


@dataclass
class Answer:
    text: str = ""
    status: int | None = None
    error: str | None = None
    ttft_s: float | None = None
    latency_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    attempts: int = 0
    tool_calls: list[dict] = field(default_factory=list)


def retry_after_s(response: httpx.Response, attempt: int) -> float:
    """The wait a 429 or 503 asks for (Retry-After in seconds), else an exponential back-off."""
    try:
        wait = float(response.headers.get("retry-after", ""))
    except ValueError:
        wait = 0.5 * 2 ** attempt
    return min(max(wait, 0.0), MAX_RETRY_WAIT_S)


def _error_text(response: httpx.Response, body: bytes) -> str:
    try:
        data = json.loads(body)
        message = (data.get("error") or {}).get("message") if isinstance(data.get("error"), dict) else data.get("message")
    except ValueError:
        message = None
    return f"HTTP {response.status_code}: {message or body[:200].decode('utf-8', 'replace')}"


async def ask(client: httpx.AsyncClient, body: dict[str, Any], *, retries: int = 5,
              sleep: Callable[[float], Any] = asyncio.sleep) -> Answer:
    """One streamed chat completion: the answer's text, time to first token and usage, or its error."""
    body = {**body, "stream": True, "stream_options": {"include_usage": True}}
    answer = Answer()
    for attempt in range(retries + 1):
        answer = Answer(attempts=attempt + 1)
        started = time.perf_counter()
        try:
            async with aconnect_sse(client, "POST", "/v1/chat/completions", json=body) as source:
                response = source.response
                answer.status = response.status_code
                if response.status_code != 200:
                    raw = await response.aread()
                    answer.error = _error_text(response, raw)
                    if response.status_code in RETRIED and attempt < retries:
                        await sleep(retry_after_s(response, attempt))
                        continue
                    return answer
                pieces: list[str] = []
                async for event in source.aiter_sse():
                    if event.data == "[DONE]":
                        break
                    chunk = json.loads(event.data)
                    if chunk.get("error"):
                        answer.error = f"stream error: {chunk['error'].get('message', chunk['error'])}"
                        break
                    for choice in chunk.get("choices") or []:
                        delta = choice.get("delta") or {}
                        if delta.get("content") or delta.get("tool_calls"):
                            if answer.ttft_s is None:
                                answer.ttft_s = time.perf_counter() - started
                            pieces.append(delta.get("content") or "")
                            answer.tool_calls.extend(delta.get("tool_calls") or [])
                    usage = chunk.get("usage")
                    if usage:
                        answer.prompt_tokens = usage.get("prompt_tokens", 0)
                        answer.completion_tokens = usage.get("completion_tokens", 0)
                answer.text = "".join(pieces)
                answer.latency_s = time.perf_counter() - started
                return answer
        except (httpx.HTTPError, SSEError, ValueError) as exc:
            answer.error = f"{type(exc).__name__}: {exc}"
            return answer
    return answer


def result_row(model: str, case: Case, answer: Answer) -> dict[str, Any]:
    tpot = None
    if answer.error is None and answer.ttft_s is not None and answer.completion_tokens > 1:
        tpot = (answer.latency_s - answer.ttft_s) / (answer.completion_tokens - 1)
    return {
        "model": model, "case": case.id, "ok": answer.error is None, "error": answer.error, "status": answer.status,
        "answer": answer.text, "scores": score(case, answer.text) if answer.error is None else {},
        "ttft_s": answer.ttft_s, "tpot_s": tpot, "latency_s": answer.latency_s,
        "prompt_tokens": answer.prompt_tokens, "completion_tokens": answer.completion_tokens,
        "attempts": answer.attempts,
    }


def read_rows(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON Lines file; a line cut short by an interruption is skipped."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text("utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def end_last_line(path: Path) -> None:
    """End a file whose last line an interruption cut short, so that the next row starts a line of its own."""
    if path.exists() and path.stat().st_size:
        with path.open("rb+") as handle:
            handle.seek(-1, 2)
            if handle.read(1) != b"\n":
                handle.write(b"\n")


def _append(path: Path, row: dict[str, Any]) -> None:
    with path.open("a", encoding="utf-8") as handle:
        handle.write(json.dumps(row, ensure_ascii=False) + "\n")
        handle.flush()


@dataclass
class Evaluation:
    """One evaluation run into ``output``: ``models`` answer ``cases``; ``judge`` grades the rubrics."""

    entrance: Entrance
    cases: list[Case]
    models: list[str]
    output: Path
    concurrency: int = 8
    judge: str | None = None
    progress: bool = True

    def done(self) -> set[tuple[str, str]]:
        return {(r["model"], r["case"]) for r in read_rows(self.output / RESULTS)}

    async def run(self) -> None:
        self.output.mkdir(parents=True, exist_ok=True)
        for name in (RESULTS, JUDGEMENTS, SEGMENTS):
            end_last_line(self.output / name)
        async with self.entrance.client(self.concurrency) as client:
            for model in self.models:
                await self._answer(client, model)
            if self.judge:
                await self._judge(client)

    async def _answer(self, client: httpx.AsyncClient, model: str) -> None:
        done = self.done()
        todo = [c for c in self.cases if (model, c.id) not in done]
        if not todo:
            return
        gate = asyncio.Semaphore(self.concurrency)
        bar = _bar(len(todo), f"{model}", self.progress)
        answered = 0

        async def one(case: Case) -> None:
            nonlocal answered
            async with gate:
                answer = await ask(client, case.body(model))
            _append(self.output / RESULTS, result_row(model, case, answer))
            answered += 1
            bar.update(1)

        started = time.perf_counter()
        try:
            await asyncio.gather(*(one(c) for c in todo))
        finally:
            _append(self.output / SEGMENTS, {"model": model, "wall_s": time.perf_counter() - started, "cases": answered})
            bar.close()

    async def _judge(self, client: httpx.AsyncClient) -> None:
        assert self.judge is not None
        by_id = {c.id: c for c in self.cases}
        judged = {(j["model"], j["case"]) for j in read_rows(self.output / JUDGEMENTS) if j.get("judge") == self.judge}
        todo = [r for r in read_rows(self.output / RESULTS)
                if r["ok"] and r["case"] in by_id and by_id[r["case"]].score.rubric and (r["model"], r["case"]) not in judged]
        if not todo:
            return
        gate = asyncio.Semaphore(self.concurrency)
        bar = _bar(len(todo), f"judge {self.judge}", self.progress)

        async def one(row: dict[str, Any]) -> None:
            case = by_id[row["case"]]
            async with gate:
                answer = await ask(client, judging.request(self.judge or "", case, row["answer"]))
            verdict = judging.verdict(answer.text) if answer.error is None else None
            _append(self.output / JUDGEMENTS, {"model": row["model"], "case": row["case"], "judge": self.judge,
                                               "verdict": verdict, "error": answer.error, "raw": answer.text[:200]})
            bar.update(1)

        try:
            await asyncio.gather(*(one(r) for r in todo))
        finally:
            bar.close()


def _bar(total: int, description: str, enabled: bool):
    from tqdm import tqdm

    return tqdm(total=total, desc=description, unit="case", disable=not enabled, leave=True)
