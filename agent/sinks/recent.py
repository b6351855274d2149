"""The last requests of each server, one row each, with why its cache hit fell short.

A writer of :class:`agent.sinks.traces.TraceBuilder` (which joins a request's
lines whether or not traces are exported): each ended request becomes a row --
its id, outcome and HTTP status, latency where the log gives both ends, prompt
tokens, LMCache hit tokens, what was loaded from LMCache, what vLLM's own prefix
cache already held -- and, for a miss or a partial hit, the reason the log can
tell.  ``kvwatch top`` shows them; the daemon serves them at ``/api/requests``.
Nothing of a prompt is kept: request ids and counts only.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple

from agent.sinks.stats import ServerStats, note_sink_error
from agent.sinks.traces import JOINED_KINDS, Lookup, OpenRequest, TraceBuilder
from parsers.events import Event

KEEP = 50  # the default of [agent] recent_requests
REQUESTS_SINK = "requests"  # the request joiner's name in kvwatch_sink_errors_total
DEFAULT_CHUNK = 256  # LMCache's default chunk size
# The request events kept for the servers whose rows no one reads, to join them from at the next ask: a request
# logs about six (its start, LMCache's lookup, store or load, its access line), and the last rows' requests
# began a few hundred requests before them on a busy server (as many as it runs at once).  One window holds every
# server's, so that its memory does not grow with their number.  An event and its entry take about 350 bytes:
# 8,192 of them 2.8 MiB, the most 22 MiB (for 2,048 rows or more).
EVENTS_PER_ROW = 32
MIN_WINDOW = 8192
MAX_WINDOW = 65_536
# Rows no one asked for this long: joining stops until the next ask (kvwatch top and the status page ask every
# second or two while open).
IDLE_SECONDS = 60.0
# While someone reads the rows, a server's new request events are joined once the lines read with them have
# reached every sink (:meth:`JoinedOnDemand.join_unjoined`, at the end of each delivery), at most this many at a
# time: one event at a time, between the parsing and the stats of each line, the joiner's code runs on cold
# caches: the joining and keeping cost about a seventh more (3.5 against 3.0 µs a line of the generator's
# current-style log, in one process: docs/benchmarks.md).
JOIN_BATCH = 256


@dataclass(frozen=True)
class RequestRow:
    id: str
    outcome: str | None  # finished, responded, aborted, cancelled, failed, evicted
    status: int | None  # the HTTP status, where the access line was matched
    latency_seconds: float | None
    prompt_tokens: int | None
    lmcache_hit_tokens: int | None
    loaded_from_lmcache: int | None  # LMCache's "need to load"
    vllm_cached_tokens: int | None  # what vLLM's own prefix cache held (LMCache's "engine computed")
    reason: str | None  # why the hit fell short; None for a full hit or where the log cannot tell
    preemptions: int = 0  # how often LMCache's multiprocess connector saw it preempted

    def as_dict(self) -> dict:
        # Every field is a plain value: a copy of them is what dataclasses.asdict makes (its deep copy cost 20 µs a
        # row, a server's rows are made at every ask: 1 ms a second for each server the status page shows).
        return dict(vars(self))


class ServerSide(NamedTuple):
    """What of the server a miss reason needs, as it was when the request ended (taken at every end)."""

    degraded: bool  # LMCache running without its engine, or its health monitor holding it unhealthy
    connector_seen: bool  # any LMCache lookup, prefetch or start line so far

    @staticmethod
    def of(stats: ServerStats) -> ServerSide:
        seen = stats.lookups > 0 or stats.prefetches > 0 or stats.lmcache_info is not None
        return _SIDES[bool(stats.lmcache_degraded or stats.lmcache_unhealthy)][seen]


# Every ServerSide there is, by (degraded, connector_seen): made once, not at every request's end.
_SIDES = tuple(tuple(ServerSide(degraded, seen) for seen in (False, True)) for degraded in (False, True))


def miss_reason(request: OpenRequest, server: ServerSide, chunk: int = DEFAULT_CHUNK) -> str | None:
    """Why the request's LMCache hit fell short, from what its lines and the server's say."""
    if request.load_failed_tokens:
        return f"LMCache failed to load {request.load_failed_tokens} tokens of its hit"
    if request.load_bypassed:
        return "LMCache failed to load its hit: computed again"
    if request.lookup_timed_out:
        return "LMCache's lookup timed out: computed again"
    if request.lookups:
        return _lookup_reason(request.lookups[-1], server, chunk)
    prefetch = request.prompt_prefetch
    if prefetch is not None:
        if prefetch.requested_keys is None or prefetch.hit_keys >= prefetch.requested_keys:
            return None
        return f"partial: {prefetch.hit_keys} of {prefetch.requested_keys} keys"
    if request.mp_miss:
        return "not seen before"
    if request.mp_found_chunks:
        return None  # the multiprocess server found a prefix (its lookup's end says no more of the prompt)
    if request.pending_lookups:
        return "lookup pending or timed out"
    if server.degraded:
        return "LMCache degraded"
    if not server.connector_seen:
        return "LMCache connector not loaded"  # no LMCache line of any request, nor its start
    return None


def _lookup_reason(last: Lookup, server: ServerSide, chunk: int) -> str | None:
    """Why the hit of an in-process lookup (the request's last) fell short."""
    whole = last.total // chunk * chunk  # LMCache keeps whole chunks only
    if last.min_retrieve is not None:
        return f"hit below min_retrieve ({last.min_retrieve} tokens): nothing loaded"
    if last.hit > 0 and last.engine_computed is not None and last.engine_computed >= last.hit:
        return "vLLM's own prefix cache already held it"
    if whole == 0:
        return f"prompt shorter than LMCache's chunk ({chunk} tokens)"
    if last.hit >= whole:
        return None
    if last.hit == 0:
        return "LMCache degraded" if server.degraded else "not seen before"
    return f"partial: the first {last.hit} of {last.total} tokens seen before"


def _mp_hit_tokens(request: OpenRequest, chunk: int) -> int | None:
    """LMCache's multiprocess server's hit in tokens, where its lookup's end said it (DEBUG): chunks found."""
    return request.mp_found_chunks * chunk if request.mp_found_chunks is not None else None


def row_of(request: OpenRequest, server: ServerSide, chunk: int = DEFAULT_CHUNK) -> RequestRow:
    last = request.lookups[-1] if request.lookups else None
    latency = request.end - request.start if request.end is not None and request.started_in_view else None
    return RequestRow(
        id=request.id,
        outcome=request.outcome,
        status=request.access.status if request.access is not None else None,
        latency_seconds=round(latency, 3) if latency is not None else None,
        prompt_tokens=last.total if last is not None else request.prompt_tokens,
        lmcache_hit_tokens=last.hit if last is not None else _mp_hit_tokens(request, chunk),
        loaded_from_lmcache=last.need_to_load if last is not None else None,
        vllm_cached_tokens=last.engine_computed if last is not None else None,
        reason=miss_reason(request, server, chunk),
        preemptions=len(request.preemptions),
    )


class RecentRequests:
    """The last :data:`KEEP` requests of one server, newest last.

    Ended requests are kept as they are (with the server's side at their end) and made rows only
    when asked for: requests end many times a second, the rows are read once a second at most."""

    def __init__(self, stats: ServerStats, chunk: int = DEFAULT_CHUNK, keep: int = KEEP) -> None:
        self.stats = stats
        self.chunk = chunk
        self.ended: deque[tuple[OpenRequest, ServerSide]] = deque(maxlen=keep)
        self.side: ServerSide | None = None  # the server's side as it was, while events kept are joined late

    def add(self, request: OpenRequest) -> None:
        """A :class:`TraceBuilder` writer: one ended request."""
        self.ended.append((request, self.side if self.side is not None else ServerSide.of(self.stats)))

    def rows(self) -> list[RequestRow]:
        return [row_of(request, side, self.chunk) for request, side in self.ended]

    def as_list(self) -> list[dict]:
        return [row.as_dict() for row in self.rows()]


def _never(_trace_id: int) -> bool:
    return False  # no traces are written: no exemplar takes a trace id


def joined(
    stats: ServerStats, chunk: int = DEFAULT_CHUNK, keep: int = KEEP, **limits
) -> tuple[RecentRequests, TraceBuilder]:
    """The recent requests of a server and the joiner that feeds them, for a source without traces: no
    exemplar, and log time throughout (a stamp-less access line takes the latest time the log showed, so
    history read at start has latencies too, and idleness is not measured on another clock)."""
    recent = RecentRequests(stats, chunk, keep)
    return recent, TraceBuilder(stats, stats.clock, recent.add, sampled=_never, **limits)


# A kept request event: the server that kept it, the event, the server's side then, and when it was read.
Kept = tuple["JoinedOnDemand", Event, ServerSide, float]


class KeptEvents:
    """The last request events of the servers whose rows are joined on demand, with each one's server (the
    :class:`JoinedOnDemand` that kept it), its side at the time and when it was read: one window for all, so
    that a busy server keeps more of it and the memory is bounded whatever the number of servers."""

    def __init__(self, keep: int = KEEP) -> None:
        self.entries: deque[Kept] = deque(maxlen=min(MAX_WINDOW, max(MIN_WINDOW, EVENTS_PER_ROW * keep)))


class JoinedOnDemand:
    """The recent requests of a server without traces, joined only while someone reads them.

    Joining every request's lines costs about as much as parsing them, and only ``kvwatch top``, the status
    page and ``/api/requests`` read the rows.  So the server's request events are kept (with the server's side
    and the time each was read) in a window of the last ones of every server, and the first ask joins this
    server's with a fresh joiner, which then takes each new event as it comes until no one has asked for
    :data:`IDLE_SECONDS`.  The rows are those joining all along gives for every request whose events are all
    among the kept ones (a request begun before them is shown as one begun before kvwatch looked)."""

    def __init__(
        self,
        stats: ServerStats,
        chunk: int = DEFAULT_CHUNK,
        keep: int = KEEP,
        kept: KeptEvents | None = None,
        clock: Callable[[], float] = time.monotonic,
        **limits,
    ) -> None:
        self.stats = stats
        self.chunk = chunk
        self.keep = keep
        self.limits = limits
        self.clock = clock
        # The read time matters only where a request waits for pieces from the source's other files.
        self.lingers = bool(limits.get("linger"))
        self.kept = kept if kept is not None else KeptEvents(keep)
        self.recent: RecentRequests | None = None
        self.joiner: TraceBuilder | None = None
        self.asked_at = 0.0
        self._replayed_at: float | None = None  # the read time of the kept event being joined late
        self._unjoined: list[Kept] = []  # kept since the joiner's last batch, while someone reads the rows

    def observe(self, event: Event) -> None:
        """A pipeline listener: keep a request's event, and join it (in batches) while someone reads the rows."""
        if event.__class__ not in JOINED_KINDS:
            return
        entry = (self, event, ServerSide.of(self.stats), self.clock() if self.lingers else 0.0)
        self.kept.entries.append(entry)
        if self.joiner is not None:
            unjoined = self._unjoined
            unjoined.append(entry)
            if len(unjoined) >= JOIN_BATCH:
                self.join_unjoined()

    def tick(self) -> None:
        """Each second or so: join what came, write the requests done waiting for late pieces; stop joining once
        no one reads."""
        joiner = self.joiner
        if joiner is None:
            return
        if self.clock() - self.asked_at > IDLE_SECONDS:
            self.recent = self.joiner = None
            self._unjoined = []
            return
        self.join_unjoined()
        if joiner.lingering:
            joiner.release_lingering()

    def rows(self) -> list[RequestRow]:
        return self._asked().rows()

    def as_list(self) -> list[dict]:
        return self._asked().as_list()

    def _asked(self) -> RecentRequests:
        self.asked_at = self.clock()
        if self.recent is None:
            self.recent, self.joiner = self._join_kept()
        else:
            self.join_unjoined()
        return self.recent

    def _join_kept(self) -> tuple[RecentRequests, TraceBuilder]:
        recent = RecentRequests(self.stats, self.chunk, self.keep)
        joiner = TraceBuilder(
            self.stats, self.stats.clock, recent.add, sampled=_never, read_clock=self._read_clock, **self.limits
        )
        self._join(recent, joiner, [entry for entry in self.kept.entries if entry[0] is self])
        return recent, joiner

    def join_unjoined(self) -> None:
        """Join the events kept since the last batch (the pipeline calls it after each delivery of lines)."""
        unjoined, self._unjoined = self._unjoined, []
        if unjoined and self.recent is not None and self.joiner is not None:
            self._join(self.recent, self.joiner, unjoined)

    def _join(self, recent: RecentRequests, joiner: TraceBuilder, entries: list[Kept]) -> None:
        """Join kept events as they came: each with the server's side and the read time it had then."""
        try:
            for _server, event, side, read_at in entries:
                recent.side, self._replayed_at = side, read_at
                if joiner.lingering:  # what was done waiting for late pieces when this was read
                    joiner.release_lingering()
                try:
                    joiner.observe(event)
                except Exception as exc:  # as the pipeline does: the event is skipped, the others joined
                    note_sink_error(self.stats, REQUESTS_SINK, exc)
        finally:
            recent.side = self._replayed_at = None

    def _read_clock(self) -> float:
        return self._replayed_at if self._replayed_at is not None else self.clock()
