"""The numbers kvwatch keeps per server, fed one event at a time.

Plain Python ints, floats and dicts: updating them costs a few attribute
operations per event, which keeps replay near the speed of a bare regex loop.
Views render them on demand -- :mod:`agent.sinks.prometheus` as Prometheus
families at scrape time, :mod:`agent.sinks.summary` as a human report.  Nothing
here knows of regexes or of Prometheus; which values may become labels is
:mod:`agent.sinks.labels`' to say.

Each number is a dataclass field whose metadata says how two parts of one log,
read in parallel, combine (``merge``): summed, the later one's, the larger, or
merged by its own ``merge``.  So a number is declared once, in its field.

A count that needs nothing but its events (one per event, or the sum of one of
their attributes, optionally by the value of another) is not a field at all:
its metric declares it (:func:`agent.sinks.prometheus.counted`), and it is kept
in :attr:`ServerStats.counted`.  Adding such a metric touches the catalogue only.
"""

from __future__ import annotations

import fnmatch
import itertools
import logging
import pickle
import time
import traceback
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any

from agent.sinks.labels import (
    MAX_ENGINES,
    BenchKey,
    bench_results,
    engine_of,
    method_of,
    route_of,
    status_of,
    unit_of,
)
from parsers import events as ev
from parsers.events import GIB, SERVER_ERRORS
from parsers.ids import is_canary
from parsers.timestamps import Clock


@dataclass(frozen=True, slots=True)
class Count:
    """A number kept from events alone: one per event, or the sum of ``amount``, by the value of ``by``."""

    key: str
    amount: str | None = None
    by: str | None = None


# Counts by event type, declared by their metrics.  Importing ``agent.sinks`` imports
# the catalogue (see its ``__init__``), so they are known before any stats exist.
COUNTS: dict[type, list[Count]] = {}


def declare_count(event: type, amount: str | None = None, by: str | None = None) -> Count:
    """Declare (once) a count of ``event`` kept in every :class:`ServerStats`; returns it."""
    rule = Count(f"{event.kind}:{amount or 'events'}:{by or ''}", amount, by)
    rules = COUNTS.setdefault(event, [])
    if rule not in rules:
        rules.append(rule)
    return rule


log = logging.getLogger("kvwatch.stats")

# Bucket upper bounds.  A hit ratio of exactly 0 (a miss) gets its own bucket.
HIT_RATIO_BUCKETS = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
TRANSFER_SECONDS_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)
# An engine step takes from a fraction of a millisecond to seconds: the same range.
ITERATION_SECONDS_BUCKETS = TRANSFER_SECONDS_BUCKETS
# Tokens of one engine step, as vLLM buckets its ``vllm:iteration_tokens_total``.
ITERATION_TOKENS_BUCKETS = (1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384)

# How a field of two parts of one log combines (``merge_fields``).
SUM, LAST, MAX, MIN, MERGE = "sum", "last", "max", "min", "merge"


def counter() -> Any:
    """A count or a sum: parts add up."""
    return field(default=0, metadata={"merge": SUM})


def counts(*keys: str) -> Any:
    """Counts by key (``keys`` there from the start, at 0): parts add up key by key."""
    return field(default_factory=lambda: dict.fromkeys(keys, 0), metadata={"merge": SUM})


def last(default: Any = None) -> Any:
    """A last value (or a dict of them): the later part's wins where it has one."""
    if default is None:
        return field(default=None, metadata={"merge": LAST})
    return field(default_factory=default, metadata={"merge": LAST})


def merged(factory: Callable[[], Any]) -> Any:
    """An object with a ``merge`` of its own (a histogram, a table of engines)."""
    return field(default_factory=factory, metadata={"merge": MERGE})


def merge_fields(mine: Any, later: Any) -> None:
    """Combine ``later`` (the part of the log that follows) into ``mine``, field by field."""
    for f in fields(mine):
        policy = f.metadata.get("merge")
        if policy is None:
            continue
        ours, theirs = getattr(mine, f.name), getattr(later, f.name)
        if policy == MERGE:
            ours.merge(theirs)
        elif isinstance(ours, dict):
            _merge_dict(ours, theirs, policy)
        elif policy == SUM:
            setattr(mine, f.name, ours + theirs)
        elif theirs is None:
            continue
        elif policy == LAST or ours is None or (policy == MAX and theirs > ours) or (policy == MIN and theirs < ours):
            setattr(mine, f.name, theirs)


def _merge_dict(ours: dict, theirs: dict, policy: str) -> None:
    for key, value in theirs.items():
        if policy == SUM:
            ours[key] = ours.get(key, 0) + value
        elif policy == LAST or key not in ours or (policy == MAX and value > ours[key]):
            ours[key] = value


class Histogram:
    """Counts per bucket (not cumulative), a sum and a count; optionally an exemplar per bucket."""

    __slots__ = ("bounds", "count", "counts", "exemplars", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last one is +Inf
        self.sum = 0.0
        self.count = 0
        # (trace id, value, unix time) of the latest traced observation per bucket
        self.exemplars: list[tuple[str, float, float] | None] | None = None

    def mark(self, value: float, trace_id: str, when: float) -> None:
        """Name a trace as the exemplar of the bucket ``value`` falls in (observed separately)."""
        if self.exemplars is None:
            self.exemplars = [None] * len(self.counts)
        self.exemplars[bisect_left(self.bounds, value)] = (trace_id, value, when)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def merge(self, other: Histogram) -> None:
        self.counts = [a + b for a, b in zip(self.counts, other.counts, strict=True)]
        self.sum += other.sum
        self.count += other.count
        if other.exemplars is not None:
            mine = self.exemplars or [None] * len(self.counts)
            self.exemplars = [b if b is not None else a for a, b in zip(mine, other.exemplars, strict=True)]

    def cumulative(self) -> list[int]:
        out, running = [], 0
        for n in self.counts:
            running += n
            out.append(running)
        return out


class Engines(dict):
    """Engine label -> :class:`EngineStatsState`; parts merge engine by engine."""

    def merge(self, later: Engines) -> None:
        for label, state in later.items():
            if label in self:
                self[label].merge(state)
            else:
                self[label] = state


class RunningTotal:
    """A count a log prints as its total so far, which starts again with the server (V0's preemption warning):
    what the totals add up to over every run, exactly also when parts of one log are merged."""

    __slots__ = ("first", "last", "since_first")

    def __init__(self) -> None:
        self.first: int | None = None  # the first total seen
        self.last = 0  # the latest
        self.since_first = 0  # what was added after the first

    def observe(self, total: int) -> None:
        if self.first is None:
            self.first = total
        else:
            self.since_first += self._added(total)
        self.last = total

    def _added(self, total: int) -> int:
        return total - self.last if total >= self.last else total  # lower: the server started again

    @property
    def total(self) -> int:
        return (self.first or 0) + self.since_first

    def merge(self, later: RunningTotal) -> None:
        if later.first is None:
            return
        if self.first is None:
            self.first = later.first
        else:
            self.since_first += self._added(later.first)
        self.since_first += later.since_first
        self.last = later.last


@dataclass(eq=False)
class EngineStatsState:
    """The last values of one engine's stats line, and what accumulates from it."""

    lines: int = counter()
    last_seen: float | None = last()
    gauges: dict[str, float] = last(dict)
    preemptions: int = counter()
    corrupted: int = counter()
    spec_accepted: int = counter()
    spec_drafted: int = counter()
    spec_gauges: dict[str, float] = last(dict)
    peaks: dict[str, float] = field(default_factory=dict, metadata={"merge": MAX})
    # Engine steps (iteration details): dummy steps are counted apart, not observed.
    iteration_seconds: Histogram = merged(lambda: Histogram(ITERATION_SECONDS_BUCKETS))
    iteration_tokens: Histogram = merged(lambda: Histogram(ITERATION_TOKENS_BUCKETS))
    iteration_scheduled_tokens: dict[str, int] = counts()  # phase (context, generation) -> tokens
    iteration_scheduled_requests: dict[str, int] = counts()  # phase -> requests, summed over steps
    dummy_iterations: int = counter()
    # V0's running count of preemptions, printed with every 50th.
    cumulative_preemptions: RunningTotal = merged(lambda: RunningTotal())
    # A diffusion model's denoising (its companion line): committed_tokens, denoising_steps, canvas_positions.
    diffusion: dict[str, int] = counts()
    # Sleep mode: the parts asleep (None until the log shows sleep mode), and each transition's count and seconds.
    asleep: list[str] | None = last()
    paused: bool | None = last()  # the scheduler paused (None until the log shows a pause)
    sleep_transitions: dict[str, int] = counts()
    sleep_transition_seconds: dict[str, float] = counts()

    def merge(self, later: EngineStatsState) -> None:
        merge_fields(self, later)

    def idle(self) -> None:
        """A process started anew: it runs nothing, holds no KV and has hit nothing yet.  vLLM prints no stats
        line while idle, so the last run's values would otherwise stand until the first request."""
        for name in self.gauges:
            self.gauges[name] = 0.0

    def set_gauge(self, name: str, value: float) -> None:
        self.gauges[name] = value
        if name in _PEAKS and value > self.peaks.get(name, -1.0):
            self.peaks[name] = value


MIB = 1 << 20
# The counts an interval's averages stand for: NIXL's transfers, LMCache MP's lookups.
_TRANSFERS = ("num successful transfers", "num_successful_transfers")
MP_LOOKUP_KEYS = ("lmcache mp lookup count",)  # lower case, as the keys are compared
# What the keys of a ``KV Transfer metrics`` line add to: key (lower case, vLLM's
# ``vllm:kv_offload_`` prefix removed) -> (quantity, direction, scale, the count an
# average is multiplied by, or None for a plain amount).
KV_TRANSFER_KEYS: dict[str, tuple[str, str, float, tuple[str, ...] | None]] = {
    # NIXL
    "num successful transfers": ("transfers", "transfer", 1.0, None),
    "num_successful_transfers": ("transfers", "transfer", 1.0, None),
    "num failed transfers": ("failures", "transfer", 1.0, None),
    "num_failed_transfers": ("failures", "transfer", 1.0, None),
    "avg mb per transfer": ("bytes", "transfer", MIB, _TRANSFERS),
    "avg xfer time (ms)": ("seconds", "transfer", 0.001, _TRANSFERS),
    # vLLM's offloading connector (two generations of key names)
    "cpu_to_gpu_total_bytes": ("bytes", "load", 1.0, None),
    "cpu_to_gpu_total_time": ("seconds", "load", 1.0, None),
    "gpu_to_cpu_total_bytes": ("bytes", "store", 1.0, None),
    "gpu_to_cpu_total_time": ("seconds", "store", 1.0, None),
    "load_bytes": ("bytes", "load", 1.0, None),
    "load_time": ("seconds", "load", 1.0, None),
    "load_size_count": ("transfers", "load", 1.0, None),
    "store_bytes": ("bytes", "store", 1.0, None),
    "store_time": ("seconds", "store", 1.0, None),
    "store_size_count": ("transfers", "store", 1.0, None),
    # NIXL and Mooncake (P/D disaggregation): a request whose KV expired before the other instance read it,
    # a notification that came after (the blocks may have been reused), a receive that failed
    "num kv expired reqs": ("expired", "transfer", 1.0, None),
    "num notifs after expiry": ("late_notifications", "transfer", 1.0, None),
    "num failed recvs": ("failures", "receive", 1.0, None),
    # 3FS (HF3FSKVConnector): its saves and loads
    "num save task success": ("transfers", "store", 1.0, None),
    "num save task failed": ("failures", "store", 1.0, None),
    "num load task success": ("transfers", "load", 1.0, None),
    "num load task failed": ("failures", "load", 1.0, None),
    "avg save duration (ms)": ("seconds", "store", 0.001, ("num save task success",)),
    "avg load duration (ms)": ("seconds", "load", 0.001, ("num load task success",)),
    # LMCache's MP connector
    "lmcache mp lookup count": ("lookups", "lookup", 1.0, None),
    "lmcache mp lookup avg latency (ms)": ("seconds", "lookup", 0.001, MP_LOOKUP_KEYS),
}
# Keys derived from the ones above (averages, percentiles, rates): known, not added again.
KV_TRANSFER_DERIVED = frozenset(
    (
        "p90 xfer time (ms)",
        "avg post time (ms)",
        "p90 post time (ms)",
        "throughput (mb/s)",
        "avg number of descriptors",
        "load_size_sum",
        "store_size_sum",
        "stores_skipped",
        "num transfers task",
        "p90 save duration (ms)",
        "p90 load duration (ms)",
    )
)


class KvTransferTotals:
    """What ``KV Transfer metrics`` lines added up to, by (quantity, direction)."""

    __slots__ = ("lines", "totals", "unknown_keys")

    def __init__(self) -> None:
        self.lines = 0
        self.totals: dict[tuple[str, str], float] = {}
        self.unknown_keys = 0

    def observe(self, values: dict[str, float]) -> None:
        self.lines += 1
        normal = {key.lower().removeprefix("vllm:kv_offload_"): value for key, value in values.items()}
        totals = self.totals
        for key, value in normal.items():
            known = KV_TRANSFER_KEYS.get(key)
            if known is None:
                if key not in KV_TRANSFER_DERIVED:
                    self.unknown_keys += 1
                continue
            quantity, direction, scale, per = known
            amount = value * scale
            if per is not None:
                amount *= next((normal[name] for name in per if name in normal), 0.0)
            totals[(quantity, direction)] = totals.get((quantity, direction), 0.0) + amount

    def merge(self, later: KvTransferTotals) -> None:
        self.lines += later.lines
        self.unknown_keys += later.unknown_keys
        for key, value in later.totals.items():
            self.totals[key] = self.totals.get(key, 0.0) + value


class LmcacheServerStarts:
    """Starts of LMCache's multiprocess server, one per start however many lines say it.

    Every release says ``LMCache cache server is running...``; later ones first say where it listens.
    Both lines give a start event, the first with the address: a start without one that follows a start
    with one (not yet followed) is that same start.  Parts of one log merge exactly: a part whose first
    start has no address may continue the start the part before ended on."""

    __slots__ = ("awaiting", "count", "leading")

    def __init__(self) -> None:
        self.count = 0
        self.awaiting = False  # the last start named its address; its second line has not come yet
        self.leading = False  # the first start has no address and followed none (it was counted)

    def observe(self, named: bool) -> None:
        if not named and self.awaiting:
            self.awaiting = False  # the second line of the start just counted
            return
        if not named and not self.count:
            self.leading = True
        self.count += 1
        self.awaiting = named

    def merge(self, later: LmcacheServerStarts) -> None:
        if not later.count:
            return  # no start in it
        if not self.count:
            self.leading = later.leading
        # The later part's first line may end the start this part ended on.
        self.count += later.count - (self.awaiting and later.leading)
        self.awaiting = later.awaiting


class LmcacheWorkers:
    """The vLLM workers LMCache's multiprocess server holds now, by its log: each worker registered since the server's
    last start and neither unregistered nor reaped since (a crashed vLLM says nothing, and its worker stays until
    the server's reaper drops it).  Known only once that start was read (``since_start``): workers registered before
    the log read are not in it.  Parts of one log merge exactly: a later part that read a start stands alone; one
    that did not takes away the workers that left in it and adds those that registered."""

    __slots__ = ("left", "registered", "since_start")

    # Workers kept at most (a server holds a few per vLLM on its host; a bound, whatever a log holds).
    KEPT = 4096

    def __init__(self) -> None:
        self.registered: dict[str, None] = {}  # the workers' ids, in the order they registered
        self.left: dict[str, None] = {}  # workers that left in this part (for the merge with the part before)
        self.since_start = False

    def start(self) -> None:
        self.registered.clear()
        self.left.clear()
        self.since_start = True

    def change(self, instance: str, registered: bool) -> None:
        if registered:
            _kept_last(self.registered, instance, None, self.KEPT)
        else:
            self.registered.pop(instance, None)
            _kept_last(self.left, instance, None, self.KEPT)

    @property
    def count(self) -> int | None:
        """How many workers the server holds now; None before its start was read."""
        return len(self.registered) if self.since_start else None

    def merge(self, later: LmcacheWorkers) -> None:
        if later.since_start:
            self.registered, self.left, self.since_start = dict(later.registered), dict(later.left), True
            return
        for instance in later.left:
            self.registered.pop(instance, None)
            _kept_last(self.left, instance, None, self.KEPT)
        for instance in later.registered:
            _kept_last(self.registered, instance, None, self.KEPT)


def _kept_last(kept: dict[str, Any], key: str, value: Any, most: int) -> None:
    """``key`` put last in a dict kept in order of arrival, at most ``most`` keys long (the oldest goes)."""
    kept.pop(key, None)
    if len(kept) >= most:
        del kept[next(iter(kept))]
    kept[key] = value


class ResumeLoads:
    """Preempted requests resumed with KV LMCache loaded for them (its multiprocess connector): the last
    ``<resume-load>`` line of a request before its resume says what was loaded; that line repeats at every
    scheduling attempt, so only the resume counts it.  Parts of one log merge exactly: a resume whose load line
    is in the part before is paired at the merge."""

    __slots__ = ("loads", "pending", "tokens", "unpaired")

    # Requests with a load line and no resume yet, and resumes with no load line before them, kept at most.
    KEPT = 4096

    def __init__(self) -> None:
        self.loads = 0
        self.tokens = 0
        self.pending: dict[str, int] = {}  # request id -> tokens its last load line was to load
        self.unpaired: list[str] = []  # resumes of this part with no load line before them

    def observe_load(self, request_id: str, tokens: int) -> None:
        _kept_last(self.pending, request_id, tokens, self.KEPT)  # (the oldest that goes: a request aborted meanwhile)

    def observe_resume(self, request_id: str) -> None:
        if not self._paired(request_id) and len(self.unpaired) < self.KEPT:
            self.unpaired.append(request_id)  # recomputed (LMCache had none of it), or its load line came before

    def _paired(self, request_id: str) -> bool:
        """Count the resume of ``request_id`` with its pending load, if it has one."""
        tokens = self.pending.pop(request_id, None)
        if tokens is None:
            return False
        self.loads += 1
        self.tokens += tokens
        return True

    def merge(self, later: ResumeLoads) -> None:
        """``later``'s numbers added (parts are merged in their order in the log)."""
        for request_id in later.unpaired:
            self._paired(request_id)
        self.loads += later.loads
        self.tokens += later.tokens
        for request_id, tokens in later.pending.items():
            self.observe_load(request_id, tokens)


# EngineStats field -> gauge kept for it.  The conditional V1 parts (printed
# only when > 0) read as 0 when a line of that generation omits them.
STATS_GAUGES = (
    "prompt_throughput",
    "generation_throughput",
    "throughput",
    "running",
    "waiting",
    "swapped",
    "deferred",
    "kv_cache_usage",
    "cpu_kv_cache_usage",
    "prefix_cache_hit_rate",
    "cpu_prefix_cache_hit_rate",
    "external_prefix_cache_hit_rate",
    "mm_cache_hit_rate",
    "kv_fetch_waiting",
    "kv_fetch_in_progress",
    "kv_fetch_completed",
)
_ZERO_WHEN_ABSENT = ("deferred", "kv_fetch_waiting", "kv_fetch_in_progress", "kv_fetch_completed")
_PEAKS = ("prompt_throughput", "generation_throughput", "running", "waiting", "kv_cache_usage")


# kvwatch_sink_errors_total's sink for these stats (the pipeline's listeners are named as they are added).
STATS_SINK = "stats"
# Storage backends whose bypass is kept (LMCache names a handful; a log of made-up names stays bounded).
MAX_BACKENDS = 32


def note_sink_error(stats: ServerStats, sink: str, exc: Exception) -> None:
    """Count an event a sink raised ``exc`` on (the events after it still reach every sink), and say so the
    first time for each sink, then in kvwatch_sink_errors_total only.  The log names the exception's type and
    where it was raised, never its message: that may quote the event's text."""
    errors = stats.sink_errors
    first = not errors.get(sink)
    errors[sink] = errors.get(sink, 0) + 1
    if first:
        log.error(
            "%s: the %s sink raised %s on an event; it is skipped there and the events after it are read "
            "(a kvwatch bug: please report it; later ones are counted in kvwatch_sink_errors_total)\n%s",
            stats.server,
            sink,
            type(exc).__name__,
            "".join(traceback.format_tb(exc.__traceback__)).rstrip(),
        )


@dataclass(eq=False)
class ServerStats:
    """Everything kvwatch counts for one server (the ``server`` label)."""

    server: str
    clock: Clock | None = None
    now: Callable[[], float] | None = None  # the wall clock, for stamp-less stats lines
    # lines (maintained by the reading loop)
    lines: int = counter()
    parsed_lines: int = counter()
    skipped: dict[str, int] = counts()
    suspicious: dict[str, int] = counts()
    problems_while_stopping: int = counter()  # problem lines after a shutdown began (not counted as problems)
    sink_errors: dict[str, int] = counts(STATS_SINK)  # events a sink raised on (a kvwatch bug), by sink
    # The span of log time seen, in POSIX seconds (LMCache's millisecond stamps are nearly all distinct:
    # no datetime made per line).
    first_time: float | None = field(default=None, metadata={"merge": MIN})
    last_time: float | None = field(default=None, metadata={"merge": MAX})
    # LMCache
    lookups: int = counter()
    lookup_tokens: int = counter()
    hit_tokens: int = counter()
    need_to_load_tokens: int = counter()
    engine_computed_tokens: int = counter()
    lookups_pending: int = counter()
    lookups_below_min_retrieve: int = counter()
    hit_ratio: Histogram = merged(lambda: Histogram(HIT_RATIO_BUCKETS))
    stores: int = counter()
    stored_tokens: int = counter()
    stored_bytes: float = counter()
    store_duration: Histogram = merged(lambda: Histogram(TRANSFER_SECONDS_BUCKETS))
    store_starts: int = counter()
    store_start_tokens: int = counter()
    retrieves: int = counter()
    retrieved_tokens: int = counter()
    retrieve_requested_tokens: int = counter()
    retrieved_bytes: float = counter()
    retrieve_duration: Histogram = merged(lambda: Histogram(TRANSFER_SECONDS_BUCKETS))
    lookup_timeouts: int = counter()
    lmcache_info: tuple[str, str] | None = last()  # (version, vllm version)
    # LMCache's health monitor: 1 while it holds LMCache unhealthy, 0 after it recovered or the server started anew
    # (None: neither seen); the storage backends its storage manager bypassed (1) or restored (0).
    lmcache_unhealthy: int | None = last()
    lmcache_bypassed_backends: dict[str, int] = last(dict)
    # LMCache's multiprocess server
    prefetches: int = counter()
    prefetch_requested_keys: int = counter()
    prefetch_hit_keys: dict[str, int] = counts()  # tier (l1, l2, unknown) -> keys
    prefetch_duration: Histogram = merged(lambda: Histogram(TRANSFER_SECONDS_BUCKETS))
    l1_used_bytes: float | None = last()
    l1_capacity_bytes: float | None = last()
    server_lookups: int = counter()  # lookups the server's hit-rate summaries covered
    server_lookup_hit_ratio: dict[str, float] = last(dict)  # plane (prefix, non_prefix) -> the last summary's
    lmcache_starts: LmcacheServerStarts = merged(LmcacheServerStarts)
    lmcache_workers: LmcacheWorkers = merged(LmcacheWorkers)
    # LMCache's multiprocess connector in vLLM: preempted requests resumed with KV it loaded
    resume_loads: ResumeLoads = merged(ResumeLoads)
    # KV connectors (vLLM's KV Transfer metrics line)
    kv_transfer: KvTransferTotals = merged(lambda: KvTransferTotals())
    # kvwatch canary requests: kept out of the numbers above, counted here.
    canary_requests: int = counter()
    canary_lookups: int = counter()
    canary_lookup_tokens: int = counter()
    canary_hit_tokens: int = counter()
    # vLLM engine
    engines: Engines = merged(Engines)
    # requests
    received: int = counter()
    added: int = counter()
    finished: int = counter()
    aborted: int = counter()
    cancelled: int = counter()
    # requests a line names one by one as preempted (LMCache's multiprocess connector; V0's warning, which
    # names every 50th with a running count, is counted per engine instead)
    preempted: int = counter()
    failures: dict[str, int] = counts()
    http: dict[tuple[str, str, str], int] = counts()
    # server lifecycle: the transitions seen, in order (repeats folded); merging parts of
    # one log read in parallel replays them to count starts exactly (``merge``).
    lifecycle: list[str] = field(default_factory=list)
    state: str = "unknown"
    starts: int = 0
    shutdowns: int = 0
    ready: int = 0
    lmcache_degraded: int = 0
    version: str | None = last()
    model: str | None = last()
    model_load_seconds: float | None = last()
    model_memory_bytes: float | None = last()
    engine_init_seconds: float | None = last()
    kv_capacity_tokens: int | None = last()
    kv_max_concurrency: float | None = last()
    kv_blocks: dict[str, int] = last(dict)
    kv_cache_memory_bytes: float | None = last()
    # systemd's lines about units, by unit: a unit's journal names its own, a syslog file every unit's.
    # The unit that runs this server, where kvwatch knows it (a journal_unit follow: a name or a glob); only its
    # main process's end stops the server.
    service_unit: str | None = None
    service_exits: dict[tuple[str, str], int] = counts()  # (unit, how) -> ends of its main process
    service_failures: dict[tuple[str, str], int] = counts()  # (unit, result) -> failed results
    service_restarts: dict[str, int] = counts()
    service_oom_kills: dict[str, int] = counts()  # processes killed
    service_start_limit_hits: dict[str, int] = counts()
    service_exit_codes: dict[str, int] = last(dict)  # unit -> its main process's last exit code
    service_exit_signals: dict[str, int] = last(dict)  # unit -> the signal that last ended it
    service_lines: dict[str, int] = counts()  # unit -> systemd's lines about it (its keys: the units labelled)
    # Elastic EP: the data-parallel size the last scaling left, and the smallest a scale-down of this part left
    # (merging parts: the engines past it were idled by this part, whatever an earlier part last saw of them).
    data_parallel_size: int | None = last()
    scaled_down_to: int | None = field(default=None, metadata={"merge": MIN})
    # Sleep mode: worker rank -> (bytes freed, bytes still in use) when it last fell asleep.
    sleep_memory: dict[str, tuple[int, int]] = last(dict)
    # (phase, the compiled part vLLM named or "") -> seconds, of the last start
    startup_steps: dict[tuple[str, str], float] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SERVER_ERRORS, 0), metadata={"merge": SUM})
    # Warning, error and critical lines no parser reads, by (producer, level): every series from the start.
    problems: dict[tuple[str, str], int] = field(
        default_factory=lambda: dict.fromkeys(itertools.product(ev.PROBLEM_PRODUCERS, ev.PROBLEM_LEVELS), 0),
        metadata={"merge": SUM},
    )
    # Those seen before the server's state is known (no start, readiness or shutdown line yet): a part of
    # a log read in parallel does not know whether its server was shutting down (see merge).
    problems_unplaced: dict[tuple[str, str], int] = field(default_factory=dict)
    # The engine_dead errors among ``errors`` seen before the server's state is known: in a part of a log read
    # in parallel they may be the shutdown's own (see merge).
    engine_dead_unplaced: int = 0
    # vllm bench: (family, labels) -> value
    bench: dict[BenchKey, float] = last(dict)
    # Counts declared by their metrics (see COUNTS): key, or (key, label value) -> number.
    counted: dict[Any, float] = counts()

    def __post_init__(self) -> None:
        # Since when these numbers count (unix time): a counter's created timestamp.
        # Kept across kvwatch restarts with the numbers themselves (agent.sinks.checkpoint).
        self.created = (self.now or time.time)()
        self._handlers: dict[type, Callable] = {
            ev.LmcacheLookup: self._lookup,
            ev.HttpAccess: self._http,
            ev.RequestAdded: self._added,
            ev.LmcacheStore: self._store,
            ev.LmcacheRetrieve: self._retrieve,
            ev.EngineStats: self._engine_stats,
            ev.SpecDecodeStats: self._spec_decode,
            ev.EngineIteration: self._iteration,
            ev.DiffusionDecodeStats: self._diffusion,
            ev.EngineMfu: self._mfu,
            ev.EngineSleep: self._sleep,
            ev.SleepMemory: self._sleep_memory,
            ev.EnginePause: self._pause,
            ev.EnginesScaled: self._scaled,
            ev.RequestPreempted: self._preempted,
            ev.RequestResumed: self._resumed,
            ev.LmcacheResumeLoad: self._resume_load,
            ev.LmcacheLookupPending: self._lookup_pending,
            ev.LmcacheStoreStart: self._store_start,
            ev.LmcacheInitialized: self._lmcache_initialized,
            ev.LmcacheDegraded: self._lmcache_degraded,
            ev.LmcacheHealth: self._lmcache_health,
            ev.LmcacheBackendBypass: self._backend_bypass,
            ev.LmcacheLookupTimeout: self._lookup_timeout,
            ev.LmcachePrefetch: self._prefetch,
            ev.LmcacheL1Usage: self._l1_usage,
            ev.LmcacheLookupSummary: self._lookup_summary,
            ev.LmcacheServerStarted: self._lmcache_started,
            ev.LmcacheEngineRegistration: self._registration,
            ev.KvTransferStats: self._kv_transfer,
            ev.StartupPhase: self._startup_phase,
            ev.RequestReceived: self._received,
            ev.RequestFinished: self._finished,
            ev.RequestAborted: self._aborted,
            ev.RequestCancelled: self._cancelled,
            ev.RequestFailed: self._failed,
            ev.ServerStarting: self._starting,
            ev.EngineStarting: self._engine_starting,
            ev.ServerReady: self._ready,
            ev.ServerShutdown: self._shutdown,
            ev.ServiceExited: self._service_exited,
            ev.ServiceFailed: self._service_failed,
            ev.ServiceRestartScheduled: self._service_restart,
            ev.ServiceOomKill: self._service_oom_kill,
            ev.ServiceStartLimitHit: self._service_start_limit,
            ev.ModelLoaded: self._model_loaded,
            ev.EngineInitialized: self._engine_initialized,
            ev.KvCacheCapacity: self._kv_capacity,
            ev.ServerError: self._error,
            ev.BenchThroughput: self._bench,
            ev.BenchTokens: self._bench,
            ev.BenchLatency: self._bench,
            ev.BenchServe: self._bench,
            ev.SuspiciousLine: self._suspicious,
            ev.LogProblem: self._problem,
        }
        for kind, rules in COUNTS.items():
            self._handlers[kind] = self._counting(self._handlers.get(kind), tuple(rules))

    def _counting(self, handler: Callable | None, rules: tuple[Count, ...]) -> Callable[[ev.Event], None]:
        """``handler`` followed by the declared counts of its event type (a kvwatch canary request's left out)."""
        counted = self.counted

        def observe(e: ev.Event) -> None:
            if handler is not None:
                handler(e)
            request_id = getattr(e, "request_id", None)
            if request_id is not None and is_canary(request_id):
                return
            for rule in rules:
                value = 1 if rule.amount is None else getattr(e, rule.amount)
                if value is not None:
                    key = rule.key if rule.by is None else (rule.key, str(getattr(e, rule.by)))
                    counted[key] = counted.get(key, 0) + value

        return observe

    # -- entry point ------------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        handler = self._handlers.get(event.__class__)
        if handler is not None:
            handler(event)

    def count_of(self, rule: Count) -> float:
        """A declared count without ``by``: its total so far."""
        return self.counted.get(rule.key, 0)

    def counts_by(self, rule: Count) -> dict[str, float]:
        """A declared count with ``by``: its total for each value seen so far."""
        return {key[1]: v for key, v in self.counted.items() if isinstance(key, tuple) and key[0] == rule.key}

    @property
    def startup_phases(self) -> dict[str, float]:
        """Seconds of each start-up step of the last start: the compiled parts' steps added up."""
        phases: dict[str, float] = {}
        for (phase, _part), seconds in self.startup_steps.items():
            phases[phase] = phases.get(phase, 0.0) + seconds
        return phases

    @property
    def unparsed_lines(self) -> int:
        """Lines read and decoded whose message no parser read (suspicious and problem lines included)."""
        skipped = sum(self.skipped.values())
        unread = sum(self.suspicious.values()) + sum(self.problem_lines.values()) + self.problems_while_stopping
        return self.lines - skipped - self.parsed_lines + unread

    def note_time(self, stamp: str | None) -> float | None:
        """Resolve a stamp to POSIX seconds and widen the span of log time seen; None if it cannot be resolved."""
        when = self.clock.seconds(stamp) if (self.clock is not None and stamp) else None
        if when is not None:
            if self.first_time is None or when < self.first_time:
                self.first_time = when
            if self.last_time is None or when > self.last_time:
                self.last_time = when
        return when

    # -- LMCache ---------------------------------------------------------------------

    def _lookup(self, e: ev.LmcacheLookup) -> None:
        if is_canary(e.request_id):
            self.canary_lookups += 1
            self.canary_lookup_tokens += e.total_tokens
            self.canary_hit_tokens += e.hit_tokens
            return
        self.lookups += 1
        total = e.total_tokens
        self.lookup_tokens += total
        self.hit_tokens += e.hit_tokens
        if e.min_retrieve_tokens is not None:
            self.lookups_below_min_retrieve += 1
        elif e.need_to_load is not None and e.need_to_load > 0:
            self.need_to_load_tokens += e.need_to_load
        if e.engine_computed_tokens:
            self.engine_computed_tokens += e.engine_computed_tokens
        if total > 0:
            self.hit_ratio.observe(e.hit_tokens / total)

    def _lookup_pending(self, e: ev.LmcacheLookupPending) -> None:
        if is_canary(e.request_id):
            return
        self.lookups_pending += 1

    def _store(self, e: ev.LmcacheStore) -> None:
        if is_canary(e.request_id):
            return
        self.stores += 1
        self.stored_tokens += e.stored_tokens
        if e.size_gb is not None:
            self.stored_bytes += e.size_gb * GIB
        if e.cost_ms is not None:
            self.store_duration.observe(e.cost_ms / 1000.0)

    def _retrieve(self, e: ev.LmcacheRetrieve) -> None:
        if is_canary(e.request_id):
            return
        self.retrieves += 1
        self.retrieved_tokens += e.retrieved_tokens
        if e.required_tokens is not None:
            self.retrieve_requested_tokens += e.required_tokens
        if e.size_gb is not None:
            self.retrieved_bytes += e.size_gb * GIB
        if e.cost_ms is not None:
            self.retrieve_duration.observe(e.cost_ms / 1000.0)

    def _store_start(self, e: ev.LmcacheStoreStart) -> None:
        if is_canary(e.request_id):
            return
        self.store_starts += 1
        self.store_start_tokens += e.tokens

    def _lmcache_initialized(self, e: ev.LmcacheInitialized) -> None:
        if e.version:
            self.lmcache_info = (e.version, e.vllm_version or "")

    def _lmcache_degraded(self, e: ev.LmcacheDegraded) -> None:
        self._transition("degraded")

    def _lmcache_health(self, e: ev.LmcacheHealth) -> None:
        self.lmcache_unhealthy = 0 if e.healthy else 1

    def _backend_bypass(self, e: ev.LmcacheBackendBypass) -> None:
        backends = self.lmcache_bypassed_backends
        if e.backend in backends or len(backends) < MAX_BACKENDS:
            backends[e.backend] = 1 if e.bypassed else 0

    def _lookup_timeout(self, e: ev.LmcacheLookupTimeout) -> None:
        self.lookup_timeouts += 1

    def _prefetch(self, e: ev.LmcachePrefetch) -> None:
        if is_canary(e.request_id):
            return
        self.prefetches += 1
        if e.requested_keys is not None:
            self.prefetch_requested_keys += e.requested_keys
        hits = self.prefetch_hit_keys
        if e.l1_keys is not None and e.l2_keys is not None:
            hits["l1"] = hits.get("l1", 0) + e.l1_keys
            hits["l2"] = hits.get("l2", 0) + e.l2_keys
        else:
            hits["unknown"] = hits.get("unknown", 0) + e.hit_keys
        if e.ms is not None:
            self.prefetch_duration.observe(e.ms / 1000.0)

    def _l1_usage(self, e: ev.LmcacheL1Usage) -> None:
        self.l1_used_bytes = e.used_gib * GIB
        if e.total_gib is not None:
            self.l1_capacity_bytes = e.total_gib * GIB

    def _lookup_summary(self, e: ev.LmcacheLookupSummary) -> None:
        self.server_lookups += e.lookups
        self.server_lookup_hit_ratio["prefix"] = e.prefix_hit_rate
        if e.non_prefix_hit_rate is not None:
            self.server_lookup_hit_ratio["non_prefix"] = e.non_prefix_hit_rate

    def _lmcache_started(self, e: ev.LmcacheServerStarted) -> None:
        self.lmcache_starts.observe(e.url is not None)
        if not (e.url or "").startswith(ev.REMOTE_SERVER_SCHEME):  # the multiprocess server's, not the remote one's
            self.lmcache_workers.start()

    def _registration(self, e: ev.LmcacheEngineRegistration) -> None:
        self.lmcache_workers.change(e.instance, e.change == "registered")

    @property
    def lmcache_server_starts(self) -> int:
        return self.lmcache_starts.count

    def _kv_transfer(self, e: ev.KvTransferStats) -> None:
        if e.values:
            self.kv_transfer.observe(e.values)

    # -- vLLM engine stats ----------------------------------------------------------

    def engine(self, e: ev.Event) -> EngineStatsState:
        """The state of the engine an event names (V0's one engine, ``0``, for an event that names none)."""
        engines = self.engines
        label = engine_of(getattr(e, "engine", None), getattr(e, "engines", None) is not None, engines, len(engines))
        state = engines.get(label)
        if state is None:
            if label == "other":
                log.warning(
                    "%s: more than %d engine numbers in the log; the rest count as engine=other",
                    self.server,
                    MAX_ENGINES,
                )
            state = engines[label] = EngineStatsState()
        return state

    def _engine_stats(self, e: ev.EngineStats) -> None:
        state = self.engine(e)
        state.lines += 1
        when = self.note_time(e.stamp)
        if when is not None:
            state.last_seen = when
        elif self.now is not None:
            state.last_seen = self.now()
        is_v1 = e.running is not None and e.swapped is None
        for name in STATS_GAUGES:
            value = getattr(e, name)
            if value is None and is_v1 and name in _ZERO_WHEN_ABSENT:
                value = 0
            if value is not None:
                state.set_gauge(name, value)
        if e.preempted:
            state.preemptions += e.preempted
        if e.corrupted:
            state.corrupted += e.corrupted

    def _spec_decode(self, e: ev.SpecDecodeStats) -> None:
        state = self.engine(e)
        if e.accepted_tokens:
            state.spec_accepted += e.accepted_tokens
        if e.drafted_tokens:
            state.spec_drafted += e.drafted_tokens
        if e.mean_acceptance_length is not None:
            state.spec_gauges["mean_acceptance_length"] = e.mean_acceptance_length
        if e.draft_acceptance_rate is not None:
            state.spec_gauges["draft_acceptance_rate"] = e.draft_acceptance_rate

    def _diffusion(self, e: ev.DiffusionDecodeStats) -> None:
        state = self.engine(e)
        state.set_gauge("committed_throughput", e.committed_throughput)
        totals = state.diffusion
        for name in ("committed_tokens", "denoising_steps", "canvas_positions"):
            totals[name] = totals.get(name, 0) + getattr(e, name)

    def _iteration(self, e: ev.EngineIteration) -> None:
        state = self.engine(e)
        if e.kv_cache_usage is not None:
            state.set_gauge("kv_cache_usage", e.kv_cache_usage)  # the stats line's gauge, between its lines
        if e.dummy:
            state.dummy_iterations += 1
            return
        state.iteration_seconds.observe(e.elapsed_ms / 1000.0)
        state.iteration_tokens.observe(e.context_tokens + e.generation_tokens)
        tokens, requests = state.iteration_scheduled_tokens, state.iteration_scheduled_requests
        tokens["context"] = tokens.get("context", 0) + e.context_tokens
        tokens["generation"] = tokens.get("generation", 0) + e.generation_tokens
        requests["context"] = requests.get("context", 0) + e.context_requests
        requests["generation"] = requests.get("generation", 0) + e.generation_requests

    def _preempted(self, e: ev.RequestPreempted) -> None:
        if e.cumulative is not None:
            self.engine(e).cumulative_preemptions.observe(e.cumulative)
        elif not is_canary(e.request_id):
            self.preempted += 1

    def _resumed(self, e: ev.RequestResumed) -> None:
        if not is_canary(e.request_id):
            self.resume_loads.observe_resume(e.request_id)

    def _resume_load(self, e: ev.LmcacheResumeLoad) -> None:
        if not is_canary(e.request_id):
            self.resume_loads.observe_load(e.request_id, e.need_to_load)

    def _sleep(self, e: ev.EngineSleep) -> None:
        state = self.engine(e)
        transition = e.transition
        state.sleep_transitions[transition] = state.sleep_transitions.get(transition, 0) + 1
        state.sleep_transition_seconds[transition] = state.sleep_transition_seconds.get(transition, 0.0) + e.seconds
        state.asleep = ev.asleep_after(state.asleep, e)

    def _scaled(self, e: ev.EnginesScaled) -> None:
        self.data_parallel_size = e.engines
        if e.direction == "down":
            self._idle_from(e.engines)
            if self.scaled_down_to is None or e.engines < self.scaled_down_to:
                self.scaled_down_to = e.engines

    def _idle_from(self, size: int) -> None:
        """The engines a scale-down took away (rank ``size`` and up) run nothing any more."""
        for label, state in self.engines.items():
            if label.isdigit() and int(label) >= size:
                state.idle()

    def _pause(self, e: ev.EnginePause) -> None:
        self.engine(e).paused = e.state != "unpaused"

    def _sleep_memory(self, e: ev.SleepMemory) -> None:
        self.sleep_memory[str(e.rank or 0)] = (e.freed_bytes, e.in_use_bytes)

    def _mfu(self, e: ev.EngineMfu) -> None:
        gauges = self.engine(e).gauges
        gauges["flops_per_second"] = e.tflops_per_device * 1e12
        gauges["memory_bytes_per_second"] = e.gbps_per_device * 1e9

    # -- requests ---------------------------------------------------------------------

    def _received(self, e: ev.RequestReceived) -> None:
        if is_canary(e.request_id):
            return
        self.received += 1

    def _added(self, e: ev.RequestAdded) -> None:
        if not self.ready:
            self._taken()
        if is_canary(e.request_id):
            self.canary_requests += 1
            return
        self.added += 1

    def _finished(self, e: ev.RequestFinished) -> None:
        self.finished += 1

    def _aborted(self, e: ev.RequestAborted) -> None:
        self.aborted += 1

    def _cancelled(self, e: ev.RequestCancelled) -> None:
        self.cancelled += 1

    def _failed(self, e: ev.RequestFailed) -> None:
        self.failures[e.reason] = self.failures.get(e.reason, 0) + 1

    def _http(self, e: ev.HttpAccess) -> None:
        key = (method_of(e.method), route_of(e.path), status_of(e.status))
        self.http[key] = self.http.get(key, 0) + 1
        if not self.ready:
            self._taken()

    # -- lifecycle ---------------------------------------------------------------------
    # One start logs several "starting" and "ready" lines (version banner, engine
    # init, uvicorn), so starts, readiness and shutdowns follow state changes.

    def _transition(self, token: str) -> None:
        if not self.lifecycle or self.lifecycle[-1] != token:
            self.lifecycle.append(token)
        self._apply(token)

    def _apply(self, token: str) -> None:
        if token == "starting":
            if self.state != "starting":
                self.starts += 1
                self.ready = 0
                self.lmcache_degraded = 0
            self.state = "starting"
        elif token == "ready":
            self.state = "ready"
            self.ready = 1
        elif token == "stopped":
            if self.state != "stopped":
                self.shutdowns += 1
            self.state = "stopped"
            self.ready = 0
        elif token == "degraded":
            self.lmcache_degraded = 1
        elif token == "serving" and self.state == "unknown":
            self.ready = 1  # (the state stays unknown: no start or ready line was seen)

    def _taken(self) -> None:
        """A request the server took (its access line, or vLLM adding it): it answers, though the log read so
        far showed no start -- kvwatch began reading it while the server ran.  Once a start, ready or shutdown
        line was seen, those lines alone say."""
        if self.state == "unknown":
            self._transition("serving")

    def _starting(self, e: ev.ServerStarting) -> None:
        self.note_time(e.stamp)
        if self.state != "starting":
            self.startup_steps = {}  # the steps of this start replace the last one's
        self._started_anew()
        self._transition("starting")
        if e.version:
            self.version = e.version
        if e.model:
            self.model = e.model

    def _engine_starting(self, e: ev.EngineStarting) -> None:
        if e.data_parallel_size is not None:
            self.data_parallel_size = e.data_parallel_size
        if e.version:
            self.version = e.version
        if e.model:
            self.model = e.model

    def _ready(self, e: ev.ServerReady) -> None:
        self._transition("ready")

    def _shutdown(self, e: ev.ServerShutdown | ev.ServiceExited) -> None:
        self._transition("stopped")
        self._at_work()

    # -- the service manager (systemd) -------------------------------------------------

    def runs_in(self, unit: str) -> bool:
        """Whether ``unit`` is the one that runs this server (known for a journal_unit follow only)."""
        return self.service_unit is not None and fnmatch.fnmatchcase(unit, self.service_unit)

    def _unit(self, unit: str) -> str:
        """The label of a unit systemd's line names (counted)."""
        label = unit_of(unit, self.service_lines, len(self.service_lines))
        self.service_lines[label] = self.service_lines.get(label, 0) + 1
        return label

    def _service_exited(self, e: ev.ServiceExited) -> None:
        unit = self._unit(e.unit)
        key = (unit, e.how)
        self.service_exits[key] = self.service_exits.get(key, 0) + 1
        if e.exit_code is not None:
            self.service_exit_codes[unit] = e.exit_code
        if e.signal is not None:
            self.service_exit_signals[unit] = e.signal
        if self.runs_in(e.unit):
            # The server's processes are gone, whether or not it logged its shutdown (an OOM kill or a signal
            # leaves no line of its own).
            self._shutdown(e)

    def _service_failed(self, e: ev.ServiceFailed) -> None:
        key = (self._unit(e.unit), e.result)
        self.service_failures[key] = self.service_failures.get(key, 0) + 1

    def _service_restart(self, e: ev.ServiceRestartScheduled) -> None:
        unit = self._unit(e.unit)
        self.service_restarts[unit] = self.service_restarts.get(unit, 0) + 1

    def _service_oom_kill(self, e: ev.ServiceOomKill) -> None:
        unit = self._unit(e.unit)
        self.service_oom_kills[unit] = self.service_oom_kills.get(unit, 0) + e.processes

    def _service_start_limit(self, e: ev.ServiceStartLimitHit) -> None:
        unit = self._unit(e.unit)
        self.service_start_limit_hits[unit] = self.service_start_limit_hits.get(unit, 0) + 1

    def _started_anew(self) -> None:
        """A new run of the server: no engine asleep or paused, and none running anything yet; its LMCache starts
        healthy, bypassing no backend."""
        self._at_work()
        for state in self.engines.values():
            state.idle()
        self.lmcache_unhealthy = 0
        backends = self.lmcache_bypassed_backends
        for backend in backends:
            backends[backend] = 0

    def _at_work(self) -> None:
        """No engine asleep or paused: the server's processes ended (or start anew, awake and going)."""
        for state in self.engines.values():
            if state.asleep:
                state.asleep = []
            if state.paused:
                state.paused = False

    def _model_loaded(self, e: ev.ModelLoaded) -> None:
        if e.seconds is not None:
            self.model_load_seconds = e.seconds
        if e.memory_gib is not None:
            self.model_memory_bytes = e.memory_gib * GIB

    def _engine_initialized(self, e: ev.EngineInitialized) -> None:
        self.engine_init_seconds = e.seconds

    def _startup_phase(self, e: ev.StartupPhase) -> None:
        if e.phase == "kv_cache_memory":
            if e.bytes is not None:
                self.kv_cache_memory_bytes = e.bytes
        elif e.seconds is not None:
            self.startup_steps[(e.phase, e.part or "")] = e.seconds

    def _kv_capacity(self, e: ev.KvCacheCapacity) -> None:
        if e.tokens is not None:
            self.kv_capacity_tokens = e.tokens
        if e.max_concurrency is not None:
            self.kv_max_concurrency = e.max_concurrency
        if e.gpu_blocks is not None:
            self.kv_blocks["gpu"] = e.gpu_blocks
        if e.cpu_blocks is not None:
            self.kv_blocks["cpu"] = e.cpu_blocks

    def _error(self, e: ev.ServerError) -> None:
        self.note_time(e.stamp)
        if e.error == "engine_dead" and self.state == "stopped":
            # The engine going away once the server began its shutdown (vLLM 0.26 and later log an
            # EngineDeadError traceback on every SIGTERM): the stop asked for it, no fault to count.
            return
        self.errors[e.error] = self.errors.get(e.error, 0) + 1
        if e.error == "engine_dead" and self.state == "unknown":
            self.engine_dead_unplaced += 1

    # -- vllm bench --------------------------------------------------------------------

    def _bench(self, e: ev.Event) -> None:
        for key, value in bench_results(e):
            self.bench[key] = value

    def _suspicious(self, e: ev.SuspiciousLine) -> None:
        self.suspicious[e.family] = self.suspicious.get(e.family, 0) + 1

    def _problem(self, e: ev.LogProblem) -> None:
        if self.state == "stopped":
            # Once the server began to shut down, the tracebacks of its processes going away (vLLM 0.26
            # and later log one on every SIGTERM) are the stop asked for, not faults to count.
            self.problems_while_stopping += 1
            return
        counts = self.problems if self.state != "unknown" else self.problems_unplaced
        key = (e.producer, e.level)
        counts[key] = counts.get(key, 0) + 1

    @property
    def stopped(self) -> int:
        """1 while the log's last start, ready or shutdown line was a shutdown."""
        return int(self.state == "stopped")

    @property
    def problem_lines(self) -> dict[tuple[str, str], int]:
        """Warning, error and critical lines counted, by (producer, level)."""
        if not self.problems_unplaced:
            return self.problems
        return {key: count + self.problems_unplaced.get(key, 0) for key, count in self.problems.items()}

    # -- combining parts of one log read in parallel ---------------------------------

    def merge(self, later: ServerStats) -> None:
        """Add the stats of the part of the same log that follows this one."""
        ended_in = self.state  # the later part's lines before its first transition belong to this state
        restarted = "starting" in later.lifecycle
        if later.problems_unplaced:
            if ended_in == "stopped":
                self.problems_while_stopping += sum(later.problems_unplaced.values())
            else:
                counts = self.problems if ended_in != "unknown" else self.problems_unplaced
                for key, count in later.problems_unplaced.items():
                    counts[key] = counts.get(key, 0) + count
        if ended_in == "unknown":
            self.engine_dead_unplaced += later.engine_dead_unplaced
        # What the later part's start, stop or scale-downs did to the engines this part knows, as one pass would.
        if restarted:
            self._started_anew()
        else:
            if "stopped" in later.lifecycle:
                self._at_work()
            if later.scaled_down_to is not None:
                self._idle_from(later.scaled_down_to)
        merge_fields(self, later)
        if ended_in == "stopped":
            # Its engine_dead errors before its first transition: the engine going away in the stop this part ended in.
            self.errors["engine_dead"] -= later.engine_dead_unplaced
        self.created = min(self.created, later.created)
        if restarted:
            self.startup_steps = dict(later.startup_steps)  # the later part saw a new start
        else:
            self.startup_steps.update(later.startup_steps)
        # Lifecycle counts follow state changes, and the later part began in an
        # unknown state: replay both parts' transitions as one sequence.
        sequence = self.lifecycle + later.lifecycle
        self.lifecycle = []
        self.state, self.starts, self.shutdowns, self.ready, self.lmcache_degraded = "unknown", 0, 0, 0, 0
        for token in sequence:
            self._transition(token)

    def snapshot(self) -> ServerStats:
        """A copy to render from while this one counts on: its numbers, neither its clock nor its handlers.

        A copy observes nothing, and without the handlers (methods bound to it) it holds no reference
        cycle: it is freed as soon as it is rendered, not by the next full pass of the garbage collector."""
        copy = ServerStats.__new__(ServerStats)
        copy.__dict__.update(pickle.loads(pickle.dumps(self.__getstate__(), pickle.HIGHEST_PROTOCOL)))
        copy.clock = copy.now = None
        copy._handlers = {}
        return copy

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        for name in ("_handlers", "clock", "now"):
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["server"])  # handlers bound to this instance
        self.__dict__.update(state)
