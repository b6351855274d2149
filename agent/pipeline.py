"""Where lines become events and reach the sinks: live (:class:`SourcePipeline`) and in replay (:func:`read_into`).

These loops are the hot path of the whole program: they call the parser for
each line and hand its events to the stats (and, live, to the listeners);
nothing else.  They are written out once per use, side by side here, rather
than one loop with switches, because a test per line costs more than the loop
itself.

Lines go through in chunks of :data:`CHUNK`: the parser reads a chunk's lines
(:func:`parse_chunk`), then its events go to the sinks, each event to the stats
first and then to the listeners, in the lines' order as before.  Each stage's
code and data stay warm in the CPU's caches through a chunk, where line by line
the parser, the stats and the request joiner evict each other's: measured in one
process, parse and stats took 14 % less time, and with the request joiner 24 %
less (docs/benchmarks.md).  The parser is pure, so nothing it
returns depends on what the sinks have seen.

Live, a source hands over lines already split and decoded (skipped ones as
``None``, counted in the same ``skipped`` dict the stats export); each goes
through the source's :class:`parsers.LogStream` and every event to its
:class:`ServerStats` and to whoever listens (the supervisor of that server,
the trace builder).
"""

from __future__ import annotations

import enum
import gc
import itertools
import logging
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime, tzinfo
from typing import BinaryIO

from agent.sinks.stats import STATS_SINK, ServerStats, note_sink_error
from agent.sources.lines import BLOCK, LineReader
from agent.sources.origins import multiplexed, origin_of
from parsers import Clock, LogStream
from parsers.events import Event, Events
from parsers.masking import looks_like_a_log_line
from parsers.stream import lmcache_server_shown

log = logging.getLogger(__name__)

# What a replay shows each event to: the event, the line it ends on, the clock of its input and the server it
# counts toward (a writer's, not the input's own, in a multiplexed log).
OnEvent = Callable[[Event, int, Clock, str], None]

# kvwatch_lines_skipped_total's reason for a line a parser raised on.
PARSER_ERROR = "parser_error"
# Writers of one multiplexed log read as servers of their own: more than a fleet's pods in one export, and few
# enough that a log of made-up names (each line another) keeps its memory bounded (about 12 KiB a writer).
MAX_WRITERS = 1000
# Lines parsed before their events go to the sinks: enough to keep each stage's code warm, few enough
# that a chunk's events stay small (a catching-up read brings thousands of lines at once).
CHUNK = 256
# Whose events a listener is shown (``SourcePipeline.listen``): every file's, as the stats see them (an LMCache
# server's HTTP lines left out); or, for a supervisor, those of the files its process writes: vLLM's (every file but
# an LMCache server's) or an LMCache server's.
EVERY_FILE, VLLM_FILES, LMCACHE_SERVER_FILES = "every file", "vllm's files", "the lmcache server's files"
# Files whose lines one live source keeps apart (each its own stream), more than a server's logs and few enough
# that a glob of many files keeps its memory bounded.
MAX_STREAMS = 64
# Files whose first lines' verdict is kept (whether each is an LMCache server's own log): a glob's files come and go.
MAX_TOLD_FILES = 4096
# Lines of a pipe gathered before its log is told by them (about what a file's first block holds); as many of a
# followed file's first lines tell it, while its first block is not yet written whole.
HEAD_LINES = 1000


class Told(enum.Enum):
    """What a file's first lines told of whose log it is (kept past its stream)."""

    OTHER = "other"  # vLLM's, or any other's
    LMCACHE_SERVER = "lmcache server"  # an LMCache server's own
    # An LMCache server's own in which vLLM's output has begun since (both servers write it): the answers of that
    # server's own API are still its.
    BOTH = "both"


def chunks(lines: list[str | None]) -> Iterator[list[str | None]]:
    """``lines`` in runs of at most :data:`CHUNK`."""
    if len(lines) <= CHUNK:
        yield lines
        return
    for start in range(0, len(lines), CHUNK):
        yield lines[start : start + CHUNK]


def parse_chunk(feed: Callable[[str], Events], lines: list[str | None]) -> tuple[int, list[Event]]:
    """Every event of some lines, in order, and how many lines gave one (skipped lines are None)."""
    events: list[Event] = []
    extend = events.extend
    parsed = 0
    for line in lines:
        if line is not None:
            found = feed(line)
            if found:
                parsed += 1
                extend(found)
    return parsed, events


def note_parser_errors(stats: ServerStats, count: int) -> None:
    """Count lines a parser raised on as skipped, and say so the first time (never the line: it may hold a
    prompt), then in kvwatch_lines_skipped_total only: a line of one shape logged every second would otherwise
    write a warning every second."""
    first = not stats.skipped.get(PARSER_ERROR)
    stats.skipped[PARSER_ERROR] = stats.skipped.get(PARSER_ERROR, 0) + count
    if first:
        log.warning(
            "%s: %d line(s) could not be parsed and were skipped (a kvwatch bug: please report it with "
            "`kvwatch replay --format unmatched` of the log; later ones are counted in kvwatch_lines_skipped_total"
            '{reason="parser_error"})',
            stats.server,
            count,
        )


class SourcePipeline:
    """``lock`` is held while a batch of lines reaches the sinks, so a scrape sees whole batches."""

    def __init__(
        self,
        name: str,
        timezone: tzinfo,
        max_line: int,
        lock: threading.Lock | None = None,
        lmcache_server_logs: Iterable[str] = (),
        tell_lmcache_server: bool = False,
    ) -> None:
        self.name = name
        self.lock = lock or threading.Lock()
        self.stats = ServerStats(name, Clock(timezone, datetime.now(UTC)), now=time.time)
        self.max_line = max_line
        # One stream per file the lines come from (a record held for its next piece is never joined with another
        # file's line); the files an LMCache server writes are known to be its (``LogStream.own_events``).
        self.streams: dict[str, LogStream] = {}
        self.lmcache_server_logs = frozenset(lmcache_server_logs)
        # Whether the other files are told to be an LMCache server's own log by their first lines (a followed
        # glob or list of files may hold one), and for each file whose first lines told nothing yet (a file
        # just begun: the server's banner and settings come before its start), how many more of them may tell.
        self.tell_lmcache_server = tell_lmcache_server
        self._untold: dict[str, int] = {}
        # What the first lines told of each file (kept past its stream: a glob of more files than MAX_STREAMS read
        # in turns makes a file's stream anew at each turn).
        self._told_files: dict[str, Told] = {}
        self.listeners: list[tuple[str, Callable[[Event], None], str]] = []
        # (sink, listener) shown the events of vLLM's files, of an LMCache server's, and that process's own.
        self._of_vllm_file: list[tuple[str, Callable[[Event], None]]] = []
        self._of_lmcache_file: list[tuple[str, Callable[[Event], None]]] = []
        self._lmcache_process: list[tuple[str, Callable[[Event], None]]] = []
        self._after_feed: list[tuple[str, Callable[[], None]]] = []  # (sink, what it finishes after each feed)
        self.last_line: float | None = None  # wall clock of the last line read

    def listen(self, sink: str, listener: Callable[[Event], None], files: str = EVERY_FILE) -> None:
        """Show ``listener`` every event of ``files`` (after the stats); ``sink`` names it in
        kvwatch_sink_errors_total."""
        self.listeners.append((sink, listener, files))
        self._of_vllm_file = [(s, f) for s, f, of in self.listeners if of in (EVERY_FILE, VLLM_FILES)]
        self._of_lmcache_file = [(s, f) for s, f, of in self.listeners if of == EVERY_FILE]
        self._lmcache_process = [(s, f) for s, f, of in self.listeners if of == LMCACHE_SERVER_FILES]
        self.stats.sink_errors.setdefault(sink, 0)

    def after_each_feed(self, sink: str, finish: Callable[[], None]) -> None:
        """Call ``finish`` after each feed's events have reached the listeners, under the same lock (a sink that
        takes its events in batches ends its batch there, so a scrape sees what the lines read so far gave)."""
        self._after_feed.append((sink, finish))

    def feed(self, lines: list[str | None], origin: str = "") -> None:
        """Lines read from ``origin`` (a file's path; "" for a source of one stream)."""
        self.feed_files([(lines, origin)])

    def feed_files(self, files: list[tuple[list[str | None], str]]) -> None:
        """The lines of one or more files (``(lines, origin)`` each), in one hold of the lock: the sinks end their
        batch once, after the last file's (a flow over many files brings a line or two of each per read)."""
        with self.lock:
            for lines, origin in files:
                try:
                    self._feed(lines, origin)
                except Exception:  # a bug on one file's lines must not lose the other files'
                    log.exception("%s: the lines read from %s were lost", self.name, origin or "its stream")
            for sink, finish in self._after_feed:
                try:
                    finish()
                except Exception as exc:  # as a listener's: counted, and the reading goes on
                    note_sink_error(self.stats, sink, exc)
            self.last_line = time.time()

    def _stream(self, origin: str) -> LogStream:
        streams = self.streams
        stream = streams.pop(origin, None)
        if stream is None:
            if len(streams) >= MAX_STREAMS:  # a glob's files come and go: the one read longest ago goes
                idle_origin = next(iter(streams))
                idle = streams.pop(idle_origin)
                self._untold.pop(idle_origin, None)
                self._deliver(idle.close(), idle)
            stream = LogStream(self.max_line, lmcache_server=origin in self.lmcache_server_logs)
            if not stream.lmcache_server:
                told = self._told(origin)
                if told is Told.LMCACHE_SERVER:
                    stream.show_lmcache_server(True)
                elif told is Told.BOTH:
                    stream.show_vllm_begun()
        streams[origin] = stream  # (the last read last)
        return stream

    def _told(self, origin: str) -> Told:
        """Whether the file ``origin`` not named an LMCache server's own log is one, where files are told by their
        first lines: shown so by its first block (read from its start, wherever the reading resumes); while that
        block is not yet written whole, the lines read after it may still tell (:meth:`_tell`)."""
        if not self.tell_lmcache_server or not origin:
            return Told.OTHER
        told = self._told_files.get(origin)
        if told is not None:
            return told
        try:
            shown, lines, whole = head_shown(origin, self.max_line)
        except OSError:  # gone or unreadable since it was read: its lines tell
            shown, lines, whole = None, 0, False
        told = Told.LMCACHE_SERVER if shown is True else Told.OTHER
        if not whole and shown is not False:
            self._untold[origin] = HEAD_LINES - lines
        else:
            self._remember(origin, told)
        return told

    def _remember(self, origin: str, told: Told) -> None:
        if len(self._told_files) >= MAX_TOLD_FILES:
            self._told_files.clear()
        self._told_files[origin] = told

    def _tell(self, origin: str, stream: LogStream, lines: int, events: list[Event]) -> None:
        """Tell from the events of ``lines`` more of the first lines of ``origin`` whether it is an LMCache server's
        own log (before they reach the sinks): its start makes it one, an event of another's log none."""
        shown = lmcache_server_shown(events)
        if shown is not None:
            stream.show_lmcache_server(shown)
        left = self._untold[origin] - lines
        if shown is False or left <= 0:
            del self._untold[origin]
            self._remember(origin, Told.LMCACHE_SERVER if stream.lmcache_server else Told.OTHER)
        else:
            self._untold[origin] = left

    def _feed(self, lines: list[str | None], origin: str) -> None:
        stats = self.stats
        stream = self._stream(origin)
        feed = stream.feed
        deliver = self._deliver
        untold = self._untold
        parsed = 0
        for chunk in chunks(lines):
            count, events = parse_chunk(feed, chunk)
            parsed += count
            if untold and origin in untold:
                self._tell(origin, stream, len(chunk), events)
            deliver(events, stream)
        # A record held back in case the next line continues it (a wrapped paste) waits no longer than
        # what has been written: a live line is counted as soon as it is read.
        settled = stream.settle()
        if settled:
            parsed += 1
            deliver(settled, stream)
        stats.lines += len(lines)
        stats.parsed_lines += parsed
        if stream.lmcache_server_api and self._told_files.get(origin) is Told.LMCACHE_SERVER:
            self._remember(origin, Told.BOTH)  # vLLM's output began in it since its first lines told
        if stream.failed:
            note_parser_errors(stats, stream.failed)
            stream.failed = 0

    def _deliver(self, events: Events | list[Event], stream: LogStream) -> None:
        # A sink's bug on one event loses neither that event for the other sinks nor the events after it.
        # (A try costs nothing until it catches.)
        stats = self.stats
        observe = stats.observe
        listeners = self._of_vllm_file
        if stream.lmcache_server:
            self._show(self._lmcache_process, events)
            events = stream.own_events(events)
            if stream.lmcache_server:  # (not where vLLM's output began in it)
                listeners = self._of_lmcache_file
        elif stream.lmcache_server_api:
            events = stream.own_events(events)
        for event in events:
            try:
                observe(event)
            except Exception as exc:
                note_sink_error(stats, STATS_SINK, exc)
            for sink, listener in listeners:
                try:
                    listener(event)
                except Exception as exc:
                    note_sink_error(stats, sink, exc)

    def _show(self, listeners: list[tuple[str, Callable[[Event], None]]], events: Events | list[Event]) -> None:
        for event in events:
            for sink, listener in listeners:
                try:
                    listener(event)
                except Exception as exc:
                    note_sink_error(self.stats, sink, exc)


# -- replay ------------------------------------------------------------------------------


def read_into(
    stats: ServerStats,
    raw: BinaryIO,
    max_line: int,
    limit: int | None = None,
    on_event: OnEvent | None = None,
    track_time: bool = False,
    live: bool = False,
    stats_of: Callable[[str], ServerStats] | None = None,
    lmcache_server: bool | None = False,
) -> tuple[int, str | None]:
    """Parse a byte stream into ``stats``; returns (lines read, read error or None).  ``live``: a pipe or
    terminal, whose lines are parsed as they come.  With ``stats_of``, a log several containers wrote
    (told by its first lines, :func:`agent.sources.origins.multiplexed`) has each writer's lines read
    into ``stats_of(name)``; lines behind no name, and skipped ones, into ``stats``.  ``lmcache_server``: the
    stream is an LMCache server's own log (:meth:`parsers.LogStream.own_events`); None: whether it is, told by
    its first lines (:func:`shown_by`; a pipe's whose events are written as they come, line by line)."""
    reader = LineReader(raw, max_line, limit, live)
    batches = reader.batches()
    stream = LogStream(max_line, lmcache_server=lmcache_server is True)
    # Lines of a pipe whose events are written as they come that may still tell whose log it is (one by one).
    telling = HEAD_LINES if lmcache_server is None and live and on_event is not None else 0
    if stats_of is not None or lmcache_server is None:
        first = next(batches, None) or []
        told = lmcache_server is None and not telling
        if told and live:
            first = _gathered(first, batches)  # (a pipe's first batch is what has come so far)
        batches = itertools.chain((first,) if first else (), batches)
        if told and shown_by(first, max_line) is True:
            stream.show_lmcache_server(True)
        if not first or stream.lmcache_server or not multiplexed(first):
            stats_of = None
        elif telling:
            telling = 0  # (a log several writers wrote: no LMCache server's own)
    route = _Route(stats, stream, max_line, stats_of)
    number = 0
    # The loop allocates only short-lived, acyclic objects that reference
    # counting frees; the cyclic collector's frequent passes are pure overhead.
    collecting = gc.isenabled()
    gc.disable()
    try:
        if on_event is not None:
            number = _event_loop(batches, route, on_event, track_time, telling)
        elif stats_of is not None:
            _routed_loop(batches, route, track_time)
        else:
            _count_loop(batches, route, track_time)
    finally:
        if collecting:
            gc.enable()
    route.close(number, on_event)
    stats.lines += reader.lines - route.routed_lines
    for reason, count in reader.skipped.items():
        stats.skipped[reason] = stats.skipped.get(reason, 0) + count
    return reader.lines, reader.error


def _tell_by_line(stream: LogStream, events: Events, left: int) -> int:
    """One more of a log's first lines (its ``events``) told whether it is an LMCache server's own; returns how many
    more may tell (0 once one did).  Its start tells before anything of vLLM's, and its uvicorn lines follow it."""
    shown = lmcache_server_shown(events)
    if shown is None:
        return left - 1
    stream.show_lmcache_server(shown)
    return 0


def _gathered(first: list[str | None], batches: Iterator[list[str | None]]) -> list[str | None]:
    """``first`` and the batches after it up to :data:`HEAD_LINES` lines (or the input's end), as one batch."""
    head = list(first)
    while len(head) < HEAD_LINES:
        batch = next(batches, None)
        if batch is None:
            break
        head.extend(batch)
    return head


def shown_by(first: list[str | None], max_line: int) -> bool | None:
    """What a log's ``first`` lines show of whether it is an LMCache multiprocess server's own
    (:func:`parsers.stream.lmcache_server_shown`)."""
    stream = LogStream(max_line)
    return lmcache_server_shown(event for line in first if line is not None for event in stream.feed(line))


def head_shown(path: str, max_line: int) -> tuple[bool | None, int, bool]:
    """What the first block of lines of the plain file at ``path`` shows of whether it is an LMCache server's own
    log (:func:`shown_by`), how many lines that block holds, and whether it is whole (the file goes on after it:
    no later line is of its first block)."""
    with open(path, "rb") as raw:
        whole = os.fstat(raw.fileno()).st_size > BLOCK
        first = next(LineReader(raw, max_line, BLOCK).batches(), None) or []
    return shown_by(first, max_line), len(first), whole


def head_is_lmcache_server_log(path: str, max_line: int) -> bool:
    """Whether the plain file at ``path`` is an LMCache server's own log, told by its first block of lines (before
    it is read in slices, which begin in its middle)."""
    return head_shown(path, max_line)[0] is True


class _Route:
    """Where a read's lines go: a stream and stats for the input, and with ``stats_of`` one more of
    each per writer of a multiplexed log."""

    def __init__(
        self, stats: ServerStats, stream: LogStream, max_line: int, stats_of: Callable[[str], ServerStats] | None
    ) -> None:
        self.stats = stats
        self.stream = stream
        self._max_line = max_line
        self._stats_of = stats_of
        self._writers: dict[str | None, tuple[LogStream, ServerStats]] = {None: (self.stream, stats)}
        self.routed_lines = 0  # lines counted in a writer's stats rather than the input's
        self.crowded = False  # a writer past MAX_WRITERS was met

    @property
    def routing(self) -> bool:
        """Whether lines go to their writers (a multiplexed log)."""
        return self._stats_of is not None

    def to(self, line: str | None) -> tuple[LogStream, ServerStats]:
        """The stream and stats of the writer ``line`` names (the input's own without one, or past
        :data:`MAX_WRITERS`)."""
        writer = origin_of(line) if line is not None else None
        found = self._writers.get(writer)
        if found is None:
            assert self._stats_of is not None and writer is not None
            if len(self._writers) > MAX_WRITERS:
                if not self.crowded:
                    log.warning(
                        "%s: more than %d writers in one log: the lines of the others stay with it",
                        self.stats.server,
                        MAX_WRITERS,
                    )
                self.crowded = True
                return self._writers[None]
            found = self._writers[writer] = (LogStream(self._max_line), self._stats_of(writer))
        return found

    def close(self, number: int, on_event: OnEvent | None) -> None:
        """What each stream still held, given to its stats (and ``on_event``, as of line ``number``), and
        the lines each stream dropped or a parser raised on, counted."""
        for stream, stats in self._writers.values():
            for event in stream.own_events(stream.close()):
                _observe(stats, event, track_time=False)
                if on_event is not None:
                    on_event(event, number, stats.clock, stats.server)
            if stream.dropped:
                stats.skipped["split_too_long"] = stats.skipped.get("split_too_long", 0) + stream.dropped
            if stream.failed:
                note_parser_errors(stats, stream.failed)


def _observe(stats: ServerStats, event: Event, track_time: bool) -> None:
    """One event to the stats (a stats bug on it counted, not raised), and with ``track_time`` its stamp to
    the span of log time.  :func:`_count_loop` does the same inline: it runs for every event."""
    try:
        stats.observe(event)
    except Exception as exc:
        note_sink_error(stats, STATS_SINK, exc)
    if track_time:
        stats.note_time(event.stamp)


def _count_loop(batches: Iterable[list[str | None]], route: _Route, track_time: bool) -> None:
    """The hot loop: parse every line, feed events to the stats (and with ``track_time`` each event's
    stamp to the span of log time a summary shows)."""
    stats, stream = route.stats, route.stream
    feed = stream.feed
    observe, note_time = stats.observe, stats.note_time
    parsed = 0
    for batch in batches:
        for chunk in chunks(batch):
            count, events = parse_chunk(feed, chunk)
            parsed += count
            if stream.lmcache_server or stream.lmcache_server_api:
                events = stream.own_events(events)
            for event in events:
                try:
                    observe(event)
                except Exception as exc:
                    note_sink_error(stats, STATS_SINK, exc)
                if track_time:
                    note_time(event.stamp)
    stats.parsed_lines += parsed


def _routed_loop(batches: Iterable[list[str | None]], route: _Route, track_time: bool) -> None:
    """:func:`_count_loop` for a multiplexed log: each batch's lines parsed writer by writer, each writer's
    in their order (what one writer's lines give never depends on another's)."""
    for batch in batches:
        by_writer: dict[tuple[LogStream, ServerStats], list[str | None]] = {}
        for line in batch:
            target = route.to(line)
            lines = by_writer.get(target)
            if lines is None:
                by_writer[target] = [line]
            else:
                lines.append(line)
        for (stream, stats), lines in by_writer.items():
            if stats is not route.stats:
                stats.lines += len(lines)
                route.routed_lines += len(lines)
            count, events = parse_chunk(stream.feed, lines)
            stats.parsed_lines += count
            for event in events:
                _observe(stats, event, track_time)


def _event_loop(
    batches: Iterable[list[str | None]],
    route: _Route,
    on_event: OnEvent,
    track_time: bool,
    telling: int = 0,
) -> int:
    """As :func:`_count_loop`, also numbering lines and showing each event to ``on_event``: a record
    the stream held back for a line that did not continue it ends on the line before.  The first ``telling``
    lines tell, one by one, whether the input is an LMCache server's own log.  Returns the number of lines."""
    number = 0
    routed = route.to if route.routing else None
    stream, stats = route.stream, route.stats
    for batch in batches:
        for line in batch:
            number += 1
            if routed is not None:
                stream, stats = routed(line)
                if stats is not route.stats:
                    stats.lines += 1
                    route.routed_lines += 1
            if line is not None:
                holding = stream.holding
                events = stream.feed(line)
                if telling:
                    telling = _tell_by_line(stream, events, telling)
                if events:
                    stats.parsed_lines += 1
                    late = stream.late if holding else 0
                    if stream.lmcache_server or stream.lmcache_server_api:  # (what ends on the line before apart)
                        held = stream.own_events(events[:late])
                        events, late = (*held, *stream.own_events(events[late:])), len(held)
                    for index, event in enumerate(events):
                        _observe(stats, event, track_time)
                        on_event(event, number - 1 if index < late else number, stats.clock, stats.server)
    return number


# Events that say a line's message was not read: it starts like a family and did not parse, or it is
# only known to be a warning or an error.
_UNREAD = frozenset(("suspicious_line", "log_problem"))


def read_unmatched(raw: BinaryIO, max_line: int, note: Callable[[str], None]) -> tuple[int, str | None]:
    """Show ``note`` every line that gave no event (or only a suspicious-line or problem event) and looks
    like a log line; returns (lines read, read error or None)."""
    reader = LineReader(raw, max_line)
    stream = LogStream(max_line)
    for batch in reader.batches():
        for line in batch:
            if line is None:
                continue
            events = stream.feed(line)
            if all(event.kind in _UNREAD for event in events) and looks_like_a_log_line(line):
                note(line)
    return reader.lines, reader.error
