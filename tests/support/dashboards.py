"""The shipped dashboards and rules, read as data: their panels, expressions and rules."""

from __future__ import annotations

import json
import re

import yaml

from tests.support.harness import REPO

DASHBOARDS = REPO / "dashboards"
RULES = DASHBOARDS / "alerts.yml"
RANGE_FUNCTIONS = re.compile(r"\b(rate|increase|deriv|irate|delta|avg_over_time|max_over_time)\(")
METRIC = re.compile(r"\b((?:kvwatch|server):[a-z0-9_:]+|kvwatch_[a-z0-9_]+)")


def dashboards() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text()) for p in sorted(DASHBOARDS.glob("*.json"))}


def panels(dashboard: dict) -> list[dict]:
    return [p for p in dashboard["panels"] if p["type"] != "row"]


def panel_exprs() -> list[tuple[str, str]]:
    return [(p["title"], t["expr"]) for d in dashboards().values() for p in panels(d) for t in p["targets"]]


def rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


# What Grafana puts in for the template variables when all is picked (and a range), to run a panel's query.
SUBSTITUTIONS = {
    "$instance": ".*",
    "$server": ".*",
    "$engine": ".*",
    "$__rate_interval": "30s",
    "$__range": "5m",
}


def substitute(expr: str) -> str:
    for variable, value in SUBSTITUTIONS.items():
        expr = expr.replace(variable, value)
    return expr
