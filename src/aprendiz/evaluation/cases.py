"""An evaluation set: JSON Lines of cases, each a conversation, how to score its answer, and tags.

It lives in the store as ``evals/<name>/cases.jsonl``; the project ships ``customer-service`` (a shop's
customer service in Spanish and English), seeded into the store the first time it is asked for.
"""

from __future__ import annotations

import json
import re
from importlib import resources
from typing import Any, Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from aprendiz.store import ObjectStore
from aprendiz.strict import Strict

SHIPPED = ("customer-service",)
# The request fields a case may set beside its messages (the rest is the runner's: model, stream).
REQUEST_FIELDS = frozenset(
    {"max_tokens", "temperature", "top_p", "seed", "stop", "response_format", "tools", "tool_choice"}
)
DEFAULT_MAX_TOKENS = 64


class EvalError(ValueError):
    """An evaluation set that cannot be read, said with its line."""


class Message(Strict):
    role: Literal["system", "user", "assistant", "tool"]
    content: str
    tool_call_id: str | None = None


class Scoring(Strict):
    """How a case's answer is scored; each set field is one scorer, each scores 0 to 1."""

    exact: str | dict | list | None = Field(
        None, description="The whole answer, exactly (a JSON value: the answer parsed as JSON equals it)."
    )
    normalised: str | None = Field(None, description="The answer, ignoring case, accents, punctuation and spacing.")
    contains: list[str] | None = Field(None, description="Every one of these appears (ignoring case).")
    regex: str | None = Field(None, description="A regular expression found in the answer (Python syntax).")
    reference: str | None = Field(None, description="A reference answer: scored with chrF and ROUGE-L.")
    json_schema: dict | None = Field(None, description="The answer parses as JSON and validates against this schema.")
    rubric: str | None = Field(None, description="What a judge model checks; scored only when a judge is given.")

    @field_validator("regex")
    @classmethod
    def _compiles(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"regex {value!r} does not compile: {exc}") from None
        return value

    @field_validator("json_schema")
    @classmethod
    def _schema(cls, value: dict | None) -> dict | None:
        if value is not None:
            import jsonschema

            try:
                jsonschema.validators.validator_for(value).check_schema(value)
            except jsonschema.SchemaError as exc:
                raise ValueError(f"json_schema is not a JSON schema: {exc.message}") from None
        return value

    @model_validator(mode="after")
    def _some(self) -> "Scoring":
        if not self.set_scorers():
            raise ValueError("score: set at least one scorer (" + ", ".join(type(self).model_fields) + ")")
        return self

    def set_scorers(self) -> list[str]:
        return [name for name in type(self).model_fields if getattr(self, name) is not None]


class Case(Strict):
    id: str = Field(min_length=1, max_length=128)
    messages: list[Message] = Field(min_length=1)
    request: dict[str, Any] = Field(default_factory=dict, description="Request fields: " + ", ".join(sorted(REQUEST_FIELDS)))
    score: Scoring
    tags: dict[str, str] = Field(default_factory=dict, description="For instance language and intent.")

    @field_validator("request")
    @classmethod
    def _fields(cls, value: dict[str, Any]) -> dict[str, Any]:
        unknown = sorted(set(value) - REQUEST_FIELDS)
        if unknown:
            raise ValueError(f"request fields {unknown} are not allowed (allowed: {sorted(REQUEST_FIELDS)})")
        return value

    def body(self, model: str) -> dict[str, Any]:
        """The chat completion request for ``model``."""
        return {"max_tokens": DEFAULT_MAX_TOKENS, "temperature": 0.0, **self.request, "model": model,
                "messages": [m.model_dump(exclude_none=True) for m in self.messages]}


def parse_cases(text: str, source: str) -> list[Case]:
    """The cases in ``text`` (JSON Lines); an error names ``source`` and the line."""
    cases: list[Case] = []
    seen: set[str] = set()
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            case = Case.model_validate(json.loads(line))
        except json.JSONDecodeError as exc:
            raise EvalError(f"{source} line {number}: not JSON: {exc.msg}") from None
        except ValidationError as exc:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'case'}: {e['msg']}" for e in exc.errors())
            raise EvalError(f"{source} line {number}: {problems}") from None
        if case.id in seen:
            raise EvalError(f"{source} line {number}: case id {case.id!r} appears twice")
        seen.add(case.id)
        cases.append(case)
    if not cases:
        raise EvalError(f"{source} holds no case")
    return cases


def cases_key(name: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,62}", name):
        raise EvalError(f"evaluation set name {name!r}: use lowercase letters, digits, '.', '_' and '-'")
    return f"evals/{name}/cases.jsonl"


def shipped_text(name: str) -> str:
    return resources.files(__package__).joinpath(f"sets/{name}/cases.jsonl").read_text("utf-8")


def load_cases(store: ObjectStore, name: str) -> list[Case]:
    """The set ``name`` from the store; a shipped set missing there is written there first."""
    key = cases_key(name)
    if not store.exists(key):
        if name not in SHIPPED:
            raise EvalError(f"no evaluation set {name!r}: {store.url}/{key} does not exist (shipped sets: {', '.join(SHIPPED)})")
        store.write_bytes(key, shipped_text(name).encode("utf-8"))
    return parse_cases(store.read_bytes(key).decode("utf-8"), f"{store.url}/{key}")


def select(cases: list[Case], tags: dict[str, str] | None = None, limit: int | None = None) -> list[Case]:
    """The cases whose tags include ``tags``; with ``limit``, that many of them spread evenly over the
    set (a quick run still sees every part of it), always the same ones."""
    chosen = [c for c in cases if all(c.tags.get(k) == v for k, v in (tags or {}).items())]
    if limit is None or limit >= len(chosen):
        return chosen
    return [chosen[i * len(chosen) // limit] for i in range(limit)]
