"""Fixtures every test may use: the sample logs, and kvwatch processes cleaned up after each test."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.support.harness import Agent
from tests.support.lines import SAMPLES


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
