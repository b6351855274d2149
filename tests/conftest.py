"""Fixtures every test may use: the sample logs, and kvwatch processes cleaned up after each test."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support.harness import Agent
from tests.support.lines import SAMPLES

# Property tests check what a parser gives, never how fast: on a loaded machine one example may take
# longer than hypothesis' default 200 ms deadline (the benchmarks measure speed).
settings.register_profile("kvwatch", deadline=None)
settings.load_profile("kvwatch")


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
        agent.kill_servers()  # hand-over tests leave servers running on purpose


# -- no process outlives the suite ----------------------------------------------------------------
# Every process a test starts inherits this mark in its environment; whatever still carries it when
# the session ends was left behind (an orphaned server holds its port, or a GPU, for ever).
_MARK = "KVWATCH_TEST_SESSION"


def pytest_configure(config: pytest.Config) -> None:
    os.environ[_MARK] = uuid.uuid4().hex


def _left_behind() -> list[tuple[int, str]]:
    mark = f"{_MARK}={os.environ.get(_MARK, '')}".encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            if mark in (entry / "environ").read_bytes().split(b"\0"):
                found.append((int(entry.name), (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    return found


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    deadline = time.monotonic() + 3.0  # a child that ends with its killed parent gets a moment to notice
    while (left := _left_behind()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid, _command in left:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    if left:
        reporter = session.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(f"processes the tests started are still running (now killed): {left}", red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
