"""Many hosts through Prometheus itself: three kvwatch, each standing for a GPU host, reach one central
Prometheus (the Debian ``prometheus`` binary, loopback only) in the two ways a fleet uses.

- **remote write**: each host's Prometheus runs in agent mode (``--enable-feature=agent``), scrapes its
  kvwatch and remote-writes to the central one (``--web.enable-remote-write-receiver``), which
  evaluates ``dashboards/alerts.yml``;
- **federation**: each host's Prometheus scrapes its kvwatch and evaluates the rules; the central one
  scrapes their ``/federate`` for the recording rules' series and the counters a fleet total needs.

Each kvwatch follows a log from the project's generator (``tests/benchmarks/gen_log.py``, another seed
per host), whose exact totals the generator writes beside it: the central Prometheus must hold the sum
of the three and each host's own, though every host names its server the same (``vllm``).  Hosts are
told apart as the fleet section of docs/dashboards.md says: the scrape relabels ``instance`` to the
host's name, and each host's Prometheus adds ``external_labels: {host: ...}``.  A host whose kvwatch
stops is flagged (its ``KvwatchDown`` pending) while the others keep reporting.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.benchmarks.gen_log import generate
from tests.support.dashboards import dashboards, panel_exprs, panels, substitute
from tests.support.harness import REPO, Agent, wait_for
from tests.support.prometheus import Prometheus, prometheus_binary

HOSTS = ("gpu-a", "gpu-b", "gpu-c")
LINES = 3000  # per host: a few hundred requests, every family present
RULES = REPO / "dashboards" / "alerts.yml"
# What the central Prometheus federates: the recording rules, the counters a fleet total needs and the
# few gauges the fleet dashboard reads (a handful of series per server), as docs/dashboards.md lists.
FEDERATED = (
    '{__name__=~"server:kvwatch_.*"}',
    '{__name__=~"kvwatch_lmcache_(lookups|lookup_tokens|hit_tokens)_total|kvwatch_vllm_requests_added_total"}',
    '{__name__=~"kvwatch_http_responses_total|kvwatch_build_info|kvwatch_server_info|up"}',
    '{__name__=~"kvwatch_server_state|kvwatch_vllm_server_ready|kvwatch_vllm_requests_waiting"}',
    '{__name__=~"kvwatch_vllm_kv_cache_usage_ratio|kvwatch_vllm_generation_throughput_tokens_per_second"}',
    '{__name__=~"kvwatch_gpus|kvwatch_gpus_expected|kvwatch_canary_ok|kvwatch_vllm_sleeping|kvwatch_vllm_paused"}',
)
# Fleet dashboard panels without data here, and why.
FLEET_EMPTY = {
    "LMCache (multiprocess) lookups that hit": "no host runs LMCache's multiprocess mode",
    "Failing canaries": "the hosts only follow logs: no canary runs",
}
# Append to one host's log: a stats line of a changed format (a suspicious line, "format drift").
DRIFTED = "INFO 12-14 17:00:01 [loggers.py:1] Engine 000: Avg prompt throughput: n/a tokens/s, changed\n"
# And an error of its LMCache (the generated logs hold vLLM's errors, not LMCache's).
LMCACHE_ERROR = "[2025-12-14 17:00:01,000] LMCache ERROR: Remote backend unreachable (remote.py:1:lmcache.x)\n"


@dataclass
class Host:
    name: str
    agent: Agent
    log: Path
    truth: dict
    prometheus: Prometheus | None = None


def scrape_job(host: Host) -> dict:
    """The host's scrape of its kvwatch, ``instance`` relabelled to the host's name (as a node-local
    Prometheus scraping ``localhost`` must, or every host would be ``localhost:10067``)."""
    return {
        "job_name": "kvwatch",
        "static_configs": [{"targets": [f"127.0.0.1:{host.agent.port}"]}],
        "relabel_configs": [{"target_label": "instance", "replacement": f"{host.name}:10067"}],
    }


def start_hosts(directory: Path) -> list[Host]:
    hosts = []
    for seed, name in enumerate(HOSTS, start=1):
        home = directory / name
        home.mkdir()
        source = home / "generated.log"
        truth = generate(source, LINES, seed=seed, style="current")
        log = home / "vllm.log"
        log.write_text("")
        agent = Agent(home, f'[[follow]]\nname = "vllm"\npaths = ["{log}"]\nstart_at = "beginning"\n')
        hosts.append(Host(name, agent.start(), log, truth))
    return hosts


def write_logs(hosts: list[Host], pieces: int = 6, pause: float = 2.0) -> None:
    """Each host's log, written in ``pieces`` while Prometheus scrapes, so that rates see the lines."""
    sources = [(h.log.parent / "generated.log").read_text(encoding="utf-8").splitlines(keepends=True) for h in hosts]
    for piece in range(pieces):
        for host, lines in zip(hosts, sources, strict=True):
            size = -(-len(lines) // pieces)
            with host.log.open("a", encoding="utf-8") as out:
                out.writelines(lines[piece * size : (piece + 1) * size])
        time.sleep(pause)
    with hosts[0].log.open("a", encoding="utf-8") as out:
        out.write(DRIFTED)
        out.write(LMCACHE_ERROR)


def per_host(prometheus: Prometheus, expr: str) -> dict[str, float]:
    return {r["metric"].get("host", ""): float(r["value"][1]) for r in prometheus.query(expr)}


def totals(hosts: list[Host], key: str) -> dict[str, float]:
    return {host.name: float(host.truth[key]) for host in hosts}


EXACT = {  # central expression by host -> the generator's truth key
    'sum by (host) (kvwatch_lmcache_hit_tokens_total{server="vllm"})': "lmcache_hit_tokens",
    'sum by (host) (kvwatch_lmcache_lookup_tokens_total{server="vllm"})': "lmcache_lookup_tokens",
    'sum by (host) (kvwatch_lmcache_lookups_total{server="vllm"})': "lmcache_lookups",
    'sum by (host) (kvwatch_vllm_requests_added_total{server="vllm"})': "requests_added",
}


def check_exact_totals(central: Prometheus, hosts: list[Host]) -> None:
    for expr, key in EXACT.items():
        expected = totals(hosts, key)
        wait_for(lambda e=expr, x=expected: per_host(central, e) == x, timeout=60, what=f"{expr} on the central")
        fleet = central.query(expr.replace("sum by (host) ", "sum "))
        assert float(fleet[0]["value"][1]) == sum(expected.values()), expr
    for status in ("200", "400", "500"):
        expected = {h.name: float(h.truth["http_responses"][status]) for h in hosts}
        expr = f'sum by (host) (kvwatch_http_responses_total{{server="vllm", status="{status}"}})'
        assert per_host(central, expr) == expected, status
    # One series per host and server: the same server name on three hosts never collides.
    series = central.query('count by (host, instance) (kvwatch_lmcache_hit_tokens_total{server="vllm"})')
    assert sorted((s["metric"]["host"], s["metric"]["instance"]) for s in series) == [(h, f"{h}:10067") for h in HOSTS]
    # What a fleet needs to find an old kvwatch or an old vLLM: on every host.
    assert {s["metric"]["host"] for s in central.query("kvwatch_build_info")} == set(HOSTS)


def check_fleet_dashboard(central: Prometheus, hosts: list[Host]) -> None:
    """Every query of the fleet dashboard runs on the central Prometheus; each panel has data but the
    listed ones; the busiest servers are each host's, the format drift is the drifted host's only."""
    (fleet,) = [d for d in dashboards().values() if d["uid"] == "kvwatch-fleet"]
    wait_for(lambda: central.query("server:kvwatch_lines_suspicious:increase30m"), timeout=60, what="the drifted host")
    empty = []
    for panel in panels(fleet):
        answers = [central.query(substitute(target["expr"])) for target in panel["targets"]]
        if not any(answers) and panel["title"] not in FLEET_EMPTY:
            empty.append(panel["title"])
        if panel["title"] in FLEET_EMPTY:
            assert not any(answers), f"{panel['title']} has data: drop it from FLEET_EMPTY"
    assert not empty, f"fleet panels without data: {empty}"
    waiting = central.query(substitute(expr_of(fleet, "Most waiting requests")))
    assert sorted(r["metric"]["instance"] for r in waiting) == [f"{h}:10067" for h in HOSTS]
    drift = central.query(substitute(expr_of(fleet, "Suspicious lines per host (30 m)")))
    assert [(r["metric"]["instance"], r["metric"]["family"]) for r in drift] == [(f"{HOSTS[0]}:10067", "engine_stats")]
    assert [float(r["value"][1]) for r in central.query(substitute(expr_of(fleet, "Hosts reporting")))] == [3.0]
    logged = central.query(substitute(expr_of(fleet, "Error lines logged per host (30 m)")))
    assert sorted(r["metric"]["instance"] for r in logged if r["metric"]["producer"] == "lmcache") == [
        f"{HOSTS[0]}:10067"
    ]


def check_every_panel_runs(central: Prometheus) -> None:
    """Every panel query of every dashboard runs on the central Prometheus, whose series carry the hosts'
    external labels (which of them have data on these logs is the single-host test's business)."""
    for _title, expr in panel_exprs():
        central.query(substitute(expr))  # raises on a PromQL error


def expr_of(dashboard: dict, title: str) -> str:
    (panel,) = [p for p in panels(dashboard) if p["title"] == title]
    return panel["targets"][0]["expr"]


@pytest.fixture
def hosts(tmp_path: Path) -> Iterator[list[Host]]:
    prometheus_binary()
    started = start_hosts(tmp_path)
    try:
        yield started
    finally:
        for host in started:
            if host.prometheus is not None:
                host.prometheus.close()
            host.agent.kill()


def test_remote_write_from_agent_mode_prometheus_gives_exact_fleet_totals(hosts: list[Host], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    shutil.copyfile(RULES, rules)
    central = Prometheus(
        tmp_path / "central",
        [],
        config={"global": {"evaluation_interval": "1s"}, "rule_files": [str(rules)]},
        flags=("--web.enable-remote-write-receiver",),
    )
    try:
        for host in hosts:
            host.prometheus = Prometheus(
                tmp_path / f"prometheus-{host.name}",
                [],
                features=("agent",),
                config={
                    "global": {"scrape_interval": "1s", "external_labels": {"host": host.name}},
                    "scrape_configs": [scrape_job(host)],
                    "remote_write": [
                        {
                            "url": f"http://127.0.0.1:{central.port}/api/v1/write",
                            "queue_config": {"batch_send_deadline": "1s"},
                        }
                    ],
                },
            )
        write_logs(hosts)
        check_exact_totals(central, hosts)
        check_fleet_dashboard(central, hosts)
        check_every_panel_runs(central)
        # The recording rules evaluate on the central Prometheus, one series per host's server.
        ratio = "server:kvwatch_lmcache_hit_ratio:rate5m"
        wait_for(lambda: set(per_host(central, ratio)) == set(HOSTS), timeout=60, what="the hit ratio of each host")
        # (Of the lines after each counter's first scrape: the first piece of a log makes the series.)
        assert all(0 < value < 1 for value in per_host(central, ratio).values())

        # One host's kvwatch stops: its KvwatchDown is pending at once (firing after its `for:`), the
        # others keep reporting what their logs add.
        down = hosts[1]
        down.agent.kill()
        wait_for(
            lambda: central.query('ALERTS{alertname="KvwatchDown"}'),
            timeout=60,
            what="KvwatchDown for the stopped host",
        )
        flagged = central.query('ALERTS{alertname="KvwatchDown"}')
        assert [(a["metric"]["host"], a["metric"]["instance"]) for a in flagged] == [(down.name, f"{down.name}:10067")]
        assert per_host(central, 'up{job="kvwatch"}') == {"gpu-a": 1.0, "gpu-b": 0.0, "gpu-c": 1.0}
        extra = "[2025-12-14 17:00:00,000] LMCache INFO: Reqid: cmpl-late, Total tokens 600, LMCache hit tokens: 256, "
        extra += "need to load: 256 (vllm_v1_adapter.py:1:lmcache.integration.vllm.vllm_v1_adapter)\n"
        for host in (hosts[0], hosts[2]):
            with host.log.open("a", encoding="utf-8") as out:
                out.write(extra)
        expected = totals(hosts, "lmcache_hit_tokens")
        expected["gpu-a"] += 256
        expected["gpu-c"] += 256
        # The stopped host's series went stale (its Prometheus wrote the markers), its last values remain.
        expr = 'sum by (host) (kvwatch_lmcache_hit_tokens_total{server="vllm"})'
        live = {host: value for host, value in expected.items() if host != down.name}
        wait_for(lambda: per_host(central, expr) == live, timeout=60, what="the live hosts' new lines")
        last = 'sum by (host) (last_over_time(kvwatch_lmcache_hit_tokens_total{server="vllm"}[10m]))'
        assert per_host(central, last) == expected
    finally:
        # Each agent first, while the central Prometheus still takes what it flushes as it stops (with it gone,
        # each waited out its stop's timeout: a minute for the three).
        for host in hosts:
            if host.prometheus is not None:
                host.prometheus.close()
                host.prometheus = None
        central.close()


def test_federation_of_the_recording_rules_and_totals(hosts: list[Host], tmp_path: Path) -> None:
    rules = tmp_path / "rules.yml"
    shutil.copyfile(RULES, rules)
    for host in hosts:
        host.prometheus = Prometheus(
            tmp_path / f"prometheus-{host.name}",
            [],
            config={
                "global": {
                    "scrape_interval": "1s",
                    "evaluation_interval": "1s",
                    "external_labels": {"host": host.name},
                },
                "rule_files": [str(rules)],
                "scrape_configs": [scrape_job(host)],
            },
        )
    central = Prometheus(
        tmp_path / "central",
        [],
        config={
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "scrape_configs": [
                {
                    "job_name": "federate",
                    "honor_labels": True,  # keep each host's instance, job and host labels as they are
                    "metrics_path": "/federate",
                    "params": {"match[]": list(FEDERATED)},
                    "static_configs": [{"targets": [f"127.0.0.1:{h.prometheus.port}" for h in hosts if h.prometheus]}],
                }
            ],
        },
    )
    try:
        write_logs(hosts)
        check_exact_totals(central, hosts)
        check_fleet_dashboard(central, hosts)
        # Each recording rule's series arrives once per host, as the host's Prometheus computed it.
        for record in ("server:kvwatch_lmcache_hit_ratio:rate5m", "server:kvwatch_http_responses:rate5m"):
            wait_for(lambda r=record: set(per_host(central, r)) == set(HOSTS), timeout=60, what=f"{record} per host")
        for host in hosts:
            assert host.prometheus is not None
            local = host.prometheus.query('server:kvwatch_lmcache_hit_ratio:rate5m{server="vllm"}')
            assert [s["metric"]["instance"] for s in local] == [f"{host.name}:10067"]
            assert "host" not in local[0]["metric"]  # external labels are added on the way out only
    finally:
        central.close()
