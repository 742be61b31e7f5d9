"""The alert rules: promtool accepts them, every alert has a unit test that fires it from input
series, and every metric of ours that they name is in the catalogue (aprendiz/metrics.py)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml
from promql_queries import ROOT, RULES, our_metric_names, rule_queries

from aprendiz.metrics import CATALOGUE

TESTS = sorted((ROOT / "monitoring" / "tests").glob("*.yaml"))


@pytest.fixture(scope="session")
def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("no promtool: run `make prometheus-tools` (make test does it) or apt-get install prometheus")
    return found


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def _alerts() -> list[dict]:
    return [rule for rule in _rules() if "alert" in rule]


def test_promtool_checks_the_rules(promtool):
    result = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass(promtool):
    assert TESTS, "no promtool unit tests in monitoring/tests/"
    result = subprocess.run(
        [promtool, "test", "rules", *[p.name for p in TESTS]], cwd=TESTS[0].parent, capture_output=True, text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(TESTS), result.stdout


def test_every_alert_fires_in_a_unit_test_from_input_series():
    fired: set[str] = set()
    for path in TESTS:
        document = yaml.safe_load(path.read_text())
        assert document["rule_files"] == ["../../charts/aprendiz/files/rules/aprendiz-rules.yaml"], path
        for case in document["tests"]:
            if not case.get("input_series"):
                continue
            for check in case.get("alert_rule_test", []):
                if check.get("exp_alerts"):
                    fired.add(check["alertname"])
    missing = sorted({a["alert"] for a in _alerts()} - fired)
    assert not missing, f"alerts that no promtool test fires from input series: {missing}"


@pytest.mark.parametrize("alert", _alerts(), ids=lambda a: a["alert"])
def test_each_alert_says_how_bad_and_what_to_do(alert):
    assert alert["alert"].startswith("Aprendiz")
    assert alert["labels"]["severity"] in ("page", "ticket", "warning")
    assert alert["annotations"]["summary"] and alert["annotations"]["description"]


def test_our_metric_names_in_the_rules_are_in_the_catalogue():
    known = {sample for spec in CATALOGUE for sample in spec.samples}
    named = {m for q in rule_queries() for m in our_metric_names(q.expr)}
    assert named, "the rules name none of our metrics"
    assert not named - known, f"names the catalogue does not define: {sorted(named - known)}"
