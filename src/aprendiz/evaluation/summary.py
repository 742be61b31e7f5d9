"""Per-model figures of an evaluation run, the Pareto front of quality against cost, and the
recommendation.

- **Quality** of a case is the mean of its scorers (the judge's apart); a case that failed scores 0.
  A model's quality is the mean over cases, with a 95 % bootstrap interval over cases (seeded), per
  scorer and per tag value.
- **Latency**: time to first token and time per output token, p50 and p95.
- **Cost per 1,000 conversations**: a rented model's tokens at its configured prices; a hosted
  model's (or adapter's: its base model's) replica at its hourly price over the wall time the
  evaluation took for it, per case answered. That is the replica's share at the throughput measured
  at the evaluation's concurrency: a replica serving more at once costs less a conversation.
- **Hosting upkeep** (``gateway.hosting_upkeep_usd_per_month``) is added to a hosted model's daily
  cost in the rent-or-host volume, as ``aprendiz cost`` adds it to the break-even.
"""

from __future__ import annotations

import math
import random
from dataclasses import asdict, dataclass, field
from statistics import mean
from typing import Any

from aprendiz.config import PlatformConfig
from aprendiz.costs import break_even_volume
from aprendiz.evaluation.cases import Case
from aprendiz.evaluation.scorers import MATCH_SCORERS

BOOTSTRAP_SAMPLES = 1000
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class Interval:
    value: float
    low: float
    high: float


def bootstrap(values: list[float], *, samples: int = BOOTSTRAP_SAMPLES, seed: int = 0) -> Interval:
    """The mean of ``values`` and its 95 % percentile bootstrap interval."""
    if not values:
        return Interval(math.nan, math.nan, math.nan)
    rng = random.Random(seed)
    n = len(values)
    means = sorted(sum(rng.choices(values, k=n)) / n for _ in range(samples))
    return Interval(sum(values) / n, means[int(0.025 * samples)], means[int(0.975 * samples) - 1])


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q / 100 * len(ordered)) - 1))]


@dataclass(frozen=True)
class Pricing:
    """What a model's conversations cost: rented prices, or a hosted replica's hourly price."""

    backend: str  # "rented", "hosted" or "unknown"
    input_usd_per_million: float = 0.0
    output_usd_per_million: float = 0.0
    hourly_usd: float = 0.0
    accelerator: str = ""

    @classmethod
    def of(cls, config: PlatformConfig | None, model: str) -> "Pricing":
        if config is None:
            return cls("unknown")
        base = model.split(":", 1)[0]
        for r in config.rented:
            if r.id == model:
                return cls("rented", r.input_usd_per_million, r.output_usd_per_million)
        for g in config.generators:
            if g.id == base:
                where = (f"{g.num_gpus} {g.accelerator_type or 'GPU'}" if g.accelerator == "gpu"
                         else f"{g.num_cpus:g} CPU")
                return cls("hosted", hourly_usd=config.gateway.generator_hourly_usd(g), accelerator=where)
        return cls("unknown")


@dataclass
class ModelFigures:
    model: str
    backend: str
    cases: int
    errors: int  # answered with an error (kept, scored 0)
    missing: int  # not answered yet (an interrupted run), scored 0
    quality: Interval
    scorers: dict[str, Interval]
    tags: dict[str, dict[str, Interval]]
    judge: Interval | None
    ttft_p50_s: float | None
    ttft_p95_s: float | None
    tpot_p50_s: float | None
    tpot_p95_s: float | None
    prompt_tokens: int
    completion_tokens: int
    usd_per_1k_conversations: float | None
    conversations_per_hour: float | None  # measured at the evaluation's concurrency (hosted)
    hourly_usd: float = 0.0
    accelerator: str = ""
    error_examples: list[str] = field(default_factory=list)


def _case_quality(row: dict[str, Any] | None) -> float:
    if row is None or not row["ok"] or not row["scores"]:
        return 0.0
    return mean(row["scores"].values())


def figures(model: str, cases: list[Case], rows: list[dict], segments: list[dict], judgements: list[dict],
            pricing: Pricing) -> ModelFigures:
    by_case = {r["case"]: r for r in rows if r["model"] == model}
    answered = [by_case[c.id] for c in cases if c.id in by_case]
    ok = [r for r in answered if r["ok"]]
    quality = bootstrap([_case_quality(by_case.get(c.id)) for c in cases])
    names = sorted({name for r in ok for name in r["scores"]})
    scorers = {n: bootstrap([r["scores"][n] for r in ok if n in r["scores"]]) for n in names}
    tags: dict[str, dict[str, Interval]] = {}
    for key in sorted({k for c in cases for k in c.tags}):
        for value in sorted({c.tags[key] for c in cases if key in c.tags}):
            chosen = [_case_quality(by_case.get(c.id)) for c in cases if c.tags.get(key) == value]
            tags.setdefault(key, {})[value] = bootstrap(chosen)
    verdicts = [j["verdict"] for j in judgements if j["model"] == model and j.get("verdict") is not None]
    ttft = [r["ttft_s"] for r in ok if r["ttft_s"] is not None]
    tpot = [r["tpot_s"] for r in ok if r["tpot_s"] is not None]
    prompt_tokens = sum(r["prompt_tokens"] for r in ok)
    completion_tokens = sum(r["completion_tokens"] for r in ok)
    usd, per_hour = None, None
    if pricing.backend == "rented" and ok:
        usd = (prompt_tokens * pricing.input_usd_per_million + completion_tokens * pricing.output_usd_per_million) / 1e6 / len(ok) * 1000
    wall = sum(s["wall_s"] for s in segments if s["model"] == model)
    if pricing.backend == "hosted" and ok and wall > 0:
        per_hour = len(ok) / wall * 3600.0
        usd = pricing.hourly_usd / per_hour * 1000
    return ModelFigures(
        model=model, backend=pricing.backend, cases=len(cases), errors=len(answered) - len(ok), missing=len(cases) - len(answered),
        quality=quality, scorers=scorers, tags=tags, judge=bootstrap(verdicts) if verdicts else None,
        ttft_p50_s=percentile(ttft, 50), ttft_p95_s=percentile(ttft, 95),
        tpot_p50_s=percentile(tpot, 50), tpot_p95_s=percentile(tpot, 95),
        prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
        usd_per_1k_conversations=usd, conversations_per_hour=per_hour,
        hourly_usd=pricing.hourly_usd, accelerator=pricing.accelerator,
        error_examples=sorted({r["error"] for r in answered if r["error"]})[:3],
    )


def judge_agreement(cases: list[Case], rows: list[dict], judgements: list[dict]) -> dict[str, Any]:
    """How often the judge's verdict equals the pass/fail scorers' (all passed) on cases with both."""
    by_id = {c.id: c for c in cases}
    results = {(r["model"], r["case"]): r for r in rows}
    pairs = []
    for j in judgements:
        row = results.get((j["model"], j["case"]))
        if j.get("verdict") is None or row is None or j["case"] not in by_id:
            continue
        matched = [row["scores"][n] for n in MATCH_SCORERS if n in row["scores"]]
        if matched:
            pairs.append((j["verdict"], float(all(v == 1.0 for v in matched))))
    unparsed = sum(1 for j in judgements if j.get("verdict") is None)
    agree = [float(a == b) for a, b in pairs]
    return {"cases": len(pairs), "agreement": mean(agree) if agree else None,
            "judge_pass_rate": mean(a for a, _ in pairs) if pairs else None,
            "scorer_pass_rate": mean(b for _, b in pairs) if pairs else None, "unparsed": unparsed}


def pareto(models: list[ModelFigures]) -> list[str]:
    """The models no other beats on both quality (higher) and cost (lower), cheapest first."""
    priced = [m for m in models if m.usd_per_1k_conversations is not None]
    front = [m for m in priced if not any(
        o is not m and o.quality.value >= m.quality.value and o.usd_per_1k_conversations <= m.usd_per_1k_conversations  # type: ignore[operator]
        and (o.quality.value > m.quality.value or o.usd_per_1k_conversations < m.usd_per_1k_conversations)  # type: ignore[operator]
        for o in priced)]
    return [m.model for m in sorted(front, key=lambda m: m.usd_per_1k_conversations or 0.0)]


def break_even_conversations_per_day(hosted: ModelFigures, rented: ModelFigures, upkeep_usd_per_month: float) -> float | None:
    """Conversations a day from which one hosted replica (plus upkeep) costs less than renting; None if
    never (renting is cheaper even at the replica's measured capacity)."""
    return break_even_volume(24.0 * (hosted.hourly_usd + upkeep_usd_per_month / HOURS_PER_MONTH),
                             (rented.usd_per_1k_conversations or 0.0) / 1000, (hosted.conversations_per_hour or 0.0) * 24.0)


def recommendation(models: list[ModelFigures], upkeep_usd_per_month: float = 0.0) -> list[str]:
    """Plain sentences: the best model under each budget on the front, and rent or host by volume."""
    by_name = {m.model: m for m in models}
    front = [by_name[n] for n in pareto(models)]
    lines = []
    for i, m in enumerate(front):
        cost = m.usd_per_1k_conversations or 0.0
        upper = front[i + 1].usd_per_1k_conversations if i + 1 < len(front) else None
        verb = "rent" if m.backend == "rented" else "host"
        budget = (f"from {cost:.4g} USD per 1,000 conversations" + (f" up to {upper:.4g}" if upper is not None else " up"))
        lines.append(f"{budget}: {verb} {m.model} (quality {m.quality.value:.3f}, "
                     f"95 % interval {m.quality.low:.3f}-{m.quality.high:.3f}).")
    unpriced = [m.model for m in models if m.usd_per_1k_conversations is None]
    if unpriced:
        lines.append(f"no cost for {', '.join(unpriced)} (not in the config, or no answer): left out of the front.")
    hosted = [m for m in models if m.backend == "hosted" and m.conversations_per_hour]
    rented = [m for m in models if m.backend == "rented" and m.usd_per_1k_conversations]
    if hosted and rented:
        best_hosted = max(hosted, key=lambda m: m.quality.value)
        best_rented = max(rented, key=lambda m: m.quality.value)
        volume = break_even_conversations_per_day(best_hosted, best_rented, upkeep_usd_per_month)
        upkeep = f", upkeep {upkeep_usd_per_month:,.0f} USD a month included" if upkeep_usd_per_month else ""
        if volume is None:
            lines.append(f"rent {best_rented.model} rather than host {best_hosted.model} at any volume one replica "
                         f"serves: hosting costs more per conversation even at its measured capacity{upkeep}.")
        else:
            lines.append(f"above {volume:,.0f} conversations a day, host {best_hosted.model} on one "
                         f"{best_hosted.accelerator} replica; below, rent {best_rented.model}{upkeep}.")
    return lines


def as_dict(models: list[ModelFigures], agreement: dict[str, Any] | None, lines: list[str]) -> dict[str, Any]:
    return {"models": [asdict(m) for m in models], "pareto": pareto(models), "judge": agreement, "recommendation": lines}
