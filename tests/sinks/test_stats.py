"""What ServerStats counts from events, and that parts of a log merge into the same numbers."""

from __future__ import annotations

import json
import pickle

import pytest

from agent.sinks.labels import route_of
from agent.sinks.prometheus import collect_families
from agent.sinks.stats import ServerStats
from parsers import events as ev
from parsers import parse_line
from tests.support.lines import PREEMPTION_LOG, SAMPLES, all_fixture_lines, feed, fresh, line_cases


def read_in_two(lines: list[str], cut: int, start=fresh) -> ServerStats:
    """The stats of ``lines`` read in two parts cut at ``cut`` and merged, as a parallel replay reads a log."""
    merged = feed(start(), lines[:cut])
    merged.merge(pickle.loads(pickle.dumps(feed(start(), lines[cut:]))))
    return merged


def test_lookup_semantics() -> None:
    s = fresh()
    s.observe(ev.LmcacheLookup(None, "a", 497, 256, -240))  # negative: vLLM already had more; nothing to load
    s.observe(ev.LmcacheLookup(None, "b", 600, 576, 64, 512, 256))  # below min_retrieve: skipped
    s.observe(ev.LmcacheLookup(None, "c", 493, 256, 256, 0))
    s.observe(ev.LmcacheLookup(None, "d", 0, 0, 0))  # empty request: no ratio
    s.observe(ev.LmcacheLookup(None, "e", 100, 0, 0))  # a miss
    assert (s.lookups, s.lookup_tokens, s.hit_tokens) == (5, 1690, 1088)
    assert s.need_to_load_tokens == 256
    assert s.lookups_below_min_retrieve == 1
    assert s.engine_computed_tokens == 512
    assert s.hit_ratio.count == 4
    assert s.hit_ratio.counts[0] == 1  # le="0": the miss


def test_store_and_retrieve_sizes_use_lmcache_gb() -> None:
    s = fresh()
    s.observe(ev.LmcacheStore(None, "a", 256, 256, 0.5, 2.0, 0.25))
    s.observe(ev.LmcacheRetrieve(None, "a", 128, 128, 256, 0.25, 4.0, 0.0625))
    assert s.stored_bytes == 0.5 * 2**30 and s.retrieved_bytes == 0.25 * 2**30
    assert s.store_duration.sum == pytest.approx(0.002) and s.retrieve_duration.sum == pytest.approx(0.004)


def test_one_start_with_many_start_lines_counts_once() -> None:
    s = fresh()
    for kind in ("server_starting", "engine_starting", "server_starting", "server_ready", "server_ready"):
        s.observe(ev.EVENT_KINDS[kind](None))
    assert (s.starts, s.ready) == (1, 1)
    for kind in ("server_shutdown", "server_shutdown", "server_starting", "lmcache_degraded", "server_ready"):
        s.observe(ev.EVENT_KINDS[kind](None))
    assert (s.starts, s.shutdowns, s.ready, s.lmcache_degraded) == (2, 1, 1, 1)
    s.observe(ev.ServerStarting(None, "0.33.0"))
    assert (s.starts, s.ready, s.lmcache_degraded, s.version) == (3, 0, 0, "0.33.0")


# A log kvwatch began reading while the server ran: no start line, then requests; a stop, and lines after it.
MID_RUN_LOG = [
    "(APIServer pid=1) INFO 05-26 05:04:36 [loggers.py:271] Engine 000: Avg prompt throughput: 1268.9 tokens/s, Avg "
    "generation throughput: 147.0 tokens/s, Running: 7 reqs, Waiting: 0 reqs, GPU KV cache usage: 0.8%, Prefix cache "
    "hit rate: 19.8%",
    '(APIServer pid=1) INFO:     172.31.0.1:37016 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    "(APIServer pid=1) INFO 05-26 05:04:37 [async_llm.py:578] Added request chatcmpl-1.",
    "(APIServer pid=1) INFO:     Shutting down",
    '(APIServer pid=1) INFO:     172.31.0.1:37020 - "POST /v1/chat/completions HTTP/1.1" 503 Service Unavailable',
    "(APIServer pid=1) INFO 05-26 05:04:41 [async_llm.py:578] Added request chatcmpl-2.",
]


def test_a_log_read_from_mid_run_is_ready_once_it_shows_a_request_taken() -> None:
    """Read from where the server was running (kvwatch started after it), its start lines are never seen: an access
    line or an added request shows it answers.  Once a start, ready or shutdown line is seen, those alone say."""
    s = feed(fresh(), MID_RUN_LOG[:1])
    assert (s.ready, s.state) == (0, "unknown")  # a stats line: the engine runs, the API server may not answer yet
    for taken in MID_RUN_LOG[1:3]:  # the access line, or the added request, alone
        alone = feed(fresh(), [taken])
        assert (alone.ready, alone.state, alone.starts, alone.stopped) == (1, "unknown", 0, 0)
    s = feed(fresh(), MID_RUN_LOG)
    assert (s.ready, s.state, s.shutdowns, s.stopped) == (0, "stopped", 1, 1)  # not ready again after its shutdown
    s = feed(s, ["(APIServer pid=1) INFO 05-26 05:05:00 [api_server.py:1] vLLM API server version 0.26.0"])
    assert (s.ready, s.starts, s.stopped) == (0, 1, 0)
    s = feed(s, ['(APIServer pid=1) INFO:     127.0.0.1:5 - "GET /health HTTP/1.1" 200 OK'])
    assert s.ready == 0  # while starting, its ready line says (vLLM answers nothing before it)


@pytest.mark.parametrize("cut", range(1, len(MID_RUN_LOG)))
def test_readiness_shown_by_a_request_in_parts_merges_to_one_pass(cut: int) -> None:
    for log in (MID_RUN_LOG, MID_RUN_LOG[:3]):
        whole = feed(fresh(), log)
        merged = read_in_two(log, cut)
        assert (merged.ready, merged.state, merged.shutdowns) == (whole.ready, whole.state, whole.shutdowns)


def test_an_engine_dead_error_after_the_shutdown_began_is_the_stop_not_a_fault() -> None:
    """vLLM 0.26 and later log an EngineDeadError traceback on every SIGTERM (tests/fixtures/releases/0.26.0)."""
    s = fresh()
    s.observe(ev.ServerStarting(None, "0.26.0"))
    s.observe(ev.ServerError(None, "engine_dead", "EngineDeadError"))  # a crash while serving counts
    s.observe(ev.ServerShutdown(None))
    s.observe(ev.ServerError(None, "engine_dead", "EngineDeadError"))  # the stop's own traceback does not
    s.observe(ev.ServerError(None, "oom", "OutOfMemoryError"))  # any other error still counts
    assert (s.errors["engine_dead"], s.errors["oom"]) == (1, 1)
    s.observe(ev.ServerStarting(None, "0.26.0"))
    s.observe(ev.ServerError(None, "engine_dead", "EngineDeadError"))
    assert (s.errors["engine_dead"], s.errors["oom"]) == (2, 1)


# A followed unit's journal (``journalctl -u vllm``): the server ready, the kernel's OOM killer takes its engine core
# (no line of vLLM's says so), systemd restarts it, the next run crashes with an exit code, then systemd gives up.
UNIT_JOURNAL = [
    "Dec 14 16:18:29 gpu-1 vllm[4242]: (APIServer pid=4242) INFO 12-14 16:18:29 [api_server.py:1] vLLM API server "
    "version 0.32.0",
    "Dec 14 16:18:40 gpu-1 vllm[4242]: (APIServer pid=4242) INFO:     Application startup complete.",
    "Dec 14 17:13:12 gpu-1 systemd[1]: vllm.service: A process of this unit has been killed by the OOM killer.",
    "Dec 14 17:13:12 gpu-1 systemd[1]: vllm.service: Main process exited, code=killed, status=9/KILL",
    "Dec 14 17:13:12 gpu-1 systemd[1]: vllm.service: Failed with result 'oom-kill'.",
    "Dec 14 17:13:17 gpu-1 systemd[1]: vllm.service: Scheduled restart job, restart counter is at 1.",
    "Dec 14 17:13:20 gpu-1 vllm[5000]: (APIServer pid=5000) INFO 12-14 17:13:20 [api_server.py:1] vLLM API server "
    "version 0.32.0",
    "Dec 14 17:13:21 gpu-1 systemd[1]: vllm.service: Main process exited, code=exited, status=1/FAILURE",
    "Dec 14 17:13:21 gpu-1 systemd[1]: vllm.service: Failed with result 'exit-code'.",
    "Dec 14 17:13:26 gpu-1 systemd[1]: vllm.service: Start request repeated too quickly.",
]


def service_samples(s: ServerStats) -> dict[tuple[str, tuple], float]:
    return {
        (sample.name, tuple(sorted((k, v) for k, v in sample.labels.items() if k != "server"))): sample.value
        for family in collect_families([s])
        for sample in family.samples
        if sample.name.startswith("kvwatch_service_") and not sample.name.endswith("_created")
    }


def of_unit(unit: str = "vllm.service") -> ServerStats:
    """Stats of a server whose unit's journal is read (a journal_unit follow)."""
    s = fresh()
    s.service_unit = unit
    return s


def test_a_unit_s_journal_tells_how_the_server_ended_and_what_systemd_did() -> None:
    s = feed(of_unit(), UNIT_JOURNAL[:2])
    assert (s.ready, s.stopped) == (1, 0)
    unit = (("unit", "vllm.service"),)
    before = service_samples(s)  # the server's own unit is there from the start
    assert before[("kvwatch_service_restarts_total", unit)] == before[("kvwatch_service_oom_kills_total", unit)] == 0
    s = feed(s, UNIT_JOURNAL[2:4])  # an OOM kill: the server wrote nothing, systemd's words stop it
    assert (s.ready, s.stopped, s.shutdowns, s.service_exit_signals, s.service_exit_codes) == (0, 1, 1, unit_of(9), {})
    s = feed(s, UNIT_JOURNAL[4:])
    assert (s.starts, s.shutdowns, s.stopped) == (2, 2, 1)
    samples = service_samples(s)
    assert samples[("kvwatch_service_exits_total", (("how", "killed"), *unit))] == 1
    assert samples[("kvwatch_service_exits_total", (("how", "exited"), *unit))] == 1
    assert samples[("kvwatch_service_exits_total", (("how", "dumped"), *unit))] == 0
    assert samples[("kvwatch_service_failures_total", (("result", "oom-kill"), *unit))] == 1
    assert samples[("kvwatch_service_failures_total", (("result", "exit-code"), *unit))] == 1
    assert samples[("kvwatch_service_restarts_total", unit)] == 1
    assert samples[("kvwatch_service_oom_kills_total", unit)] == 1
    assert samples[("kvwatch_service_start_limit_hits_total", unit)] == 1
    assert samples[("kvwatch_service_last_exit_code", unit)] == 1
    assert samples[("kvwatch_service_last_exit_signal", unit)] == 9


def unit_of(signal: int) -> dict[str, int]:
    return {"vllm.service": signal}


def test_another_unit_s_end_in_a_syslog_file_is_counted_as_its_own_and_stops_no_server() -> None:
    """A syslog file holds every unit's lines: systemd's about another unit are that unit's numbers; the server
    stops only with its own unit's main process (and none is known for a file)."""
    other = (
        "Dec 14 17:13:12 gpu-1 systemd[1]: fwupd-refresh.service: Main process exited, code=exited, status=1/FAILURE"
    )
    for s in (feed(of_unit(), [*UNIT_JOURNAL[:2], other]), feed(fresh(), UNIT_JOURNAL[:4])):
        assert (s.ready, s.stopped, s.shutdowns) == (1, 0, 0)
    s = feed(of_unit(), [*UNIT_JOURNAL[:2], other])
    samples = service_samples(s)
    assert samples[("kvwatch_service_exits_total", (("how", "exited"), ("unit", "fwupd-refresh.service")))] == 1
    assert samples[("kvwatch_service_exits_total", (("how", "exited"), ("unit", "vllm.service")))] == 0
    assert samples[("kvwatch_service_last_exit_code", (("unit", "fwupd-refresh.service"),))] == 1
    s = feed(of_unit("vllm@*.service"), ["vllm@gpu0.service: Main process exited, code=killed, status=9/KILL"])
    assert s.stopped == 1  # a glob of units names the server's


def test_units_past_the_most_a_host_runs_fold_into_one_label() -> None:
    from agent.sinks.labels import MAX_UNITS

    lines = [f"unit-{i}.service: Scheduled restart job, restart counter is at 1." for i in range(MAX_UNITS + 5)]
    s = feed(fresh(), lines)
    assert len(s.service_restarts) == MAX_UNITS + 1 and s.service_restarts["other"] == 5
    assert s.service_restarts["unit-0.service"] == 1


@pytest.mark.parametrize("cut", range(1, len(UNIT_JOURNAL)))
def test_a_unit_s_journal_read_in_parts_merges_to_one_pass(cut: int) -> None:
    whole = feed(of_unit(), UNIT_JOURNAL)
    merged = read_in_two(UNIT_JOURNAL, cut, of_unit)
    assert service_samples(merged) == service_samples(whole)
    for name in ("starts", "shutdowns", "ready", "state"):
        assert getattr(merged, name) == getattr(whole, name), name


PROBLEM_LOG = [
    "WARNING 06-09 23:23:14 [rocm.py:28] Failed to import from amdsmi",  # before any start: counted
    "INFO 06-09 23:23:15 [api_server.py:1] vLLM API server version 0.26.0",
    "[2025-06-21 20:59:57,675] LMCache ERROR: Num retrieved tokens: 0 (vllm_v1_adapter.py:558:lmcache.x)",
    "ERROR:    Exception in ASGI application",
    "INFO:     Shutting down",
    "(EngineCore_DP0 pid=5) ERROR 06-09 23:24:00 [core.py:712] Traceback (most recent call last):",  # the stop's
    "(EngineCore_DP0 pid=5) ERROR 06-09 23:24:00 [core.py:712]   File core.py, line 1",  # the stop's
    "INFO 06-09 23:25:00 [api_server.py:1] vLLM API server version 0.26.0",
    "(EngineCore_DP0 pid=9) CRITICAL 06-09 23:26:00 [core.py:90] Engine core died",
]


@pytest.mark.parametrize("before", ["shutdown", "running", "nothing"])
def test_an_engine_dead_error_that_begins_a_part_is_placed_by_the_part_before(before: str) -> None:
    """Read in parts, an engine_dead error before a part's first transition is the stop's when the part before
    it ended in a shutdown, and a fault otherwise: the same as one pass."""
    sample = (SAMPLES / "vllm-0.32.0-cpu-sleep.log").read_text(encoding="utf-8").split("\n")
    starting = next(line for line in sample if "Starting vLLM server on" in line)
    shutdown = next(line for line in sample if "[shutdown] API server: shutdown triggered" in line)
    dead = next(line for line in sample if "EngineDeadError: EngineCore encountered" in line)
    first = {"shutdown": [starting, shutdown], "running": [starting], "nothing": []}[before]
    whole = feed(fresh(), [*first, dead])
    merged = feed(fresh(), first)
    merged.merge(pickle.loads(pickle.dumps(feed(fresh(), [dead]))))
    faults = {"shutdown": 0, "running": 1, "nothing": 1}[before]
    assert whole.errors["engine_dead"] == merged.errors["engine_dead"] == faults
    further = feed(fresh(), [starting, shutdown])  # a part before the two: it places them
    further.merge(merged)
    assert further.errors["engine_dead"] == (0 if before == "nothing" else faults)


RUN_THEN_RESTART = [
    "INFO 12-04 04:00:00 [loggers.py:1] Engine 000: Avg prompt throughput: 10.0 tokens/s, Avg generation throughput: "
    "2.0 tokens/s, Running: 5 reqs, Waiting: 3 reqs, GPU KV cache usage: 43.0%, Prefix cache hit rate: 50.0%",
    "INFO 12-04 04:00:00 [loggers.py:1] Engine 001: Avg prompt throughput: 1.0 tokens/s, Avg generation throughput: "
    "2.0 tokens/s, Running: 1 reqs, Waiting: 0 reqs, GPU KV cache usage: 3.0%, Prefix cache hit rate: 5.0%",
    "(APIServer pid=9) INFO 12-04 04:01:00 [api_server.py:1] vLLM API server version 0.32.0",
    "(APIServer pid=9) INFO 12-04 04:01:30 [launcher.py:1] Starting vLLM API server 0 on http://0.0.0.0:8000",
    "INFO 12-04 04:02:00 [loggers.py:1] Engine 001: Avg prompt throughput: 7.0 tokens/s, Avg generation throughput: "
    "1.0 tokens/s, Running: 1 reqs, Waiting: 1 reqs, GPU KV cache usage: 1.0%, Prefix cache hit rate: 0.0%",
]


@pytest.mark.parametrize("cut", range(len(RUN_THEN_RESTART) + 1))
def test_a_server_started_anew_runs_nothing_until_its_stats_say_otherwise(cut: int) -> None:
    """vLLM prints no stats line while idle: after a restart the last run's queue, KV usage and throughput would
    stand until the first request.  The same read in two parts cut anywhere."""
    whole = feed(fresh(), RUN_THEN_RESTART)
    merged = read_in_two(RUN_THEN_RESTART, cut)
    for stats in (whole, merged):
        assert stats.engines["0"].gauges == dict.fromkeys(stats.engines["0"].gauges, 0.0)
        assert (stats.engines["1"].gauges["running"], stats.engines["1"].gauges["waiting"]) == (1, 1)
        assert stats.engines["1"].gauges["kv_cache_usage"] == 0.01
    assert whole.engines["0"].peaks["running"] == 5  # the peak of the range stays
    a, b = ({k: v for k, v in exposition(s).items() if not k[0].endswith("_created")} for s in (whole, merged))
    assert a == b


def _engine_stats(engine: int, running: int) -> str:
    return (
        f"INFO 09-02 20:06:{engine:02d} [loggers.py:1] Engine {engine:03d}: Avg prompt throughput: 1.0 tokens/s, Avg "
        f"generation throughput: 2.0 tokens/s, Running: {running} reqs, Waiting: 1 reqs, GPU KV cache usage: 3.0%"
    )


SCALED_DOWN = [
    "(EngineCore_DP0 pid=5) INFO 09-02 20:00:00 [core.py:1] Initializing a V1 LLM engine (v0.32.0) with config: "
    "model='m', tensor_parallel_size=2, pipeline_parallel_size=1, data_parallel_size=4",
    *(_engine_stats(engine, 3) for engine in range(4)),
    "(APIServer pid=1) INFO 09-02 20:07:00 [core_client.py:2078] [Elastic EP] Scale down completed, new data "
    "parallel size: 2",
    _engine_stats(1, 7),
]


@pytest.mark.parametrize("cut", range(len(SCALED_DOWN) + 1))
def test_engines_an_elastic_scale_down_took_away_run_nothing_any_more(cut: int) -> None:
    whole = feed(fresh(), SCALED_DOWN)
    merged = read_in_two(SCALED_DOWN, cut)
    for stats in (whole, merged):
        running = {label: state.gauges["running"] for label, state in stats.engines.items()}
        assert running == {"0": 3, "1": 7, "2": 0, "3": 0}
        assert stats.data_parallel_size == 2
    a, b = ({k: v for k, v in exposition(s).items() if not k[0].endswith("_created")} for s in (whole, merged))
    assert a == b


def test_a_sleep_mode_run_read_in_two_parts_cut_anywhere_is_one_pass() -> None:
    """The real sleep-mode run: asleep, paused and awake again, stopped while asleep."""
    lines = (SAMPLES / "vllm-0.32.0-cpu-sleep.log").read_text(encoding="utf-8").split("\n")
    whole = feed(fresh(), lines)
    expected = {k: v for k, v in exposition(whole).items() if not k[0].endswith("_created")}
    for cut in range(len(lines) + 1):
        merged = read_in_two(lines, cut)
        got = {k: v for k, v in exposition(merged).items() if not k[0].endswith("_created")}
        assert got == pytest.approx(expected, rel=1e-12), cut


# A 0.3x start compiling two parts, each timed apart on two workers (both report their part alike), then a
# second start whose one part replaces the steps of the first.
COMPILED_PARTS_LOG = [
    "(APIServer pid=1) INFO 11-25 05:32:00 [api_server.py:1] vLLM API server version 0.32.0",
    "(Worker_TP0 pid=8) INFO 11-25 05:32:21 [default_loader.py:501] Loading weights took 1.50 seconds",
    "(Worker_TP0 pid=8) INFO 11-25 05:32:40 [monitor.py:62] [backbone] torch.compile took 20.00 s in total",
    "(Worker_TP1 pid=9) INFO 11-25 05:32:40 [monitor.py:62] [backbone] torch.compile took 20.00 s in total",
    "(Worker_TP0 pid=8) INFO 11-25 05:32:41 [monitor.py:91] [backbone] Initial profiling/warmup run took 0.75 s",
    "(Worker_TP0 pid=8) INFO 11-25 05:32:43 [monitor.py:62] [eagle_head] torch.compile took 2.50 s in total",
    "(Worker_TP1 pid=9) INFO 11-25 05:32:43 [monitor.py:62] [eagle_head] torch.compile took 2.50 s in total",
    "(Worker_TP0 pid=8) INFO 11-25 05:32:43 [monitor.py:91] [eagle_head] Initial profiling/warmup run took 0.25 s",
    "(APIServer pid=1) INFO:     Application startup complete.",
    "(APIServer pid=1) INFO:     Shutting down",
    "(APIServer pid=2) INFO 11-25 06:00:00 [api_server.py:1] vLLM API server version 0.32.0",
    "(Worker_TP0 pid=18) INFO 11-25 06:00:30 [monitor.py:62] [backbone] torch.compile took 4.00 s in total",
]


def phases(stats: ServerStats) -> dict[str, float]:
    samples = exposition(stats).items()
    return {dict(labels)["phase"]: v for (name, labels), v in samples if name == "kvwatch_vllm_startup_phase_seconds"}


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        (COMPILED_PARTS_LOG[:-3], {"weights_loading": 1.5, "torch_compile": 22.5, "memory_profiling": 1.0}),
        (COMPILED_PARTS_LOG, {"torch_compile": 4.0}),
    ],
    ids=["first start", "second"],
)
def test_the_compiled_parts_steps_add_up_and_a_new_start_replaces_them(
    lines: list[str], expected: dict[str, float]
) -> None:
    assert phases(feed(fresh(), lines)) == expected
    for cut in range(len(lines) + 1):
        assert phases(read_in_two(lines, cut)) == expected, cut


def test_kv_connectors_of_2026_add_up_by_quantity_and_direction() -> None:
    """NIXL's and Mooncake's expiry and receive failures, and 3FS's saves and loads (vLLM 0.32's reduce())."""
    tag = "(APIServer pid=1) INFO 12-04 05:00:00 [metrics.py:103] KV Transfer metrics: "
    s = feed(
        fresh(),
        [
            tag + "Num successful transfers=4, Avg xfer time (ms)=2.5, P90 xfer time (ms)=3.1, "
            "Avg post time (ms)=0.2, P90 post time (ms)=0.3, Avg MB per transfer=8.0, Throughput (MB/s)=3200.0, "
            "Avg number of descriptors=64.0, Num failed transfers=1, Num KV expired reqs=2, Num notifs after expiry=1",
            tag + "Num successful transfers=0, Avg xfer time (ms)=0, P90 xfer time (ms)=0, Avg MB per transfer=0, "
            "Throughput (MB/s)=0, Avg number of descriptors=0, Num failed transfers=0, Num failed recvs=3, "
            "Num KV expired reqs=1",
            tag + "Num transfers task=5, Num save task success=3, Num save task failed=1, Num load task success=1, "
            "Num load task failed=0, Avg save duration (ms)=12.0, P90 save duration (ms)=20.0, "
            "Avg load duration (ms)=30.0, P90 load duration (ms)=30.0",
        ],
    )
    totals = s.kv_transfer.totals
    assert totals[("expired", "transfer")] == 3 and totals[("late_notifications", "transfer")] == 1
    assert (totals[("transfers", "transfer")], totals[("failures", "transfer")]) == (4, 1)
    assert totals[("failures", "receive")] == 3
    assert (totals[("transfers", "store")], totals[("failures", "store")]) == (3, 1)
    assert (totals[("transfers", "load")], totals[("failures", "load")]) == (1, 0)
    assert totals[("seconds", "store")] == pytest.approx(0.036) and totals[("seconds", "load")] == pytest.approx(0.03)
    assert totals[("bytes", "transfer")] == 4 * 8 * (1 << 20)
    assert s.kv_transfer.unknown_keys == 0


def problem_samples(stats: ServerStats) -> dict:
    return {key[1]: value for key, value in exposition(stats).items() if key[0] == "kvwatch_log_problem_lines_total"}


def test_warning_and_error_lines_are_counted_by_producer_and_level_but_not_a_shutdown() -> None:
    s = feed(fresh(), PROBLEM_LOG)
    counted = {key: value for key, value in s.problem_lines.items() if value}
    expected = {("vllm", "warning"): 1, ("lmcache", "error"): 1, ("uvicorn", "error"): 1, ("vllm", "critical"): 1}
    assert counted == expected
    assert s.problems_while_stopping == 2
    assert len(problem_samples(s)) == 12  # every producer and level, zeros included


@pytest.mark.parametrize("cut", range(1, len(PROBLEM_LOG)))
def test_problem_lines_of_parts_merge_to_one_pass(cut: int) -> None:
    # A part after the shutdown line does not know it was read while the server stopped.
    whole = feed(fresh(), PROBLEM_LOG)
    merged = read_in_two(PROBLEM_LOG, cut)
    assert problem_samples(merged) == problem_samples(whole)
    assert merged.problems_while_stopping == whole.problems_while_stopping


def test_http_labels_stay_bounded() -> None:
    assert route_of("/v1/chat/completions") == "/v1/chat/completions"
    assert route_of("/v1/responses/resp_123") == "/v1/responses/{response_id}"
    assert route_of("/v1/responses/resp_123/cancel") == "/v1/responses/{response_id}/cancel"
    assert route_of("/v1/responses/render") == "/v1/responses/render"  # (vLLM 0.32: no response's id)
    for served in ("/v1/load_lora_adapter", "/v2/embed", "/cohere/v2/chat", "/readyz", "/start_profile"):
        assert route_of(served) == served  # routes of vLLM 0.32's API server
    assert route_of("/openai/v1/chat/completions") == "/v1/chat/completions"  # mounted under a platform's prefix
    assert route_of("/wp-admin/setup.php") == "other"
    s = fresh()
    for method, path in (("GET", "/etc/passwd"), ("PROPFIND", "/"), ("POST", "/v1/completions")):
        s.observe(ev.HttpAccess(None, "1.2.3.4:5", method, path, 404))
    assert set(s.http) == {("GET", "other", "404"), ("OTHER", "other", "404"), ("POST", "/v1/completions", "404")}


def test_v1_parts_printed_only_when_nonzero_read_as_zero() -> None:
    s = fresh()
    feed(s, [c["line"] for c in line_cases("vllm_stats") if "Engine 001" in c["line"]])
    assert s.engines["1"].gauges["deferred"] == 2
    feed(
        s,
        [
            "INFO 11-20 09:15:10 [loggers.py:335] Engine 001: Avg prompt throughput: 1.0 tokens/s, Avg generation "
            "throughput: 1.0 tokens/s, Running: 1 reqs, Waiting: 0 reqs, GPU KV cache usage: 1.0%"
        ],
    )
    gauges = s.engines["1"].gauges
    assert gauges["deferred"] == 0 and gauges["kv_fetch_in_progress"] == 0
    assert gauges["prefix_cache_hit_rate"] == 0.4  # a hit rate keeps its last value
    assert s.engines["1"].preemptions == 4 and s.engines["1"].lines == 2


def test_engine_labels() -> None:
    s = fresh()
    feed(s, [c["line"] for c in line_cases("vllm_stats")])
    assert set(s.engines) == {"0", "1", "all"}


def exposition(stats: ServerStats) -> dict:
    samples = {}
    for family in collect_families([stats]):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


@pytest.mark.parametrize(
    ("corpus", "parts"),
    [("mixed", 2), ("mixed", 3), ("mixed", 7), ("mixed", 50), ("one log", 2), ("one log", 9)],
)
def test_parts_merged_in_order_equal_one_pass(corpus: str, parts: int) -> None:
    if corpus == "one log":
        lines = (SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6.log").read_text(encoding="utf-8").split("\n")
    else:
        lines = all_fixture_lines()
    whole = feed(fresh(), lines)
    whole.lines = len(lines)
    merged = fresh()
    size = len(lines) // parts + 1
    for i in range(0, len(lines), size):
        part = feed(fresh(), lines[i : i + size])
        part.lines = len(lines[i : i + size])
        merged.merge(pickle.loads(pickle.dumps(part)))  # as it comes back from a worker process
    a, b = exposition(whole), exposition(merged)
    assert a.keys() == b.keys()
    for key, value in a.items():
        if key[0].endswith("_created"):
            continue  # when each ServerStats was made, not something of the log
        if corpus == "mixed" and key[0].endswith("_timestamp_seconds"):
            # The mixed corpus jumps between years; a part starts without the
            # year context of the lines before it (see docs/events.md, Timestamps).
            continue
        assert b[key] == pytest.approx(value, rel=1e-12), key


def test_unparsed_lines_are_what_gave_no_event() -> None:
    s = fresh()
    lines = [
        "noise",
        "INFO 12-14 16:18:24 [async_llm.py:270] Added request a.",
        "",
        "INFO 12-14 16:18:24 [async_llm.py:270] Added request b and c",
    ]  # the last is suspicious
    for line in lines:
        events = parse_line(line)
        if events:
            s.parsed_lines += 1
        for event in events:
            s.observe(event)
    s.lines = len(lines)
    assert s.unparsed_lines == 3 and s.suspicious == {"request_added": 1}


def test_a_count_declared_by_its_metric_alone_is_kept_merged_and_rendered(monkeypatch: pytest.MonkeyPatch) -> None:
    """A metric that needs nothing but its events declares its count in the catalogue; no stats field."""
    from agent.sinks import stats as stats_module
    from agent.sinks.prometheus import counted

    monkeypatch.setattr(stats_module, "COUNTS", {kind: list(rules) for kind, rules in stats_module.COUNTS.items()})
    samples = counted(ev.RequestFailed, by="reason")
    events = [
        ev.RequestFailed(None, request_id="cmpl-1", reason="engine_dead"),
        ev.RequestFailed(None, request_id="cmpl-2", reason="bad_request"),
        ev.RequestFailed(None, request_id="kvwatch-canary-3", reason="bad_request"),  # kvwatch's own: left out
        ev.RequestFailed(None, request_id="cmpl-4", reason="engine_dead"),
    ]
    whole, first, second = fresh(), fresh(), fresh()
    for i, event in enumerate(events):
        whole.observe(event)
        (first if i < 2 else second).observe(event)
    first.merge(pickle.loads(pickle.dumps(second)))
    for stats in (whole, first):
        assert list(samples(stats, ("reason",))) == [(("bad_request",), 1), (("engine_dead",), 2)]


def test_label_values_stay_bounded_whatever_the_log_holds() -> None:
    """Engine numbers, bench statistics and status codes come from the log: each is capped or folded."""
    from agent.sinks.labels import MAX_ENGINES

    s = fresh()
    for engine in range(MAX_ENGINES * 3):
        s.observe(ev.EngineStats(None, engine=engine, running=1, waiting=0))
    for percentile in range(1, 1000):
        s.observe(ev.BenchLatency(None, percentile=percentile / 10, seconds=1.0))
    for status in range(100, 1000):
        s.observe(ev.HttpAccess(None, client="127.0.0.1:1", method="GET", path="/v1/models", status=status))
    assert len(s.engines) == MAX_ENGINES + 1 and s.engines["other"].lines == MAX_ENGINES * 2
    statistics = {dict(labels)["statistic"] for (family, labels) in s.bench if family == "latency_seconds"}
    assert statistics <= {"p1", "p5", "p10", "p25", "p50", "p75", "p90", "p95", "p99", "p99.9", "other"}
    assert "other" in statistics
    statuses = {status for (_method, _path, status) in s.http}
    assert {"200", "404", "503", "5xx", "other"} <= statuses and len(statuses) < 90


def test_the_multiprocess_servers_hit_rate_summaries_add_their_lookups_and_keep_the_last_ratio() -> None:
    s = fresh()
    for line in (
        "[2026-09-11 10:00:30,512] LMCache INFO: lookup hit rate (over 41 lookup(s)): prefix=62.5%",
        "[2026-09-11 10:01:00,512] LMCache INFO: lookup hit rate (over 9 lookup(s)): prefix=10.0% non_prefix=40.0%",
        "[2026-09-11 10:01:30,512] LMCache INFO: lookup hit rate (over 2 lookup(s)): prefix=100.0%",
    ):
        for event in parse_line(line):
            s.observe(event)
    assert s.server_lookups == 52
    # The last line of a plain server has no second plane: the CacheBlend value before it stays as it was.
    assert s.server_lookup_hit_ratio == {"prefix": 1.0, "non_prefix": 0.4}
    rendered = exposition(s)
    assert rendered[("kvwatch_lmcache_server_lookups_total", (("server", "s"),))] == 52
    ratio = "kvwatch_lmcache_server_lookup_hit_ratio"
    assert rendered[(ratio, (("plane", "prefix"), ("server", "s")))] == 1.0
    assert rendered[(ratio, (("plane", "non_prefix"), ("server", "s")))] == 0.4


def test_engine_steps_are_timed_counted_by_phase_and_dummy_steps_kept_apart() -> None:
    s = feed(
        fresh(),
        [
            "(EngineCore_DP0 pid=9) INFO 12-22 21:44:40 [core.py:349] Iteration(515): 0 context requests, "
            "0 context tokens, 20 generation requests, 20 generation tokens, iteration elapsed time: 10.99 ms",
            "(EngineCore_DP0 pid=9) INFO 12-22 21:44:40 [core.py:349] Iteration(516): 2 context requests, "
            "300 context tokens, 18 generation requests, 18 generation tokens, iteration elapsed time: 31.50 ms",
            "(EngineCore_DP0 pid=9) INFO 12-22 21:44:40 [core.py:360] Iteration(517): 0 context requests, "
            "0 context tokens, 0 generation requests, 0 generation tokens, iteration elapsed time: 0.41 ms (dummy)",
            # The engine core of data-parallel rank 2: its steps are engine 2's.
            "(EngineCore_DP2 pid=11) INFO 12-22 21:44:40 [core.py:349] Iteration(40): 0 context requests, "
            "0 context tokens, 5 generation requests, 5 generation tokens, iteration elapsed time: 7.00 ms",
            "(APIServer pid=1) INFO 12-22 21:44:41 [loggers.py:199] Engine 001: Iteration(8): 1 context requests, "
            "73 context tokens, 0 generation requests, 0 generation tokens, iteration elapsed time: 3.62 ms, "
            "GPU KV cache usage: 42.5%",
        ],
    )
    m = exposition(s)

    def value(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted({"server": "s", **labels}.items())))]

    assert value("kvwatch_vllm_iteration_seconds_count", engine="0") == 2  # the dummy step is not timed
    assert value("kvwatch_vllm_iteration_seconds_sum", engine="0") == pytest.approx(0.04249)
    assert value("kvwatch_vllm_iteration_seconds_bucket", engine="0", le="0.025") == 1
    assert value("kvwatch_vllm_iteration_tokens_bucket", engine="0", le="32.0") == 1
    assert value("kvwatch_vllm_iteration_tokens_bucket", engine="0", le="512.0") == 2
    assert value("kvwatch_vllm_scheduled_tokens_total", engine="0", phase="context") == 300
    assert value("kvwatch_vllm_scheduled_tokens_total", engine="0", phase="generation") == 38
    assert value("kvwatch_vllm_scheduled_requests_total", engine="0", phase="generation") == 38
    assert value("kvwatch_vllm_dummy_iterations_total", engine="0") == 1
    assert value("kvwatch_vllm_iteration_seconds_count", engine="1") == 1
    assert value("kvwatch_vllm_scheduled_tokens_total", engine="2", phase="generation") == 5
    # The front end's step line carries the KV cache usage the stats line reports every few seconds.
    assert value("kvwatch_vllm_kv_cache_usage_ratio", engine="1") == 0.425
    assert ("kvwatch_vllm_dummy_iterations_total", (("engine", "1"), ("server", "s"))) not in m


def test_the_mfu_line_gives_each_devices_estimated_flops_and_bytes_a_second() -> None:
    s = feed(fresh(), ["INFO 12-15 17:38:18 [perf.py:1302] Engine 001: MFU: 6.6 TF/s/GPU 105.0 GB/s/GPU"])
    m = exposition(s)
    labels = (("engine", "1"), ("server", "s"))
    assert m[("kvwatch_vllm_device_flops_per_second", labels)] == 6.6e12
    assert m[("kvwatch_vllm_device_memory_bytes_per_second", labels)] == 105e9


def _preempted(total: int) -> str:
    return (
        f"WARNING 11-05 14:02:31 scheduler.py:1481] Sequence group g{total} is preempted by PreemptionMode.RECOMPUTE "
        "mode because there is not enough KV cache space. This can affect the end-to-end performance. Increase "
        f"gpu_memory_utilization or tensor_parallel_size to provide more KV cache memory. "
        f"total_num_cumulative_preemption={total}"
    )


@pytest.mark.parametrize("cut", range(1, 6))
def test_v0_preemptions_are_the_running_count_its_warning_prints_across_restarts_and_parts(cut: int) -> None:
    """V0 prints every 50th preemption with the count so far; a restart starts the count again."""
    lines = [_preempted(n) for n in (1, 51, 101)] + [_preempted(n) for n in (1, 51)]  # 101, then 51 more
    whole = feed(fresh(), lines)
    merged = read_in_two(lines, cut)
    for stats in (whole, merged):
        assert exposition(stats)[("kvwatch_vllm_preemptions_total", (("engine", "0"), ("server", "s")))] == 152


# LMCache's multiprocess server: its first releases print only the second line of a start, later ones
# the address line before it (LMCache/LMCache#4191's log; 0.3.11's guide for the first).
_EARLY_START = "[2025-11-19 21:20:58,901] LMCache INFO: LMCache cache server is running... (server.py:483:__main__)"
_ADDRESS = (
    "[2026-07-22 16:17:{:02d},469] LMCache INFO: LMCache ZMQ cache server is running on tcp://127.0.0.1:5599 "
    "(server.py:397:lmcache.v1.multiprocess.server)"
)
_RUNNING = (
    "[2026-07-22 16:17:{:02d},475] LMCache INFO: LMCache cache server is running... "
    "(server.py:412:lmcache.v1.multiprocess.server)"
)
_STORED = "[2026-07-22 16:18:{:02d},851] LMCache INFO: Stored 2048 tokens in 0.848 seconds (server.py:600:x)"
# Two early starts, then an upgrade: four starts that name their address, one of which died before its
# second line, and a gRPC transport's own line between the two lines of another.
START_LOG = [
    _EARLY_START,
    _STORED.format(1),
    _EARLY_START,
    _ADDRESS.format(10),
    _RUNNING.format(10),
    _STORED.format(2),
    _ADDRESS.format(20),
    _ADDRESS.format(30),
    "[2026-07-22 16:17:30,470] LMCache INFO: LMCache gRPC cache server is running on 0.0.0.0:5599 (server.py:295:x)",
    _RUNNING.format(30),
    _ADDRESS.format(40),
    _RUNNING.format(40),
    _STORED.format(3),
]
START_COUNT = 6


def starts(stats: ServerStats) -> float:
    return exposition(stats)[("kvwatch_lmcache_server_starts_total", (("server", "s"),))]


def test_each_start_of_the_lmcache_server_counts_once_whichever_lines_say_it() -> None:
    assert [len(parse_line(line)) for line in START_LOG] == [1, 1, 1, 1, 1, 1, 1, 1, 0, 1, 1, 1, 1]
    assert starts(feed(fresh(), START_LOG)) == START_COUNT


def test_each_start_of_the_remote_cache_server_counts_once() -> None:
    """The ``lm://`` server says ``Server started at HOST:PORT`` once a start; its clients' connections are no start."""
    started = "[2026-05-14 09:{:02d}:44,209] LMCache INFO: Server started at localhost:8100 (__main__.py:138:__main__)"
    connected = "[2026-05-14 09:{:02d}:45,660] LMCache INFO: Connected by ('10.0.0.7', 41688) (__main__.py:142:x)"
    log = [started.format(1), connected.format(1), connected.format(2), started.format(3), connected.format(3)]
    assert starts(feed(fresh(), log)) == 2


@pytest.mark.parametrize("cut", range(1, len(START_LOG)))
def test_lmcache_server_starts_of_parts_merge_to_one_pass(cut: int) -> None:
    merged = read_in_two(START_LOG, cut)
    assert starts(merged) == START_COUNT
    three = fresh()
    for part in (START_LOG[:cut], START_LOG[cut : cut + 2], START_LOG[cut + 2 :]):
        three.merge(pickle.loads(pickle.dumps(feed(fresh(), part))))
    assert starts(three) == START_COUNT


def preemption_numbers(stats: ServerStats) -> tuple[float, ...]:
    shown = exposition(stats)
    names = (
        "kvwatch_vllm_preempted_requests_total",
        "kvwatch_vllm_resumed_requests_total",
        "kvwatch_lmcache_resume_loads_total",
        "kvwatch_lmcache_resume_load_tokens_total",
    )
    return tuple(shown[(name, (("server", "s"),))] for name in names)


def test_a_resume_counts_the_load_of_its_last_resume_load_line_once() -> None:
    assert preemption_numbers(feed(fresh(), PREEMPTION_LOG)) == (2, 3, 2, 1792 + 2048)


@pytest.mark.parametrize("cut", range(1, len(PREEMPTION_LOG)))
def test_preemptions_and_resume_loads_of_parts_merge_to_one_pass(cut: int) -> None:
    assert preemption_numbers(read_in_two(PREEMPTION_LOG, cut)) == (2, 3, 2, 1792 + 2048)


def _lmcache_line(level: str, message: str, where: str = "x.py:1:lmcache.v1.x") -> str:
    return f"[2026-11-25 05:41:02,118] LMCache {level}: {message} ({where})"


# LMCache's health monitor through a run and a restart: unhealthy (a backend bypassed, its lookups and a load
# skipped), recovered, unhealthy again, the server started anew (healthy, nothing bypassed), a second backend.
HEALTH_LOG = [
    "(APIServer pid=1) INFO 11-25 05:32:00 [api_server.py:1] vLLM API server version 0.32.0",
    _lmcache_line("INFO", "StorageManager: Backend RemoteBackend is now bypassed"),
    _lmcache_line("WARNING", "HealthMonitor: System unhealthy, entering degraded mode"),
    _lmcache_line("WARNING", "LMCache is unhealthy, skipping lookup operation"),
    _lmcache_line("WARNING", "LMCache is unhealthy, skipping lookup operation"),
    _lmcache_line("WARNING", "LMCache is unhealthy, skipping retrieve_layer operation"),
    _lmcache_line("WARNING", "LMCache is unhealthy, skipping store operation"),
    _lmcache_line("INFO", "HealthMonitor: System recovered, restoring normal operations"),
    _lmcache_line("INFO", "StorageManager: Backend RemoteBackend bypass removed, restored to normal operation"),
    _lmcache_line("WARNING", "HealthMonitor: System unhealthy, entering degraded mode"),
    _lmcache_line("INFO", "StorageManager: Backend RemoteBackend is now bypassed"),
    "(APIServer pid=2) INFO 11-25 06:00:00 [api_server.py:1] vLLM API server version 0.32.0",
    _lmcache_line("INFO", "StorageManager: Backend LocalDiskBackend is now bypassed"),
]


def _lmcache_health(stats: ServerStats) -> dict:
    samples = exposition(stats)
    return {
        "unhealthy": samples[("kvwatch_lmcache_unhealthy", (("server", "s"),))],
        "bypassed": {
            dict(labels)["backend"]: v
            for (name, labels), v in samples.items()
            if name == "kvwatch_lmcache_backend_bypassed"
        },
        "skipped": {
            dict(labels)["operation"]: v
            for (name, labels), v in samples.items()
            if name == "kvwatch_lmcache_unhealthy_skips_total"
        },
        "stores": samples[("kvwatch_lmcache_stores_skipped_total", (("reason", "unhealthy"), ("server", "s")))],
    }


@pytest.mark.parametrize(
    ("upto", "unhealthy", "bypassed"),
    [
        (4, 1, {"RemoteBackend": 1}),
        (8, 0, {"RemoteBackend": 1}),  # recovered
        (10, 1, {"RemoteBackend": 0}),  # unhealthy again, the backend restored
        (11, 1, {"RemoteBackend": 1}),
        (12, 0, {"RemoteBackend": 0}),  # started anew
        (13, 0, {"RemoteBackend": 0, "LocalDiskBackend": 1}),
    ],
)
def test_lmcache_health_and_bypassed_backends_follow_the_log_and_a_restart(
    upto: int, unhealthy: int, bypassed: dict
) -> None:
    got = _lmcache_health(feed(fresh(), HEALTH_LOG[:upto]))
    assert (got["unhealthy"], got["bypassed"]) == (unhealthy, bypassed)
    assert got["skipped"] == ({"lookup": 1, "retrieve": 0} if upto == 4 else {"lookup": 2, "retrieve": 1})
    assert got["stores"] == (0 if upto == 4 else 1)


def test_lmcache_health_is_exported_from_the_start() -> None:
    assert _lmcache_health(fresh()) == {
        "unhealthy": 0,
        "bypassed": {},
        "skipped": {"lookup": 0, "retrieve": 0},
        "stores": 0,
    }


@pytest.mark.parametrize("upto", range(1, len(HEALTH_LOG) + 1))
def test_lmcache_health_of_parts_merges_to_one_pass(upto: int) -> None:
    """Every beginning of the log, cut anywhere."""
    lines = HEALTH_LOG[:upto]
    whole = _lmcache_health(feed(fresh(), lines))
    for cut in range(upto + 1):
        assert _lmcache_health(read_in_two(lines, cut)) == whole, cut


def test_the_multiprocess_connectors_word_on_its_lmcache_server_is_lmcache_unhealthy_or_not() -> None:
    where = "vllm_multi_process_adapter.py:614:lmcache.integration.vllm.vllm_multi_process_adapter"
    unhealthy = _lmcache_line("WARNING", "LMCache server is unhealthy — entering degraded mode", where)
    healthy = _lmcache_line("WARNING", "LMCache server is healthy again — resuming normal operation", where)
    assert _lmcache_health(feed(fresh(), [unhealthy]))["unhealthy"] == 1
    assert _lmcache_health(feed(fresh(), [unhealthy, healthy]))["unhealthy"] == 0


def test_a_snapshot_renders_as_its_stats_and_goes_as_soon_as_it_is_dropped() -> None:
    """A scrape renders copies of the servers' stats; a copy holding a reference cycle (the handlers bound to it)
    stayed until the garbage collector's next full pass, 11 MiB more at 32 servers scraped every second."""
    import gc
    import weakref

    from agent.exposition import exposition
    from agent.sinks.prometheus import registry_for

    stats = feed(fresh("s"), all_fixture_lines())
    copy = stats.snapshot()
    assert exposition(registry_for(lambda c=copy: [c]))[0] == exposition(registry_for(lambda: [stats]))[0]
    feed(stats, ["INFO 12-14 16:18:29 [async_llm.py:1] Added request chatcmpl-later."])
    assert stats.added == copy.added + 1  # the copy counts on no more
    gc.disable()
    try:
        dropped = weakref.ref(copy)
        del copy
        assert dropped() is None
    finally:
        gc.enable()


def test_vllm_workers_registering_with_the_lmcache_server_are_counted() -> None:
    """The multiprocess server's own log: the CPU worker of vLLM registered as vLLM started, left as it stopped."""
    lines = (SAMPLES / "lmcache-0.5.6-mp-server.log").read_text(encoding="utf-8").splitlines()
    (family,) = [
        f for f in collect_families([feed(fresh(), lines)]) if f.name == "kvwatch_lmcache_engine_registrations"
    ]
    totals = {s.labels["change"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert totals == {"registered": 1, "unregistered": 1, "reaped": 0}
    (family,) = [f for f in collect_families([fresh()]) if f.name == "kvwatch_lmcache_engine_registrations"]
    assert {s.labels["change"]: s.value for s in family.samples if s.name.endswith("_total")} == {
        "registered": 0,
        "unregistered": 0,
        "reaped": 0,
    }  # there from the start, for rules that compare with zero


def test_workers_the_lmcache_server_reaped_are_counted_apart() -> None:
    """The server's reaper drops a crashed worker and one that never ran a request; the Q ring's reap (the same
    worker's second registration) and a worker registering again while registered count for nothing."""
    stamp = "[2026-09-02 10:11:12,345] LMCache"
    lines = [
        f"{stamp} INFO: Registered KV cache for GPU ID 48213 with 64 layers (gpu_transfer.py:420:lmcache.v1.x)",
        f"{stamp} INFO: Instance 48213 already registered; refreshing liveness (gpu_transfer.py:350:lmcache.v1.x)",
        f"{stamp} WARNING: Reaped GPU instance 48213: silent for 131.2s (pinged=True) (gpu.py:301:lmcache.x)",
        f"{stamp} WARNING: Reaped Q ring for instance 48213: silent for 131.2s (pinged=True) (q.py:190:lmcache.x)",
        f"{stamp} WARNING: Reaped non-GPU instance 17: silent for 3600.4s (pinged=False) (shm.py:288:lmcache.x)",
    ]
    stats = feed(fresh(), lines)
    (family,) = [f for f in collect_families([stats]) if f.name == "kvwatch_lmcache_engine_registrations"]
    totals = {s.labels["change"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert totals == {"registered": 1, "unregistered": 0, "reaped": 2}


def test_requests_of_workers_the_lmcache_server_does_not_hold_are_counted() -> None:
    """The real server asked by the worker it had reaped (vLLM stopped past the reap timeout, then resumed): its
    lookup found no worker of the model, its store raised; the traceback's other lines and the handler's error
    line count for nothing here, and the worker's registration and reap are counted as before."""
    lines = (SAMPLES / "lmcache-0.5.6-mp-unregistered-worker.log").read_text(encoding="utf-8").splitlines()
    families = {f.name: f for f in collect_families([feed(fresh(), lines)])}
    family = families["kvwatch_lmcache_unregistered_worker_requests"]
    totals = {s.labels["operation"]: s.value for s in family.samples if s.name.endswith("_total")}
    assert totals == {"lookup": 1, "store": 0, "retrieve": 0, "transfer": 1}
    family = families["kvwatch_lmcache_engine_registrations"]
    assert {s.labels["change"]: s.value for s in family.samples if s.name.endswith("_total")} == {
        "registered": 1,
        "unregistered": 0,
        "reaped": 1,
    }
    (family,) = [f for f in collect_families([fresh()]) if f.name == "kvwatch_lmcache_unregistered_worker_requests"]
    assert {s.value for s in family.samples if s.name.endswith("_total")} == {0}  # every operation, from the start


def test_keys_the_lmcache_server_failed_to_move_are_counted_by_operation() -> None:
    """A failed L2 store task counts once whatever its keys (its list elided or whole), a prefetch short of L1 room
    once; both operations are there from the start, and the warnings they are count as no other problem."""
    lines = [
        "[2026-09-15 06:24:51,595] LMCache WARNING: Store task 1 to adapter 0 failed for keys: ....",
        "[2026-09-15 06:24:52,001] LMCache WARNING: Store task 2 to adapter 0 failed for keys: [ObjectKey(a), "
        "ObjectKey(b)] (store_controller.py:791:lmcache.v1.distributed.storage_controllers.store_controller)",
        "[2026-09-15 06:24:53,118] LMCache WARNING: prefetch:9: 44 L1 reservations failed with out-of-memory; L1 may "
        "be under memory pressure (prefetch_controller.py:278:lmcache.v1.distributed.storage_controllers.x)",
    ]
    families = {f.name: f for f in collect_families([feed(fresh(), lines)])}
    family = families["kvwatch_lmcache_key_failures"]
    assert {s.labels["operation"]: s.value for s in family.samples if s.name.endswith("_total")} == {
        "l2_store": 2,
        "prefetch": 1,
    }
    problems = families["kvwatch_log_problem_lines"]
    assert sum(s.value for s in problems.samples if s.name.endswith("_total")) == 0
    (family,) = [f for f in collect_families([fresh()]) if f.name == "kvwatch_lmcache_key_failures"]
    assert {s.value for s in family.samples if s.name.endswith("_total")} == {0}


def test_a_real_failed_l2_store_names_the_keys_the_adapter_failed_on() -> None:
    """The real server's file-system L2 adapter with its directory gone: one store task failed, for the six keys
    the adapter logged an error on (each key's repr holds arbitrary bytes of its hash, opening brackets among them)."""
    text = (SAMPLES / "lmcache-0.5.6-mp-l2-store-failed.log").read_text(encoding="utf-8")
    events = [e for line in text.splitlines() for e in parse_line(line) if e.kind == "lmcache_keys_failed"]
    assert [(e.operation, e.keys, e.adapter) for e in events] == [("l2_store", text.count("failed to store"), 0)]
    assert text.count("failed to store") == 6


_MP = "[2026-09-02 10:{:02d}:12,345] LMCache {}"
WORKERS_LOG = [
    _MP.format(0, "INFO: Registered KV cache for GPU ID 7 with 64 layers (x.py:1:lmcache.x)"),  # before the start read
    _MP.format(1, "INFO: LMCache ZMQ cache server is running on tcp://0.0.0.0:5555 (server.py:1:lmcache.x)"),
    _MP.format(1, "INFO: LMCache cache server is running... (server.py:2:lmcache.x)"),
    _MP.format(2, "INFO: Registered KV cache for GPU ID 41 with 64 layers (x.py:1:lmcache.x)"),
    _MP.format(2, "INFO: Registered KV cache for GPU ID 42 with 64 layers (x.py:1:lmcache.x)"),
    _MP.format(3, "INFO: Instance 42 already registered; refreshing liveness (x.py:2:lmcache.x)"),
    _MP.format(4, "INFO: Unregistered KV cache for GPU ID 41 (x.py:3:lmcache.x)"),
    _MP.format(5, "INFO: Registered KV cache for GPU ID 43 with 64 layers (x.py:1:lmcache.x)"),
    _MP.format(6, "WARNING: Reaped GPU instance 42: silent for 131.2s (pinged=True) (x.py:4:lmcache.x)"),
    _MP.format(7, "INFO: Registered KV cache for GPU ID 41 with 64 layers (x.py:1:lmcache.x)"),
]
WORKERS_NOW = 2  # 43 and 41 again


def workers(stats: ServerStats) -> float | None:
    return exposition(stats).get(("kvwatch_lmcache_engines_registered", (("server", "s"),)))


def test_the_workers_the_lmcache_server_holds_are_counted_from_its_start() -> None:
    """Known once the server's start was read (a worker registered before it in the log read is not counted, and
    before any start nothing is said); a worker unregistered or reaped leaves, a refreshed one stays one."""
    assert workers(feed(fresh(), WORKERS_LOG[:1])) is None
    assert workers(feed(fresh(), WORKERS_LOG)) == WORKERS_NOW
    # The server's next start: it holds no worker until vLLM's register again.
    again = feed(fresh(), [*WORKERS_LOG, *WORKERS_LOG[1:3]])
    assert workers(again) == 0
    # The remote cache server's start (its log is another server's): no worker count from it.
    remote = "[2026-05-14 09:01:44,209] LMCache INFO: Server started at localhost:8100 (__main__.py:138:__main__)"
    assert workers(feed(fresh(), [remote, WORKERS_LOG[3]])) is None


@pytest.mark.parametrize("cut", range(1, len(WORKERS_LOG)))
def test_the_workers_of_parts_merge_to_one_pass(cut: int) -> None:
    assert workers(read_in_two(WORKERS_LOG, cut)) == WORKERS_NOW
    three = fresh()
    for part in (WORKERS_LOG[:cut], WORKERS_LOG[cut : cut + 2], WORKERS_LOG[cut + 2 :]):
        three.merge(pickle.loads(pickle.dumps(feed(fresh(), part))))
    assert workers(three) == WORKERS_NOW


def test_the_workers_are_saved_with_the_numbers_and_come_back() -> None:
    from agent.sinks.checkpoint import restore_stats, stats_record

    saved = json.loads(json.dumps(stats_record(feed(fresh(), WORKERS_LOG))))
    restored = fresh()
    assert restore_stats(restored, saved) == []
    assert workers(restored) == WORKERS_NOW
    # Read on after the restart: the worker 43 leaves.
    assert workers(feed(restored, [_MP.format(8, "INFO: Unregistered KV cache for GPU ID 43 (x.py:3:lmcache.x)")])) == 1
