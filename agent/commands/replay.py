"""``kvwatch replay``: old logs through the same parsers and stats as the live agent.

Each input is read in blocks, split into lines, parsed by a per-input
:class:`parsers.LogStream`, and its events fed to the :class:`ServerStats` of
its server.  The loop is the hot path of the whole program: it does nothing
per line but call the parser and, when there are events, the stats.
"""

from __future__ import annotations

import gc
import itertools
import json
import math
import multiprocessing
import os
import re
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import BinaryIO, TextIO

from agent.sinks.stats import ServerStats
from agent.sources.lines import DEFAULT_MAX_LINE, Input, LineReader
from parsers import Clock, LogStream
from parsers.events import Event, payload_fields
from parsers.masking import looks_like_a_log_line, masked, shape
from parsers.timestamps import isoformat

# ``vllm.log``, ``vllm.log.1``, ``vllm.log.2.gz``, ``vllm.jsonl``: the log suffixes;
# dots elsewhere (``vllm-0.32.0.log``) belong to the name.
_LOG_SUFFIX = re.compile(r"\.(?:log|txt|out|err|json|jsonl)(?:\.\d+)?(?:\.(?:gz|gzip))?$|\.(?:gz|gzip)$")


def server_name_for(input_name: str) -> str:
    """The ``server`` label a replayed file gets by default: its name without log/rotation suffixes."""
    if input_name == "-":
        return "stdin"
    base = _LOG_SUFFIX.sub("", os.path.basename(input_name))
    return base or "replay"


@dataclass
class InputResult:
    name: str
    server: str
    lines: int = 0
    error: str | None = None


@dataclass
class Replay:
    """Reads inputs into per-server stats; optional per-event callback for the events format."""

    timezone: tzinfo
    max_line: int = DEFAULT_MAX_LINE
    servers: dict[str, ServerStats] = field(default_factory=dict)

    def stats_for(self, server: str) -> ServerStats:
        stats = self.servers.get(server)
        if stats is None:
            stats = self.servers[server] = ServerStats(server)
        return stats

    def run(
        self,
        source: Input,
        server: str,
        on_event: Callable[[Event, int, Clock], None] | None = None,
        track_time: bool = False,
        jobs: int = 1,
    ) -> InputResult:
        """Read one input to its end.  ``on_event`` sees every event with its line number;
        ``track_time`` records the span of log time (for the summary).  With ``jobs`` > 1
        a large plain file is read in slices by as many processes (not with ``on_event``)."""
        stats = self.stats_for(server)
        if jobs > 1 and on_event is None and source.path is not None:
            parts = slices_of(source, jobs)
            if len(parts) > 1:
                lines, error = self._run_parallel(source, server, parts, track_time)
                return InputResult(source.name, server, lines, error)
        stats.clock = Clock(self.timezone, source.modified)
        lines, error = read_into(stats, source.stream, self.max_line, on_event=on_event, track_time=track_time)
        return InputResult(source.name, server, lines, error)

    def _run_parallel(
        self, source: Input, server: str, parts: list[tuple[int, int]], track_time: bool
    ) -> tuple[int, str | None]:
        args = (source.path, server, self.timezone, source.modified, self.max_line, track_time)
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(parts) - 1, mp_context=context) as pool:
            later = [pool.submit(_read_slice, *args, start, end) for start, end in parts[1:]]
            # This process reads the first slice while the others read theirs.
            results = [_read_slice(*args, *parts[0])] + [future.result() for future in later]
        stats = self.stats_for(server)
        lines, error = 0, None
        for part, part_lines, part_error in results:
            stats.merge(part)
            lines += part_lines
            error = error or part_error
        stats.clock = Clock(self.timezone, source.modified)
        return lines, error


# Below this size a file is read by one process: forking costs more than it saves.
PARALLEL_MIN_BYTES = 16 << 20


def slices_of(source: Input, jobs: int) -> list[tuple[int, int]]:
    """Byte ranges of a plain file, each ending just after a newline, for ``jobs`` readers.

    One range when the file is small, or holds Docker/CRI records (whose long
    lines come in pieces that must be joined in order)."""
    size = os.path.getsize(source.path)
    if size < PARALLEL_MIN_BYTES or jobs < 2:
        return [(0, size)]
    with open(source.path, "rb") as raw:
        if raw.read(1) in (b"{", *(str(d).encode() for d in range(10))):
            return [(0, size)]
        bounds = [0]
        for part in range(1, jobs):
            raw.seek(size * part // jobs)
            raw.readline()  # finish the line the cut fell into
            cut = raw.tell()
            if bounds[-1] < cut < size:
                bounds.append(cut)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _read_slice(
    path: str, server: str, timezone: tzinfo, modified, max_line: int, track_time: bool, start: int, end: int
) -> tuple[ServerStats, int, str | None]:
    stats = ServerStats(server, Clock(timezone, modified))
    with open(path, "rb") as raw:
        raw.seek(start)
        lines, error = read_into(stats, raw, max_line, limit=end - start, track_time=track_time)
    return stats, lines, error


def read_into(
    stats: ServerStats,
    raw: BinaryIO,
    max_line: int,
    limit: int | None = None,
    on_event: Callable[[Event, int, Clock], None] | None = None,
    track_time: bool = False,
) -> tuple[int, str | None]:
    """Parse a byte stream into ``stats``; returns (lines read, read error or None)."""
    reader = LineReader(raw, max_line, limit)
    stream = LogStream(max_line)
    # The loop allocates only short-lived, acyclic objects that reference
    # counting frees; the cyclic collector's frequent passes are pure overhead.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if on_event is None and not track_time:
            parsed, number = _count_loop(reader, stream.feed, stats.observe)
        else:
            parsed, number = _event_loop(reader, stream.feed, stats, on_event, track_time)
    finally:
        if collecting:
            gc.enable()
    for event in stream.close():
        stats.observe(event)
        if on_event is not None:
            on_event(event, number, stats.clock)
    stats.lines += reader.lines
    stats.parsed_lines += parsed
    for reason, count in reader.skipped.items():
        stats.skipped[reason] = stats.skipped.get(reason, 0) + count
    if stream.dropped:
        stats.skipped["split_too_long"] = stats.skipped.get("split_too_long", 0) + stream.dropped
    return reader.lines, reader.error


def _count_loop(reader: LineReader, feed: Callable, observe: Callable) -> tuple[int, int]:
    """The hot loop: parse every line, feed events to the stats.  Returns (lines with events, 0)."""
    parsed = 0
    for batch in reader.batches():
        for line in batch:
            if line is not None:
                events = feed(line)
                if events:
                    parsed += 1
                    for event in events:
                        observe(event)
    return parsed, 0


def _event_loop(
    reader: LineReader,
    feed: Callable,
    stats: ServerStats,
    on_event: Callable[[Event, int, Clock], None] | None,
    track_time: bool,
) -> tuple[int, int]:
    """As :func:`_count_loop`, also numbering lines and showing each event to ``on_event``."""
    observe, note_time, clock = stats.observe, stats.note_time, stats.clock
    parsed = 0
    number = 0
    for batch in reader.batches():
        for line in batch:
            number += 1
            if line is not None:
                events = feed(line)
                if events:
                    parsed += 1
                    for event in events:
                        observe(event)
                        if track_time:
                            note_time(event.stamp)
                        if on_event is not None:
                            on_event(event, number, clock)
    return parsed, number


_FIELDS_CACHE: dict[type, tuple[str, ...]] = {}


def event_record(event: Event, file: str, line: int, clock: Clock) -> dict:
    """The JSON object of one event in the ``events`` format."""
    record: dict[str, object] = {"line": line, "file": file, "kind": event.kind}
    when = clock.resolve(event.stamp) if event.stamp else None
    if when is not None:
        record["time"] = isoformat(when)
    names = _FIELDS_CACHE.get(type(event))
    if names is None:
        names = _FIELDS_CACHE[type(event)] = payload_fields(type(event))
    for name in names:
        value = getattr(event, name)
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        record[name] = value
    return record


def event_writer(out: TextIO, file: str) -> Callable[[Event, int, Clock], None]:
    write = out.write
    dumps = json.dumps

    def on_event(event: Event, line: int, clock: Clock) -> None:
        write(dumps(event_record(event, file, line, clock)))
        write("\n")

    return on_event


class UnmatchedShapes:
    """``--format unmatched``: the shapes of lines that look like vLLM, LMCache or uvicorn lines but
    gave no event, counted, with one masked example each (nothing of a prompt or an id survives)."""

    def __init__(self) -> None:
        self.counts: dict[str, int] = {}
        self.examples: dict[str, str] = {}

    def read(self, raw: BinaryIO, max_line: int) -> tuple[int, str | None]:
        reader = LineReader(raw, max_line)
        stream = LogStream(max_line)
        for batch in reader.batches():
            for line in batch:
                if line is None:
                    continue
                events = stream.feed(line)
                if all(event.kind == "suspicious_line" for event in events) and looks_like_a_log_line(line):
                    self.note(line)
        return reader.lines, reader.error

    def note(self, line: str) -> None:
        key = shape(line)
        count = self.counts.get(key)
        if count is None:
            self.examples[key] = masked(line)
            count = 0
        self.counts[key] = count + 1

    def render(self, out: TextIO) -> None:
        total = sum(self.counts.values())
        out.write(f"# {total} lines that look like vLLM, LMCache or uvicorn lines gave no event, ")
        out.write(f"in {len(self.counts)} shapes (numbers as N; ids, quoted text and prompts masked)\n")
        for key, count in sorted(self.counts.items(), key=lambda item: (-item[1], item[0])):
            out.write(f"{count:>8}  {key}\n")
            example = self.examples[key]
            if example != key:
                out.write(f"{'':>8}  e.g. {example}\n")
