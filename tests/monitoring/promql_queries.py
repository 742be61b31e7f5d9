"""Every PromQL expression the shipped dashboards and alert rules run, as Prometheus can run it.

Grafana's variables are replaced by what a person picking "All" would send: ``$model`` by ``.*``,
``$__rate_interval`` and ``$__range`` by the windows given. Used by the unit checks here and by
tests/integration/test_observability.py against a real Prometheus.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DASHBOARDS = ROOT / "charts" / "aprendiz" / "files" / "dashboards"
RULES = ROOT / "charts" / "aprendiz" / "files" / "rules" / "aprendiz-rules.yaml"
LABEL_VALUES = re.compile(r"^label_values\((?P<metric>.+),\s*(?P<label>\w+)\)$")
OUR_METRIC = re.compile(r"\b(?:ray_)?aprendiz_[a-z0-9_]+\b")


@dataclass(frozen=True)
class Query:
    source: str  # "<dashboard file> / <panel title> / <refId>" or "<rules file> / <rule name>"
    expr: str  # as written in the file
    kind: str  # panel | variable | record | alert

    def promql(self, rate_interval: str = "1m", range_: str = "10m") -> str:
        """The expression with Grafana's variables replaced (a variable query becomes its metric)."""
        expr = self.expr
        if self.kind == "variable":
            match = LABEL_VALUES.match(expr.strip())
            if not match:
                raise ValueError(f"{self.source}: only label_values(metric, label) variables are supported: {expr}")
            expr = match["metric"]
        for name, value in (("$__rate_interval", rate_interval), ("$__range", range_), ("$__interval", "15s"),
                            ("${model}", ".*"), ("$model", ".*")):
            expr = expr.replace(name, value)
        if "$" in expr:
            raise ValueError(f"{self.source}: a Grafana variable this test cannot fill in: {expr}")
        return expr


def dashboard_files() -> list[Path]:
    return sorted(DASHBOARDS.glob("*.json"))


def dashboard_queries() -> list[Query]:
    queries = []
    for path in dashboard_files():
        board = json.loads(path.read_text())
        for variable in board.get("templating", {}).get("list", []):
            if variable.get("type") == "query":
                queries.append(Query(f"{path.name} / variable {variable['name']}", variable["definition"], "variable"))
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                queries.append(Query(f"{path.name} / {panel['title']} / {target['refId']}", target["expr"], "panel"))
    return queries


def rule_queries() -> list[Query]:
    queries = []
    for group in yaml.safe_load(RULES.read_text())["groups"]:
        for rule in group["rules"]:
            kind, name = ("alert", rule["alert"]) if "alert" in rule else ("record", rule["record"])
            queries.append(Query(f"{RULES.name} / {group['name']} / {name}", rule["expr"], kind))
    return queries


def our_metric_names(expr: str) -> set[str]:
    return set(OUR_METRIC.findall(expr))
