"""The Grafana dashboards: generated from scripts/dashboards.py, on a data source variable, every query
valid PromQL (promtool parses them offline), naming only metrics the catalogue defines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
import yaml
from promql_queries import ROOT, dashboard_files, dashboard_queries, our_metric_names

from aprendiz.metrics import CATALOGUE

EXPECTED = {"aprendiz-overview.json", "aprendiz-generator.json", "aprendiz-classifier.json", "aprendiz-cost.json",
            "aprendiz-training.json"}


def test_the_dashboards_are_what_the_generator_writes():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "dashboards.py"), "--check"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert {p.name for p in dashboard_files()} == EXPECTED


@pytest.mark.parametrize("path", dashboard_files(), ids=lambda p: p.name)
def test_each_dashboard_reads_the_chosen_data_source(path):
    board = json.loads(path.read_text())
    variables = {v["name"]: v for v in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert board["panels"], f"{path.name} has no panel"
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids)), f"{path.name}: panel ids repeat"
    for p in board["panels"]:
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24, p["title"]
        assert p["targets"], f"{p['title']} has no query"
        for t in p["targets"]:
            assert t["datasource"]["uid"] == "${datasource}", p["title"]


def test_uids_are_unique():
    uids = [json.loads(p.read_text())["uid"] for p in dashboard_files()]
    assert len(uids) == len(set(uids))


def test_every_query_is_valid_promql(tmp_path):
    """promtool parses every query offline: each becomes a recording rule of a scratch rules file."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.fail("no promtool: run `make prometheus-tools` (make test does it)")
    queries = dashboard_queries()
    rules = {"groups": [{"name": "dashboards", "rules": [
        {"record": f"dashboard_query_{i}", "expr": q.promql()} for i, q in enumerate(queries)
    ]}]}
    path = tmp_path / "dashboards.yaml"
    path.write_text(yaml.safe_dump(rules))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    failing = result.stdout + result.stderr
    for i, q in enumerate(queries):
        failing = failing.replace(f"dashboard_query_{i}", q.source)
    assert result.returncode == 0, failing
    assert f"SUCCESS: {len(queries)} rules found" in result.stdout


def test_our_metric_names_in_the_dashboards_are_in_the_catalogue():
    known = {sample for spec in CATALOGUE for sample in spec.samples}
    named = {name: q.source for q in dashboard_queries() for name in our_metric_names(q.expr)}
    unknown = {name: source for name, source in named.items() if name not in known}
    assert not unknown, f"names the catalogue does not define: {unknown}"
    # Every metric the platform exports appears on some dashboard.
    unshown = sorted({s.series for s in CATALOGUE} - {n.removesuffix("_bucket").removesuffix("_count")
                                                      .removesuffix("_sum") for n in named})
    assert not unshown, f"metrics no dashboard shows: {unshown}"
