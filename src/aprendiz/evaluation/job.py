"""``aprendiz evaluate`` end to end: load the set, run it, write the report, push the figures."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path

from aprendiz.config import PlatformConfig
from aprendiz.evaluation import report, summary
from aprendiz.evaluation.cases import Case
from aprendiz.evaluation.runner import JUDGEMENTS, RESULTS, SEGMENTS, Entrance, Evaluation, read_rows
from aprendiz.store import ObjectStore, jsonable

log = logging.getLogger(__name__)


@dataclass
class Outcome:
    models: list[summary.ModelFigures]
    agreement: dict | None
    recommendation: list[str]
    report_path: Path
    published: str | None


def summarise(name: str, cases: list[Case], models: list[str], output: Path, config: PlatformConfig | None,
              judge: str | None) -> tuple[list[summary.ModelFigures], dict | None, list[str]]:
    rows, segments = read_rows(output / RESULTS), read_rows(output / SEGMENTS)
    judgements = [j for j in read_rows(output / JUDGEMENTS) if judge and j.get("judge") == judge]
    figures = [summary.figures(m, cases, rows, segments, judgements, summary.Pricing.of(config, m)) for m in models]
    upkeep = config.gateway.hosting_upkeep_usd_per_month if config else 0.0
    agreement = summary.judge_agreement(cases, rows, judgements) if judge else None
    return figures, agreement, summary.recommendation(figures, upkeep)


def run_evaluation(
    name: str,
    cases: list[Case],
    models: list[str],
    entrance: Entrance,
    output: Path,
    *,
    config: PlatformConfig | None = None,
    judge: str | None = None,
    concurrency: int = 8,
    fresh: bool = False,
    store: ObjectStore | None = None,
    pushgateway: str | None = None,
    progress: bool = True,
) -> Outcome:
    output = Path(output)
    if fresh:
        for stale in (RESULTS, JUDGEMENTS, SEGMENTS):
            (output / stale).unlink(missing_ok=True)
    evaluation = Evaluation(entrance, cases, models, output, concurrency=concurrency, judge=judge, progress=progress)
    asyncio.run(evaluation.run())
    figures, agreement, lines = summarise(name, cases, models, output, config, judge)
    page = report.render(name, figures, agreement, lines, judge)
    (output / "report.html").write_text(page, "utf-8")
    document = jsonable(summary.as_dict(figures, agreement, lines))
    (output / "summary.json").write_text(json.dumps(document, indent=2), "utf-8")
    published = None
    if store is not None:
        prefix = f"evals/{name}/reports/{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
        store.write_bytes(f"{prefix}/report.html", page.encode("utf-8"))
        store.write_json(f"{prefix}/summary.json", document)
        published = f"{store.url}/{prefix}/report.html"
    if pushgateway:
        push(name, figures, pushgateway)
    return Outcome(figures, agreement, lines, output / "report.html", published)


def push(name: str, figures: list[summary.ModelFigures], url: str) -> None:
    from aprendiz.metrics import EvaluationMetrics

    for m in figures:
        metrics = EvaluationMetrics(name, m.model)
        metrics.record(quality=m.quality.value, scorers={k: v.value for k, v in m.scorers.items()},
                       usd_per_1k=m.usd_per_1k_conversations, errors=m.errors, ttft_p50_s=m.ttft_p50_s)
        try:
            metrics.push(url)
        except OSError as exc:
            log.warning("could not push %s's evaluation metrics to %s: %s", m.model, url, exc)


def table(figures: list[summary.ModelFigures]) -> str:
    """The lines the command prints."""
    out = [f"{'model':<32}{'backend':>9}{'quality':>9}{'95 % interval':>16}{'errors':>8}{'TTFT p50 ms':>13}{'USD/1k conv':>13}"]
    for m in sorted(figures, key=lambda m: -m.quality.value):
        cost = "-" if m.usd_per_1k_conversations is None else f"{m.usd_per_1k_conversations:.4g}"
        ttft = "-" if m.ttft_p50_s is None else f"{m.ttft_p50_s * 1e3:.0f}"
        out.append(f"{m.model:<32}{m.backend:>9}{m.quality.value:>9.3f}{f'{m.quality.low:.3f}-{m.quality.high:.3f}':>16}"
                   f"{m.errors:>8}{ttft:>13}{cost:>13}")
    return "\n".join(out)
