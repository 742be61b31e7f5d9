"""What each generator can do, what a request asks of it, and the caps a request must stay under.

One table per model, in ``/v1/models`` (``metadata.capabilities``) and in the README:

- ``structured_outputs``: ``response_format`` with a JSON schema or ``json_object``;
- ``tools``: ``tools`` with a ``tool_choice`` other than ``none``, ``role: tool`` turns;
- ``logprobs``: ``logprobs`` / ``top_logprobs``;
- ``n``: more than one choice;
- ``seed``: reproducible sampling.

A hosted model's table comes from its configuration (tools need a ``tool_parser``); a rented
model's from its ``capabilities`` block. A request for a feature its model lacks is a 400 that
names the feature and the model; it is never silently dropped. A fallback only takes requests
whose features it has.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from aprendiz.errors import InvalidRequestError
from aprendiz.strict import Strict


class Capabilities(Strict):
    """The OpenAI features a generator supports."""

    structured_outputs: bool = Field(True, description="response_format: json_schema and json_object.")
    tools: bool = Field(True, description="tools, tool_choice, tool_calls in answers, role: tool turns.")
    logprobs: bool = Field(True, description="logprobs and top_logprobs.")
    n: bool = Field(True, description="More than one choice per request.")
    seed: bool = Field(True, description="A seed for reproducible sampling.")

    def lacking(self, features: set[str]) -> list[str]:
        return sorted(f for f in features if not getattr(self, f))


class RequestCaps(Strict):
    """Upper bounds on what one request may ask; over a bound is a 400 that names it."""

    n: int = Field(4, ge=1, description="Most choices per request.")
    top_logprobs: int = Field(5, ge=0, le=20, description="Most top_logprobs per token (vLLM's own cap is 20).")
    max_tokens: int | None = Field(
        None, ge=1, description="Most tokens per answer (max_tokens or max_completion_tokens); unset: the context's."
    )


def requested_features(payload: dict[str, Any]) -> set[str]:
    """The capabilities a chat or completion request uses."""
    features = set()
    response_format = payload.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") in ("json_schema", "json_object"):
        features.add("structured_outputs")
    if payload.get("tools") and payload.get("tool_choice") != "none":
        features.add("tools")
    messages = payload.get("messages")
    if isinstance(messages, list) and any(
        isinstance(m, dict) and (m.get("role") == "tool" or m.get("tool_calls")) for m in messages
    ):
        features.add("tools")
    if payload.get("logprobs") or payload.get("top_logprobs"):
        features.add("logprobs")
    n = payload.get("n")
    if isinstance(n, int) and n > 1:
        features.add("n")
    if payload.get("seed") is not None:
        features.add("seed")
    return features


def metered_feature(features: set[str]) -> str:
    """The one feature a generation request is counted under (metrics' ``feature`` label)."""
    return next((f for f in ("tools", "structured_outputs") if f in features), "chat")


def check_request(model: str, capabilities: Capabilities, caps: RequestCaps, payload: dict[str, Any]) -> set[str]:
    """Refuse (400) a request that asks ``model`` for a feature it lacks or goes over a cap; the
    features it uses otherwise."""
    features = requested_features(payload)
    lacking = capabilities.lacking(features)
    if lacking:
        raise InvalidRequestError(
            f"The model `{model}` does not support {', '.join(f'`{f}`' for f in lacking)} (its capabilities are "
            f"in /v1/models/{model}); send the request to a model that does, or without it",
            param=_PARAM[lacking[0]],
        )
    _cap(payload, "n", caps.n, "n")
    top = payload.get("top_logprobs")
    if payload.get("messages") is None and isinstance(payload.get("logprobs"), int) and not isinstance(
        payload.get("logprobs"), bool
    ):
        top = payload["logprobs"]  # the completions API's logprobs is the number of top tokens
    if isinstance(top, int) and not isinstance(top, bool) and top > caps.top_logprobs:
        param = "top_logprobs" if payload.get("messages") is not None else "logprobs"
        raise InvalidRequestError(
            f"`{param}` is {top}; the most this platform allows is {caps.top_logprobs} (request_caps.top_logprobs)",
            param=param,
        )
    if caps.max_tokens is not None:
        for field in ("max_tokens", "max_completion_tokens"):
            _cap(payload, field, caps.max_tokens, "max_tokens")
    return features


_PARAM = {"structured_outputs": "response_format", "tools": "tools", "logprobs": "logprobs", "n": "n", "seed": "seed"}


def _cap(payload: dict[str, Any], field: str, cap: int, name: str) -> None:
    value = payload.get(field)
    if isinstance(value, int) and not isinstance(value, bool) and value > cap:
        raise InvalidRequestError(
            f"`{field}` is {value}; the most this platform allows is {cap} (request_caps.{name})", param=field
        )
