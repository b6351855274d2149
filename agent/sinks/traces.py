"""One trace per inference request, built from the event stream: the open-request table.

vLLM's front end, its engine and LMCache each log a piece of a request under
one of two ids (the client's, and from vLLM 0.14.0 the engine's, which adds
``-<8 hex>``).  :class:`TraceBuilder` keeps a small record per open request,
joins the pieces, and hands each request to a writer once it ends: by its id
(``Finished request``, ``Aborted request``, ``Request X failed``), or by the
uvicorn access line of its route, which carries no id.

Times.  Every piece keeps the time its line printed, resolved by the source's
:class:`parsers.Clock` in the server's time zone: vLLM's stamps have whole
seconds (unless a logging format adds milliseconds) and no year (the clock
supplies the year), LMCache's milliseconds.
A line without a stamp (uvicorn's access line) takes the time it was read when
following a live log, and the latest time the log showed so far in a replay.
Ends are never before the request's start or a child's end; LMCache transfers
end at their line and begin ``cost`` earlier.

Pieces from several files.  A source may read more than one file (LMCache's
multiprocess server logs its prefetches in a file of its own); lines of two files
reach the builder in the order they were read, not written.  With ``linger``, an
ended request is written that many seconds later, and a piece of it read in
between joins it.  That wait is about reading, so it is measured on the reading's
clock (monotonic), whatever time the builder keeps.

Memory is bounded: at most ``max_open`` requests are kept, and a request with
no line for ``idle_timeout`` seconds is ended unfinished (the writer marks it
so); both evictions are counted.  Nothing here imports OpenTelemetry: the
writer (:mod:`agent.sinks.otlp`) turns records into spans.
"""

from __future__ import annotations

import random
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import NamedTuple

from prometheus_client.core import Metric

from agent.exposition import families
from agent.families import counter, gauge, keyed, value_of
from agent.sinks.labels import route_of
from agent.sinks.stats import MP_LOOKUP_KEYS, ServerStats
from parsers import events as ev
from parsers.ids import external_request_id, request_operation
from parsers.timestamps import Clock

DEFAULT_MAX_OPEN = 20_000
DEFAULT_IDLE_TIMEOUT = 900.0  # longer than a long generation: stats lines do not touch a request
# Ended ids remembered so that their late lines ("Request X aborted." after
# "Aborted request X", a store logged after the access line) start nothing new.
RECENTLY_ENDED = 4096
# How often (in events) a replay looks for idle requests; live agents do it per tick.
EXPIRE_EVERY = 1024
# How long a request ended by its id waits for its access line (which follows at once
# when there is one) before it is written without an HTTP status.
HOLD = 2.0
# How long an ended request of a source that reads several files (vLLM's log and its LMCache
# server's) waits for pieces from the other files before it is written: a reading cycle reads
# the files one after the other, so a piece written before the end can be read after it.
LINGER = 1.0

# Why a request was ended without its end being seen (the writer's attribute value).
EVICTION_REASONS = ("idle_timeout", "table_full", "server_restart", "server_stopped", "log_ended", "agent_stopped")


# Each kind of event a request's trace is joined from, and the TraceBuilder method that takes it.
_HANDLERS: dict[type, str] = {
    ev.RequestReceived: "_received",
    ev.RequestAdded: "_added",
    ev.LmcacheLookup: "_lookup",
    ev.LmcacheLookupPending: "_lookup_pending",
    ev.LmcacheStoreStart: "_store_start",
    ev.LmcacheStore: "_store",
    ev.LmcacheRetrieve: "_retrieve",
    ev.LmcachePrefetch: "_prefetch",
    ev.LmcacheLoadFailed: "_load_failed",
    ev.LmcacheLoadBypassed: "_load_bypassed",
    ev.LmcacheLookupTimeout: "_lookup_timeout",
    ev.LmcacheMpLookup: "_mp_lookup",
    ev.RequestPreempted: "_preempted",
    ev.LmcacheResumeLoad: "_resume_load",
    ev.RequestResumed: "_resumed",
    ev.RequestFinished: "_finished",
    ev.ResponseGenerated: "_generated",
    ev.RequestAborted: "_aborted",
    ev.RequestCancelled: "_cancelled",
    ev.RequestFailed: "_failed",
    ev.HttpAccess: "_access",
    ev.ServerStarting: "_server_starting",
    ev.ServerShutdown: "_server_shutdown",
    ev.ServiceExited: "_service_exited",
    ev.KvTransferStats: "_kv_transfer",
    ev.KvLoadFailure: "_kv_load_failure",
}
# The kinds of event the joiner reads (it skips every other kind).
JOINED_KINDS = frozenset(_HANDLERS)


class Lookup(NamedTuple):
    when: float
    total: int
    hit: int
    need_to_load: int | None
    engine_computed: int | None
    min_retrieve: int | None


class StoreStart(NamedTuple):
    when: float
    tokens: int
    total: int | None
    skip_leading: int | None
    rank: int | None


class Store(NamedTuple):
    when: float  # its end
    cost: float  # seconds
    stored: int
    total: int | None
    size_gb: float | None
    gbps: float | None
    offload_ms: float | None
    put_ms: float | None
    rank: int | None
    started: StoreStart | None


class Retrieve(NamedTuple):
    when: float  # its end
    cost: float  # seconds
    retrieved: int
    required: int | None
    total: int | None
    size_gb: float | None
    gbps: float | None
    rank: int | None


class Prefetch(NamedTuple):  # LMCache's multiprocess server
    when: float  # its end
    hit_keys: int
    requested_keys: int | None
    l1_keys: int | None
    l2_keys: int | None
    ms: float | None


class ResumeLoad(NamedTuple):  # LMCache's multiprocess connector, for a preempted request about to resume
    hit: int
    need_to_load: int
    engine_computed: int


class Preemption(NamedTuple):
    when: float | None  # preempted (None: only its resume was logged, the step having resumed another request)
    resumed: float | None  # None while it waits
    load: ResumeLoad | None  # what LMCache was to load at the resume (None: computed again, or not told)


def _in_start_order(queue: OrderedDict[str, OpenRequest], last: OpenRequest) -> None:
    """Keep a route's queue, whose access lines are matched first in first out, in the order its requests began:
    ``last`` was just put at its end, and only a request read from another file before its earlier lines (the LMCache
    server's log read before vLLM's) began later than it."""
    if len(queue) < 2:
        return
    before = reversed(queue.values())
    next(before)
    if next(before).start <= last.start:
        return
    for request in [request for request in queue.values() if request.start > last.start]:
        queue.move_to_end(request.id)


def _queue(queues: dict[str, OrderedDict[str, OpenRequest]], route: str) -> OrderedDict[str, OpenRequest]:
    """A route's queue of requests, made the first time (``setdefault`` would make one at every call)."""
    queue = queues.get(route)
    if queue is None:
        queue = queues[route] = OrderedDict()
    return queue


class Access(NamedTuple):
    method: str
    path: str
    status: int
    client: str


class OpenRequest:
    """What the log has said of one request so far; its pieces are small named tuples."""

    __slots__ = (
        "access",
        "end",
        "end_matched",
        "ended_at",
        "error_type",
        "external",
        "failure",
        "finish_reason",
        "first_kind",
        "id",
        "ids",
        "last_activity",
        "load_bypassed",
        "load_failed_tokens",
        "lookup_timed_out",
        "lookups",
        "max_tokens",
        "mp_found_chunks",
        "mp_miss",
        "operation",
        "outcome",
        "output_tokens",
        "parent_span_id",
        "pending_lookups",
        "preemptions",
        "prefetches",
        "prompt_tokens",
        "resume_load",
        "retrieves",
        "route",
        "sampled",
        "scheduled",
        "start",
        "store_starts",
        "stores",
        "trace_id",
        "write_at",
    )

    def __init__(
        self, request_id: str, trace_id: int, sampled: bool, start: float, first_kind: str, external: str | None
    ) -> None:
        self.id = request_id
        self.ids = [request_id]  # every id it has shown: engine ids made from it are joined later
        self.external = external  # the client id the first id was made from, if it is an engine id
        self.trace_id = trace_id
        self.sampled = sampled
        self.start = start
        self.first_kind = first_kind
        self.last_activity = start
        known = request_operation(request_id)
        self.operation, self.route = known if known is not None else (None, None)
        self.max_tokens: int | None = None
        self.prompt_tokens: int | None = None
        self.lookups: list[Lookup] = []
        self.pending_lookups = 0
        self.stores: list[Store] = []
        self.store_starts: list[StoreStart] = []  # not yet paired with a store
        self.retrieves: list[Retrieve] = []
        self.prefetches: list[Prefetch] = []
        self.load_failed_tokens = 0  # of the hit LMCache promised, what it failed to load (the most one rank said)
        self.load_bypassed = False  # its load failed and LMCache's multiprocess connector gave it up
        self.lookup_timed_out = False  # LMCache gave up on its lookup and reported no hit
        # LMCache's multiprocess server found nothing for it: it finished with no prefetch line while
        # vLLM's KV Transfer metrics lines showed its connector being asked (a miss logs nothing at INFO),
        # or the server's lookup end (DEBUG) said it found no chunk.
        self.mp_miss = False
        self.mp_found_chunks: int | None = None  # what the server's lookup found, where it logged its end (DEBUG)
        self.preemptions: list[Preemption] = []
        self.resume_load: ResumeLoad | None = None  # the last resume-load line since the last preemption
        # The span a log record named as the current one (OpenTelemetry-shaped logs):
        # this request's trace joins the client's trace under it.
        self.parent_span_id: int | None = None
        self.end: float | None = None
        self.outcome: str | None = None  # finished, aborted, cancelled, failed, responded, evicted
        self.end_matched: str | None = None  # "id" or "access" (matched by route, first in first out)
        self.failure: str | None = None
        self.error_type: str | None = None
        self.access: Access | None = None
        self.finish_reason: str | None = None
        self.output_tokens: int | None = None
        self.ended_at: float | None = None  # on the builder's clock: when it was ended
        self.write_at = 0.0  # on the reading's clock: when a lingering request is written
        self.scheduled = False  # LMCache looked it up or moved its KV: the engine has it

    @property
    def trace_id_hex(self) -> str:
        return f"{self.trace_id:032x}"

    @property
    def started_in_view(self) -> bool:
        """False when the first line seen was not the request's first (it began before kvwatch looked)."""
        return self.first_kind in ("request_received", "request_added", "lmcache_lookup", "lmcache_lookup_pending")

    @property
    def prompt_prefetch(self) -> Prefetch | None:
        """The multiprocess server's prefetch for the prompt: the first, unless it came after a preemption (a
        resume's, which looks up the output so far too: the prompt's own lookup found nothing)."""
        if not self.prefetches:
            return None
        first = self.prefetches[0]
        if self.preemptions:
            preempted = self.preemptions[0]
            at = preempted.when if preempted.when is not None else preempted.resumed
            if at is not None and first.when > at:
                return None
        return first

    @property
    def waits_preempted(self) -> bool:
        """Preempted and not resumed since: it cannot have been answered."""
        return bool(self.preemptions) and self.preemptions[-1].resumed is None

    def add_output(self, tokens: int | None, finish_reason: str | None) -> None:
        if tokens is not None:
            self.output_tokens = (self.output_tokens or 0) + tokens
        if finish_reason is not None:
            self.finish_reason = finish_reason


Writer = Callable[[OpenRequest], None]


def _no_lmcache_hit(request: OpenRequest) -> bool:
    """A request that completed with no LMCache lookup or prefetch line joined to it: where LMCache's
    multiprocess server was asked for it, it found nothing (that server logs no miss at INFO)."""
    return request.outcome in ("finished", "responded") and request.prompt_prefetch is None and not request.lookups


class TraceBuilder:
    """Joins one source's events into requests and hands finished ones to ``write``.

    ``now`` is the wall clock when following a live log (stamp-less lines take
    it; idle time is measured on it), None in a replay (log time throughout).
    ``sampled`` decides from a trace id whether the writer will keep the trace:
    only sampled traces lend their id to exemplars.  ``linger``: seconds an ended request waits for
    its pieces from the source's other files (0 for a source of one file, whose lines come in order),
    on ``read_clock``."""

    def __init__(
        self,
        stats: ServerStats,
        clock: Clock,
        write: Writer,
        now: Callable[[], float] | None = None,
        sampled: Callable[[int], bool] = lambda trace_id: True,
        max_open: int = DEFAULT_MAX_OPEN,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        linger: float = 0.0,
        read_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.stats = stats
        self.clock = clock
        self.write = write
        self.now = now
        self.sampled = sampled
        self.max_open = max_open
        self.idle_timeout = idle_timeout
        self.linger = linger
        self.read_clock = read_clock
        self.by_id: dict[str, OpenRequest] = {}  # every id a request has shown
        # Open requests first seen by an engine id, by the client id it was made from: read later (another file's
        # line, the LMCache server's log read before vLLM's), that id's own lines join them.
        self.by_client_id: dict[str, OpenRequest] = {}
        self.open: OrderedDict[str, OpenRequest] = OrderedDict()  # by first id, least recently active first
        self.ended: OrderedDict[str, None] = OrderedDict()
        # Requests ended by their id whose access line has yet to come, per route: that
        # line is theirs, not the next open request's.  Held back from the writer for
        # up to HOLD seconds so that it can lend them its status.
        self.held: dict[str, OrderedDict[str, OpenRequest]] = {}
        self.held_count = 0
        # Ended requests waiting ``linger`` for pieces read late from another file, ended first first,
        # and every id they have shown (the client's too).
        self.lingering: OrderedDict[str, OpenRequest] = OrderedDict()
        self.late: dict[str, OpenRequest] = {}
        self.by_route: dict[str, OrderedDict[str, OpenRequest]] = {}  # open requests per route, first seen first
        # ... and those the engine has scheduled (LMCache looked them up or moved their KV):
        # on a server with LMCache, only those can have been answered.
        self.scheduled_by_route: dict[str, OrderedDict[str, OpenRequest]] = {}
        self.lmcache_seen = False
        # vLLM's KV Transfer metrics have counted LMCache MP lookups since the server started: its MP
        # connector is asked for every request the engine schedules.
        self.mp_lookups_reported = False
        # Set once the log ends requests by their id (V0's Finished request, or logged
        # outputs): access lines then only lend their status, since a streamed
        # response's access line comes when its headers go out, not at its end.
        self.ids_end_requests = False
        self.latest: float | None = None  # latest log time seen
        self.evicted: dict[str, int] = dict.fromkeys(EVICTION_REASONS, 0)
        self.ended_by: dict[str, int] = {}
        self.unmatched_ends = 0
        self._countdown = EXPIRE_EVERY
        self._rand = random.Random()
        self._handlers: dict[type, Callable] = {kind: getattr(self, name) for kind, name in _HANDLERS.items()}

    # -- entry points ---------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        handler = self._handlers.get(event.__class__)
        if handler is not None:
            # The event's time (inline: this runs for every request line).
            stamp = event.stamp
            when = self.clock.seconds(stamp) if stamp else None
            if when is None:
                when = self._clock_now()
            elif self.latest is None or when > self.latest:
                self.latest = when
            handler(event, when)
        if self.held_count and self.now is None and self.latest is not None:
            self.release_held(self.latest)
        if self.now is None:
            self._countdown -= 1
            if self._countdown <= 0:
                self._countdown = EXPIRE_EVERY
                if self.latest is not None:
                    self.expire(self.latest)

    def release_held(self, now: float, everything: bool = False) -> None:
        """Write the requests whose access line did not come within :data:`HOLD`."""
        for queue in self.held.values():
            while queue:
                request = next(iter(queue.values()))
                if not everything and (request.ended_at or 0.0) + HOLD > now:
                    break
                self._write_held(request, lingers=False)  # its pieces had those seconds to come

    def release_lingering(self, everything: bool = False) -> None:
        """Write the requests that have waited ``linger`` for pieces from other files."""
        lingering = self.lingering
        now = self.read_clock()
        while lingering:
            request = next(iter(lingering.values()))
            if not everything and request.write_at > now:
                break
            self._write(request)

    def _write_held(self, request: OpenRequest, lingers: bool = True) -> None:
        self.held[request.route].pop(request.id, None)
        self.held_count -= 1
        self._hand_over(request, lingers)

    def _hand_over(self, request: OpenRequest, lingers: bool = True) -> None:
        """An ended request to the writer, or first to wait ``linger`` for late pieces."""
        if self.linger and lingers:
            request.write_at = self.read_clock() + self.linger
            lingering = self.lingering
            lingering[request.id] = request
            self._expect_late(request)
            if len(lingering) > self.max_open:  # bounded as the open table is: the oldest goes now
                self._write(next(iter(lingering.values())))
        else:
            self._write(request)

    def _expect_late(self, request: OpenRequest) -> None:
        late = self.late
        for request_id in request.ids:
            late[request_id] = request
        if request.external is not None:
            late[request.external] = request

    def _write(self, request: OpenRequest) -> None:
        """Hand an ended request to the writer, its end and children as they are now."""
        self.lingering.pop(request.id, None)
        late = self.late
        if late:
            for request_id in (*request.ids, request.external):
                if late.get(request_id) is request:
                    del late[request_id]
        # It ends no earlier than its children: pieces may have joined since its end line.
        end = request.end if request.end is not None else request.start
        for children in (request.stores, request.retrieves, request.lookups, request.prefetches):
            for child in children:
                if child.when > end:
                    end = child.when
        request.end = end
        # The LMCache server's log (another file) may have said since its end that it hit (a prefetch) or missed.
        request.mp_miss = (request.mp_miss or request.mp_found_chunks == 0) and _no_lmcache_hit(request)
        self.write(request)

    def expire(self, now: float) -> int:
        """End requests idle for longer than the timeout; returns how many."""
        if self.held_count:
            self.release_held(now)
        if self.lingering:
            self.release_lingering()
        cutoff = now - self.idle_timeout
        evicted = 0
        while self.open:
            request = next(iter(self.open.values()))
            if request.last_activity >= cutoff:
                break
            self._evict(request, "idle_timeout", request.last_activity)
            evicted += 1
        return evicted

    def close(self, reason: str = "log_ended") -> None:
        """End every open request (the log ended, or kvwatch stops)."""
        when = self._clock_now()
        for request in list(self.open.values()):
            self._evict(request, reason, when)
        self.release_held(when, everything=True)
        self.release_lingering(everything=True)

    @property
    def open_requests(self) -> int:
        return len(self.open)

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [([self.stats.server], self)])

    # -- time -----------------------------------------------------------------------

    def _clock_now(self) -> float:
        if self.now is not None:
            return self.now()
        return self.latest if self.latest is not None else 0.0

    def _activity(self, when: float) -> float:
        return self.now() if self.now is not None else when

    # -- the table ------------------------------------------------------------------

    def _find(self, request_id: str) -> OpenRequest | None:
        request = self.by_id.get(request_id)
        if request is None:
            external = external_request_id(request_id)
            if external is not None:
                request = self._joined(request_id, external)
        return request

    def _joined(self, request_id: str, external: str) -> OpenRequest | None:
        """The open request whose client id an engine id was made from, known by both ids from now on."""
        request = self.by_id.get(external)
        if request is not None:
            self.by_id[request_id] = request
            request.ids.append(request_id)
        return request

    def _request(self, request_id: str | None, when: float, kind: str) -> OpenRequest | None:
        """The open request of an id, opened now if new; None for ids already ended."""
        if not request_id:
            return None
        request = self.by_id.get(request_id)  # _find, inline: this runs for every request line
        if request is None:
            external = external_request_id(request_id)
            if external is not None:
                request = self._joined(request_id, external)
            if request is None:
                return self._opened(request_id, external, when, kind)
        request.last_activity = self.now() if self.now is not None else when
        self.open.move_to_end(request.id)
        if when < request.start:
            request.start = when
        return request

    def _opened(self, request_id: str, external: str | None, when: float, kind: str) -> OpenRequest | None:
        """A request seen for the first time, unless it (or the client id it was made from) ended lately."""
        if self.late:
            # A piece of a request ended and not yet written, read after its end from another file.
            late = self.late.get(request_id) or (self.late.get(external) if external is not None else None)
            if late is not None:
                return late
        if request_id in self.ended or (external is not None and external in self.ended):
            return None
        if external is None and self.by_client_id:
            request = self.by_client_id.pop(request_id, None)
            if request is not None:
                self.by_id[request_id] = request
                request.ids.append(request_id)
                request.start = min(request.start, when)
                return request
        if len(self.open) >= self.max_open:
            oldest = next(iter(self.open.values()))
            self._evict(oldest, "table_full", self._clock_now())
        trace_id = self._rand.getrandbits(128) or 1
        request = OpenRequest(request_id, trace_id, self.sampled(trace_id), when, kind, external)
        request.last_activity = self._activity(when)
        self.by_id[request_id] = request
        self.open[request_id] = request
        if external is not None:
            self.by_client_id[external] = request
        if request.route is not None:
            queue = _queue(self.by_route, request.route)
            queue[request_id] = request
            _in_start_order(queue, request)
        return request

    def _end(self, request: OpenRequest, when: float, outcome: str, matched: str | None, hold: bool = False) -> None:
        request.outcome = outcome
        request.mp_miss = (self.mp_lookups_reported or request.mp_found_chunks == 0) and _no_lmcache_hit(request)
        request.end_matched = matched
        request.end = when if when > request.start else request.start  # and its children's, when written
        request.ended_at = self._activity(when)
        for request_id in request.ids:
            self.by_id.pop(request_id, None)
        if request.external is not None and self.by_client_id.get(request.external) is request:
            del self.by_client_id[request.external]
        self.open.pop(request.id, None)
        if request.route is not None:
            self.by_route[request.route].pop(request.id, None)
            scheduled = self.scheduled_by_route.get(request.route)
            if scheduled:
                scheduled.pop(request.id, None)
        ended = self.ended
        ended[request.id] = None
        if request.external is not None:
            ended[request.external] = None  # "Request X aborted." names the client's id
        if len(request.ids) > 1:  # engine ids joined later: their client ids are ids of its own
            for request_id in request.ids[1:]:
                ended[request_id] = None
        while len(ended) > RECENTLY_ENDED:
            ended.popitem(last=False)
        self.ended_by[outcome] = self.ended_by.get(outcome, 0) + 1
        if hold and request.route is not None:
            _queue(self.held, request.route)[request.id] = request
            self.held_count += 1
            if self.linger:
                self._expect_late(request)
        else:
            self._hand_over(request)

    def _evict(self, request: OpenRequest, reason: str, when: float) -> None:
        self.evicted[reason] = self.evicted.get(reason, 0) + 1
        request.failure = reason
        self._end(request, when, "evicted", None)

    def _end_by_id(self, request_id: str, when: float, outcome: str, error_type: str | None = None) -> None:
        request = self._find(request_id)
        if request is None:
            if request_id not in self.ended and (external_request_id(request_id) or "") not in self.ended:
                self.unmatched_ends += 1
            return
        if error_type is not None:
            request.error_type = error_type
        self._end(request, when, outcome, "id", hold=request.access is None)

    def _scheduled(self, request: OpenRequest, every_request: bool = True) -> None:
        """The engine has run the request.  ``every_request``: the line is one LMCache prints for every
        request it runs (in-process lookups, stores), so an access line closes only requests it named;
        the multiprocess server's prefetch line is printed only on a hit, so it does not."""
        if every_request:
            self.lmcache_seen = True
        if request.scheduled or request.outcome is not None:  # not an ended request's late piece
            return
        request.scheduled = True
        if request.route is not None:
            _queue(self.scheduled_by_route, request.route)[request.id] = request

    # -- handlers ---------------------------------------------------------------------

    def _received(self, e: ev.RequestReceived, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            if e.max_tokens is not None:
                request.max_tokens = e.max_tokens
            if e.prompt_tokens is not None:
                request.prompt_tokens = e.prompt_tokens
            self._join_trace(request, e.trace_id, e.span_id)

    def _added(self, e: ev.RequestAdded, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            self._join_trace(request, e.trace_id, e.span_id)

    def _join_trace(self, request: OpenRequest, trace_id: str | None, span_id: str | None) -> None:
        """Put the request under the trace its log record named (the client's distributed trace)."""
        if trace_id is None:
            return
        request.trace_id = int(trace_id, 16)
        request.sampled = self.sampled(request.trace_id)
        if span_id is not None:
            request.parent_span_id = int(span_id, 16)

    def _lookup(self, e: ev.LmcacheLookup, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is None:
            return
        self._scheduled(request)
        request.lookups.append(
            Lookup(when, e.total_tokens, e.hit_tokens, e.need_to_load, e.engine_computed_tokens, e.min_retrieve_tokens)
        )
        if request.sampled and e.total_tokens > 0:
            # The stats already counted this lookup; give its bucket this trace as exemplar.
            self.stats.hit_ratio.mark(e.hit_tokens / e.total_tokens, request.trace_id_hex, when)

    def _lookup_pending(self, e: ev.LmcacheLookupPending, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            request.pending_lookups += 1

    def _store_start(self, e: ev.LmcacheStoreStart, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            self._scheduled(request)
            request.store_starts.append(StoreStart(when, e.tokens, e.total_tokens, e.skip_leading_tokens, e.rank))

    def _store(self, e: ev.LmcacheStore, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is None:
            return
        self._scheduled(request)
        cost = e.cost_ms / 1000.0 if e.cost_ms is not None else 0.0
        start = None
        for i, pending in enumerate(request.store_starts):  # the oldest of the same rank
            if pending.rank == e.rank:
                start = request.store_starts.pop(i)
                break
        request.stores.append(
            Store(
                when,
                cost,
                e.stored_tokens,
                e.total_tokens,
                e.size_gb,
                e.throughput_gbps,
                e.offload_ms,
                e.put_ms,
                e.rank,
                start,
            )
        )

    def _retrieve(self, e: ev.LmcacheRetrieve, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is None:
            return
        self._scheduled(request)
        cost = e.cost_ms / 1000.0 if e.cost_ms is not None else 0.0
        request.retrieves.append(
            Retrieve(
                when, cost, e.retrieved_tokens, e.required_tokens, e.total_tokens, e.size_gb, e.throughput_gbps, e.rank
            )
        )

    def _prefetch(self, e: ev.LmcachePrefetch, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is None:
            return
        self._scheduled(request, every_request=False)
        request.prefetches.append(Prefetch(when, e.hit_keys, e.requested_keys, e.l1_keys, e.l2_keys, e.ms))

    def _mp_lookup(self, e: ev.LmcacheMpLookup, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None and request.mp_found_chunks is None:  # the prompt's (a resume looks up again)
            request.mp_found_chunks = e.found_chunks

    def _preempted(self, e: ev.RequestPreempted, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            self._scheduled(request, every_request=False)  # it ran
            request.preemptions.append(Preemption(when, None, None))
            request.resume_load = None

    def _resume_load(self, e: ev.LmcacheResumeLoad, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            request.resume_load = ResumeLoad(e.hit_tokens, e.need_to_load, e.engine_computed_tokens)

    def _resumed(self, e: ev.RequestResumed, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is None:
            return
        self._scheduled(request, every_request=False)
        preemptions = request.preemptions
        if preemptions and preemptions[-1].resumed is None:
            preemptions[-1] = preemptions[-1]._replace(resumed=when, load=request.resume_load)
        else:
            preemptions.append(Preemption(None, when, request.resume_load))
        request.resume_load = None

    def _load_failed(self, e: ev.LmcacheLoadFailed, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            request.load_failed_tokens = max(request.load_failed_tokens, e.tokens)  # each rank says it

    def _load_bypassed(self, e: ev.LmcacheLoadBypassed, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)
        if request is not None:
            request.load_bypassed = True

    def _lookup_timeout(self, e: ev.LmcacheLookupTimeout, when: float) -> None:
        request = self._request(e.request_id, when, e.kind)  # none for an RPC's timeout: it names no request
        if request is not None:
            request.lookup_timed_out = True

    def _finished(self, e: ev.RequestFinished, when: float) -> None:
        self.ids_end_requests = True
        self._end_by_id(e.request_id, when, "finished")

    def _generated(self, e: ev.ResponseGenerated, when: float) -> None:
        if e.stream == "delta":  # one streamed piece: the request goes on
            request = self._request(e.request_id, when, e.kind)
            if request is not None:
                request.add_output(e.output_tokens, e.finish_reason)
            return
        request = self._find(e.request_id)
        if request is not None:
            request.add_output(e.output_tokens, e.finish_reason)
        self.ids_end_requests = True
        self._end_by_id(e.request_id, when, "finished")

    def _aborted(self, e: ev.RequestAborted, when: float) -> None:
        self._end_by_id(e.request_id, when, "aborted", "aborted")

    def _cancelled(self, e: ev.RequestCancelled, when: float) -> None:
        self._end_by_id(e.request_id, when, "cancelled", "cancelled")

    def _failed(self, e: ev.RequestFailed, when: float) -> None:
        self._end_by_id(e.request_id, when, "failed", e.reason)

    def _kv_load_failure(self, e: ev.KvLoadFailure, when: float) -> None:
        for request_id in e.request_ids or ():  # failed under kv_load_failure_policy=fail; the others go on
            self._end_by_id(request_id, when, "failed", "kv_load_failure")

    def _access(self, e: ev.HttpAccess, when: float) -> None:
        route = route_of(e.path)  # the OpenAI route, also where a platform mounts it under a prefix
        held = self.held.get(route)
        if held:
            request = next(iter(held.values()))
            self._attach(request, e)
            self._write_held(request)
            return
        queue = self.by_route.get(route)
        if not queue or 400 <= e.status < 500:
            # A 4xx is nearly always a request refused before the engine saw it, so
            # not one of ours unless it ended by its id (held, above).
            return
        if self.ids_end_requests:
            for request in queue.values():
                if request.access is None:
                    self._attach(request, e)
                    return
            return
        if self.lmcache_seen:
            queue = self.scheduled_by_route.get(route)
            if not queue:
                return  # nothing of ours has run yet: it answers a request begun before we looked
        # First seen, first answered (the line names no request), unless it waits preempted.
        candidates = iter(queue.values())
        oldest = next(candidates)
        if oldest.waits_preempted:
            oldest = next((request for request in candidates if not request.waits_preempted), oldest)
        self._attach(oldest, e)
        self._end(oldest, when, "responded", "access")

    @staticmethod
    def _attach(request: OpenRequest, e: ev.HttpAccess) -> None:
        request.access = Access(e.method, e.path, e.status, e.client)
        if e.status >= 500 and request.error_type is None:
            request.error_type = str(e.status)

    def _kv_transfer(self, e: ev.KvTransferStats, when: float) -> None:
        if not self.mp_lookups_reported:
            self.mp_lookups_reported = any(
                value > 0 and key.lower() in MP_LOOKUP_KEYS for key, value in e.values.items()
            )

    def _server_starting(self, e: ev.ServerStarting, when: float) -> None:
        # Another run, perhaps with other settings: what the log showed of the last one (LMCache, its MP
        # connector asked, ids that end requests) is learned again from this one's lines.
        self.lmcache_seen = self.mp_lookups_reported = self.ids_end_requests = False
        self._end_run("server_restart", when)

    def _server_shutdown(self, e: ev.ServerShutdown | ev.ServiceExited, when: float) -> None:
        self._end_run("server_stopped", when)

    def _end_run(self, reason: str, when: float) -> None:
        """Requests of a run that ended at ``when`` will never end.  One begun later is another run's: read from
        another file before this line (the LMCache server's log given before vLLM's), it goes on."""
        for request in list(self.open.values()):
            if request.start <= when:
                self._evict(request, reason, when)

    def _service_exited(self, e: ev.ServiceExited, when: float) -> None:
        if self.stats.runs_in(e.unit):  # (another unit's end, in a syslog file, is not the server's)
            self._server_shutdown(e, when)


# The builders' series: present while tracing is on (run, or replay --traces).
SPECS = (
    gauge(
        "kvwatch_trace_open_requests",
        "Requests begun and not yet ended in the open-request table.",
        value_of("open_requests"),
        native="vLLM's `vllm:num_requests_running` + `waiting`",
    ),
    counter(
        "kvwatch_trace_requests_total",
        "Requests ended into a trace: finished, aborted, cancelled, failed (by their id), responded (by an "
        "access line), evicted (end never seen).",
        keyed("ended_by"),
        labels="outcome",
        doc=(
            "requests ended into a trace: `finished`, `aborted`, `cancelled`, `failed` (by id), `responded` (by an "
            "access line), `evicted`"
        ),
        native="`vllm:request_success_total`",
    ),
    counter(
        "kvwatch_trace_requests_evicted_total",
        "Requests ended without their end: idle_timeout, table_full, server_restart, server_stopped, log_ended, "
        "agent_stopped.",
        keyed("evicted"),
        labels="reason",
        doc=(
            "requests ended without their end: `idle_timeout`, `table_full`, `server_restart`, `server_stopped`, "
            "`log_ended`, `agent_stopped`"
        ),
    ),
    counter(
        "kvwatch_trace_unmatched_ends_total",
        "End lines naming a request never seen (it began before kvwatch followed the log).",
        value_of("unmatched_ends"),
    ),
)


def builder_families(builders: Iterable[TraceBuilder]) -> Iterator[Metric]:
    return families(SPECS, (([builder.stats.server], builder) for builder in builders))
