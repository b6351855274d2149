"""Helpers of the tailer's tests: a tailer on real files, driven by hand, and what it delivered."""

from __future__ import annotations

import threading
from pathlib import Path

from agent.sources.positions import PositionStore
from agent.sources.tail import Source, Tailer


class Collected:
    """The tailer's deliveries; ``arrived`` is set at each."""

    def __init__(self) -> None:
        self.lines: list[str | None] = []
        self.arrived = threading.Event()

    def __call__(self, source: str, files: list[tuple[list, str]]) -> None:
        for lines, _origin in files:
            self.lines.extend(lines)
        self.arrived.set()

    @property
    def text(self) -> list[str]:
        return [line for line in self.lines if line is not None]


def make_tailer(tmp_path: Path, *patterns: str, start_at_end: bool = False, **source_kw) -> tuple[Tailer, Collected]:
    got = Collected()
    tailer = Tailer(got, PositionStore(str(tmp_path / "positions.json")), poll_interval=0.05, use_inotify=False)
    tailer.add(Source("s", tuple(patterns), {}, start_at_end=start_at_end, **source_kw))
    return tailer, got


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def lines(prefix: str, n: int, start: int = 0) -> str:
    return "".join(f"{prefix} {i}\n" for i in range(start, start + n))
