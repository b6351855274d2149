"""The fast path gives the very events of the general path.

For each header type the dispatcher tries one regex that joins the header with
the commonest messages (LMCache's lookup, store and retrieve, vLLM's ``Added
request``, uvicorn's access line) and otherwise hands the message's first word
to the family table (:class:`parsers.shapes.LineMatcher`).  The general path is
the same header followed by the first word alone, so every message goes to its
family's own parser.  A line without a header that is a traceback's scaffolding
(its first line, a frame's place, the marks under a frame's code) gives nothing
at once; on the general path it is searched for prefixes and messages as any
such line is.  Both must agree on every line: every fixture line, every kept
log (samples, the compatibility runs' server logs, a generated log), and
random, mutated and prefixed lines.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import dispatch, parse_line
from parsers.envelope import LMCACHE_HEADER, UVICORN_HEADER, VLLM_HEADER
from parsers.events import Event
from parsers.shapes import LineMatcher
from tests.benchmarks.gen_log import generate
from tests.support.lines import FIXTURES, SAMPLES, edited, edits

# The dispatcher's matchers, rebuilt without their shapes: header, then the first word only.
GENERAL = {
    "_lmcache_line": LineMatcher(LMCACHE_HEADER, (), dispatch.lmcache_message).parse,
    "_vllm_line": LineMatcher(VLLM_HEADER, (), dispatch.vllm_message).parse,
    "_uvicorn_line": LineMatcher(UVICORN_HEADER, (), dispatch._level_colon_message).parse,
}


@contextmanager
def general_path() -> Iterator[None]:
    with mock.patch.multiple(dispatch, **GENERAL, _TRACEBACK_SCAFFOLDING=re.compile("(?!)")):
        yield


def both(line: str) -> tuple[tuple[Event, ...], tuple[Event, ...]]:
    fast = parse_line(line)
    with general_path():
        general = parse_line(line)
    return fast, general


def fixture_lines() -> list[str]:
    lines = []
    for path in sorted((FIXTURES / "lines").glob("*.json")):
        lines += [case["line"] for case in json.loads(path.read_text(encoding="utf-8"))]
    return lines


def kept_log_lines() -> list[str]:
    paths = sorted(SAMPLES.glob("*.log")) + sorted((FIXTURES / "releases").glob("*/server.log"))
    return [line for path in paths for line in path.read_text(encoding="utf-8").splitlines()]


REAL = fixture_lines()


def test_a_traceback_s_scaffolding_takes_the_general_path_only_there() -> None:
    frame = '  File "/usr/lib/python3.12/site-packages/vllm/v1/engine/core.py", line 712, in step'
    headerless = mock.Mock(wraps=dispatch._headerless)
    with mock.patch.object(dispatch, "_headerless", headerless), mock.patch.object(dispatch, "framing_end") as framing:
        assert parse_line(frame) == ()
        framing.assert_not_called()
        with general_path():
            parse_line(frame)
        framing.assert_called()


def test_the_general_path_is_really_another_path() -> None:
    # A shape-less matcher must not simply be the fast one: the lookup line goes through its family parser.
    line = "[2026-01-01 00:00:00,000] LMCache INFO: Reqid: r-1, Total tokens 10, LMCache hit tokens: 0, need to load: 0"
    family_parser = mock.Mock(return_value=())
    with mock.patch.dict(dispatch._LMCACHE_FAMILIES, {"Reqid:": (family_parser, "lmcache_lookup")}):
        assert parse_line(line)
        family_parser.assert_not_called()
        with general_path():
            assert parse_line(line) == ()
        family_parser.assert_called_once()


@pytest.mark.parametrize("corpus", ["fixture lines", "kept logs"])
def test_every_real_line_gives_the_same_events(corpus: str) -> None:
    lines = REAL if corpus == "fixture lines" else kept_log_lines()
    assert len(lines) > 250
    differing = [(line, *both(line)) for line in lines if both(line)[0] != both(line)[1]]
    assert differing == []


@pytest.mark.parametrize("style", ["classic", "current"])
def test_a_generated_log_gives_the_same_events(tmp_path: Path, style: str) -> None:
    path = tmp_path / "server.log"
    generate(path, 5_000, style=style)
    lines = path.read_text(encoding="utf-8").splitlines()
    fast = [parse_line(line) for line in lines]
    with general_path():
        general = [parse_line(line) for line in lines]
    assert sum(1 for events in fast if events) > 3_000
    assert fast == general


ARABIC_INDIC = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668\u0669")


def test_digits_outside_ascii_give_the_same_events() -> None:
    # The shapes read ASCII digits only (str.isdigit and int() take others): each number of a real line in
    # turn written in Arabic-Indic digits.
    differing = []
    for line in REAL:
        for number in re.finditer(r"\d+", line):
            variant = line[: number.start()] + number.group().translate(ARABIC_INDIC) + line[number.end() :]
            fast, general = both(variant)
            if fast != general:
                differing.append((variant, fast, general))
    assert differing == []


def test_a_decimal_that_is_no_number_gives_the_same_events_and_no_error() -> None:
    """Patterns take a decimal as digits and dots: each decimal of a real line in turn made "1.2.3" must give
    what the family's parser says of a line it cannot read (a suspicious line, or nothing), on both paths."""
    differing, suspicious = [], 0
    for line in REAL:
        for number in re.finditer(r"\d+\.\d+", line):
            variant = line[: number.start()] + "1.2.3" + line[number.end() :]
            fast, general = both(variant)  # raised before, from float("1.2.3")
            if fast != general:
                differing.append((variant, fast, general))
            suspicious += any(event.kind == "suspicious_line" for event in fast)
    assert differing == []
    assert suspicious > 20


PIECES = st.sampled_from(
    [
        " ",
        "  ",
        ",",
        ".",
        ";",
        ":",
        "-1",
        "0",
        "99999999999999999999",
        "1.5",
        "None",
        "GB",
        "gb",
        "ms",
        "\x1b[0m",
        "\x1b[32;20m",
        "[req_id=x] ",
        "[req_id=] ",
        "Stored ",
        "Retrieved ",
        "Reqid: ",
        "Added request ",
        "out of total ",
        " required tokens (from ",
        "need to load: ",
        " < min_retrieve ",
        'POST /v1/completions HTTP/1.1" ',
        "\u0663",  # a digit outside ASCII
        "é",
    ]
)


@settings(max_examples=1500, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL), edits(st.one_of(PIECES, st.text(max_size=4)), longest=12, most=5))
def test_mutated_real_lines_give_the_same_events(line: str, changes: list[tuple[int, int, str]]) -> None:
    line = edited(line, changes)
    fast, general = both(line)
    assert fast == general, line


@settings(max_examples=500, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(PIECES, st.text(max_size=6)), max_size=10))
def test_random_lines_after_each_header_give_the_same_events(pieces: list[str]) -> None:
    message = "".join(pieces)
    for header in (
        "[2025-12-14 16:18:24,320] LMCache INFO: ",
        "\x1b[32;20m[2025-12-14 16:18:24,320] LMCache INFO:\x1b[0m ",
        "(EngineCore_DP0 pid=7) INFO 12-14 16:18:24 [core.py:1] ",
        "INFO 12-14 16:18:24 [async_llm.py:578] ",
        "INFO:     ",
    ):
        fast, general = both(header + message)
        assert fast == general, header + message


# What a traceback's scaffolding may hold, and text that makes a line no scaffolding (a record, a message, a quote).
FILE_NAME_PIECES = st.sampled_from(
    ["/usr/lib/python3.12/", "site-packages/", "vllm/", "core.py", "<frozen runpy>", "C:\\Python\\", " ", "-", "~"]
)
NO_SCAFFOLDING = st.sampled_from(
    [
        "INFO 12-14 16:18:24 [core.py:1] ",
        "Added request chatcmpl-1.",
        "Reqid: r-1, Total tokens 10, LMCache hit tokens: 0, need to load: 0",
        '"',
        "] ",
        ", ",
        "\x1b[0m",
        "é",
    ]
)


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(["", "  ", "    ", "\t", "(EngineCore_DP0 pid=7) ", "(APIServer pid=1)   "]),
    st.sampled_from(["frame", "first", "marks", "chained", "cause"]),
    st.lists(st.one_of(FILE_NAME_PIECES, NO_SCAFFOLDING), max_size=6),
    st.sampled_from(["generate", "<module>", "<lambda>", "step_with_batch_queue", ""]),
    st.lists(st.one_of(NO_SCAFFOLDING, st.text(max_size=3)), max_size=2),
)
def test_lines_of_a_traceback_give_the_same_events(
    indent: str, kind: str, name: list[str], function: str, after: list[str]
) -> None:
    line = (
        indent
        + {
            "frame": f'File "{"".join(name)}", line 712' + (f", in {function}" if function else ""),
            "first": "Traceback (most recent call last):",
            "marks": "~~~~^^^^^^" if function else "^^^^^^^^",
            "chained": "During handling of the above exception, another exception occurred:",
            "cause": "The above exception was the direct cause of the following exception:",
        }[kind]
    )
    line += "".join(after)
    fast, general = both(line)
    assert fast == general, line
