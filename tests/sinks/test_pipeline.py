"""The reading loops (agent/pipeline.py): a line a parser raises on is skipped and counted, and
the lines after it are read, in replay and in the live pipeline alike."""

from __future__ import annotations

import io
import logging
import re
from datetime import UTC
from pathlib import Path

import pytest

import parsers.stream
from agent.pipeline import PARSER_ERROR, SourcePipeline, read_into
from agent.sinks.recent import REQUESTS_SINK, JoinedOnDemand
from agent.sources.lines import BLOCK
from tests.support.harness import STATS
from tests.support.lines import SAMPLES, all_fixture_lines, fresh

POISON = "INFO 12-14 16:18:29 [x.py:1] a line this test makes a parser raise on"


@pytest.fixture
def a_parser_bug(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stands in for a parser bug (none is known: the fault is injected)."""
    real = parsers.stream.parse_nested

    def parse_nested(line: str, depth: int, rank: int | None):
        if line == POISON:
            raise RecursionError("a parser bug")
        return real(line, depth, rank)

    monkeypatch.setattr(parsers.stream, "parse_nested", parse_nested)


def test_replay_skips_and_counts_the_line_a_parser_raised_on(a_parser_bug, caplog) -> None:
    stats = fresh()
    raw = io.BytesIO((STATS + POISON + "\n" + STATS).encode())
    with caplog.at_level(logging.WARNING):
        lines, error = read_into(stats, raw, 1 << 20)
    assert (lines, error) == (3, None)
    assert stats.skipped == {PARSER_ERROR: 1}
    assert stats.parsed_lines == 2
    assert "1 line(s) could not be parsed" in caplog.text and POISON not in caplog.text


def test_the_live_pipeline_reads_on_after_a_line_a_parser_raised_on(a_parser_bug, caplog) -> None:
    pipeline = SourcePipeline("live", UTC, 1 << 20)
    with caplog.at_level(logging.WARNING):
        pipeline.feed([STATS.rstrip("\n"), POISON, STATS.rstrip("\n")])
        pipeline.feed([STATS.rstrip("\n")])
        for _ in range(5):  # the same line again and again: said once, counted every time
            pipeline.feed([POISON])
    assert pipeline.stats.skipped == {PARSER_ERROR: 6}
    assert (pipeline.stats.lines, pipeline.stats.parsed_lines) == (9, 3)
    assert caplog.text.count("could not be parsed") == 1


def test_the_files_read_in_one_cycle_reach_the_sinks_when_one_of_them_fails(monkeypatch, caplog) -> None:
    """The lines of several files handed over together: a bug on one file's (here its stream cannot be made) loses
    only those, said in kvwatch's log; the other files' are read and the sinks' batch is ended."""
    pipeline = SourcePipeline("live", UTC, 1 << 20)
    ended = []
    pipeline.after_each_feed("test", lambda: ended.append(pipeline.stats.lines))
    real = pipeline._stream

    def stream(origin: str):
        if origin == "bad.log":
            raise RuntimeError("a bug")
        return real(origin)

    monkeypatch.setattr(pipeline, "_stream", stream)
    with caplog.at_level(logging.ERROR):
        pipeline.feed_files(
            [([STATS.rstrip("\n")], "a.log"), ([STATS.rstrip("\n")], "bad.log"), ([STATS.rstrip("\n")], "b.log")]
        )
    assert (pipeline.stats.lines, pipeline.stats.parsed_lines) == (2, 2)
    assert ended == [2]
    assert "live: the lines read from bad.log were lost" in caplog.text


def test_numbers_too_large_for_any_metric_are_no_numbers_and_never_stop_the_reading() -> None:
    """Each integer of every real line in turn made 25 and 400 digits long (no log means such a count; a
    Prometheus float or an OTLP int64 cannot hold it): the line reads as unreadable for its family, the
    lines after it are read, and /metrics renders in both formats."""
    from agent.exposition import exposition
    from agent.sinks.prometheus import registry_for
    from parsers import LogStream
    from parsers.shapes import MAX_DIGITS

    lines = [line for line in all_fixture_lines() if re.search(r"\d", line)]
    stream = LogStream()
    for digits in (25, 400):
        pipeline = SourcePipeline("s", UTC, 1 << 22)
        variants = []
        for line in lines:
            for number in re.finditer(r"\d+", line):
                variants.append(line[: number.start()] + "9" * digits + line[number.end() :])
        for variant in variants:
            for event in stream.feed(variant):
                fields = [getattr(event, name) for name in event.__slots__ if hasattr(event, name)]
                assert not any(isinstance(f, int) and len(str(abs(f))) > MAX_DIGITS for f in fields), variant
        pipeline.feed([*variants, STATS.strip()])
        assert pipeline.stats.lines == len(variants) + 1
        assert PARSER_ERROR not in pipeline.stats.skipped
        registry = registry_for(lambda p=pipeline: [p.stats])
        for accept in ("", "application/openmetrics-text; version=1.0.0"):
            text = exposition(registry, accept)[0].decode()
            # The line after them all was read (its throughput is the last one).
            assert 'kvwatch_vllm_prompt_throughput_tokens_per_second{engine="0",server="s"} 10.0' in text
    assert stream.failed == 0


def test_a_decimal_too_long_to_be_finite_never_makes_a_metric_infinite() -> None:
    """Each decimal of every real line in turn made 400 digits long (a float reads it as infinity):
    no sample on /metrics becomes infinite -- one infinite cost stayed in a duration's sum for good --
    and the line after them all is read."""
    from prometheus_client.parser import text_string_to_metric_families

    from agent.exposition import exposition
    from agent.sinks.prometheus import registry_for

    lines = [line for line in all_fixture_lines() if re.search(r"\d\.\d", line)]
    variants = [
        line[: number.start()] + "9" * 400 + line[number.end() :]
        for line in lines
        for number in re.finditer(r"\d+\.\d+", line)
    ]
    pipeline = SourcePipeline("s", UTC, 1 << 22)
    pipeline.feed([*variants, STATS.strip()])
    assert pipeline.stats.lines == len(variants) + 1
    assert PARSER_ERROR not in pipeline.stats.skipped
    text = exposition(registry_for(lambda: [pipeline.stats]), "")[0].decode()
    infinite = [
        (sample.name, sample.labels)
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.value in (float("inf"), float("-inf"))
    ]
    assert infinite == []
    assert 'kvwatch_vllm_prompt_throughput_tokens_per_second{engine="0",server="s"} 10.0' in text


def test_a_live_record_cut_short_is_counted_with_the_batch_it_came_in() -> None:
    """A stream holds back a record cut short in case the next line continues it (a wrapped paste);
    a live reader does not wait for a next line that may never come."""
    pipeline = SourcePipeline("live", UTC, 1 << 20)
    pipeline.feed(["INFO 10-02 10:00:00 async_llm_engine.py:120] Finished request cmpl-1a2b"])
    assert pipeline.stats.suspicious == {"request_finished": 1}
    assert (pipeline.stats.lines, pipeline.stats.parsed_lines) == (1, 1)
    # Within a batch the pieces of a wrapped record are read together.
    pipeline.feed(["INFO 10-02 10:00:00 async_llm_engine.py:120] Finished request cmpl-1a2b", "c3d."])
    assert pipeline.stats.suspicious == {"request_finished": 1}
    assert pipeline.stats.finished == 1
    assert (pipeline.stats.lines, pipeline.stats.parsed_lines) == (3, 2)


def test_lines_parsed_a_chunk_at_a_time_reach_the_sinks_as_line_by_line() -> None:
    """The live pipeline parses a chunk of lines before their events go to the sinks: every event still
    reaches the stats and then each listener, in the lines' order, across chunk boundaries."""
    from agent.pipeline import CHUNK
    from parsers import LogStream

    lines = [line for line in all_fixture_lines() if line]
    assert len(lines) > 3 * CHUNK
    stream = LogStream(1 << 20)
    expected = [event for line in lines for event in stream.feed(line)] + list(stream.settle())

    pipeline = SourcePipeline("s", UTC, 1 << 20)
    observed: list = []
    observe = pipeline.stats.observe

    def counting(event) -> None:
        observed.append(event)
        observe(event)

    pipeline.stats.observe = counting
    heard: list = []
    pipeline.listen("test", lambda event: heard.append((event, len(observed), observed[-1] is event)))
    pipeline.feed(lines[:10])  # a batch shorter than a chunk, then one of several chunks
    pipeline.feed(lines[10:])
    assert observed == expected
    assert [event for event, _seen, _last in heard] == expected
    # Each listener hears an event right after the stats observed it, not after the whole chunk.
    assert [(seen, last) for _event, seen, last in heard] == [(n, True) for n in range(1, len(expected) + 1)]
    assert pipeline.stats.lines == len(lines)


def test_a_replay_read_a_chunk_at_a_time_counts_what_one_read_line_by_line_counts() -> None:
    """The replay's chunked loop (metrics and a summary's span of log time) against the loop that numbers
    every line for the events output: the same stats, the same first and last log time."""
    from agent.pipeline import CHUNK
    from agent.sinks.checkpoint import stats_record

    lines = all_fixture_lines()
    assert len(lines) > 3 * CHUNK
    raw = "\n".join(lines).encode()
    chunked, numbered = fresh(), fresh()
    seen: list = []
    assert read_into(chunked, io.BytesIO(raw), 1 << 20, track_time=True) == (len(lines), None)
    read_into(numbered, io.BytesIO(raw), 1 << 20, track_time=True, on_event=lambda event, *_: seen.append(event))
    assert seen and chunked.first_time is not None
    assert (chunked.first_time, chunked.last_time) == (numbered.first_time, numbered.last_time)
    assert {**stats_record(chunked), "created": 0} == {**stats_record(numbered), "created": 0}


def test_a_sink_that_raises_on_an_event_loses_nothing_else(caplog) -> None:
    """A sink's bug (injected here: none is known) on one event: counted by sink, logged once with its
    traceback, and the event still reaches the other sinks; the events after it reach every sink, and every
    line is counted."""
    pipeline = SourcePipeline("live", UTC, 1 << 20)
    heard: list = []
    poisoned = {"requests": 0}

    def joiner(event) -> None:
        if event.kind == "engine_stats":
            poisoned["requests"] += 1
            raise KeyError("a sink bug")

    pipeline.listen("requests", joiner)
    pipeline.listen("rows", heard.append)
    real = pipeline.stats.observe
    calls = {"n": 0}

    def stats_observe(event) -> None:
        calls["n"] += 1
        if calls["n"] == 2:
            raise ValueError("a stats bug")
        real(event)

    pipeline.stats.observe = stats_observe
    lines = [STATS.rstrip("\n")] * 3
    with caplog.at_level(logging.WARNING):
        pipeline.feed(lines)
        pipeline.feed(lines)
    assert pipeline.stats.sink_errors == {"stats": 1, "requests": 6, "rows": 0}
    assert len(heard) == 6 and poisoned["requests"] == 6  # every event reached every listener
    assert pipeline.stats.engines["0"].lines == 5  # the stats took every event but the one it raised on
    assert (pipeline.stats.lines, pipeline.stats.parsed_lines) == (6, 6)
    logged = [r.getMessage() for r in caplog.records if "sink raised" in r.getMessage()]
    assert len(logged) == 2  # once per sink, with where it raised, never the exception's text
    stats_error, joiner_error = sorted(logged, key=lambda message: "stats sink" not in message)
    assert "the stats sink raised ValueError" in stats_error and "in stats_observe" in stats_error
    assert "the requests sink raised KeyError" in joiner_error and "in joiner" in joiner_error


def test_rows_someone_reads_are_joined_as_each_delivery_of_lines_ends() -> None:
    """A watched server's request events joined in batches, the batch ended with each feed (under the lock a scrape
    takes): its rows and its joiner's errors are those of every line read so far, with no tick between; a bug in
    what ends a batch is counted as that sink's and the reading goes on."""
    pipeline = SourcePipeline("live", UTC, 1 << 20)
    recent = JoinedOnDemand(pipeline.stats)
    pipeline.listen(REQUESTS_SINK, recent.observe)
    pipeline.after_each_feed(REQUESTS_SINK, recent.join_unjoined)
    request = (
        "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-{n}-11111111.",
        'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    )
    pipeline.feed([line.format(n=0) for line in request])
    assert recent.as_list()[0]["id"] == "chatcmpl-0-11111111"  # the first ask joins what was kept
    pipeline.feed([line.format(n=1) for line in request])
    assert recent.recent is not None and len(recent.recent.ended) == 2  # joined as the feed ended: no ask, no tick

    def broken() -> None:
        raise RuntimeError("a bug in ending a batch")

    pipeline.after_each_feed(REQUESTS_SINK, broken)
    pipeline.feed([line.format(n=2) for line in request])
    assert len(recent.recent.ended) == 3 and pipeline.stats.sink_errors[REQUESTS_SINK] == 1
    assert pipeline.stats.lines == 6


def test_a_replay_reads_on_after_an_event_the_stats_raised_on(monkeypatch, caplog) -> None:
    from agent.sinks.stats import ServerStats

    real = ServerStats.observe
    seen = {"n": 0}

    def observe(self, event) -> None:
        seen["n"] += 1
        if seen["n"] == 1:
            raise ValueError("a stats bug")
        real(self, event)

    monkeypatch.setattr(ServerStats, "observe", observe)
    stats = fresh()
    with caplog.at_level(logging.WARNING):
        assert read_into(stats, io.BytesIO((STATS * 3).encode()), 1 << 20, track_time=True) == (3, None)
    assert stats.sink_errors == {"stats": 1}
    assert stats.engines["0"].lines == 2 and stats.last_time is not None
    from agent.sinks import summary

    assert "  sink errors  stats 1 -- events a kvwatch bug skipped there" in summary.render([stats])
    assert "sink errors" not in summary.render([fresh()])


def test_a_log_of_more_writers_than_the_limit_keeps_the_others_lines_with_the_input(monkeypatch, caplog) -> None:
    """A multiplexed log whose every line names another writer (made-up names, a flood) makes at most
    MAX_WRITERS servers: memory stays bounded, and no line is lost."""
    import agent.pipeline

    monkeypatch.setattr(agent.pipeline, "MAX_WRITERS", 3)
    added = "(APIServer pid=1) INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-{}.\n"
    raw = io.BytesIO("".join(f"[pod/p{n}/c] {added.format(n)}" for n in range(10)).encode())
    stats, writers = fresh(), {}

    def stats_of(name: str):
        writers[name] = fresh(name)
        return writers[name]

    with caplog.at_level(logging.WARNING):
        assert read_into(stats, raw, 1 << 20, stats_of=stats_of) == (10, None)
    assert list(writers) == ["p0/c", "p1/c", "p2/c"]
    assert [writer.added for writer in writers.values()] == [1, 1, 1]
    assert (stats.lines, stats.added) == (7, 7)
    assert caplog.text.count("more than 3 writers in one log") == 1


# LMCache 0.5.6's multiprocess server's own log as `lmcache server` writes it (its HTTP server is uvicorn):
# its start, kvwatch's health check of it, a scrape of its /metrics, a store, its stop.
LMCACHE_SERVER_LOG = [
    "\x1b[32;20m[2026-12-02 06:47:56,192] LMCache INFO:\x1b[0m LMCache cache server is running... "
    "\x1b[3m(server.py:511:lmcache.v1.multiprocess.server)\x1b[0m",
    "INFO:     Application startup complete.",
    'INFO:     127.0.0.1:60220 - "GET /healthcheck HTTP/1.1" 200 OK',
    'INFO:     127.0.0.1:60240 - "GET /metrics HTTP/1.1" 200 OK',
    "\x1b[32;20m[2026-12-02 06:49:42,481] LMCache INFO:\x1b[0m Stored 2048 tokens in 0.041 seconds "
    "\x1b[3m(engine_driven_transfer.py:471:lmcache.v1.multiprocess.modules.engine_driven_transfer)\x1b[0m",
    "INFO:     Shutting down",
]
VLLM_LOG = [
    "(APIServer pid=1) INFO 12-02 06:48:50 [api_server.py:1000] vLLM API server version 0.32.0",
    "(APIServer pid=1) INFO:     Application startup complete.",
    '(APIServer pid=1) INFO:     127.0.0.1:46144 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
]


@pytest.mark.parametrize("told", [True, False])
def test_an_lmcache_servers_own_http_lines_are_none_of_vllms(told: bool) -> None:
    """A server kvwatch starts in LMCache's multiprocess mode is read from two files, vLLM's and its LMCache
    server's.  The LMCache server's uvicorn lines (its start and stop, the health checks of it, the scrapes of
    its /metrics) are its own HTTP server's: told which file that is, vLLM's numbers and listeners (its
    supervisor, the trace builder) get none of them, and its LMCache lines count as before.  Not told (the
    control), they are taken for vLLM's."""
    server_log = "/var/log/kvwatch/gpu0-lmcache.log"
    pipeline = SourcePipeline("gpu0", UTC, 1 << 20, lmcache_server_logs=(server_log,) if told else ())
    heard: list = []
    pipeline.listen("supervisor", heard.append)
    pipeline.feed(VLLM_LOG, "/var/log/kvwatch/gpu0.log")
    pipeline.feed(LMCACHE_SERVER_LOG, server_log)
    stats = pipeline.stats
    routes = {route for (_method, route, _status) in stats.http}
    kinds = [event.kind for event in heard]
    assert stats.stores == 1 and stats.lmcache_server_starts == 1
    if told:
        assert routes == {"/v1/chat/completions"}
        assert (stats.state, stats.ready, stats.shutdowns) == ("ready", 1, 0)
        assert kinds.count("http_access") == 1 and kinds.count("server_ready") == 1
    else:
        assert routes == {"/v1/chat/completions", "/metrics", "other"}
        assert (stats.state, stats.shutdowns) == ("stopped", 1)
    assert stats.lines == len(VLLM_LOG) + len(LMCACHE_SERVER_LOG)


def _lmcache_server_numbers(stats) -> tuple:
    """What an LMCache server's uvicorn lines change when they are taken for vLLM's."""
    return {route for (_method, route, _status) in stats.http}, stats.shutdowns


def _numbers(stats) -> tuple:
    return (*_lmcache_server_numbers(stats), stats.state, stats.ready, stats.lmcache_server_starts, stats.prefetches)


@pytest.mark.parametrize("tell", [True, False])
def test_a_file_of_a_followed_list_is_told_to_be_an_lmcache_servers_own_log_by_its_first_lines(
    tmp_path: Path, tell: bool
) -> None:
    """A [[follow]] may list an LMCache multiprocess server's log among its files without naming it so: the
    file's first block, read from its start, tells (not told, the control: its uvicorn lines are vLLM's)."""
    vllm_log, server_log = tmp_path / "vllm.log", tmp_path / "lmcache-server.log"
    vllm_log.write_text("\n".join(VLLM_LOG) + "\n")
    server_log.write_text("\n".join(LMCACHE_SERVER_LOG) + "\n")
    pipeline = SourcePipeline("mp", UTC, 1 << 20, tell_lmcache_server=tell)
    pipeline.feed(VLLM_LOG, str(vllm_log))
    pipeline.feed(LMCACHE_SERVER_LOG, str(server_log))
    assert pipeline.stats.stores == 1
    if tell:
        assert _lmcache_server_numbers(pipeline.stats) == ({"/v1/chat/completions"}, 0)
    else:
        assert _lmcache_server_numbers(pipeline.stats) == ({"/v1/chat/completions", "/metrics", "other"}, 1)


def test_a_followed_lmcache_servers_log_is_told_wherever_its_reading_resumes(tmp_path: Path) -> None:
    """Its reading resumed after its start line (a saved position): the file's first lines still tell."""
    server_log = tmp_path / "lmcache-server.log"
    server_log.write_text("\n".join(LMCACHE_SERVER_LOG) + "\n")
    pipeline = SourcePipeline("mp", UTC, 1 << 20, tell_lmcache_server=True)
    pipeline.feed(LMCACHE_SERVER_LOG[2:], str(server_log))
    assert _lmcache_server_numbers(pipeline.stats) == (set(), 0)


def test_a_followed_lmcache_servers_log_begun_before_its_start_is_told_by_the_lines_read_after(tmp_path: Path) -> None:
    """Read while the server is still starting, its log holds its banner and settings only (the real sample's
    first 60 lines tell nothing either way): its start line, read later, tells, before that batch's lines count."""
    sample = (SAMPLES / "lmcache-0.5.6-mp-server.log").read_text(encoding="utf-8").splitlines()
    server_log = tmp_path / "lmcache-server.log"
    server_log.write_text("\n".join(sample[:60]) + "\n")
    pipeline = SourcePipeline("mp", UTC, 1 << 20, tell_lmcache_server=True)
    pipeline.feed(sample[:60], str(server_log))
    assert pipeline.streams[str(server_log)].lmcache_server is False  # not yet
    with open(server_log, "a", encoding="utf-8") as handle:
        handle.write("\n".join(sample[60:]) + "\n")
    pipeline.feed(sample[60:], str(server_log))
    named = SourcePipeline("mp", UTC, 1 << 20, lmcache_server_logs=(str(server_log),))
    named.feed(sample, str(server_log))
    assert _numbers(pipeline.stats) == _numbers(named.stats)
    assert _lmcache_server_numbers(pipeline.stats) == (set(), 0) and pipeline.stats.prefetches == 2


def test_a_followed_lmcache_servers_log_whose_start_is_gone_is_told_by_what_only_that_server_writes(
    tmp_path: Path,
) -> None:
    """A copy another tool rotated begins after the server's start: its prefetches tell (the real sample's lines)."""
    sample = (SAMPLES / "lmcache-0.5.6-mp-server.log").read_text(encoding="utf-8").splitlines()[62:]
    server_log = tmp_path / "lmcache-server.log.1"
    server_log.write_text("\n".join(sample) + "\n")
    pipeline = SourcePipeline("mp", UTC, 1 << 20, tell_lmcache_server=True)
    pipeline.feed(sample, str(server_log))
    named = SourcePipeline("mp", UTC, 1 << 20, lmcache_server_logs=(str(server_log),))
    named.feed(sample, str(server_log))
    assert _numbers(pipeline.stats) == _numbers(named.stats)
    assert _lmcache_server_numbers(pipeline.stats) == (set(), 0) and pipeline.stats.prefetches == 2


def test_an_idle_lmcache_servers_log_whose_start_is_gone_is_told_by_the_health_checks_it_answered(
    tmp_path: Path,
) -> None:
    """An idle server's log another tool rotated after its start: its health checks and the scrapes of it."""
    lines = [
        f'INFO:     127.0.0.1:{port} - "GET {path} HTTP/1.1" 200 OK'
        for port in range(40000, 40010)
        for path in ("/healthcheck", "/metrics")
    ]
    server_log = tmp_path / "lmcache-server.log.1"
    server_log.write_text("\n".join(lines) + "\n")
    pipeline = SourcePipeline("mp", UTC, 1 << 20, tell_lmcache_server=True)
    pipeline.feed(lines, str(server_log))
    assert _lmcache_server_numbers(pipeline.stats) == (set(), 0)


def test_a_vllm_log_that_later_shows_an_lmcache_servers_start_stays_vllms(tmp_path: Path) -> None:
    """vLLM's lines tell at once: an LMCache server's output later in the same file (both servers writing one
    file) does not make its uvicorn lines any less vLLM's; and a file gone before it was looked at is read."""
    log = tmp_path / "both.log"
    log.write_text("")
    pipeline = SourcePipeline("both", UTC, 1 << 20, tell_lmcache_server=True)
    pipeline.feed(VLLM_LOG[:1], str(log))
    pipeline.feed(LMCACHE_SERVER_LOG, str(log))
    assert _lmcache_server_numbers(pipeline.stats) == ({"/metrics", "other"}, 1)
    pipeline.feed(VLLM_LOG, str(tmp_path / "gone.log"))
    assert "/v1/chat/completions" in _lmcache_server_numbers(pipeline.stats)[0]
    assert pipeline.stats.lines == 1 + len(LMCACHE_SERVER_LOG) + len(VLLM_LOG)


@pytest.mark.parametrize("named", [False, True])
def test_an_lmcache_servers_log_in_which_vllms_output_begins_later_is_read_as_any_from_there(
    tmp_path: Path, named: bool
) -> None:
    """Told by its first lines, an LMCache server's log is so until vLLM's own output shows in it (both servers
    writing one file): the server's uvicorn lines before it count as none of vLLM's, vLLM's own after it count but
    for the health checks of the LMCache server (its own API's answers), and at its next stream (a glob's turn) the
    file is the server's again until vLLM's output shows.  Named so (the control), it stays the server's."""
    log = tmp_path / "both.log"
    # Its first block whole (past the lines read after it that may still tell): the server's stores fill it.
    server_lines = LMCACHE_SERVER_LOG[:-1] + LMCACHE_SERVER_LOG[4:5] * 1000 + LMCACHE_SERVER_LOG[-1:]
    log.write_text("\n".join(server_lines) + "\n")
    assert log.stat().st_size > BLOCK
    if named:
        pipeline = SourcePipeline("both", UTC, 1 << 20, lmcache_server_logs=(str(log),))
    else:
        pipeline = SourcePipeline("both", UTC, 1 << 20, tell_lmcache_server=True)
    pipeline.feed(server_lines, str(log))
    assert _lmcache_server_numbers(pipeline.stats) == (set(), 0) and pipeline.stats.stores == 1001
    health_check = LMCACHE_SERVER_LOG[2]
    assert "/healthcheck" in health_check
    pipeline.feed([*VLLM_LOG, health_check], str(log))
    assert _lmcache_server_numbers(pipeline.stats) == ((set() if named else {"/v1/chat/completions"}), 0)
    assert pipeline.stats.ready == (0 if named else 1)
    pipeline.feed([health_check, VLLM_LOG[2]], str(log))
    pipeline.streams.clear()  # (as when a glob's files are read in turns)
    pipeline.feed([health_check, *VLLM_LOG[2:], health_check], str(log))
    assert len(pipeline.stats.http) == (0 if named else 1)
    assert sum(pipeline.stats.http.values()) == (0 if named else 3)


def test_the_first_lines_of_a_globs_files_read_in_turns_are_read_once(tmp_path: Path, monkeypatch) -> None:
    """More files than streams, read in turns: each file's stream is made anew at each turn, its first lines are
    looked at once."""
    import agent.pipeline
    from agent.pipeline import MAX_STREAMS

    looked: list[str] = []
    head_shown = agent.pipeline.head_shown

    def counted(path: str, max_line: int):
        looked.append(path)
        return head_shown(path, max_line)

    monkeypatch.setattr(agent.pipeline, "head_shown", counted)
    files = [tmp_path / f"{n}.log" for n in range(MAX_STREAMS + 2)]
    for path in files:
        path.write_text("x" * (agent.pipeline.BLOCK + 1))  # (its first block whole: nothing after it tells)
    pipeline = SourcePipeline("glob", UTC, 1 << 20, tell_lmcache_server=True)
    for _turn in range(3):
        for path in files:
            pipeline.feed(VLLM_LOG[2:], str(path))
    assert sorted(looked) == sorted(str(path) for path in files)
    assert len(pipeline.streams) == MAX_STREAMS


def test_each_process_is_shown_its_own_files_events() -> None:
    """A supervisor listens to its process's files: vLLM's to every file but the LMCache server's, the LMCache
    server's to that file's every event (its HTTP server's lines and its errors too); the trace builder and the
    stats to every file's, the LMCache server's HTTP lines left out."""
    from agent.pipeline import LMCACHE_SERVER_FILES, VLLM_FILES

    server_log = "/var/log/kvwatch/gpu0-lmcache.log"
    pipeline = SourcePipeline("gpu0", UTC, 1 << 20, lmcache_server_logs=(server_log,))
    heard: dict[str, list[str]] = {"vllm": [], "lmcache": [], "every": []}
    pipeline.listen("supervisor", lambda event: heard["vllm"].append(event.kind), VLLM_FILES)
    pipeline.listen("supervisor", lambda event: heard["lmcache"].append(event.kind), LMCACHE_SERVER_FILES)
    pipeline.listen("requests", lambda event: heard["every"].append(event.kind))
    crash = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB."
    pipeline.feed(VLLM_LOG, "/var/log/kvwatch/gpu0.log")
    pipeline.feed([*LMCACHE_SERVER_LOG, crash], server_log)
    assert heard["vllm"] == ["server_starting", "server_ready", "http_access"]
    assert heard["lmcache"] == [
        *("lmcache_server_started", "server_ready", "http_access", "http_access", "lmcache_store"),
        *("server_shutdown", "server_error"),
    ]
    assert heard["every"] == [*heard["vllm"], "lmcache_server_started", "lmcache_store", "server_error"]
    assert pipeline.stats.errors["oom"] == 1  # (counted for the server, as before)


def test_each_file_of_a_source_is_its_own_stream() -> None:
    """Two files of one source read in turns: a containerd record's first piece in one is joined with its last
    piece in the same file, never with the other file's line read between them."""
    pipeline = SourcePipeline("pods", UTC, 1 << 20)
    heard: list = []
    pipeline.listen("test", heard.append)
    cut = 'INFO:     127.0.0.1:46144 - "POST /v1/chat'
    pipeline.feed([f"2026-12-02T06:49:42.000000000Z stdout P {cut}"], "a.log")
    pipeline.feed(["2026-12-02T06:49:42.100000000Z stdout F INFO:     Shutting down"], "b.log")
    pipeline.feed(['2026-12-02T06:49:42.200000000Z stdout F /completions HTTP/1.1" 200 OK'], "a.log")
    assert [event.kind for event in heard] == ["server_shutdown", "http_access"]
    assert heard[1].path == "/v1/chat/completions"


def test_the_streams_of_a_glob_whose_files_come_and_go_stay_bounded() -> None:
    """One stream per file, at most MAX_STREAMS of them: the one read longest ago goes, and a piece it still held
    is read as it is rather than lost."""
    from agent.pipeline import MAX_STREAMS

    pipeline = SourcePipeline("glob", UTC, 1 << 20)
    heard: list = []
    pipeline.listen("test", heard.append)
    pipeline.feed(["2026-12-02T06:49:42.000000000Z stdout P INFO:     Shutting down"], "first.log")
    for n in range(MAX_STREAMS):
        pipeline.feed([VLLM_LOG[2]], f"{n}.log")
    assert len(pipeline.streams) == MAX_STREAMS and "first.log" not in pipeline.streams
    assert [event.kind for event in heard].count("server_shutdown") == 1
    assert pipeline.stats.lines == MAX_STREAMS + 1
