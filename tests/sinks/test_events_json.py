"""``agent.sinks.events_json``: each event written is ``json.dumps`` of its record, byte for byte."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.sinks.events_json import event_record, event_writer
from parsers import Clock, LogStream
from parsers.events import EngineStats, KvTransferStats, SpecDecodeStats
from tests.support.lines import FIXTURES, all_fixture_lines, edited, edits

# A name to escape: quotes, a backslash, letters beyond ASCII.
FILE = 'logs/"vllm" \\ größe.log'
SERVER = "vllm"
RELEASE_LOGS = sorted((FIXTURES / "releases").glob("*/server.log"))


def written_and_expected(lines: list[str]) -> tuple[list[str], list[str]]:
    """What the writer writes for the lines' events, and json.dumps of each event's record: the same
    clock state for both (a stamp without a year resolves by the stamps before it)."""
    out = io.StringIO()
    write = event_writer(out, FILE, SERVER)
    written_clock = Clock(UTC, datetime(2026, 1, 1, tzinfo=UTC))
    record_clock = Clock(UTC, datetime(2026, 1, 1, tzinfo=UTC))
    stream = LogStream()
    expected = []
    for number, line in enumerate(lines, 1):
        for event in stream.feed(line):
            write(event, number, written_clock, SERVER)
            expected.append(json.dumps(event_record(event, FILE, number, record_clock)))
    return out.getvalue().split("\n")[:-1], expected


def test_every_fixture_event_is_written_as_json_dumps_writes_its_record() -> None:
    lines = all_fixture_lines()
    for path in RELEASE_LOGS:
        lines += path.read_text(encoding="utf-8").split("\n")
    written, expected = written_and_expected(lines)
    assert len(expected) > 2000
    assert written == expected


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(st.sampled_from(all_fixture_lines()), min_size=1, max_size=6),
    edits(
        st.one_of(
            st.sampled_from(['"', "\\", "é", "\u2028", "\x01", "inf", "nan", "1e999", "9" * 40]), st.text(max_size=4)
        ),
        12,
        4,
    ),
)
def test_mutated_real_lines_are_written_as_json_dumps_writes_their_records(lines: list[str], changes: list) -> None:
    lines[-1] = edited(lines[-1], changes)
    written, expected = written_and_expected(lines)
    assert written == expected


def test_numbers_json_has_no_word_for_are_left_out_as_in_the_record() -> None:
    """An infinite or NaN float (a field, or one in a list) is left out; a mapping is written whole."""
    events = [
        EngineStats("2026-01-01 00:00:00,000", prompt_throughput=float("inf"), generation_throughput=1.5),
        SpecDecodeStats("2026-01-01 00:00:00,000", per_position_acceptance_rate=[0.5, float("nan")]),
        SpecDecodeStats(None, per_position_acceptance_rate=[0.5, 0.25], accepted_tokens=3),
        KvTransferStats("", engine=0, values={"Num successful transfers": 2.0, "é": 0.5}),
    ]
    out = io.StringIO()
    write = event_writer(out, FILE, SERVER)
    clock = Clock(UTC, datetime(2026, 1, 1, tzinfo=UTC))
    for event in events:
        write(event, 7, clock, SERVER)
    written = out.getvalue().split("\n")[:-1]
    assert written == [json.dumps(event_record(event, FILE, 7, clock)) for event in events]
    assert "prompt_throughput" not in written[0] and '"generation_throughput": 1.5' in written[0]
    assert "per_position_acceptance_rate" not in written[1] and '"time": "2026-01-01T00:00:00+00:00"' in written[1]
    assert '"per_position_acceptance_rate": [0.5, 0.25]' in written[2] and '"time"' not in written[2]
    assert json.loads(written[3])["values"] == {"Num successful transfers": 2.0, "é": 0.5}


def test_an_event_that_counts_toward_another_server_names_it_as_its_record_does() -> None:
    """A writer of a multiplexed log: its events name their server; the input's own events do not."""
    out = io.StringIO()
    write = event_writer(out, FILE, SERVER)
    clock = Clock(UTC, datetime(2026, 1, 1, tzinfo=UTC))
    event = EngineStats("2026-01-01 00:00:00,000", prompt_throughput=2.5)
    for counted in ("vllm", 'ns/"pod"-0/vllm', "vllm", 'ns/"pod"-0/vllm'):
        write(event, 3, clock, counted)
    written = out.getvalue().split("\n")[:-1]
    own = json.dumps(event_record(event, FILE, 3, clock))
    other = json.dumps(event_record(event, FILE, 3, clock, 'ns/"pod"-0/vllm'))
    assert written == [own, other, own, other]
    assert list(json.loads(other))[:4] == ["line", "file", "server", "kind"]
