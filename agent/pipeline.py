"""One source's lines to events to stats: the live counterpart of :func:`agent.commands.replay.read_into`.

The tailer hands over lines already split and decoded (skipped ones as
``None``, counted in the same ``skipped`` dict the stats export); each goes
through the source's :class:`parsers.LogStream` and every event to its
:class:`ServerStats` and to whoever listens (the supervisor of that server).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, tzinfo

from agent.sinks.stats import ServerStats
from parsers import Clock, LogStream
from parsers.events import Event


class SourcePipeline:
    """``lock`` is held while a batch of lines reaches the sinks, so a scrape sees whole batches."""

    def __init__(self, name: str, timezone: tzinfo, max_line: int, lock: threading.Lock | None = None) -> None:
        self.name = name
        self.lock = lock or threading.Lock()
        self.stats = ServerStats(name, Clock(timezone, datetime.now(UTC)), now=time.time)
        self.stream = LogStream(max_line)
        self.listeners: list[Callable[[Event], None]] = []
        self.last_line: float | None = None  # wall clock of the last line read

    def feed(self, lines: list[str | None]) -> None:
        with self.lock:
            self._feed(lines)

    def _feed(self, lines: list[str | None]) -> None:
        stats = self.stats
        observe = stats.observe
        feed = self.stream.feed
        listeners = self.listeners
        parsed = 0
        for line in lines:
            if line is None:
                continue
            events = feed(line)
            if events:
                parsed += 1
                for event in events:
                    observe(event)
                    for listener in listeners:
                        listener(event)
        stats.lines += len(lines)
        stats.parsed_lines += parsed
        self.last_line = time.time()
