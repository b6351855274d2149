"""The last requests of a server (kvwatch top's rows) and the reason each hit fell short."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from agent.sinks.recent import (
    IDLE_SECONDS,
    JOIN_BATCH,
    MIN_WINDOW,
    JoinedOnDemand,
    KeptEvents,
    RecentRequests,
    RequestRow,
    joined,
)
from agent.sinks.traces import TraceBuilder
from parsers import LogStream
from parsers.events import Event
from tests.benchmarks.gen_log import generate
from tests.support.lines import fresh, mp_connector_line

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


def rows(lines: list[str], chunk: int = 256) -> list[dict]:
    stats = fresh("demo")
    recent = RecentRequests(stats, chunk)
    builder = TraceBuilder(stats, stats.clock, recent.add, sampled=lambda _: False)
    stream = LogStream()
    for line in lines:
        for event in stream.feed(line.rstrip("\n")):
            stats.observe(event)
            builder.observe(event)
    builder.release_held(0.0, everything=True)
    return recent.as_list()


def lookup(rid: str, total: int, hit: int, need: int = 0, computed: int = 0, tail: str = "") -> str:
    return (
        f"[2026-11-25 05:40:56,500] LMCache INFO: Reqid: {rid}, Total tokens {total}, Inference Engine computed "
        f"tokens: {computed}, LMCache hit tokens: {hit}, need to load: {need}{tail} "
        "(vllm_v1_adapter.py:1476:lmcache.integration.vllm.x)"
    )


def one(*lines: str, chunk: int = 256) -> dict:
    added = "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-a-11111111."
    access = 'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK'
    (row,) = rows([added, *lines, access], chunk)
    return row


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (lookup("chatcmpl-a-11111111", 600, 512, 512), None),  # every whole chunk found
        (lookup("chatcmpl-a-11111111", 600, 0), "not seen before"),
        (lookup("chatcmpl-a-11111111", 900, 256, 256), "partial: the first 256 of 900 tokens seen before"),
        (lookup("chatcmpl-a-11111111", 600, 256, 0, 384), "vLLM's own prefix cache already held it"),
        (lookup("chatcmpl-a-11111111", 100, 0), "prompt shorter than LMCache's chunk (256 tokens)"),
    ],
)
def test_the_reason_a_hit_fell_short(line: str, reason: str | None) -> None:
    row = one(line)
    assert row["reason"] == reason
    assert (row["id"], row["status"], row["outcome"]) == ("chatcmpl-a-11111111", 200, "responded")


def test_a_hit_lmcache_failed_to_load_says_how_much_of_it() -> None:
    failed = (
        "(Worker_TP{rank} pid=9) [2026-01-27 01:40:09,403] LMCache WARNING: Request chatcmpl-a-11111111 failed to "
        "load 256 tokens across 16 blocks (vllm_v1_adapter.py:1125:lmcache.integration.vllm.vllm_v1_adapter)"
    )
    row = one(lookup("chatcmpl-a-11111111", 600, 512, 512), failed.format(rank=0), failed.format(rank=1))
    assert row["reason"] == "LMCache failed to load 256 tokens of its hit"


def test_a_lookup_lmcache_gave_up_on_is_the_reason_not_a_miss() -> None:
    """After its asynchronous lookup's timeout LMCache reports 0 hit tokens: that is no prompt it never saw."""
    timed_out = (
        "[2026-11-25 05:40:56,400] LMCache WARNING: Request chatcmpl-a-11111111 is still waiting for async lookup "
        "after 3 seconds, returning 0 lmcache cached tokens so vllm can recompute "
        "(lmcache_async_lookup_client.py:178:lmcache.v1.lookup_client.lmcache_async_lookup_client)"
    )
    row = one(timed_out, lookup("chatcmpl-a-11111111", 600, 0))
    assert (row["lmcache_hit_tokens"], row["reason"]) == (0, "LMCache's lookup timed out: computed again")


def test_a_miss_while_lmcache_is_unhealthy_is_its_degraded_mode_not_a_prompt_never_seen() -> None:
    """Its health monitor's degraded mode: LMCache skips the lookup, which reports no hit."""
    unhealthy = (
        "[2026-11-25 05:40:56,400] LMCache WARNING: HealthMonitor: System unhealthy, entering degraded mode "
        "(base.py:281:lmcache.v1.health_monitor.base)"
    )
    recovered = unhealthy.replace("WARNING", "INFO").replace(
        "unhealthy, entering degraded mode", "recovered, restoring normal operations"
    )
    miss = lookup("chatcmpl-a-11111111", 600, 0)
    assert one(unhealthy, miss)["reason"] == "LMCache degraded"
    assert one(unhealthy, recovered, miss)["reason"] == "not seen before"


def test_a_lookup_that_never_finished_and_a_server_without_lmcache() -> None:
    pending = "[2026-11-25 05:40:56,000] LMCache INFO: Reqid: chatcmpl-a-11111111, Total tokens 600, LMCache hit "
    pending += "tokens: None. (vllm_v1_adapter.py:1:lmcache.integration.vllm.x)"
    assert one(pending)["reason"] == "lookup pending or timed out"
    assert one()["reason"] == "LMCache connector not loaded"


def test_the_multiprocess_servers_lookup_end_gives_the_hit_and_the_miss() -> None:
    """LMCache's MP server at DEBUG: its lookup's end names the request and the chunks found (0: a miss)."""

    def end(found: int) -> str:
        return (
            "[2026-12-06 14:07:34,441] LMCache DEBUG: MP lookup/prefetch end: session=chatcmpl-a-11111111 "
            f"found_count={found} (mp_server.py:73:lmcache.v1.mp_observability.subscribers.logging.mp_server)"
        )

    hit, miss = one(end(11)), one(end(0))
    assert (hit["lmcache_hit_tokens"], hit["reason"]) == (11 * 256, None)
    assert (miss["lmcache_hit_tokens"], miss["reason"]) == (0, "not seen before")
    assert one(end(3), chunk=1024)["lmcache_hit_tokens"] == 3 * 1024  # the server's chunk size


def test_real_logs_rows_and_reasons() -> None:
    """The seed's set-up, live: each request with LMCache's hit tokens; a degraded LMCache says so."""
    served = rows((SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6.log").read_text().splitlines())
    assert [r["lmcache_hit_tokens"] for r in served] == [0, 256, 256, 256, 256]
    assert served[0]["reason"] == "not seen before" and served[0]["prompt_tokens"] == 493
    assert all(r["status"] == 200 and r["latency_seconds"] is not None for r in served)
    degraded = rows((SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6-degraded.log").read_text().splitlines())
    assert degraded and {r["reason"] for r in degraded} == {"LMCache degraded"}


def test_a_row_says_how_often_its_request_was_preempted() -> None:
    """LMCache's multiprocess connector names the request it saw preempted and resumed (lmcache 0.5.6's lines)."""

    stamp = "2026-12-06 16:03:12,875"
    preempted = mp_connector_line(stamp, "<preempted> by preempted requests: {'chatcmpl-a-11111111'}")
    resumed = mp_connector_line(stamp, "<preempted> by resumed requests: {'chatcmpl-a-11111111'}")
    assert one(preempted, resumed, preempted, resumed)["preemptions"] == 2
    assert one(lookup("chatcmpl-a-11111111", 600, 512, 512))["preemptions"] == 0


def test_a_load_the_multiprocess_connector_gave_up_is_the_reason() -> None:
    bypassed = mp_connector_line(
        "2026-12-06 16:03:20,337",
        "Bypassing LMCache for request chatcmpl-a-11111111 after a failed async KV load; "
        "the prompt will be recomputed locally.",
    )
    assert one(bypassed)["reason"] == "LMCache failed to load its hit: computed again"


# -- joined on demand ---------------------------------------------------------------


class Ticking:
    """A reading clock the test moves."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def events_of(lines: list[str]) -> list[Event]:
    stream = LogStream()
    return [event for line in lines for event in stream.feed(line)]


def eager_and_on_demand(events: list[Event], ask_at: set[int], keep: int = 50, **limits) -> tuple[list, list]:
    """The rows a joiner fed every event gives at the end, and those of one joined on demand, asked after the
    events numbered in ``ask_at`` and at the end (each with its own stats, fed the same events)."""
    eager_stats, lazy_stats = fresh("demo"), fresh("demo")
    recent, joiner = joined(eager_stats, keep=keep, **limits)
    on_demand = JoinedOnDemand(lazy_stats, keep=keep, **limits)
    for number, event in enumerate(events):
        for stats, observe in ((eager_stats, joiner.observe), (lazy_stats, on_demand.observe)):
            stats.observe(event)
            observe(event)
        if number in ask_at:
            on_demand.as_list()
    joiner.release_held(0.0, everything=True)
    on_demand.as_list()
    assert on_demand.joiner is not None
    on_demand.joiner.release_held(0.0, everything=True)
    return recent.as_list(), on_demand.as_list()


@pytest.mark.parametrize("style", ["classic", "current"])
def test_rows_joined_at_the_first_ask_are_those_of_a_joiner_fed_every_line(tmp_path: Path, style: str) -> None:
    """A busy generated log (requests overlap, some aborted): asked first at the end, in the middle, or twice."""
    log = tmp_path / "gen.log"
    generate(log, 6000, style=style)
    events = events_of(log.read_text().splitlines())
    middle = len(events) // 2
    for ask_at in (set(), {middle}, {100, middle}):
        eager, on_demand = eager_and_on_demand(events, ask_at)
        assert len(eager) == 50
        assert on_demand == eager, ask_at


def test_rows_of_the_real_logs_are_the_same_joined_on_demand() -> None:
    for path in sorted(SAMPLES.glob("*.log")):
        events = events_of(path.read_text().splitlines())
        eager, on_demand = eager_and_on_demand(events, set())
        assert on_demand == eager, path.name


def test_nothing_is_joined_before_an_ask_and_joining_stops_when_no_one_asks() -> None:
    clock = Ticking()
    stats = fresh("demo")
    on_demand = JoinedOnDemand(stats, clock=clock)
    assert on_demand.kept.entries.maxlen == MIN_WINDOW
    requests = [
        "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-{n}-11111111.",
        'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    ]

    def serve(first: int, count: int) -> None:
        for event in events_of([line.format(n=n) for n in range(first, first + count) for line in requests]):
            stats.observe(event)
            on_demand.observe(event)

    serve(0, 3)
    assert on_demand.joiner is None and len(on_demand.kept.entries) == 6
    assert [row["id"] for row in on_demand.as_list()] == [f"chatcmpl-{n}-11111111" for n in range(3)]
    clock.now += IDLE_SECONDS - 1
    on_demand.tick()
    serve(3, 1)  # kept for the next batch: joined at the next tick (or ask)
    assert len(on_demand.recent.ended) == 3
    on_demand.tick()
    assert len(on_demand.joiner.open) == 0 and len(on_demand.recent.ended) == 4
    serve(4, JOIN_BATCH // 2)  # a batch's worth of events: joined as the last of them comes
    assert len(on_demand.joiner.open) == 0 and len(on_demand.recent.ended) == 50
    clock.now += IDLE_SECONDS + 1
    on_demand.tick()
    assert on_demand.joiner is None and on_demand.recent is None
    serve(4 + JOIN_BATCH // 2, 2)
    assert len(on_demand.as_list()) == 50  # joined again from what was kept


def test_a_row_joined_late_keeps_the_servers_side_at_its_end() -> None:
    """LMCache turned unhealthy after the first request's miss: that miss was a prompt not seen before, the
    second's is LMCache's degraded mode, though both are joined after it recovered."""
    unhealthy = (
        "[2026-11-25 05:40:57,400] LMCache WARNING: HealthMonitor: System unhealthy, entering degraded mode "
        "(base.py:281:lmcache.v1.health_monitor.base)"
    )
    recovered = unhealthy.replace("WARNING", "INFO").replace(
        "unhealthy, entering degraded mode", "recovered, restoring normal operations"
    )
    lines = []
    for n, before in ((1, ""), (2, unhealthy)):
        rid = f"chatcmpl-{n}-11111111"
        lines += [before] if before else []
        lines += [
            f"(APIServer pid=1) INFO 11-25 05:40:5{n} [async_llm.py:578] Added request {rid}.",
            lookup(rid, 600, 0),
            'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        ]
    eager, on_demand = eager_and_on_demand(events_of([*lines, recovered]), set())
    assert [row["reason"] for row in on_demand] == ["not seen before", "LMCache degraded"]
    assert on_demand == eager


def test_a_late_piece_joins_as_it_did_when_read_within_the_wait() -> None:
    """A source of two files: a request's prefetch line read after its access line joins it if read within
    the wait for late pieces, on the reading's clock as it was, though the rows are asked much later."""
    clock = Ticking()
    stats = fresh("mp")
    on_demand = JoinedOnDemand(stats, clock=clock, linger=1.0)

    def read(line: str, after: float) -> None:
        clock.now += after
        for event in events_of([line]):
            stats.observe(event)
            on_demand.observe(event)

    for n, late_by in ((1, 0.5), (2, 1.5)):
        rid = f"chatcmpl-{n}-11111111"
        read(f"(APIServer pid=1) INFO 11-25 05:40:5{n} [async_llm.py:578] Added request {rid}.", 0.1)
        read('INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK', 0.1)
        read(
            f"[2026-11-25 05:40:5{n},900] LMCache INFO: Prefetch request completed (L1+L2): 5/11 retained keys "
            f"(5 L1, 0 L2) in 0.5 ms (external_request_id={rid}, prefetch_request_id=-1) "
            "(storage_manager.py:726:lmcache.v1.distributed.storage_manager)",
            late_by,
        )
    clock.now += 30.0
    on_demand.as_list()
    clock.now += 2.0
    on_demand.tick()  # the last request's wait for late pieces ends
    reasons = {row["id"]: row["reason"] for row in on_demand.as_list()}
    assert reasons["chatcmpl-1-11111111"] == "partial: 5 of 11 keys"
    assert reasons["chatcmpl-2-11111111"] != "partial: 5 of 11 keys"  # read after the wait: not joined


def test_a_request_whose_first_lines_are_no_longer_kept_is_joined_from_those_that_are(monkeypatch) -> None:
    """Only the last request events are kept: a request's row is made of those of its lines still kept."""
    monkeypatch.setattr("agent.sinks.recent.MIN_WINDOW", 2)
    stats = fresh("demo")
    on_demand = JoinedOnDemand(stats, keep=1)
    assert on_demand.kept.entries.maxlen == 32  # (EVENTS_PER_ROW per row kept, at least MIN_WINDOW)
    rid = "chatcmpl-a-11111111"
    health = 'INFO:     127.0.0.1:3 - "GET /health HTTP/1.1" 200 OK'  # a joined kind that opens no request
    lines = [
        f"(APIServer pid=1) INFO 11-25 05:40:50 [async_llm.py:578] Added request {rid}.",
        *[health] * 40,
        lookup(rid, 600, 512, 512).replace("05:40:56,500", "05:40:54,000"),
        'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    ]
    for event in events_of(lines):
        stats.observe(event)
        on_demand.observe(event)
    (row,) = on_demand.as_list()
    assert (row["id"], row["status"], row["prompt_tokens"], row["lmcache_hit_tokens"]) == (rid, 200, 600, 512)
    eager, _ = eager_and_on_demand(events_of(lines), set(), keep=1)
    assert eager[0]["id"] == rid and eager[0]["latency_seconds"] > row["latency_seconds"]  # (its start not kept)


def test_servers_keep_their_events_in_one_window_and_each_joins_its_own(monkeypatch) -> None:
    """The window's memory does not grow with the number of servers: a busy one takes more of it."""
    monkeypatch.setattr("agent.sinks.recent.MIN_WINDOW", 2)
    kept = KeptEvents(keep=1)
    quiet, busy = fresh("quiet"), fresh("busy")
    servers = {stats.server: (stats, JoinedOnDemand(stats, keep=1, kept=kept)) for stats in (quiet, busy)}

    def serve(name: str, n: int) -> None:
        stats, on_demand = servers[name]
        request = [
            f"(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-{name}-{n}.",
            'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        ]
        for event in events_of(request):
            stats.observe(event)
            on_demand.observe(event)

    serve("quiet", 0)
    serve("busy", 0)
    assert [row["id"] for row in servers["busy"][1].as_list()] == ["chatcmpl-busy-0"]  # its own, not the other's
    for n in range(1, 15):
        serve("busy", n)
    assert len(kept.entries) == 32 and servers["busy"][1].as_list()[0]["id"] == "chatcmpl-busy-14"
    # The quiet server's request is still kept (2 of the 32): asked now, it is joined.
    assert [row["id"] for row in servers["quiet"][1].as_list()] == ["chatcmpl-quiet-0"]
    quiet2 = fresh("quiet2")
    late = JoinedOnDemand(quiet2, keep=1, kept=kept)
    servers["quiet2"] = (quiet2, late)
    serve("quiet2", 0)
    for n in range(15, 31):
        serve("busy", n)  # the busy server's 32 events push the other's out of the window
    assert late.as_list() == [] and len(kept.entries) == 32


# The types a row's fields are annotated with: plain values, which a row's dict may hold as they are.
ROW_VALUE_TYPES = ("str", "str | None", "int | None", "float | None", "int")


def test_a_row_as_a_dict_is_what_dataclasses_makes_of_it() -> None:
    """The rows' dicts (``/api/requests``, the status page, ``kvwatch top``) are copies of their fields, made fast:
    the same keys, in the same order, and values as ``dataclasses.asdict`` gives (a field that held an object
    would need its deep copy: this fails then)."""
    values = {f.name: f"value of {f.name}" for f in dataclasses.fields(RequestRow)}
    row = RequestRow(**values)
    assert list(row.as_dict().items()) == list(dataclasses.asdict(row).items()) == list(values.items())
    assert all(f.type in ROW_VALUE_TYPES for f in dataclasses.fields(RequestRow)), "a row's field holds an object"
