"""The reading loops (agent/pipeline.py): a line a parser raises on is skipped and counted, and
the lines after it are read, in replay and in the live pipeline alike."""

from __future__ import annotations

import io
import logging
from datetime import UTC

import pytest

import parsers.stream
from agent.pipeline import PARSER_ERROR, SourcePipeline, read_into
from tests.support.harness import STATS
from tests.support.lines import fresh

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


def test_the_live_pipeline_reads_on_after_a_line_a_parser_raised_on(a_parser_bug) -> None:
    pipeline = SourcePipeline("live", UTC, 1 << 20)
    pipeline.feed([STATS.rstrip("\n"), POISON, STATS.rstrip("\n")])
    pipeline.feed([STATS.rstrip("\n")])
    assert pipeline.stats.skipped == {PARSER_ERROR: 1}
    assert (pipeline.stats.lines, pipeline.stats.parsed_lines) == (4, 3)
