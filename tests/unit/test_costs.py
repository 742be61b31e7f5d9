"""aprendiz.costs and `aprendiz cost`: rent or host, from measured throughput and configured prices."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from aprendiz import costs
from aprendiz.cli import app

HOSTED = costs.HostedFigures("tiny", replica_hourly_usd=1.0, tokens_per_s=100.0, prompt_share=0.5)
RENTED = costs.RentedFigures("gpt", input_usd_per_million=10.0, output_usd_per_million=30.0)


def test_hosted_cost_per_million_tokens_at_capacity():
    # 1 USD/h over 360,000 tokens/h
    assert HOSTED.usd_per_million_at_capacity == pytest.approx(1e6 / 360_000)
    assert HOSTED.daily_cost_usd(1) == 24.0
    assert HOSTED.daily_cost_usd(HOSTED.daily_capacity_tokens + 1) == 48.0


def test_break_even_is_where_one_replica_costs_what_renting_does():
    volume = costs.break_even_tokens_per_day(HOSTED, RENTED)
    assert volume == pytest.approx(24.0 / (20.0 / 1e6))  # 20 USD/Mtok blended
    assert RENTED.daily_cost_usd(volume, 0.5) == pytest.approx(HOSTED.daily_cost_usd(volume))
    cheap = costs.RentedFigures("cheap", 0.01, 0.01)
    assert costs.break_even_tokens_per_day(HOSTED, cheap) is None


def test_hosting_upkeep_moves_the_break_even_up():
    import dataclasses

    kept = dataclasses.replace(HOSTED, upkeep_usd_per_month=730.0)  # 24 USD a day
    assert kept.daily_cost_usd(1) == pytest.approx(48.0)
    volume = costs.break_even_tokens_per_day(kept, RENTED)
    assert volume == pytest.approx(48.0 / (20.0 / 1e6))  # twice the volume without upkeep
    assert RENTED.daily_cost_usd(volume, 0.5) == pytest.approx(kept.daily_cost_usd(volume))
    assert "upkeep $24.00/day" in costs.report([kept], [RENTED])
    # Upkeep past what one replica's capacity saves: renting wins at every volume it serves.
    assert costs.break_even_tokens_per_day(dataclasses.replace(HOSTED, upkeep_usd_per_month=730.0 * 100), RENTED) is None


def test_report_and_plot(tmp_path):
    text = costs.report([HOSTED], [RENTED])
    assert "tiny vs gpt: 1,200,000 tokens/day" in text
    png = costs.plot([HOSTED], [RENTED], tmp_path / "cost.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cost_cli_from_a_benchmark_file(tmp_path, repo_root):
    config = tmp_path / "aprendiz.yaml"
    config.write_text(
        "generators: [{id: tiny, source: /m}]\n"
        "rented: [{id: gpt, base_url: 'https://api.example/v1', upstream_model: g,"
        " input_usd_per_million: 10, output_usd_per_million: 30}]\n"
    )
    bench = tmp_path / "bench.json"
    bench.write_text(json.dumps({"hosted": [{"model": "tiny", "replica_hourly_usd": 1.0, "tokens_per_s": 100.0}]}))
    runner = CliRunner()
    result = runner.invoke(app, ["cost", "--benchmark", str(bench), "--config", str(config), "--plot",
                                 str(tmp_path / "c.png")])
    assert result.exit_code == 0, result.output
    assert "tiny vs gpt: 1,200,000 tokens/day" in result.stdout and (tmp_path / "c.png").exists()
    as_json = json.loads(runner.invoke(app, ["cost", "--benchmark", str(bench), "--config", str(config),
                                             "--json"]).stdout)
    assert as_json["break_even_tokens_per_day"]["tiny vs gpt"] == pytest.approx(1_200_000)
    both = runner.invoke(app, ["cost", "--config", str(config)])
    assert both.exit_code == 2 and "exactly one" in both.output
    bench.write_text("{}")
    broken = runner.invoke(app, ["cost", "--benchmark", str(bench), "--config", str(config)])
    assert broken.exit_code == 1 and "hosted" in broken.output


def test_prometheus_queries_name_the_metrics_the_platform_exports():
    from aprendiz.metrics import GatewayMetrics, ReplicaCostMetrics  # noqa: F401  (the names live there)

    q = costs.queries("1h")
    assert "ray_aprendiz_gateway_tokens_total" in q["all_tokens"]
    assert "ray_aprendiz_replica_cost_usd_total" in q["replica_cost"]
    assert 'kind="prompt"' in q["prompt_tokens"] and q["prompt_tokens"].count("{") == 1
