"""What a request used: usage from answers and streams, and token counting where a backend gives none.

Backends hand the gateway a stream as the ``data`` fields of its server-sent events, in
order, ending with ``[DONE]``, in batches: the fields that arrived together (a replica's
packet of several tokens); ``metered`` passes each batch on framed, as one write. The
gateway asks every backend for the usage event (``stream_options.include_usage``) and
hands it on only if the client asked for it too; the cost goes out as an SSE comment line
(``: x-aprendiz-cost-usd=...``) just before ``data: [DONE]``, which SSE clients ignore and
curl users can read. What a request costs is ``accrual``'s.
"""

from __future__ import annotations

import json
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, AsyncIterator, Awaitable, Callable, Sequence

log = logging.getLogger("aprendiz.gateway")

DONE = "[DONE]"


def sse(data: str) -> str:
    """One server-sent event carrying ``data`` (a JSON chunk or ``[DONE]``)."""
    return f"data: {data}\n\n"


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    reported: bool = False  # False: counted here, the backend gave none

    @property
    def total(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @classmethod
    def of(cls, usage: Any) -> "Usage | None":
        if not isinstance(usage, dict):
            return None
        try:
            return cls(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0), True)
        except (TypeError, ValueError):
            return None


class TokenCounter:
    """Counts tokens where a backend reports no usage: the model's tokenizer, else about 4 characters a token."""

    def __init__(self, tokenizer: str | None = None):
        self._tokenizer = None
        if tokenizer:
            from tokenizers import Tokenizer

            path = Path(tokenizer)
            self._tokenizer = Tokenizer.from_file(str(path / "tokenizer.json" if path.is_dir() else path))

    def count(self, text: str) -> int:
        if not text:
            return 0
        if self._tokenizer is not None:
            return len(self._tokenizer.encode(text, add_special_tokens=False).ids)
        return math.ceil(len(text) / 4)

    def prompt_text(self, payload: dict[str, Any]) -> str:
        """What the model reads: the messages (and their tool calls), the tool definitions and a schema."""
        if "messages" in payload:
            parts = []
            for message in payload.get("messages") or []:
                content = message.get("content") if isinstance(message, dict) else None
                if isinstance(content, str):
                    parts.append(content)
                elif isinstance(content, list):
                    parts.extend(p.get("text", "") for p in content if isinstance(p, dict))
                if isinstance(message, dict) and message.get("tool_calls"):
                    parts.append(json.dumps(message["tool_calls"]))
            for extra in ("tools", "response_format"):
                if payload.get(extra):
                    parts.append(json.dumps(payload[extra]))
            return "\n".join(parts)
        prompt = payload.get("prompt")
        return prompt if isinstance(prompt, str) else "\n".join(p for p in prompt or [] if isinstance(p, str))

    def usage(self, payload: dict[str, Any], completion: str) -> Usage:
        return Usage(self.count(self.prompt_text(payload)), self.count(completion), reported=False)


def completion_text(chunk_or_body: dict[str, Any]) -> str:
    """The generated text of an answer or a stream chunk (chat or completions)."""
    out = []
    for choice in chunk_or_body.get("choices") or []:
        if not isinstance(choice, dict):
            continue
        if "delta" in choice:
            out.append((choice.get("delta") or {}).get("content") or "")
        elif "message" in choice:
            out.append((choice.get("message") or {}).get("content") or "")
        else:
            out.append(choice.get("text") or "")
    return "".join(out)


@dataclass
class StreamRecord:
    """What a passing stream showed: when its first token came, its usage, its text if needed, and
    the chunks sent (kept unparsed: read only when the stream ended before its usage came)."""

    started: float
    first_token_at: float | None = None
    usage: Usage | None = None
    text: list[str] = field(default_factory=list)
    sent: list[str] = field(default_factory=list)

    def sent_text(self) -> str:
        """The text the client was sent (its collected text, else parsed from the chunks sent)."""
        if self.text:
            return "".join(self.text)
        return "".join(completion_text(_chunk(data)) for data in self.sent)


def _may_carry_usage(data: str) -> bool:
    """Whether a chunk may hold a usage object (most chunks are tokens: they are not parsed)."""
    return '"usage":{' in data or '"usage": {' in data


def _chunk(data: str) -> dict[str, Any]:
    try:
        chunk = json.loads(data)
    except ValueError:
        return {}
    return chunk if isinstance(chunk, dict) else {}


async def metered(
    events: AsyncIterator[Sequence[str]],
    record: StreamRecord,
    *,
    keep_usage: bool,
    collect_text: bool,
    finish: Callable[[StreamRecord], Awaitable[float | None]],
) -> AsyncIterator[str]:
    """Pass a stream's events through (``events``: batches of their data fields; each batch yielded
    framed, as one string), noting the first token and the usage.

    ``finish`` runs exactly once, when the stream ends or the client goes away; what it
    returns (the cost) is sent as a comment before ``data: [DONE]``.
    """
    finished = False
    try:
        async for batch in events:
            out: list[str] = []
            for data in batch:
                if data == DONE:
                    finished = True
                    cost = await finish(record)
                    if cost is not None:
                        out.append(f": x-aprendiz-cost-usd={cost:.10f}\n\n")
                    out.append(sse(DONE))
                    continue
                if record.first_token_at is None:
                    record.first_token_at = time.perf_counter()
                if collect_text or _may_carry_usage(data):
                    chunk = _chunk(data)
                    usage = Usage.of(chunk.get("usage"))
                    if usage is not None:
                        record.usage = usage
                        if not chunk.get("choices") and not keep_usage:
                            continue  # the usage-only chunk the client did not ask for
                    if collect_text:
                        record.text.append(completion_text(chunk))
                else:
                    record.sent.append(data)
                out.append(sse(data))
            if out:
                yield "".join(out)
    finally:
        if not finished:
            await finish(record)
