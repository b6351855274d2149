"""Shared helpers: where fixtures live, an event as the plain dict the fixtures use, kvwatch processes."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from parsers.events import Event, payload_fields
from tests.harness import Agent

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


@pytest.fixture
def agents(tmp_path: Path) -> Iterator[Callable[..., Agent]]:
    started: list[Agent] = []

    def make(body: str, directory: Path | None = None, **kw) -> Agent:
        agent = Agent(directory or tmp_path, body, **kw)
        started.append(agent)
        return agent

    yield make
    for agent in started:
        agent.kill()
    # Servers a test left behind (hand-over tests leave them on purpose).
    for record in tmp_path.rglob("servers/*.json"):
        try:
            pid = json.loads(record.read_text())["pid"]
            os.killpg(pid, signal.SIGKILL)
        except (OSError, ValueError, KeyError):
            pass
