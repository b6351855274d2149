"""Every real (and constructed) line in tests/fixtures/lines parses into exactly its recorded events."""

from __future__ import annotations

from unittest import mock

import pytest

from parsers import LogStream, dispatch, parse_line
from tests.support.lines import RECORD_FAMILIES, event_dict, line_cases

FAMILIES = (*RECORD_FAMILIES, "message_only", "negatives", "suspicious", "problems")
CASES = [(family, case) for family in FAMILIES for case in line_cases(family)]


@pytest.mark.parametrize(
    ("family", "case"), CASES, ids=[f"{family}:{i}:{case['source'][:40]}" for i, (family, case) in enumerate(CASES)]
)
def test_line_parses_to_recorded_events(family: str, case: dict) -> None:
    assert [event_dict(e) for e in parse_line(case["line"])] == case["events"], case["source"]


@pytest.mark.parametrize(("family", "case"), CASES)
def test_stream_gives_the_same_events_for_whole_lines(family: str, case: dict) -> None:
    # A LogStream only differs from parse_line for pieces of split lines.
    stream = LogStream()
    events = list(stream.feed(case["line"])) + list(stream.close())
    assert [event_dict(e) for e in events] == case["events"]


def test_every_family_and_kind_is_covered() -> None:
    kinds = {event["kind"] for _, case in CASES for event in case["events"]}
    from parsers.events import EVENT_KINDS

    assert kinds == set(EVENT_KINDS), set(EVENT_KINDS) - kinds


def test_negatives_and_suspicious_are_what_they_claim() -> None:
    for case in line_cases("negatives"):
        assert case["events"] == [], case["source"]
    for case in line_cases("suspicious"):
        assert [e["kind"] for e in case["events"]] == ["suspicious_line"], case["source"]
    for case in line_cases("problems"):
        assert [e["kind"] for e in case["events"]] in (["log_problem"], []), case["source"]


def test_lmcache_s_request_tag_begins_a_message_read_alone() -> None:
    # ``[req_id=X] Stored ...`` without its header is a whole known message: read as one, not searched for a header
    # (the search found it too, at several times the cost).
    cases = [case for case in line_cases("message_only") if case["line"].startswith("[req_id=")]
    assert cases
    with mock.patch.object(dispatch, "_after_prefix", side_effect=AssertionError("searched")):
        for case in cases:
            assert [event_dict(e) for e in parse_line(case["line"])] == case["events"]
    # Not a whole message: nothing, as before (the search finds no header either).
    assert parse_line("[req_id=r-1] Stored the results somewhere else") == ()
