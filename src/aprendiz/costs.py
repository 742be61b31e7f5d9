"""Rent or host, in figures: what a hosted model's tokens cost at its measured throughput,
what a rented model's tokens cost at its price, and the daily volume where they cross.

A hosted replica costs its hourly price whether busy or idle and serves at most its
measured throughput; n replicas serve n times that. Renting costs the price of each
token, input and output priced apart (mixed by the measured share of prompt tokens).
Below the break-even volume renting is cheaper; above it (while one replica's cost per
token at capacity is below the rented price) hosting is.

Figures come from a running Prometheus (``from_prometheus``) or from a benchmark
result file (``from_benchmark``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from aprendiz.config import PlatformConfig
from aprendiz.metrics import GATEWAY_COST_USD, GATEWAY_TOKENS, REPLICA_COST_USD, REPLICA_HOURLY_USD

SECONDS_PER_DAY = 86400.0
HOURS_PER_MONTH = 730.0


@dataclass(frozen=True)
class HostedFigures:
    model: str
    replica_hourly_usd: float
    tokens_per_s: float  # what one replica serves at its measured peak (prompt + completion)
    prompt_share: float = 0.5  # share of prompt tokens in the traffic
    observed_usd_per_million: float | None = None  # replica cost over served tokens in the window
    upkeep_usd_per_month: float = 0.0  # gateway.hosting_upkeep_usd_per_month: engineering time, storage

    @property
    def upkeep_usd_per_day(self) -> float:
        return self.upkeep_usd_per_month / HOURS_PER_MONTH * 24.0

    @property
    def usd_per_million_at_capacity(self) -> float:
        return math.inf if self.tokens_per_s <= 0 else self.replica_hourly_usd / (3600.0 * self.tokens_per_s) * 1e6

    @property
    def daily_capacity_tokens(self) -> float:
        return self.tokens_per_s * SECONDS_PER_DAY

    def daily_cost_usd(self, tokens_per_day: float) -> float:
        """Cost of serving a daily volume with as many always-on replicas as it takes (at least one),
        plus the day's upkeep."""
        if self.daily_capacity_tokens <= 0:
            return math.inf
        replicas = max(1, math.ceil(tokens_per_day / self.daily_capacity_tokens))
        return replicas * 24.0 * self.replica_hourly_usd + self.upkeep_usd_per_day


@dataclass(frozen=True)
class RentedFigures:
    model: str
    input_usd_per_million: float
    output_usd_per_million: float
    observed_usd_per_million: float | None = None

    def usd_per_million(self, prompt_share: float) -> float:
        return prompt_share * self.input_usd_per_million + (1 - prompt_share) * self.output_usd_per_million

    def daily_cost_usd(self, tokens_per_day: float, prompt_share: float) -> float:
        return tokens_per_day * self.usd_per_million(prompt_share) / 1e6


def break_even_tokens_per_day(hosted: HostedFigures, rented: RentedFigures) -> float | None:
    """The daily volume from which one hosted replica is cheaper than renting; None if it never is.

    Renting V tokens a day costs V * p; one replica costs 24 * H a day, plus the upkeep U a day,
    for up to its capacity C. They cross at V = (24 * H + U) / p, when that is within C (without
    upkeep: exactly when a replica's cost per token at full use is below the rented price). (Past
    each multiple of C one more replica is added, so renting can win briefly again just above it;
    the plot shows those steps.)
    """
    return break_even_volume(24.0 * hosted.replica_hourly_usd + hosted.upkeep_usd_per_day,
                             rented.usd_per_million(hosted.prompt_share) / 1e6, hosted.daily_capacity_tokens)


def break_even_volume(daily_fixed_usd: float, rented_usd_per_unit: float, daily_capacity: float) -> float | None:
    """The daily volume (tokens, conversations: any unit) at which a fixed daily cost equals renting at
    a price per unit, when it is within one replica's daily capacity; None otherwise (renting is cheaper
    up to the capacity, or nothing is priced)."""
    if rented_usd_per_unit <= 0 or daily_capacity <= 0:
        return None
    volume = daily_fixed_usd / rented_usd_per_unit
    return volume if volume < daily_capacity else None


def from_benchmark(path: Path) -> list[HostedFigures]:
    """Hosted figures from a benchmark result file::

        {"hosted": [{"model": "...", "replica_hourly_usd": 0.04, "tokens_per_s": 480.0, "prompt_share": 0.5}]}
    """
    try:
        data = json.loads(Path(path).read_text("utf-8"))
        return [
            HostedFigures(
                model=h["model"],
                replica_hourly_usd=float(h["replica_hourly_usd"]),
                tokens_per_s=float(h["tokens_per_s"]),
                prompt_share=float(h.get("prompt_share", 0.5)),
            )
            for h in data["hosted"]
        ]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CostError(f"{path} is not a benchmark result with a `hosted` list: {exc}") from None


class CostError(RuntimeError):
    pass


class PrometheusReader:
    """Instant queries against a Prometheus server's HTTP API."""

    def __init__(self, url: str, *, timeout: float = 10.0):
        self._url = url.rstrip("/")
        self._timeout = timeout

    def query(self, promql: str) -> dict[str, float]:
        """{model label: value} of an instant query (series without a model label: key "")."""
        try:
            response = httpx.get(f"{self._url}/api/v1/query", params={"query": promql}, timeout=self._timeout)
            response.raise_for_status()
            data = response.json()
        except (httpx.HTTPError, ValueError) as exc:
            raise CostError(f"Prometheus at {self._url} cannot be queried: {exc}") from None
        if data.get("status") != "success":
            raise CostError(f"Prometheus refused {promql!r}: {data.get('error')}")
        out = {}
        for series in data["data"]["result"]:
            value = float(series["value"][1])
            if math.isfinite(value):
                out[series["metric"].get("model", "")] = value
        return out


def queries(window: str) -> dict[str, str]:
    """The PromQL behind ``aprendiz cost`` (series names from the metric catalogue, as Prometheus stores them)."""
    tokens, cost = GATEWAY_TOKENS.series, GATEWAY_COST_USD.series
    hourly, accrued = REPLICA_HOURLY_USD.series, REPLICA_COST_USD.series
    hosted_tokens = f'{tokens}{{backend="hosted"}}'
    return {
        "replica_hourly_usd": f'avg by (model) ({hourly}{{kind="generator"}})',
        "replicas": f'count by (model) ({hourly}{{kind="generator"}})',
        "peak_tokens_per_s": f"max_over_time((sum by (model) (rate({hosted_tokens}[1m])))[{window}:15s])",
        "prompt_tokens": f'sum by (model) (increase({tokens}{{backend="hosted",kind="prompt"}}[{window}]))',
        "all_tokens": f"sum by (model) (increase({hosted_tokens}[{window}]))",
        "replica_cost": f'sum by (model) (increase({accrued}{{kind="generator"}}[{window}]))',
        "rented_cost": f'sum by (model) (increase({cost}{{backend="rented"}}[{window}]))',
        "rented_tokens": f'sum by (model) (increase({tokens}{{backend="rented"}}[{window}]))',
    }


def from_prometheus(reader: PrometheusReader, window: str = "1h") -> tuple[list[HostedFigures], dict[str, float]]:
    """Hosted figures measured over ``window``, and the observed USD per million tokens of rented models."""
    q = {name: reader.query(promql) for name, promql in queries(window).items()}
    hosted = []
    for model, hourly in sorted(q["replica_hourly_usd"].items()):
        replicas = max(1.0, q["replicas"].get(model, 1.0))
        total = q["all_tokens"].get(model, 0.0)
        observed = q["replica_cost"].get(model, 0.0) / total * 1e6 if total > 0 else None
        hosted.append(
            HostedFigures(
                model=model,
                replica_hourly_usd=hourly,
                tokens_per_s=q["peak_tokens_per_s"].get(model, 0.0) / replicas,
                prompt_share=(q["prompt_tokens"].get(model, 0.0) / total) if total > 0 else 0.5,
                observed_usd_per_million=observed,
            )
        )
    rented_observed = {
        model: cost / q["rented_tokens"][model] * 1e6
        for model, cost in q["rented_cost"].items()
        if q["rented_tokens"].get(model, 0.0) > 0
    }
    return hosted, rented_observed


def rented_figures(config: PlatformConfig, observed: dict[str, float] | None = None) -> list[RentedFigures]:
    observed = observed or {}
    return [
        RentedFigures(r.id, r.input_usd_per_million, r.output_usd_per_million, observed.get(r.id))
        for r in config.rented
    ]


def _money(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:,.4f}"


def report(hosted: list[HostedFigures], rented: list[RentedFigures]) -> str:
    """The table ``aprendiz cost`` prints."""
    lines = ["hosted models (cost per million tokens at the measured throughput of one replica)",
             f"  {'model':<28}{'replica $/h':>12}{'tokens/s':>12}{'$/Mtok':>12}{'observed $/Mtok':>18}"]
    for h in hosted:
        lines.append(
            f"  {h.model:<28}{h.replica_hourly_usd:>12.4f}{h.tokens_per_s:>12.1f}"
            f"{_money(h.usd_per_million_at_capacity):>12}{_money(h.observed_usd_per_million):>18}"
        )
    lines += ["", "rented models (configured prices per million tokens)",
              f"  {'model':<28}{'input $/Mtok':>14}{'output $/Mtok':>14}{'observed $/Mtok':>18}"]
    for r in rented:
        lines.append(
            f"  {r.model:<28}{r.input_usd_per_million:>14.4f}{r.output_usd_per_million:>14.4f}"
            f"{_money(r.observed_usd_per_million):>18}"
        )
    lines += ["", "break-even: hosting is cheaper above this many tokens a day"]
    for h in hosted:
        for r in rented:
            volume = break_even_tokens_per_day(h, r)
            verdict = (
                f"{volume:,.0f} tokens/day (hosting: ${24 * h.replica_hourly_usd:,.2f}/day per replica, "
                f"up to {h.daily_capacity_tokens:,.0f} tokens/day each"
                + (f"; upkeep ${h.upkeep_usd_per_day:,.2f}/day" if h.upkeep_usd_per_month else "") + ")"
                if volume is not None
                else "never: renting is cheaper at every volume one replica serves (a replica at full use, "
                "with its upkeep, costs more per token)"
            )
            lines.append(f"  {h.model} vs {r.model}: {verdict}")
    if not hosted or not rented:
        lines.append("  (needs at least one hosted and one rented model)")
    return "\n".join(lines)


def plot(hosted: list[HostedFigures], rented: list[RentedFigures], path: Path) -> Path:
    """Cost per day against daily volume for each hosted and rented model (log-log), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    top = max([h.daily_capacity_tokens * 4 for h in hosted if h.daily_capacity_tokens > 0] + [1e9])
    volumes = np.logspace(4, math.log10(top), 400)
    fig, ax = plt.subplots(figsize=(8, 5))
    share = hosted[0].prompt_share if hosted else 0.5
    for h in hosted:
        ax.step(volumes, [h.daily_cost_usd(v) for v in volumes], where="post", label=f"host {h.model}")
    for r in rented:
        ax.plot(volumes, [r.daily_cost_usd(v, share) for v in volumes], "--", label=f"rent {r.model}")
    for h in hosted:
        for r in rented:
            volume = break_even_tokens_per_day(h, r)
            if volume is not None:
                ax.axvline(volume, color="grey", lw=0.8)
                ax.annotate(f"{volume:,.0f}/day", (volume, h.daily_cost_usd(volume)), fontsize=8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("tokens per day")
    ax.set_ylabel("USD per day")
    ax.set_title("aprendiz: rent or host")
    ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


def as_dict(hosted: list[HostedFigures], rented: list[RentedFigures]) -> dict[str, Any]:
    return {
        "hosted": [h.__dict__ | {"usd_per_million_at_capacity": h.usd_per_million_at_capacity} for h in hosted],
        "rented": [r.__dict__ for r in rented],
        "break_even_tokens_per_day": {
            f"{h.model} vs {r.model}": break_even_tokens_per_day(h, r) for h in hosted for r in rented
        },
    }
