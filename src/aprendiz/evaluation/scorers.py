"""Scoring one answer: each scorer a case sets gives a number from 0 to 1.

- ``exact``: 1 when the answer is exactly the expected text (or, for a JSON value, parses to it).
- ``normalised``: exact, ignoring case, accents, punctuation and spacing.
- ``contains``: 1 when every expected piece appears (ignoring case).
- ``regex``: 1 when the expression is found.
- ``reference``: two scores against a reference answer, ``chrf`` (sacrebleu's chrF) and ``rouge_l``
  (rouge-score's ROUGE-L F-measure, over lowercased words so that accented Spanish words count).
- ``json_schema``: 1 when the answer parses as JSON and validates.
- ``rubric`` is the judge's (``judge``), not scored here.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import lru_cache

from aprendiz.evaluation.cases import Case

MATCH_SCORERS = ("exact", "normalised", "contains", "regex", "json_schema")  # pass/fail: what the judge is checked against


def normalise(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text.casefold())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(re.findall(r"\w+", letters))


def _parsed(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None


def exact(answer: str, expected) -> float:
    if isinstance(expected, str):
        return float(answer.strip() == expected.strip())
    return float(_parsed(answer) == expected)


def contains(answer: str, pieces: list[str]) -> float:
    folded = answer.casefold()
    return float(all(p.casefold() in folded for p in pieces))


def json_schema(answer: str, schema: dict) -> float:
    import jsonschema

    value = _parsed(answer)
    if value is None and answer.strip() != "null":
        return 0.0
    return float(jsonschema.validators.validator_for(schema)(schema).is_valid(value))


class _Words:
    """rouge-score's tokenizer interface: lowercased words, accents kept (its default drops them)."""

    @staticmethod
    def tokenize(text: str) -> list[str]:
        return re.findall(r"\w+", text.casefold())


@lru_cache(maxsize=1)
def _chrf():
    from sacrebleu.metrics import CHRF

    return CHRF()


@lru_cache(maxsize=1)
def _rouge():
    from rouge_score.rouge_scorer import RougeScorer

    return RougeScorer(["rougeL"], tokenizer=_Words())


def chrf(answer: str, reference: str) -> float:
    return _chrf().sentence_score(answer, [reference]).score / 100.0


def rouge_l(answer: str, reference: str) -> float:
    return float(_rouge().score(reference, answer)["rougeL"].fmeasure)


def score(case: Case, answer: str) -> dict[str, float]:
    """Every scorer ``case`` sets except the rubric, on ``answer``."""
    s = case.score
    out: dict[str, float] = {}
    if s.exact is not None:
        out["exact"] = exact(answer, s.exact)
    if s.normalised is not None:
        out["normalised"] = float(normalise(answer) == normalise(s.normalised))
    if s.contains is not None:
        out["contains"] = contains(answer, s.contains)
    if s.regex is not None:
        out["regex"] = float(re.search(s.regex, answer) is not None)
    if s.reference is not None:
        out["chrf"] = chrf(answer, s.reference)
        out["rouge_l"] = rouge_l(answer, s.reference)
    if s.json_schema is not None:
        out["json_schema"] = json_schema(answer, s.json_schema)
    return out
