"""A header behind a prefix kvwatch does not know is looked for in bounded places, with the very result
of the plain search.

The plain search looks for each kind of header over the whole rest of the line and keeps the leftmost
(on a tie, the kind looked for first).  The bounded one looks for LMCache's header first and for the
others only where they could still start before the best one found, and from where the words they need
first appear (a logger's name, a level with its colon): a search that finds nothing no longer scans to
the end of a long line.  Both must find the same header, and so give the same events, on every fixture
line and kept log, behind prefixes, and on mutated and random lines.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from contextlib import contextmanager
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import envelope, parse_line
from parsers.events import Event
from tests.parsers.test_fast_path import REAL, kept_log_lines
from tests.support.lines import edited, edits

# Prefixes of log tools, pipelines and pastes (and text that only looks like one), put before real lines.
PREFIXES = (
    "[node-3] ",
    "vllm-0 ",
    "[pod/vllm-0/server] x ",
    "2026-01-01T00:00:00.000Z ",
    "> ",
    "vllm | ",
    "INFO wrapper.py:12 ",
    "lmcache INFO: ",
    "LMCache INFO: ",
    "WARNING: ",
    "My log says ",
    '"',
    "12:00:00 ",
    "(APIServer pid=1) [node-3] ",
    "[2026-01-01 00:00:00] ",
    "uvicorn.error ",
)


def _plain_first(pattern: re.Pattern[str], line: str, pos: int, last: int | None) -> re.Match[str] | None:
    return pattern.search(line, pos)


@contextmanager
def plain_search() -> Iterator[None]:
    """Every kind of header looked for from the search's start to the end of the line."""
    with mock.patch.multiple(
        envelope,
        _first=_plain_first,
        _LEVEL_BEFORE_NAME=10**9,  # a name's first place bounds nothing
        _LEVEL_COLON=re.compile(""),  # nor does a level's colon
    ):
        yield


def header(line: str, pos: int = 0) -> tuple | None:
    found = envelope._search(line, pos)
    if found is None:
        return None
    return found.kind, found.start, found.end, found.stamp, found.logger, found.level_after_name


Found = tuple[tuple | None, tuple[Event, ...]]  # the header and the line's events


def both(line: str, pos: int = 0) -> tuple[Found, Found]:
    bounded = header(line, pos), parse_line(line)
    with plain_search():
        plain = header(line, pos), parse_line(line)
    return bounded, plain


def prefixed(lines: list[str]) -> list[str]:
    rng = random.Random(16)
    return [rng.choice(PREFIXES) + line for line in lines] + [
        rng.choice(PREFIXES) + rng.choice(PREFIXES) + line for line in lines
    ]


def test_the_plain_search_is_really_another_path() -> None:
    # Behind a prefix, an LMCache line's call site names a Python file and LMCache's logger: the plain
    # search looks for a vLLM header and a named one to the end of the line, the bounded one no further
    # than LMCache's header.
    line = (
        "[node-3] [2025-12-14 16:00:00,007] LMCache INFO: Retrieved 768 out of 768 required tokens (from 1123 "
        "total tokens). size: 0.0937 gb, cost 3.7478 ms, throughput: 25.0000 GB/s; "
        "(cache_engine.py:588:lmcache.v1.cache_engine)"
    )
    lasts: list[int | None] = []
    first = envelope._first

    def recorded(pattern: re.Pattern[str], text: str, pos: int, last: int | None) -> re.Match[str] | None:
        lasts.append(last)
        return first(pattern, text, pos, last)

    with mock.patch.object(envelope, "_first", recorded):
        found = envelope.find_header(line)
    assert found is not None and (found.kind, found.start) == ("lmcache", 9)
    assert lasts and all(last is not None and last < 9 + envelope._NAMED_STAMP_ROOM for last in lasts)
    with plain_search():
        assert envelope._first is _plain_first


@pytest.mark.parametrize(
    "line",
    [
        # A named header whose time begins before a vLLM header that its own level and name begin.
        "[node-3] [2025-12-14 16:18:24,320] INFO vllm.engine.py:12 Added request r-1.",
        "[node-3] 2025-12-14T16:18:24.320123+00:00 | WARNING vllm.rs:2] Added request r-1.",
        # The level and the separator as far before the name as they can stand, then an LMCache header.
        "[node-3] CRITICAL]        | [vllm.engine] Added request r-1. LMCache INFO: Reqid: r-1",
        "[node-3] x ERROR        | lmcache.v1 | LMCache INFO: Reqid: r-1, Total tokens 1, LMCache hit tokens: 0",
        # uvicorn's header right at the search's start, and after a level with no colon.
        "INFO:     Application startup complete. LMCache INFO: x",
        "[node-3] INFO INFO:     Shutting down x.py:1 LMCache INFO:",
    ],
)
def test_a_header_at_the_edge_of_a_bound_is_found(line: str) -> None:
    bounded, plain = both(line)
    assert plain[0] is not None
    assert bounded == plain


@pytest.mark.parametrize("corpus", ["fixture lines", "kept logs"])
def test_every_real_line_behind_prefixes_finds_the_same_header(corpus: str) -> None:
    lines = REAL if corpus == "fixture lines" else kept_log_lines()[::3]
    assert len(lines) > 250
    differing = [(line, *both(line)) for line in lines + prefixed(lines) if both(line)[0] != both(line)[1]]
    assert differing == []


def test_a_search_from_any_place_finds_the_same_header() -> None:
    rng = random.Random(5)
    differing = []
    for line in prefixed(REAL):
        pos = rng.randrange(len(line))
        bounded, plain = both(line, pos)
        if bounded[0] != plain[0]:
            differing.append((line, pos, bounded[0], plain[0]))
    assert differing == []


PIECES = st.sampled_from(
    [
        " ",
        "] ",
        ": ",
        "[",
        "INFO ",
        "INFO: ",
        "WARNING:",
        "CRITICAL        | ",
        "vllm",
        "vllm.engine ",
        "lmcache",
        "uvicorn.access",
        "LMCache ",
        "LMCache INFO: ",
        "12-14 16:18:29 ",
        "2025-12-14 16:18:24,320 ",
        "[2025-12-14 16:18:24,320] ",
        "[loggers.py:118] ",
        "x.py:1 ",
        ".rs:2] ",
        "(APIServer pid=1) ",
        "\x1b[32;20m",
        "é",
    ]
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL), st.sampled_from(PREFIXES), edits(st.one_of(PIECES, st.text(max_size=4)), 12, 5))
def test_mutated_prefixed_lines_find_the_same_header(line: str, prefix: str, changes: list) -> None:
    line = edited(prefix + line, changes)
    bounded, plain = both(line)
    assert bounded == plain, line


@settings(max_examples=800, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=14), st.integers(0, 200))
def test_random_lines_find_the_same_header(pieces: list[str], pos: int) -> None:
    line = "".join(pieces)
    pos = min(pos, len(line))
    bounded, plain = both(line, pos)
    assert bounded == plain, line


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from((envelope._VLLM_ANY, envelope._NAMED_CORE, envelope._UVICORN_ANY, envelope._LMCACHE_ANY)),
    st.sampled_from(REAL),
    st.sampled_from(PREFIXES),
    st.integers(0, 400),
    st.integers(-1, 600),
)
def test_a_bounded_search_is_the_search_up_to_its_last_place(pattern, line, prefix, pos, last) -> None:
    line = prefix + line
    pos = min(pos, len(line))
    plain = pattern.search(line, pos)
    expected = plain if plain is not None and plain.start() <= last else None
    found = envelope._first(pattern, line, pos, last)
    assert (found and (found.span(), found.groups())) == (expected and (expected.span(), expected.groups()))


# A record header whose logger says nothing of who wrote it, as one search of a time, a level and a name (what
# :func:`envelope.any_record_header` finds by looking for the level and the name first).
ONE_SEARCH = re.compile(
    r"(?:(" + envelope._FULL_TIME + r") +)?\b(?:TRACE|DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL) +"
    r"[A-Za-z_][\w.:<>-]{0,127}: ",
    re.ASCII,
)
RECORD_PIECES = st.sampled_from(
    [
        " ",
        "  ",
        "INFO ",
        "WARN  ",
        "TRACE",
        "xINFO ",
        "root: ",
        "kserve.trace: ",
        "a:b: ",
        "2025-12-14 16:18:29,123 ",
        "2025-12-14T16:18:29.123456Z",
        "2025-12-14 16:18:29+01:00",
        "12025-12-14 16:18:29",
        ".123",
        "1",
        "-",
        "T",
    ]
)


def one_search(line: str) -> tuple[int, int, str | None] | None:
    m = ONE_SEARCH.search(line)
    return None if m is None else (m.start(), m.end(), m.group(1))


def test_a_record_header_found_level_first_is_the_one_search_s_on_every_real_line() -> None:
    lines = REAL + kept_log_lines()[::3]
    found = [line for line in lines if one_search(line) is not None]
    assert len(found) >= 10
    timed = [line for line in found if one_search(line)[2] is not None]  # type: ignore[index]
    assert timed
    differing = [line for line in prefixed(lines) + lines if envelope.any_record_header(line) != one_search(line)]
    assert differing == []


@settings(max_examples=2000, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(RECORD_PIECES, st.text(max_size=4)), max_size=12))
def test_a_record_header_found_level_first_is_the_one_search_s_on_random_lines(pieces: list[str]) -> None:
    line = "".join(pieces)
    assert envelope.any_record_header(line) == one_search(line), line


# Prefixes and headers whose digits vary as times and line numbers do, and text that reads otherwise.
VERDICT_PIECES = st.sampled_from(
    [
        *(" ", "INFO ", "info", "[worker] ", "| ", " - ", "launcher:stream:42", "pid=7", "(VllmWorker TP1 pid=9) "),
        *("2025-12-14 16:18:29,123 ", "12:00:00", "the log says ", "“", '"', "sglang ", "[2026-08-23 09:08:08 TP0] "),
    ]
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(VERDICT_PIECES, st.text(alphabet="0123456789٣ ab:-", max_size=6)), max_size=10))
def test_a_verdict_kept_by_a_text_s_shape_is_the_verdict_on_the_text(pieces: list[str]) -> None:
    # The verdicts on prefixes and headers are kept under the text with its digits 0: a digit's value must
    # change none of them (a rank in a process tag is read from the text itself).
    text = "".join(pieces)
    for with_level in (True, False):
        assert envelope.is_record_header(text, with_level) == envelope._is_record_header(text, with_level), text
    for kind in ("vllm", "record", "access", "uvicorn", "crash"):
        accepted = envelope._prefix_shape_accepted.__wrapped__(text.encode("utf-8", "surrogatepass"), kind)
        assert envelope.prefix_verdict(text, kind)[0] == (not text or (len(text) <= envelope.MAX_PREFIX and accepted))
