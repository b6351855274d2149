"""Property-based checks: no input raises, events always fit the schema, quoted text is never parsed."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.sinks.events_json import event_record
from parsers import Clock, LogStream, parse_line
from parsers.envelope import unwrap_logfmt
from parsers.events import Event
from parsers.requests import parse_received
from parsers.shapes import one_of
from tests.support.lines import RECORD_FAMILIES, edited, edits, line_cases
from tests.support.quoting import go_quoted
from tests.support.schema import validate_record

CLOCK = Clock(UTC, datetime(2026, 1, 1, tzinfo=UTC))
REAL = [c["line"] for fam in (*RECORD_FAMILIES, "message_only") for c in line_cases(fam)]
ALPHABET = st.characters(codec="utf-8", categories=None)
NOISE = st.sampled_from(
    [
        "\x1b[0m",
        "\x1b[32;20m",
        "[0m",
        "^[[",
        "\r",
        "\x00",
        "{",
        "}",
        '"',
        "'",
        ": ",
        ", ",
        "] ",
        "(",
        ")",
        " pid=",
        "INFO ",
        "INFO:     ",
        "LMCache INFO: ",
        "Engine 000: ",
        "Reqid: ",
        "Stored ",
        "Retrieved ",
        "%",
        "\\",
        "12-14 ",
        "[2025-12-14 16:18:24,320] ",
        "Throughput: ",
        "Total tokens ",
        "\t",
        "…",
        "é",
        "\ud7ff",
        "KV Transfer metrics: ",
        "Prefetch request completed (L1+L2): ",
        "=",
        "`",
        "> ",
        "<b>",
        "</font>",
        " - vllm.engine - INFO - ",
        "RuntimeError: ",
        " [repeated 2x across cluster]",
        "(EngineCore) ",
    ]
)


def check(events: tuple[Event, ...]) -> None:
    assert isinstance(events, tuple)
    for event in events:
        assert isinstance(event, Event)
        validate_record(event_record(event, "f", 1, CLOCK))


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(alphabet=ALPHABET, max_size=300))
def test_random_text_never_raises(text: str) -> None:
    check(parse_line(text))


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(REAL), edits(st.one_of(NOISE, st.text(max_size=5)), longest=20, most=6))
def test_mutated_real_lines_never_raise(line: str, changes: list[tuple[int, int, str]]) -> None:
    line = edited(line, changes)
    check(parse_line(line))
    stream = LogStream()
    check(stream.feed(line))
    check(stream.close())


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.one_of(NOISE, st.text(alphabet=ALPHABET, max_size=8)), max_size=8), st.sampled_from(REAL))
def test_any_prefix_before_a_real_line_never_raises(pieces: list[str], line: str) -> None:
    check(parse_line("".join(pieces) + line))


@settings(max_examples=300)
@given(st.sampled_from(REAL), st.integers(0, 10_000))
def test_truncated_real_lines_never_raise(line: str, cut: int) -> None:
    check(parse_line(line[: cut % (len(line) + 1)]))


@settings(max_examples=200)
@given(st.sampled_from(REAL))
def test_a_line_quoted_in_a_prompt_gives_only_the_request(line: str) -> None:
    quoted = (
        "INFO 12-14 16:18:24 [logger.py:43] Received request chatcmpl-q: prompt: "
        + repr("see this: " + line)
        + ", params: SamplingParams(n=1, max_tokens=8), prompt_token_ids: [5, 6], lora_request: None."
    )
    assert [(e.kind, e.request_id, e.max_tokens, e.prompt_tokens) for e in parse_line(quoted)] == [
        ("request_received", "chatcmpl-q", 8, 2)
    ]


# How the request line's prompt and quoted parameters were skipped before their ends were searched for: Python's
# string literals as patterns, the reference the search must agree with.
_LITERALS = r"'[^'\\]*(?:\\.[^'\\]*)*'|\"[^\"\\]*(?:\\.[^\"\\]*)*\""
_REFERENCE_PROMPT = re.compile(rf"prompt: (?:{_LITERALS}|None|\[[^\]]*\]), ", re.DOTALL)
_REFERENCE_QUOTED = re.compile(_LITERALS, re.DOTALL)
_RECEIVED_PIECES = st.sampled_from(
    ["prompt: ", "'", '"', "\\", "\\'", "None", "[", "]", ", ", "max_tokens=64", "max_tokens=", "7",
     "prompt_token_ids: [1, 2]", "prompt_token_ids: ", "params: SamplingParams(", ")", "lora_request: None", " ", "x",
     "é"]
)  # fmt: skip


def _reference_received(rest: str) -> tuple[int | None, int | None]:
    """(max_tokens, prompt_tokens) of ``Received request X: <rest>`` read with the reference patterns."""
    pos = 0
    if rest.startswith("prompt: "):
        prompt = _REFERENCE_PROMPT.match(rest)
        if prompt is None:
            return None, None
        pos = prompt.end()
    unquoted = _REFERENCE_QUOTED.sub("_", rest[pos:])
    open_quotes = [i for i in (unquoted.find("'"), unquoted.find('"')) if i != -1]
    if open_quotes:
        unquoted = unquoted[: min(open_quotes)]
    max_tokens = re.search(r"\bmax_tokens=(\d{1,18})(?!\d)", unquoted)
    ids = re.search(r"prompt[_ ]token[_ ]ids: (?:\[([^\]]*)\]|None)", unquoted)
    listed = ids.group(1).strip() if ids is not None and ids.group(1) is not None else None
    return (
        int(max_tokens.group(1)) if max_tokens else None,
        (listed.count(",") + 1 if listed else 0) if listed is not None else None,
    )


@settings(max_examples=1500)
@given(st.lists(_RECEIVED_PIECES, max_size=24))
def test_a_request_lines_quoted_strings_are_skipped_as_pythons_literal_patterns_skip_them(pieces: list[str]) -> None:
    rest = "".join(pieces)
    events = parse_received("Received request chatcmpl-q: " + rest, 0, None)
    assert [(e.max_tokens, e.prompt_tokens) for e in events] == [_reference_received(rest)], rest


class _SearchesCounted(str):
    """A line that counts the searches made in it, by what was looked for."""

    def find(self, sub: str, *args: int) -> int:  # type: ignore[override]
        self.searches[sub] = self.searches.get(sub, 0) + 1
        return super().find(sub, *args)


def test_a_request_line_of_many_quoted_strings_is_searched_once_for_each_kind_of_quote() -> None:
    """A kind of quote the line does not hold is not looked for again at each string of the other kind (that
    search to the line's end would make a long line's cost its square)."""
    stops = ", ".join(["'x'"] * 2000)
    line = _SearchesCounted(
        f"Received request r: params: SamplingParams(stop=[{stops}], max_tokens=9), lora_request: None."
    )
    line.searches = {}
    assert [(e.max_tokens, e.prompt_tokens) for e in parse_received(line, 0, None)] == [(9, None)]
    assert line.searches['"'] == 1
    assert line.searches["'"] <= 2 * 2000 + 1  # each string's opening and closing quote, and the search past the last


@settings(max_examples=100)
@given(st.sampled_from(REAL))
def test_parsing_is_pure(line: str) -> None:
    assert parse_line(line) == parse_line(line)


@settings(max_examples=200)
@given(st.binary(max_size=200))
def test_arbitrary_decoded_bytes_never_raise(data: bytes) -> None:
    check(parse_line(data.decode("utf-8", errors="replace")))
    check(parse_line(data.decode("latin-1")))


def test_thousands_of_stacked_process_tags_are_read_past_without_recursion() -> None:
    """Processes interleaving their writes stack tags (``(EngineCore pid=1) (APIServer pid=2) INFO ...``);
    a line of thousands of them (a hostile or corrupted log) is read like the line after them."""
    line = (
        "INFO 12-14 16:18:29 [loggers.py:118] Engine 000: Avg prompt throughput: 149.1 tokens/s, Avg generation "
        "throughput: 3.0 tokens/s, Running: 0 reqs, Waiting: 0 reqs, GPU KV cache usage: 0.0%, Prefix cache hit "
        "rate: 92.6%"
    )
    assert parse_line("(EngineCore pid=1) (APIServer pid=2) " * 3000 + line) == parse_line(line) != ()


def test_thousands_of_fields_after_a_message_are_read_past_without_recursion() -> None:
    """Fields a logging format puts after the message, each followed by what a paste closes with (a hostile or
    corrupted log): taken out a few levels deep at most, never one recursion each."""
    stats = (
        "INFO 12-14 16:18:29 [loggers.py:118] Engine 000: Avg prompt throughput: 149.1 tokens/s, Avg generation "
        "throughput: 3.0 tokens/s, Running: 0 reqs, Waiting: 0 reqs, GPU KV cache usage: 0.0%, Prefix cache hit "
        "rate: 92.6%"
    )
    assert parse_line(stats + " [trace_id=0 span_id=0]" * 3000) == parse_line(stats) != ()
    # Past the few levels, what is left after the message is no part of a stats line.
    assert [event.kind for event in parse_line(stats + " [trace_id=0] |" * 3000)] == ["suspicious_line"]


def test_a_line_of_many_headers_in_a_row_is_searched_once(monkeypatch) -> None:
    """A wrapper's header before the real one is skipped; each further header is looked for only where the
    last one ends, so a line of thousands of them (hostile, or a corrupted log) is not searched again and
    again from each one (that took seconds per 100 KB line)."""
    import parsers.envelope as envelope

    searches = []
    search = envelope._search
    monkeypatch.setattr(envelope, "_search", lambda line, pos: searches.append(pos) or search(line, pos))
    for piece in ("LMCache INFO: ", "INFO 12-14 16:18:29 [x.py:1] ", "2025-12-14 16:18:29 - vllm.x - INFO - "):
        searches.clear()
        assert envelope.find_header("prefix " + piece * 2000) is not None
        assert len(searches) == 1, piece


# Numbers a pattern can let through that no conversion takes: digits and dots that make no decimal, more
# digits than int() reads (4,300), a float that overflows to infinity, one that is not a number.
UNREADABLE_NUMBERS = ("1.2.3", "9" * 5000, "1e999", "nan")


def test_a_number_no_conversion_takes_never_raises() -> None:
    """Each number of every real line (JSON records' times among them) in turn made unreadable: no
    parser may raise (such a line was counted as a kvwatch bug and dropped), no event carries an
    infinite number (one would stay in a metric's sum for good), and every event's record in the
    events format is strict JSON (no ``Infinity``) that its schema takes (no required field left out)."""
    raised = []
    for line in REAL:
        for number in re.finditer(r"\d+(?:\.\d+)?", line):
            for unreadable in UNREADABLE_NUMBERS:
                variant = line[: number.start()] + unreadable + line[number.end() :]
                try:
                    for event in parse_line(variant):
                        assert all(math.isfinite(n) for n in _numbers(event)), event
                        record = event_record(event, "f", 1, CLOCK)
                        json.dumps(record, allow_nan=False)
                        validate_record(record)
                except Exception as exc:  # any exception is the failure reported
                    raised.append((variant[:160], repr(exc)[:120]))
    assert raised == []


def _numbers(event: Event) -> list[float]:
    """Every float an event carries, in lists and mappings too."""
    out: list[float] = []
    for name in event.__slots__:
        value = getattr(event, name, None)
        values = value.values() if isinstance(value, dict) else value if isinstance(value, list | tuple) else [value]
        out.extend(v for v in values if isinstance(v, float))
    return out


def test_vllm_bench_serve_s_unset_request_rate_is_a_record_without_a_number() -> None:
    """``vllm bench serve`` prints ``inf`` for the request rate when none was set: the event has no
    value (JSON has no infinity), and its record is one the schema takes."""
    (event,) = parse_line("Request rate configured (RPS):          inf")
    assert (event.kind, event.name, event.value) == ("bench_serve", "request_rate", None)
    record = event_record(event, "f", 1, CLOCK)
    validate_record(record)
    assert "value" not in record
    (event,) = parse_line("Request rate configured (RPS):          10.00")
    assert event.value == 10.0


@settings(max_examples=400)
@given(st.text(st.characters(blacklist_categories=("Cs",)), max_size=80))
def test_a_logfmt_record_s_message_is_the_text_go_quoted(text: str) -> None:
    # A colour's escape (``\x1b``), a vertical tab or a character beyond the BMP is no escape JSON knows.
    record = f'time="2025-12-14T08:18:29Z" level=info msg={go_quoted(text)} container=vllm'
    assert unwrap_logfmt(record) == (text, "2025-12-14T08:18:29Z")


def test_a_logfmt_record_of_a_coloured_line_gives_its_events() -> None:
    coloured = "\x1b[32;20m[2025-12-14 16:18:24,320] LMCache INFO:\x1b[0m "
    coloured += "Reqid: r-1, Total tokens 9, LMCache hit tokens: 0 "
    coloured += "\x1b[3m(vllm_v1_adapter.py:1288:lmcache.integration.vllm.vllm_v1_adapter)\x1b[0m"
    record = f'time="2025-12-14T08:18:29Z" level=info msg={go_quoted(coloured)}'
    assert "\\x1b" in record
    events = parse_line(record)
    assert [type(event).__name__ for event in events] == ["LmcacheLookup"]
    assert events[0].stamp == "2025-12-14T08:18:29Z"


_TEXT = st.text(alphabet="ab.|(*\\ ", min_size=1, max_size=4)


@settings(max_examples=300, deadline=None)
@given(texts=st.lists(_TEXT, min_size=1, max_size=8), haystack=st.lists(_TEXT, max_size=8))
def test_one_of_matches_what_the_plain_alternation_of_its_texts_matches(texts: list[str], haystack: list[str]) -> None:
    """Grouped by first character, the texts' alternation finds the very matches the list in its order does."""
    plain = re.compile("(?:" + "|".join(map(re.escape, texts)) + ")")
    grouped = re.compile(one_of(texts))
    line = " ".join(haystack) + "".join(texts)
    assert [m.span() for m in grouped.finditer(line)] == [m.span() for m in plain.finditer(line)]
