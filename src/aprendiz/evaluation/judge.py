"""The judge: a model from the candidate list grades an answer against the case's rubric.

It is asked for a JSON verdict under a JSON schema (``pass`` or ``fail``), so even a small model's
grade parses; how far to trust it is measured, not assumed: the report shows the judge's agreement
with the pass/fail scorers on the cases that have both.
"""

from __future__ import annotations

import json
from typing import Any

from aprendiz.evaluation.cases import Case

SYSTEM = (
    "You grade a customer-service assistant. Read the conversation, the assistant's answer and the rubric. "
    'Reply with JSON only: {"verdict": "pass"} if the answer meets the rubric, {"verdict": "fail"} if not.'
)
VERDICT_SCHEMA = {"type": "object", "properties": {"verdict": {"enum": ["pass", "fail"]}},
                  "required": ["verdict"], "additionalProperties": False}


TEMPLATE = "Conversation:\n{conversation}\n\nAnswer:\n{answer}\n\nRubric:\n{rubric}"


def prompt(case: Case, answer: str) -> str:
    conversation = "\n".join(f"{m.role}: {m.content}" for m in case.messages)
    return TEMPLATE.format(conversation=conversation, answer=answer, rubric=case.score.rubric)


def request(judge: str, case: Case, answer: str) -> dict[str, Any]:
    return {
        "model": judge, "temperature": 0.0, "max_tokens": 40,
        "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt(case, answer)}],
        "response_format": {"type": "json_schema", "json_schema": {"name": "verdict", "schema": VERDICT_SCHEMA}},
    }


def verdict(text: str) -> float | None:
    """1 for pass, 0 for fail, None for an answer that is neither."""
    try:
        value = json.loads(text).get("verdict")
    except (ValueError, AttributeError):
        return None
    return {"pass": 1.0, "fail": 0.0}.get(value)
