"""Shared helpers: where fixtures live, and an event as the plain dict the fixtures use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parsers.events import Event, payload_fields

FIXTURES = Path(__file__).parent / "fixtures"
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


@pytest.fixture
def samples() -> Path:
    return SAMPLES
