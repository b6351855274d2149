"""Every PromQL expression of every panel and rule, run by a real Prometheus scraping a real kvwatch.

kvwatch (``kvwatch run``) supervises a stand-in server and follows real logs
(vLLM 0.32 + LMCache 0.5.6, the seed's ROCm benchmark run), then one line of
every event kind from the parser fixtures (an OOM, a V0 stats line, a
suspicious line ...) and a line that is not UTF-8, with tracing on;
the Debian ``prometheus`` binary scrapes it every second with
``dashboards/alerts.yml`` loaded.  Each expression must run without error and
return data, unless it is listed below with the reason it is empty on this
input.
"""

from __future__ import annotations

import json
import re
import sys
import time

import pytest

from tests.support.dashboards import panel_exprs, rules, substitute
from tests.support.harness import FAKE, REPO, Agent, fake_server, free_port, wait_for
from tests.support.otlp_receiver import HttpReceiver, tracing_env
from tests.support.prometheus import Prometheus, prometheus_binary

SAMPLES = REPO / "tests" / "fixtures" / "samples"
LOGS = (
    "vllm-0.32.0-cpu-lmcache-0.5.6.log",
    "seed-rocm-mi325x.log",
    "vllm-0.32.0-cpu-lmcache-0.5.6-degraded.log",
    # LMCache's multiprocess mode: vLLM's and the LMCache server's logs of one run.
    "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log",
    "lmcache-0.5.6-mp-server.log",
)

FIXTURES = REPO / "tests" / "fixtures" / "lines"


# Fixture files of framing variants (the same events behind wrappers, prefixes, or without a header).
FRAMINGS = ("wrappers.json", "prefixes.json", "message_only.json")
# Kinds whose every fixture line gives other series (another key, phase, direction, or way a process ended).
EVERY_LINE = {"kv_transfer_stats", "startup_phase", "service_exited"}


def one_line_of_every_kind() -> list[str]:
    """The first fixture line of each event kind (plain lines, not wrapped ones)."""
    seen: set[str] = set()
    lines = []
    for path in sorted(FIXTURES.glob("*.json")):
        if path.name in FRAMINGS:
            continue
        for case in json.loads(path.read_text(encoding="utf-8")):
            kinds = {event["kind"] for event in case.get("events", [])}
            # Every vllm bench line: each gives another series.
            if (kinds - seen or path.name == "bench.json" or kinds & EVERY_LINE) and "\n" not in case["line"]:
                seen |= kinds
                lines.append(case["line"])
    return lines


# Metric (or recording rule) -> why expressions on it are empty on this input.
EMPTY_ON_THIS_INPUT = {
    "kvwatch_vllm_cpu_prefix_cache_hit_ratio": "V0 engines only",
    "kvwatch_vllm_mm_cache_hit_ratio": "multimodal models only",
    "kvwatch_vllm_dummy_iterations_total": "data-parallel ranks only: the one step line of its kind is no dummy",
    "kvwatch_server_last_exit_code": "the supervised stand-in has not exited",
    "kvwatch_server_last_exit_signal": "the supervised stand-in has not exited",
    "kvwatch_server_last_error": "no error in the stand-in's log",
    "kvwatch_journal_up": "no journal_unit is followed",
    "kvwatch_tail_read_error": "every followed file is readable",
    "kvwatch_canary_last_hit_tokens": "the stand-in has no OpenAI API: its canary cannot run",
    "kvwatch_canary_last_latency_seconds": "the stand-in has no OpenAI API: its canary cannot run",
    "server:kvwatch_log_error_lines": "the fixture lines' one error line comes after their shutdown line (not counted)",
}
# Alerts that must fire on this input, and the rest (quiet, hence empty).
FIRING = {
    "KvwatchGpusMissing": "agent.expected_gpus = 1 on a host without GPUs",
    "KvwatchOutOfMemory": "the fixture lines hold a CUDA out-of-memory error",
    "KvwatchSuspiciousLines": "the fixture lines hold a stats line of a changed format",
    "KvwatchCanaryFailing": "the stand-in's canary cannot run (it has no OpenAI API)",
    "KvwatchKvLoadFailures": "the fixture lines hold a KV load failure (requests rescheduled)",
    "KvwatchHostOutOfMemory": "the fixture lines hold systemd's word of a process of the unit the OOM killer killed",
}


def allowed_empty(expr: str) -> str | None:
    for name, reason in EMPTY_ON_THIS_INPUT.items():
        if re.search(rf"\b{re.escape(name)}\b", expr):
            return reason
    return None


@pytest.fixture(scope="module")
def prometheus(tmp_path_factory) -> Prometheus:
    prometheus_binary()
    directory = tmp_path_factory.mktemp("prom")
    receiver = HttpReceiver()
    followed = directory / "followed.log"
    followed.write_text("")
    port = free_port()
    # The stand-in runs in LMCache's mp mode with a stand-in LMCache server kvwatch launches beside it (quiet:
    # its own lines would add to the server's), so that the LMCache server row has its process series.
    http_port = free_port()
    lmcache = [sys.executable, FAKE, "--quiet", "--port", str(http_port), "--health-path", "/healthcheck"]
    body = (
        fake_server("standin", "--rate", "2", port=port, canary_interval='"10s"')
        + f'[server.lmcache]\nmode = "mp"\nhttp_port = {http_port}\ncommand = {json.dumps(lmcache)}\n\n'
        + f'[[follow]]\nname = "gpu0"\npaths = ["{followed}"]\ntimezone = "UTC"\nstart_at = "beginning"\n\n'
        + f'[tracing]\nenabled = true\nendpoint = "{receiver.endpoint}"\n'
    )
    env = tracing_env()
    agent = Agent(directory, body, env=env)
    agent.config.write_text(agent.config.read_text().replace("[agent]\n", "[agent]\nexpected_gpus = 1\n", 1))
    (directory / "rules.yml").write_text((REPO / "dashboards" / "alerts.yml").read_text())
    # One recorded `kvwatch bench` run in the state directory, as kvwatch bench writes it.
    (directory / "state").mkdir(exist_ok=True)
    (directory / "state" / "bench-history.jsonl").write_text(
        json.dumps(
            {
                "time": time.time(),
                "mode": "latency",
                "model": "tiny-llama",
                "params": {"batch_size": "8", "input_len": "32", "output_len": "128"},
                "exit_code": 0,
                "results": {"avg_latency_seconds": 1.47, "p99_latency_seconds": 1.5},
            }
        )
        + "\n"
    )
    agent.start()
    prom = None
    try:
        wait_for(
            lambda: agent.value("kvwatch_server_up", process="vllm", server="standin") == 1, what="the stand-in to run"
        )
        prom = Prometheus(directory, [f"127.0.0.1:{agent.port}"], rule_files=[directory / "rules.yml"])
        # Lines arrive while Prometheus watches, so that rates see them.
        with open(followed, "a", encoding="utf-8") as out:
            for name in LOGS:
                for line in (SAMPLES / name).read_text(encoding="utf-8").splitlines(keepends=True):
                    out.write(line)
                out.flush()
                time.sleep(3)
            out.write("\n".join(one_line_of_every_kind()) + "\n")
            out.write('INFO:     127.0.0.1:5000 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error\n')
        with open(followed, "ab") as raw:
            raw.write(b"INFO 12-14 16:18:29 [loggers.py:118] \xff\xfe not UTF-8\n")
        wait_for(lambda: prom.query('kvwatch_lmcache_lookups_total{server="gpu0"} > 0'), what="the scraped lookups")
        wait_for(lambda: prom.query("kvwatch_canary_ok"), what="the stand-in's first canary run")
        time.sleep(3)
        yield prom
    finally:
        if prom is not None:
            prom.close()
        agent.kill()
        agent.kill_servers()
        receiver.close()


def test_every_panel_expression_runs_and_returns_data(prometheus: Prometheus) -> None:
    empty, needed = [], set()
    for title, expr in panel_exprs():
        result = prometheus.query(substitute(expr))  # raises on a PromQL error
        if not result:
            if allowed_empty(expr) is None:
                empty.append(f"{title}: {expr}")
            needed |= {name for name in EMPTY_ON_THIS_INPUT if re.search(rf"\b{re.escape(name)}\b", expr)}
    assert not empty, "empty on this input and not listed with a reason:\n" + "\n".join(empty)
    for rule in rules():
        if not prometheus.query(rule["expr"]):
            needed |= {name for name in EMPTY_ON_THIS_INPUT if re.search(rf"\b{re.escape(name)}\b", rule["expr"])}
    assert not set(EMPTY_ON_THIS_INPUT) - needed, "listed as empty but has data: " + ", ".join(
        sorted(set(EMPTY_ON_THIS_INPUT) - needed)
    )


def test_every_rule_expression_runs_and_recordings_have_data(prometheus: Prometheus) -> None:
    empty = []
    for rule in rules():
        result = prometheus.query(rule["expr"])  # raises on a PromQL error
        if "record" in rule:
            if not result:
                if allowed_empty(rule["expr"]) is None:
                    empty.append(rule["record"])
                continue
            # Prometheus evaluates the recording rule itself: its series exists too.
            assert wait_for(lambda name=rule["record"]: prometheus.query(name), what=rule["record"])
        elif rule["alert"] in FIRING:
            assert result, f"{rule['alert']} should fire: {FIRING[rule['alert']]}"
        # Other alerts: quiet on a healthy input; running without error is the check.
    assert not empty, f"recording rules without data: {empty}"


def test_the_alert_meant_to_fire_is_firing_in_prometheus(prometheus: Prometheus) -> None:
    firing = wait_for(
        lambda: (
            [a for a in prometheus.api("alerts")["alerts"] if a["labels"]["alertname"] in FIRING]
            if {a["labels"]["alertname"] for a in prometheus.api("alerts")["alerts"]} >= set(FIRING)
            else []
        ),
        timeout=30,
        what="the alerts this input sets off (pending or firing)",
    )
    assert {a["labels"]["alertname"] for a in firing} == set(FIRING)


def test_every_template_variable_finds_values(prometheus: Prometheus) -> None:
    from tests.support.dashboards import dashboards

    for dashboard in dashboards().values():
        for variable in dashboard["templating"]["list"]:
            if variable["type"] != "query":
                continue
            # label_values(SELECTOR, LABEL): what Grafana asks Prometheus' label-values API.
            m = re.fullmatch(r"label_values\((.+), (\w+)\)", variable["query"])
            assert m, variable["query"]
            values = prometheus.api(f"label/{m.group(2)}/values", **{"match[]": substitute(m.group(1))})
            assert values, variable["name"]
