"""The dashboards and rules, statically: built from code, by the conventions, naming only metrics that exist."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import pytest

from agent.catalogue import SPECS
from tests.support.dashboards import METRIC, RANGE_FUNCTIONS, RULES, dashboards, panel_exprs, panels, rules
from tests.support.harness import REPO

# Exported series no panel shows, and why.  Empty today: every series is on a panel.
UNPLOTTED: dict[str, str] = {}


def promtool() -> str:
    binary = shutil.which("promtool")
    if binary is None:
        pytest.skip("promtool not installed (Debian package prometheus; `make test` installs it)")
    return binary


def test_the_json_is_what_the_code_builds() -> None:
    result = subprocess.run([sys.executable, "-m", "dashboards.build", "--check"], cwd=REPO, capture_output=True)
    assert result.returncode == 0, result.stderr.decode()


def test_datasource_is_a_variable_never_a_fixed_uid() -> None:
    for name, dashboard in dashboards().items():
        text = json.dumps(dashboard)
        assert "${DS_" not in text and "__inputs" not in dashboard, name
        variables = {v["name"]: v for v in dashboard["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
        for var in ("instance", "server", "engine"):
            assert variables[var]["type"] == "query" and variables[var]["datasource"]["uid"] == "${datasource}"
        for panel in panels(dashboard):
            refs = [panel["datasource"]] + [t["datasource"] for t in panel["targets"]]
            assert all(ref == {"type": "prometheus", "uid": "${datasource}"} for ref in refs), panel["title"]


def test_stable_uids_units_and_rate_intervals() -> None:
    uids = [d["uid"] for d in dashboards().values()]
    assert sorted(uids) == ["kvwatch-fleet", "kvwatch-overview"]
    rows = {
        "kvwatch-overview": [
            "Health",
            "LMCache (in-process connector)",
            "LMCache server (multiprocess mode)",
            "vLLM engine",
            "Requests",
            "Benchmarks",
            "kvwatch itself",
        ],
        "kvwatch-fleet": ["Hosts", "Servers", "Cache and errors", "Format drift and canaries"],
    }
    for dashboard in dashboards().values():
        titles = [p["title"] for p in dashboard["panels"] if p["type"] == "row"]
        assert titles == rows[dashboard["uid"]]
        for panel in panels(dashboard):
            assert panel["fieldConfig"]["defaults"].get("unit"), panel["title"]
            assert panel.get("description") is not None
            for target in panel["targets"]:
                expr = target["expr"]
                ranges = re.findall(r"\[([^\]]+)\]", expr)
                if RANGE_FUNCTIONS.search(expr):
                    assert ranges and all(r in ("$__rate_interval", "$__range") for r in ranges), expr
                host_wide = (
                    "kvwatch_build_info",
                    "kvwatch_gpus",
                    "spans_",
                    "kvwatch_bench_last_",
                    "kvwatch_state_",
                    "kvwatch_config_",
                    "up{job=",
                )
                if not any(name in expr for name in host_wide):
                    assert 'server=~"$server"' in expr, expr  # every server series follows the picker


def test_panels_link_to_traces_through_exemplars() -> None:
    exemplar_panels = [
        p["title"] for d in dashboards().values() for p in panels(d) if any(t.get("exemplar") for t in p["targets"])
    ]
    assert "Per-request hit ratio" in exemplar_panels


def test_every_metric_used_exists_and_every_metric_is_shown() -> None:
    recorded = {rule["record"] for rule in rules() if "record" in rule}
    used: set[str] = set()
    for _title, expr in panel_exprs():
        used |= set(METRIC.findall(expr))
    for rule in rules():
        used |= set(METRIC.findall(rule["expr"]))
    for name in used:
        base = re.sub(r"_(bucket|sum|count)$", "", name)
        assert name in recorded or name in SPECS or base in SPECS, f"{name} is neither exported nor recorded"
    shown = {re.sub(r"_(bucket|sum|count)$", "", name) for name in used}
    missing = sorted(set(SPECS) - shown - set(UNPLOTTED))
    assert not missing, f"exported but on no panel or rule (add one, or to UNPLOTTED with a reason): {missing}"


def test_rules_follow_the_mixin_conventions() -> None:
    alerts = [rule for rule in rules() if "alert" in rule]
    names = {rule["alert"] for rule in alerts}
    assert {
        "KvwatchAbsent",
        "KvwatchServerDown",
        "KvwatchServerCrashLoop",
        "KvwatchEngineStalled",
        "KvwatchLmcacheHitRatioDropped",
        "KvwatchKvCacheSaturated",
        "KvwatchOutOfMemory",
        "KvwatchGpusMissing",
        "KvwatchSuspiciousLines",
    } <= names
    for rule in alerts:
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
    assert "absent(" in next(r["expr"] for r in alerts if r["alert"] == "KvwatchAbsent")
    for rule in rules():
        if "record" in rule:
            assert re.fullmatch(r"[a-z_]+:[a-z0-9_]+:[a-z0-9_]+", rule["record"]), rule["record"]


def test_promtool_checks_the_rules() -> None:
    result = subprocess.run([promtool(), "check", "rules", str(RULES)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_stays_quiet_where_it_should() -> None:
    tests = REPO / "tests" / "dashboards" / "alerts_test.yml"
    covered = {m for m in re.findall(r"alertname: (\w+)", tests.read_text())}
    assert covered == {rule["alert"] for rule in rules() if "alert" in rule}
    result = subprocess.run([promtool(), "test", "rules", str(tests)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
