"""The evaluation's HTML report: the recommendation, quality against cost with the Pareto front,
and the tables (per model, per scorer, per tag, the judge's agreement and prompt)."""

from __future__ import annotations

import base64
import html
import io
import math
from typing import Any

from aprendiz.evaluation import judge
from aprendiz.evaluation.summary import Interval, ModelFigures, pareto


def _ci(i: Interval | None) -> str:
    if i is None or math.isnan(i.value):
        return "-"
    return f"{i.value:.3f} <small>({i.low:.3f}-{i.high:.3f})</small>"


def _num(value: float | None, fmt: str = "{:.4g}", scale: float = 1.0) -> str:
    return "-" if value is None else fmt.format(value * scale)


def scatter_png(models: list[ModelFigures]) -> bytes:
    """Quality against USD per 1,000 conversations, the front joined, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cost = {m.model: m.usd_per_1k_conversations for m in models if m.usd_per_1k_conversations}
    priced = [m for m in models if m.model in cost]
    front = set(pareto(models))
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for m in priced:
        marker = "o" if m.backend == "hosted" else "s"
        ax.errorbar(cost[m.model], m.quality.value,
                    yerr=[[m.quality.value - m.quality.low], [m.quality.high - m.quality.value]],
                    fmt=marker, color="tab:red" if m.model in front else "tab:blue", capsize=3)
        ax.annotate(m.model, (cost[m.model], m.quality.value), fontsize=8,
                    xytext=(4, 4), textcoords="offset points")
    line = sorted((m for m in priced if m.model in front), key=lambda m: cost[m.model])
    if len(line) > 1:
        ax.step([cost[m.model] for m in line], [m.quality.value for m in line], where="post",
                color="tab:red", lw=0.8, label="Pareto front")
        ax.legend()
    if priced:
        ax.set_xscale("log")
    ax.set_xlabel("USD per 1,000 conversations (log)")
    ax.set_ylabel("quality (mean score, 95 % interval)")
    ax.set_title("quality against cost (circles: hosted, squares: rented)")
    ax.grid(True, which="both", alpha=0.3)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def render(name: str, models: list[ModelFigures], agreement: dict[str, Any] | None, lines: list[str],
           judge_model: str | None) -> str:
    e = html.escape
    png = base64.b64encode(scatter_png(models)).decode("ascii")
    parts = [
        "<!doctype html><meta charset='utf-8'>",
        f"<title>aprendiz evaluate: {e(name)}</title>",
        "<style>body{font-family:sans-serif;max-width:70em;margin:2em auto}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:.2em .5em;text-align:right}td:first-child{text-align:left}</style>",
        f"<h1>Evaluation <code>{e(name)}</code></h1>",
        "<h2>Recommendation</h2><ul>" + "".join(f"<li>{e(line)}</li>" for line in lines) + "</ul>",
        "<p>Pareto front (no other model is both better and cheaper), cheapest first: "
        + (", ".join(f"<code>{e(name)}</code>" for name in pareto(models)) or "none (no model has a cost)") + "</p>",
        f"<img alt='quality against cost' src='data:image/png;base64,{png}'>",
        "<h2>Models</h2><table><tr><th>model</th><th>backend</th><th>quality</th><th>judge</th><th>errors</th>"
        "<th>missing</th><th>TTFT p50/p95 ms</th><th>TPOT p50/p95 ms</th><th>tokens in/out</th>"
        "<th>USD / 1,000 conv.</th><th>conv./hour</th></tr>",
    ]
    for m in models:
        parts.append(
            f"<tr><td>{e(m.model)}</td><td>{m.backend}</td><td>{_ci(m.quality)}</td><td>{_ci(m.judge)}</td>"
            f"<td>{m.errors}</td><td>{m.missing}</td>"
            f"<td>{_num(m.ttft_p50_s, '{:.0f}', 1e3)} / {_num(m.ttft_p95_s, '{:.0f}', 1e3)}</td>"
            f"<td>{_num(m.tpot_p50_s, '{:.1f}', 1e3)} / {_num(m.tpot_p95_s, '{:.1f}', 1e3)}</td>"
            f"<td>{m.prompt_tokens} / {m.completion_tokens}</td><td>{_num(m.usd_per_1k_conversations)}</td>"
            f"<td>{_num(m.conversations_per_hour, '{:,.0f}')}</td></tr>"
        )
    parts.append("</table>")
    errors = [(m.model, x) for m in models for x in m.error_examples]
    if errors:
        parts.append("<h3>Errors (examples)</h3><ul>" + "".join(f"<li>{e(a)}: {e(b)}</li>" for a, b in errors) + "</ul>")
    scorer_names = sorted({n for m in models for n in m.scorers})
    parts.append("<h2>Per scorer</h2><table><tr><th>model</th>" + "".join(f"<th>{e(n)}</th>" for n in scorer_names) + "</tr>")
    for m in models:
        parts.append(f"<tr><td>{e(m.model)}</td>" + "".join(f"<td>{_ci(m.scorers.get(n))}</td>" for n in scorer_names) + "</tr>")
    parts.append("</table>")
    for key in sorted({k for m in models for k in m.tags}):
        values = sorted({v for m in models for v in m.tags.get(key, {})})
        parts.append(f"<h2>Per {e(key)}</h2><table><tr><th>model</th>" + "".join(f"<th>{e(v)}</th>" for v in values) + "</tr>")
        for m in models:
            parts.append(f"<tr><td>{e(m.model)}</td>" + "".join(f"<td>{_ci(m.tags.get(key, {}).get(v))}</td>" for v in values) + "</tr>")
        parts.append("</table>")
    if judge_model:
        a = agreement or {}
        agree = "-" if a.get("agreement") is None else f"{a['agreement']:.3f}"
        parts.append(
            f"<h2>Judge: <code>{e(judge_model)}</code></h2><p>Agreement with the pass/fail scorers on {a.get('cases', 0)} "
            f"cases that have both: <b>{agree}</b> (judge passes {_num(a.get('judge_pass_rate'), '{:.3f}')}, scorers pass "
            f"{_num(a.get('scorer_pass_rate'), '{:.3f}')}; unparsed verdicts: {a.get('unparsed', 0)}). A judge far from the "
            f"scorers is not to be trusted on the rubric-only cases.</p><h3>Its prompt</h3><pre>{e(judge.SYSTEM)}</pre>"
            f"<pre>{e(judge.TEMPLATE)}</pre>"
        )
    return "\n".join(parts)
