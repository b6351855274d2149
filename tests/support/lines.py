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


def all_fixture_lines() -> list[str]:
    lines = []
    for path in sorted(SAMPLES.glob("*.log")):
        lines += path.read_text(encoding="utf-8").split("\n")
    for family in ("vllm_stats", "lmcache", "requests", "lifecycle", "bench", "wrappers", "prefixes", "suspicious"):
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
