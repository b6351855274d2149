"""kvwatch top's model: a /metrics reading as per-server status, rates between readings, sparklines."""

from __future__ import annotations

from prometheus_client import generate_latest

from agent.sinks.page import render_page
from agent.sinks.prometheus import registry_for
from agent.sinks.status import Trend, read_snapshot, sparkline
from tests.support.harness import STATS
from tests.support.lines import feed, fresh

LOOKUP = (
    "[2025-12-14 16:18:24,320] LMCache INFO: Reqid: cmpl-{n}, Total tokens 1000, LMCache hit tokens: {hit}, "
    "need to load: {hit} (vllm_v1_adapter.py:1:lmcache.integration.vllm.vllm_v1_adapter)"
)


def exposition(stats) -> str:
    return generate_latest(registry_for(lambda: [stats])).decode()


def test_a_reading_and_the_rates_between_two() -> None:
    stats = fresh("a")
    feed(stats, [STATS.strip(), LOOKUP.format(n=1, hit=0)])
    trend = Trend()
    trend.add(100.0, read_snapshot(exposition(stats)))
    first = trend.latest.servers["a"]
    assert (first.running, first.waiting, first.kv_cache_usage, first.prefix_cache_hit_ratio) == (1, 0, 0.01, 0.5)
    assert first.lmcache_hit_ratio == 0.0 and trend.recent_lmcache_hit_ratio("a") is None  # one reading: no rate
    feed(stats, [LOOKUP.format(n=2, hit=768), LOOKUP.format(n=3, hit=1000)])
    trend.add(102.0, read_snapshot(exposition(stats)))
    assert trend.recent_lmcache_hit_ratio("a") == 1768 / 2000
    assert trend.latest.servers["a"].lmcache_hit_ratio == 1768 / 3000
    assert trend.requests_per_second("a") == 0.0
    assert trend.series("a", "running") == [1, 1]


def test_in_multiprocess_mode_the_recent_lmcache_hit_ratio_is_the_servers_last_summary() -> None:
    stats = fresh("mp")
    feed(stats, ["[2026-09-11 10:00:30,512] LMCache INFO: lookup hit rate (over 41 lookup(s)): prefix=62.5%"])
    trend = Trend()
    trend.add(100.0, read_snapshot(exposition(stats)))
    assert trend.latest.servers["mp"].lmcache_server_hit_ratio == 0.625
    assert trend.recent_lmcache_hit_ratio("mp") == 0.625  # one reading is enough: the server computed it
    assert trend.latest.servers["mp"].lmcache_hit_ratio is None  # no in-process lookups: nothing since start
    # The status page shows the server's summary in their place, marked as the server's last.
    assert '62.5% <span class="muted">(server, last)</span>' in render_page(trend.latest)


def test_conditions_are_what_the_alert_rules_fire_on() -> None:
    text = (
        'kvwatch_server_state{server="s",process="vllm",state="crash_loop"} 1\n'
        'kvwatch_server_state{server="s",process="vllm",state="running"} 0\n'
        'kvwatch_server_state{server="s",process="lmcache",state="running"} 1\n'
        'kvwatch_vllm_errors_total{server="s",error="oom"} 2\n'
        'kvwatch_vllm_errors_total{server="s",error="cuda_error"} 0\n'
        'kvwatch_lines_suspicious_total{server="s",family="engine_stats"} 3\n'
        'kvwatch_log_problem_lines_total{server="s",producer="lmcache",level="critical"} 1\n'
        'kvwatch_log_problem_lines_total{server="s",producer="vllm",level="error"} 4\n'
        'kvwatch_lmcache_stores_skipped_total{server="s",reason="memory_pressure"} 5\n'
        'kvwatch_lmcache_stores_skipped_total{server="t",reason="memory_pressure"} 0\n'
        'kvwatch_lmcache_stores_skipped_total{server="t",reason="unhealthy"} 2\n'
        'kvwatch_canary_ok{server="s",reason="nothing_hit"} 1\n'
        'kvwatch_log_problem_lines_total{server="t",producer="lmcache",level="warning"} 9\n'
        "kvwatch_gpus_missing 1\n"
        'kvwatch_lmcache_unhealthy{server="s"} 1\n'
        'kvwatch_lmcache_unhealthy{server="t"} 0\n'
        'kvwatch_lmcache_backend_bypassed{server="s",backend="RemoteBackend"} 1\n'
        'kvwatch_lmcache_backend_bypassed{server="s",backend="LocalDiskBackend"} 0\n'
        'kvwatch_lmcache_backend_bypassed{server="t",backend="RemoteBackend"} 0\n'
        'kvwatch_lmcache_engines_registered{server="s"} 0\n'
        'kvwatch_vllm_prompt_throughput_tokens_per_second{server="s",engine="0"} 812.5\n'
        'kvwatch_lmcache_engines_registered{server="t"} 0\n'
        'kvwatch_vllm_prompt_throughput_tokens_per_second{server="t",engine="0"} 0.0\n'
        'kvwatch_lmcache_unregistered_worker_requests_total{server="s",operation="lookup"} 3\n'
        'kvwatch_lmcache_unregistered_worker_requests_total{server="s",operation="transfer"} 1\n'
        'kvwatch_lmcache_unregistered_worker_requests_total{server="t",operation="lookup"} 0\n'
        'kvwatch_lmcache_key_failures_total{server="s",operation="l2_store"} 2\n'
        'kvwatch_lmcache_key_failures_total{server="s",operation="prefetch"} 0\n'
        'kvwatch_lmcache_key_failures_total{server="t",operation="prefetch"} 0\n'
    )
    snapshot = read_snapshot(text)
    server = snapshot.servers["s"]
    assert (server.state, server.lmcache_state, snapshot.gpus_missing) == ("crash_loop", "running", 1)
    assert server.conditions() == [
        "crash_loop",
        "oom error",
        "LMCache unhealthy",
        "LMCache bypassing RemoteBackend",
        "LMCache errors logged",
        "LMCache memory full",
        "LMCache holds no worker",
        "LMCache asked by a worker it does not hold",
        "LMCache l2_store failures",
        "suspicious lines",
        "canary: nothing_hit",
    ]
    # Warnings, vLLM's error lines, and no worker while vLLM computes no prompt, are no condition.
    assert snapshot.servers["t"].conditions() == []
    assert snapshot.as_dict()["servers"][0]["conditions"] == server.conditions()


def test_sparklines() -> None:
    assert sparkline([0, 1, 2, 3, 4, 5, 6, 7]) == "▁▂▃▄▅▆▇█"
    assert sparkline([None, 0.5, 1.0], top=1.0) == " ▅█"
    assert sparkline([None, None]) == "" and sparkline([0, 0]) == "▁▁"
    assert len(sparkline(list(range(100)), width=10)) == 10


def test_a_starting_server_shows_its_start_up_steps_so_far() -> None:
    from rich.console import Console

    from agent.sinks.terminal import screen

    text = (
        'kvwatch_server_state{server="s",process="vllm",state="starting"} 1\n'
        'kvwatch_vllm_startup_phase_seconds{server="s",phase="weights_loading"} 2.2\n'
        'kvwatch_vllm_startup_phase_seconds{server="s",phase="torch_compile"} 7.41\n'
    )
    trend = Trend()
    trend.add(0.0, read_snapshot(text))
    console = Console(width=100, record=True, color_system=None)
    console.print(screen(trend, 100))
    assert "s starting: weights loading 2.2 s · torch compile 7.4 s" in console.export_text()


def test_an_engine_asleep_or_paused_is_shown_beside_its_state() -> None:
    from rich.console import Console

    from agent.sinks.terminal import screen

    stats = fresh("rl")
    tag = "(EngineCore_DP0 pid=7) INFO 12-04 04:05:15 "
    feed(stats, [tag + "[scheduler.py:2756] setting pause state to PAUSED_NEW"])
    assert read_snapshot(exposition(stats)).servers["rl"].at_rest == "paused"
    feed(stats, [tag + "[abstract.py:390] It took 0.000229 seconds to fall asleep."])
    snapshot = read_snapshot(exposition(stats))
    assert snapshot.servers["rl"].at_rest == "asleep"
    assert '<span class="muted">(asleep)</span>' in render_page(snapshot)
    trend = Trend()
    trend.add(0.0, snapshot)
    console = Console(width=160, record=True, color_system=None)
    console.print(screen(trend, 160))
    assert "not ready (asleep)" in console.export_text()  # a followed log without its start
    feed(stats, [tag + "[abstract.py:408] It took 0.000950 seconds to wake up tags {'weights', 'kv_cache'}."])
    feed(stats, [tag + "[scheduler.py:2756] setting pause state to UNPAUSED"])
    assert read_snapshot(exposition(stats)).servers["rl"].at_rest is None


def test_a_followed_log_is_ready_once_it_shows_a_request_taken_and_stopped_after_its_shutdown() -> None:
    stats = fresh("f")
    assert read_snapshot(exposition(stats)).servers["f"].shown_state == "not ready"  # nothing read yet
    feed(stats, ['(APIServer pid=1) INFO:     10.0.0.7:5 - "POST /v1/completions HTTP/1.1" 200 OK'])
    assert read_snapshot(exposition(stats)).servers["f"].shown_state == "ready"  # read from mid-run
    feed(stats, ["(APIServer pid=1) INFO:     Shutting down"])
    assert read_snapshot(exposition(stats)).servers["f"].shown_state == "stopped"
    feed(stats, ["(APIServer pid=1) INFO 05-26 05:05:00 [api_server.py:1] vLLM API server version 0.26.0"])
    assert read_snapshot(exposition(stats)).servers["f"].shown_state == "not ready"  # starting again


def test_the_request_list_for_one_server_and_in_another_order() -> None:
    from rich.console import Console

    from agent.sinks.status import Snapshot
    from agent.sinks.terminal import ORDERS, View, requests_table

    def row(rid: str, latency: float) -> dict:
        return {"id": rid, "status": 200, "latency_seconds": latency, "prompt_tokens": 10, "lmcache_hit_tokens": 0}

    snapshot = Snapshot({}, requests={"a": [row("req-a1", 0.5), row("req-a2", 3.0)], "b": [row("req-b1", 9.0)]})

    def shown(view: View) -> list[str]:
        console = Console(width=160, record=True, color_system=None)
        console.print(requests_table(snapshot, 160, view=view))
        return [word for word in console.export_text().split() if word.startswith("req-")]

    view = View()
    assert shown(view) == ["req-b1", "req-a2", "req-a1"]  # newest first (each server's newest last)
    view.press("s", ["a", "b"])
    assert (view.server, shown(view)) == ("a", ["req-a2", "req-a1"])
    view.press("o", ["a", "b"])
    view.press("s", ["a", "b"])
    assert (ORDERS[view.order][0], view.server, shown(view)) == ("slowest", "b", ["req-b1"])
    view.press("s", ["a", "b"])  # back to every server
    assert shown(view) == ["req-b1", "req-a2", "req-a1"]


def test_request_ids_and_server_names_are_shown_as_they_are_never_read_as_markup() -> None:
    """A request id is what a client sent (vLLM's ``--enable-request-id-headers``), a server's name may be a log
    file's: rich's markup in either (``[/]`` closes nothing, and stopped the view) is shown as it is."""
    from rich.console import Console

    from agent.sinks.status import Snapshot
    from agent.sinks.terminal import View, requests_table

    row = {"id": "cmpl-[/]x[bold]", "status": 200, "latency_seconds": 1.0, "prompt_tokens": 10}
    snapshot = Snapshot({}, requests={"vllm[/]": [row]})
    view = View()
    view.press("s", ["vllm[/]"])
    console = Console(width=160, record=True, color_system=None)
    console.print(requests_table(snapshot, 160, view=view))
    shown = console.export_text()
    assert "cmpl-[/]x[bold]" in shown and "recent requests of vllm[/]," in shown
    assert shown.count("vllm[/]") == 2  # the caption and the row
