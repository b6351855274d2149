"""LMCache's cache lines: lookups, store/retrieve (in-process engine and MP server), lifecycle.

Only messages under LMCache's own log header reach these functions, so an
exception text such as ``RuntimeError: Stored 12 out of total 40 tokens`` or
the Mooncake connector's ``Reqid: ..., kvpool hit tokens`` (vLLM's header) is
never read as a cache event.
"""

from __future__ import annotations

import re

from parsers.events import (
    REMOTE_SERVER_SCHEME,
    Event,
    LmcacheBackendBypass,
    LmcacheDegraded,
    LmcacheEngineRegistration,
    LmcacheHealth,
    LmcacheInitialized,
    LmcacheKeysFailed,
    LmcacheL1Usage,
    LmcacheLoadBypassed,
    LmcacheLoadFailed,
    LmcacheLookup,
    LmcacheLookupPending,
    LmcacheLookupSummary,
    LmcacheLookupTimeout,
    LmcacheMpLookup,
    LmcacheParser,
    LmcachePrefetch,
    LmcacheResumeLoad,
    LmcacheRetrieve,
    LmcacheServerStarted,
    LmcacheStore,
    LmcacheStoreSkipped,
    LmcacheStoreStart,
    LmcacheUnhealthySkip,
    LmcacheUnregisteredWorker,
    LmcacheWorkerAdapter,
    RequestPreempted,
    RequestResumed,
)
from parsers.shapes import DECIMAL, INTEGER, Shape, decimal, opens_with, ratio, set_members


# Builders run once per matching line: conversions are written inline (no helper calls).
def _build_lookup(stamp: str | None, rank: int | None, g: tuple) -> LmcacheLookup:
    computed, min_retrieve = g[2], g[5]
    return LmcacheLookup(
        stamp,
        g[0],
        int(g[1]),
        int(g[3]),
        int(g[4]),
        int(computed) if computed is not None else None,
        int(min_retrieve) if min_retrieve is not None else None,
    )


# The lookup line of 0.3.0-0.3.13 and >= 0.3.14 (computed tokens, the min_retrieve skip) in one pass.
LOOKUP = Shape(
    rf"Reqid: ([^, ]+), Total tokens ({INTEGER}), (?:Inference Engine computed tokens: ({INTEGER}), )?"
    rf"LMCache hit tokens: ({INTEGER}), (?:but )?need to load: (-?{INTEGER})(?: < min_retrieve ({INTEGER}))?",
    _build_lookup,
)


def _request_id(text: str | None) -> str | None:
    return text if text != "unspecified" else None


def _build_stored(stamp: str | None, rank: int | None, g: tuple) -> LmcacheStore:
    request_id, size, cost, rate, offload, put = g[0], g[3], g[4], g[5], g[6], g[7]
    return LmcacheStore(
        stamp,
        request_id if request_id != "unspecified" else None,
        int(g[1]),
        int(g[2]),
        float(size) if size is not None else None,
        float(cost) if cost is not None else None,
        float(rate) if rate is not None else None,
        float(offload) if offload is not None else None,
        float(put) if put is not None else None,
        rank,
    )


# What a store or a retrieve measured: size, cost (``total time`` in older releases) and throughput -- each on its
# own, as a guide or a paste that abridged the line keeps some of them (LMCache writes all three, or none in 0.3.0's
# DEBUG line).
_MEASURED = (
    rf"(?: size: ({DECIMAL}) [gG][bB],?)?(?: (?:cost|total time) ({DECIMAL}) ms,?)?(?: throughput: ({DECIMAL}) GB/s)?"
)
_MEASURED_ANY = r"(?: size: [\d.]+ [gG][bB],?)?(?: (?:cost|total time) [\d.]+ m?s,?)?(?: throughput: [\d.]+ GB/s)?"

# cache_engine's store line, with LMCache >= 0.3.15's request tag.
STORED = Shape(
    rf"(?:\[req_id=([^\]]*)\] )?Stored ({INTEGER}) out of total ({INTEGER}) tokens\.?{_MEASURED}"
    rf"(?:; offload_time: ({DECIMAL}) ms, put_time: ({DECIMAL}) ms)?",
    _build_stored,
)


def _build_retrieved(stamp: str | None, rank: int | None, g: tuple) -> LmcacheRetrieve:
    request_id, required, total, size, cost, rate = g[0], g[2], g[3], g[6], g[7], g[8]
    if required is None:
        required, total = g[4], g[5]
    return LmcacheRetrieve(
        stamp,
        request_id if request_id != "unspecified" else None,
        int(g[1]),
        int(required),
        int(total) if total is not None else None,
        float(size) if size is not None else None,
        float(cost) if cost is not None else None,
        float(rate) if rate is not None else None,
        rank,
    )


# ``Retrieved R out of Q required tokens (from T total tokens)`` (0.3.7+) and the older
# ``Retrieved R out of [total] Q out of total T tokens``; a guide's abridged ``... required tokens.`` (its period
# tells it from a piece of a wrapped line, which the next piece completes).
RETRIEVED = Shape(
    rf"(?:\[req_id=([^\]]*)\] )?Retrieved ({INTEGER}) out of "
    rf"(?:({INTEGER}) required tokens(?: \(from ({INTEGER}) total tokens\)|(?=\.))|"
    rf"(?:total )?({INTEGER}) out of total ({INTEGER}) tokens)\.?{_MEASURED}",
    _build_retrieved,
)

# Whole-line shapes of the messages above, for lines that lost their header.  A lookup line may
# carry more ``<name> tokens: N`` counts before the hit (as the part-by-part reader allows).
LOOKUP_ANY = (
    r"Reqid: [^, ]+, Total tokens \d+, (?:[A-Za-z][\w ]* tokens: \d+, )*LMCache hit tokens: "
    r"(?:None|\d+, (?:but )?need to load: -?\d+(?: < min_retrieve \d+)?)"
)
STORED_ANY = (
    r"(?:\[req_id=[^\]]*\] )?Stored \d+ (?:out of (?:total )?\d+ tokens\.?"
    + _MEASURED_ANY
    + r"(?:; offload_time: [\d.]+ ms, put_time: [\d.]+ ms)?|(?:[A-Z]PU )?tokens in [\d.]+ seconds)"
)
RETRIEVED_ANY = (
    r"(?:\[req_id=[^\]]*\] )?Retrieved \d+ (?:out of (?:\d+ required tokens(?: \(from \d+ total tokens\)|(?=\.))"
    r"|(?:total )?\d+ out of total \d+ tokens)\.?" + _MEASURED_ANY + r"|(?:[A-Z]PU )?tokens(?: in [\d.]+ seconds)?)"
)
_REQID = re.compile(r"Reqid: ([^,\s]+), ")
# The labels after the first part (a line ending inside one was cut short).
_LOOKUP_LABELS = (
    "LMCache hit tokens: ",
    "need to load: ",
    "but need to load: ",
    "Inference Engine computed tokens: ",
    "vLLM computed tokens: ",
)
_LOOKUP_PART = re.compile(
    r"(Total tokens|Inference Engine computed tokens|vLLM computed tokens|LMCache hit tokens|(?:but )?need to load)"
    rf":? (-?{INTEGER}|None)(?: < min_retrieve ({INTEGER}))?"
)
# The MP server's store (``N XPU tokens`` on Intel GPUs; no request id).
_STORED_MP = re.compile(rf"(?:\[req_id=([^\]]*)\] )?Stored ({INTEGER}) (?:[A-Z]PU )?tokens in ({DECIMAL}) seconds")
# Any other wording of the cache engine's store line, read field by field (older releases
# said ``total time`` where they now say ``cost``).
_STORED_ANY = re.compile(rf"(?:\[req_id=([^\]]*)\] )?Stored ({INTEGER}) out of (?:total )?({INTEGER}) tokens")
_STORE_PART = re.compile(rf"\b(size|cost|total time|time|throughput):? ({DECIMAL}) ?(GB/s|gb|GB|ms|s)\b")
# Stores that are no request's KV cache: the MP server's Q store, CacheBlend's pre-computed documents.
_STORED_OTHER = re.compile(r"(?:\[req_id=[^\]]*\] )?Stored (?:\d+ Q tokens|(?:final|pre-computed) doc with )")
_STORE_OLD = re.compile(rf"Store ({INTEGER}) tokens takes: ({DECIMAL}) ms, throughput: ({DECIMAL}) GB/s")
# The vLLM V0 adapter's (lmcache_vllm, LMCache 0.1.x-0.2.x) ``Store skips S tokens and then stores N
# tokens``: a store issued, as V1's ``Storing KV cache for N out of S+N tokens`` is -- not a store: 0.2.x's
# cache engine logs its own ``Stored N out of total T tokens`` after it.  ``stores 0 tokens`` issues none.
_STORE_SKIPS = re.compile(rf"Store skips ({INTEGER}) tokens and then stores ({INTEGER}) tokens")
# The legacy (non-v1) cache engine of LMCache 0.1.x-0.3.x, its time a bare float; ``Retrieved 0 chunks``
# alone when nothing was found, ``Retrived`` in v0.1.0-v0.1.2-alpha, the engine's running hit rate
# between the two from 0.2.x.  (Its store line counts chunks, not tokens.)
_RETRIEVED_CHUNKS = re.compile(
    rf"Retrie?ved ({INTEGER}) chunks(?: \(({INTEGER}) tokens in total\) -- ?(?:hit rate {DECIMAL}% -- )?"
    rf"elapsed time ?({DECIMAL}(?:[eE][+-]?\d{{1,3}})?))?"
)
# The MP server's retrieve (``N XPU tokens`` on Intel GPUs, as its store).
_RETRIEVED_MP = re.compile(
    rf"(?:\[req_id=([^\]]*)\] )?Retrieved ({INTEGER}) (?:[A-Z]PU )?tokens in ({DECIMAL}) seconds"
)
# Layer-wise mode: the total after the last layer; LMCache's "(file:line:logger)" trailer may follow.
_RETRIEVED_LAYERWISE = re.compile(rf"(?:\[req_id=([^\]]*)\] )?Retrieved ({INTEGER}) tokens(?: \(| \x1b|$)")
# The first connector (LMCache 0.2, early 2025) printed no skip: it was the tokens not stored, ``M - N``.
STORING = re.compile(
    rf"Storing KV cache for ({INTEGER}) out of ({INTEGER}) tokens(?: \(skip_leading_tokens=({INTEGER})\))?"
    r"(?: for request (\S+))?"
)
PREFETCH = re.compile(
    rf"Prefetch request completed(?: \([^)]*\))?: ({INTEGER})/({INTEGER}) (?:retained keys|prefix hits)"
    rf"(?: \(({INTEGER}) L1, ({INTEGER}) L2\))?(?: in ({DECIMAL}) ms)?(?: \(([^()]*)\))?"
)
_EXTERNAL_ID = re.compile(r"external_request_id=([^,\s)]+)")
L1_USAGE = re.compile(rf"L1 memory usage: ({DECIMAL})/({DECIMAL}) GiB \(({DECIMAL})%\)")
_L1_WATERMARK = re.compile(rf"L1 memory usage {DECIMAL} (?:above|below) watermark {DECIMAL}; ")
# The multiprocess server's start.  Its first releases (late 2025: LMCache 0.3.11's guide shows this
# line alone) say ``LMCache cache server is running...`` once it runs; later ones first say where its
# request server listens, ``LMCache ZMQ cache server is running on tcp://host:port`` (from 0.5.6 the
# transport's name as configured: ``zmq``, ``grpc``), then that line (``LMCache cache blend server is
# running...`` on a CacheBlend server).  Both lines are starts, the first with the address; the stats
# count one start per pair.  The gRPC transport's own ``LMCache gRPC cache server is running on ...``
# between them and ``Starting LMCache HTTP server on URL`` before them in HTTP mode are read as known.
_SERVER_RUNNING = re.compile(r"LMCache (\S+) cache server is running on (\S+)")
_SERVER_RUNS = re.compile(r"LMCache cache (?:blend )?server is running\.\.\.")
SERVER_START_ANY = rf"{_SERVER_RUNNING.pattern}|{_SERVER_RUNS.pattern}"  # either line, as the whole message
# The start of the remote cache server (``python -m lmcache.v1.server HOST PORT``, the ``lm://`` backend several
# vLLM servers share): ``Server started at HOST:PORT``.  Only under LMCache's header: the words are any server's.
# The P2P server inside each vLLM server's engine says them too, before its socket's address as a tuple
# (``Server started at ('0.0.0.0', 8200)``): no cache server's start.
_SERVER_STARTED = "Server started at"
_REMOTE_SERVER_STARTED = re.compile(_SERVER_STARTED + r" (\S+:\d{1,5})(?!\S)")
_INITIALIZED = re.compile(r"LMCache initialized for role (\S+) with version (\S+?),? vllm version (\S+?),")
RPC_TIMEOUT = re.compile(rf"Timeout occurred for rank ({INTEGER})")
# A store cut short because LMCache's local CPU memory is full (0.3.4 on; ``store only`` is followed by two
# blanks), before mid-2025 ``Failed to allocate memory for the KV cache.`` (``The KV cache will not be stored.``
# on the next line); or skipped because its health check failed.
MEMORY_PRESSURE = re.compile(
    rf"Local cpu memory under pressure so choosing to (?:store only +({INTEGER}) total chunks of KV cache"
    r"|not store the KV cache)\."
)
_ALLOCATION_FAILED = "Failed to allocate memory for the KV cache"
# A request whose KV LMCache loaded only in part (its adapter, 0.3.x on).
LOAD_FAILED = re.compile(rf"Request (\S{{1,256}}) failed to load ({INTEGER}) tokens across ({INTEGER}) blocks")
# A request whose lookup the asynchronous lookup client gave up on after its ``lookup_timeout_ms`` (printed in
# whole seconds): it returns no hit tokens and vLLM computes the prompt.
ASYNC_LOOKUP_TIMEOUT = re.compile(rf"Request (\S{{1,256}}) is still waiting for async lookup after ({INTEGER}) seconds")
ASYNC_LOOKUP_GIVEN_UP = ", returning 0 lmcache cached tokens so vllm can recompute"  # the rest of that line
# A vLLM worker's multiprocess connector, and the id the server knows the worker by (LMCache 0.5.5 on).
WORKER_ADAPTER = re.compile(r"LMCache MP worker adapter created with instance_id=(\d+)\b")
# What LMCache skips while its health monitor holds it unhealthy: a store (layer-wise: store_layer), a load
# (retrieve_layer), a lookup.
UNHEALTHY_SKIP = re.compile(r"LMCache is unhealthy, skipping (store|retrieve|lookup)(?:_layer)? operation")
# Its health monitor's verdict, and a storage backend its storage manager bypasses (or restores).
HEALTH = re.compile(r"HealthMonitor: System (unhealthy, entering degraded mode|recovered, restoring normal operations)")
# In multiprocess mode the connector in vLLM keeps its own verdict on the LMCache server (its heartbeats, a lookup
# or a prefetch's status query that timed out: each lookup a miss meanwhile, each store dropped), in LMCache
# 0.5.6's words (its dash is an em dash; a page's typography read back makes it two hyphens).
MP_SERVER_HEALTH = re.compile(
    r"LMCache server is (unhealthy|healthy again) (?:\u2014|--) (?:entering degraded|resuming normal)"
)
MP_LOOKUP_TIMEOUT = re.compile(
    r"(?:LOOKUP to \S{1,256} timed out after [\d.]{1,12}s\.|QUERY_PREFETCH_STATUS to \S{1,256} timed out\.) Marking"
)
MP_STORE_DROPPED = re.compile(r"Dropping store for request \S{1,256} while the server is unhealthy")
BACKEND_BYPASS = re.compile(
    r"StorageManager: Backend (\S{1,128}) (is now bypassed|bypass removed, restored to normal operation)"
)


def parse_lookup(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    event = LOOKUP.parse(line, start, stamp, rank)
    if event is not None:
        return (event,)
    return _parse_lookup_parts(line, start, stamp)


# LMCache-Ascend's lookup for hybrid models (a linear-attention state kept beside the KV cache): the lookup line
# after these words (the hit its boundary, or 0 where nothing is loaded).
HYBRID_LOOKUP = "Hybrid lookup: "


def parse_hybrid_lookup(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    if not line.startswith(HYBRID_LOOKUP, start):
        return ()  # another message that begins with the word
    return parse_lookup(line, start + len(HYBRID_LOOKUP), stamp, rank)


def _parse_lookup_parts(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """Any other arrangement of the same fields (another order, other counts before the hit), read part by part."""
    m = _REQID.match(line, start)
    if m is None:
        return None
    request_id = m.group(1)
    rest = line[m.end() :]
    if rest.startswith("Chunked KV loading"):
        return ()  # DEBUG: a load capped by max_tokens_per_load; the lookup line came before
    values: dict[str, str] = {}
    min_retrieve = None
    end = 0
    for part in _LOOKUP_PART.finditer(rest):
        label = part.group(1)
        values[label.removeprefix("but ")] = part.group(2)
        if part.group(3) is not None:
            min_retrieve = int(part.group(3))
        end = part.end()
    if rest.startswith(",", end) and opens_with(rest, end + 2, _LOOKUP_LABELS):
        return None  # the line ends inside a next part's label: cut short, a wrapped paste's first piece
    total, hit = values.get("Total tokens"), values.get("LMCache hit tokens")
    if total is None or total == "None" or hit is None:
        return None
    # LMCache/LMCache#2550 and #2552 name vLLM's own computed tokens so.
    computed = values.get("Inference Engine computed tokens", values.get("vLLM computed tokens"))
    computed_tokens = int(computed) if computed not in (None, "None") else None
    if hit == "None":
        return (LmcacheLookupPending(stamp, request_id, int(total), computed_tokens),)
    need = values.get("need to load")
    return (
        LmcacheLookup(
            stamp,
            request_id,
            int(total),
            int(hit),
            int(need) if need not in (None, "None") else None,
            computed_tokens,
            min_retrieve,
        ),
    )


def parse_stored(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """A store line, with or without ``[req_id=...]``: cache engine, MP server, LMCache 0.3.0."""
    event = STORED.parse(line, start, stamp, rank)
    if event is not None:
        return (event,)
    m = _STORED_MP.match(line, start)
    if m is not None:
        return (
            LmcacheStore(
                stamp, _request_id(m.group(1)), int(m.group(2)), cost_ms=float(m.group(3)) * 1000.0, rank=rank
            ),
        )
    m = _STORE_OLD.match(line, start)
    if m is not None:
        return (
            LmcacheStore(
                stamp, None, int(m.group(1)), cost_ms=float(m.group(2)), throughput_gbps=float(m.group(3)), rank=rank
            ),
        )
    if _STORED_OTHER.match(line, start):
        return ()
    return _parse_stored_parts(line, start, stamp, rank)


def _parse_stored_parts(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    m = _STORED_ANY.match(line, start)
    if m is None:
        return None
    parts: dict[str, float] = {}
    for part in _STORE_PART.finditer(line, m.end()):
        value = float(part.group(2))
        label, unit = part.group(1), part.group(3)
        if label in ("cost", "total time", "time"):
            parts["ms"] = value * 1000.0 if unit == "s" else value
        else:
            parts[label] = value
    return (
        LmcacheStore(
            stamp,
            _request_id(m.group(1)),
            int(m.group(2)),
            int(m.group(3)),
            parts.get("size"),
            parts.get("ms"),
            parts.get("throughput"),
            rank=rank,
        ),
    )


def parse_store_old(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """LMCache 0.3.0's ``Store N tokens takes: X ms, throughput: Y GB/s; ...``, the V0 adapter's ``Store skips S
    tokens and then stores N tokens``, or the multiprocess server's store task to an L2 adapter that failed."""
    if line.startswith("Store task ", start):
        return _l2_store_failed(line, start, stamp) or ()
    m = _STORE_SKIPS.match(line, start)
    if m is not None:
        skipped, tokens = int(m.group(1)), int(m.group(2))
        return (LmcacheStoreStart(stamp, None, tokens, skipped + tokens, skipped, rank),) if tokens else ()
    return parse_stored(line, start, stamp, rank) or ()


def parse_retrieved(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """A retrieve line, with or without ``[req_id=...]``: cache engine, MP server, layer-wise mode."""
    event = RETRIEVED.parse(line, start, stamp, rank)
    if event is not None:
        return (event,)
    m = _RETRIEVED_MP.match(line, start)
    if m is not None:
        return (
            LmcacheRetrieve(
                stamp, _request_id(m.group(1)), int(m.group(2)), cost_ms=float(m.group(3)) * 1000.0, rank=rank
            ),
        )
    m = _RETRIEVED_LAYERWISE.match(line, start)
    if m is not None:
        return (LmcacheRetrieve(stamp, _request_id(m.group(1)), int(m.group(2)), rank=rank),)
    m = _RETRIEVED_CHUNKS.match(line, start)
    if m is None:
        # CacheBlend's pre-computed chunks put in place: no request's cache hit.
        return () if line.startswith("Retrieved pre-computed ", start) else None
    if m.group(2) is not None:
        return (LmcacheRetrieve(stamp, None, int(m.group(2)), cost_ms=decimal(m.group(3)) * 1000.0, rank=rank),)
    if m.group(1) == "0" and line[m.end() :].lstrip()[:1] in ("", "("):  # the message alone, or its call site
        return (LmcacheRetrieve(stamp, None, 0, rank=rank),)  # a retrieve that found nothing
    return None


def parse_request_tagged(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``[req_id=<id>] Stored ...`` / ``[req_id=<id>] Retrieved ...`` (LMCache >= 0.3.15)."""
    end = line.find("] ", start)
    if end == -1:
        return None
    if line.startswith("Stored ", end + 2):
        return parse_stored(line, start, stamp, rank)
    if line.startswith("Retrieved ", end + 2):
        return parse_retrieved(line, start, stamp, rank)
    return ()


def parse_storing(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    m = STORING.match(line, start)
    if m is None:
        return None if line.startswith("Storing KV cache", start) else ()
    tokens, total, skip = int(m.group(1)), int(m.group(2)), m.group(3)
    return (LmcacheStoreStart(stamp, m.group(4), tokens, total, int(skip) if skip else max(total - tokens, 0), rank),)


def parse_initialized(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """``LMCache initialized for role ...`` (in vLLM), a worker's multiprocess connector made (in vLLM), the
    multiprocess server's start, or what it skipped while unhealthy."""
    m = _INITIALIZED.match(line, start)
    if m is None:
        adapter = WORKER_ADAPTER.match(line, start)
        if adapter is not None:
            return (LmcacheWorkerAdapter(stamp, adapter.group(1)),)
        skipped = UNHEALTHY_SKIP.match(line, start)
        if skipped is not None:
            return _skipped_while_unhealthy(skipped.group(1), stamp, rank)
        health = MP_SERVER_HEALTH.match(line, start)
        if health is not None:
            return (LmcacheHealth(stamp, health.group(1) == "healthy again"),)
        return parse_server_start(line, start, stamp, rank)
    role = m.group(1).rsplit(".", 1)[-1].lower()
    return (LmcacheInitialized(stamp, role, m.group(2), m.group(3)),)


def parse_server_start(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """``LMCache <transport> cache server is running on ADDRESS`` and ``LMCache cache server is running...``."""
    running = _SERVER_RUNNING.match(line, start)
    if running is not None and running.group(1) != "gRPC":
        return (LmcacheServerStarted(stamp, running.group(2)),)
    if _SERVER_RUNS.match(line, start):
        return (LmcacheServerStarted(stamp),)
    return ()


def parse_remote_server_start(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``Server started at HOST:PORT``: the remote cache server's start, its address as ``remote_url`` names it."""
    m = _REMOTE_SERVER_STARTED.match(line, start)
    if m is None:
        # Another message that begins with the word, or the P2P server's address: no start either way.
        if not line.startswith(_SERVER_STARTED, start) or line.startswith(" (", start + len(_SERVER_STARTED)):
            return ()
        return None
    return (LmcacheServerStarted(stamp, REMOTE_SERVER_SCHEME + m.group(1)),)


# A vLLM worker's KV cache joining the multiprocess server or leaving it.  The worker's id is an identifier (a
# random 64-bit number on the non-GPU path), kept as text: no number to count with.
_GPU_REGISTERED = re.compile(rf"Registered KV cache for GPU ID (\d+) with ({INTEGER}) layers")
_CONTEXT_REGISTERED = re.compile(
    rf"Registered non-GPU context for instance (\d+) \(model=(.*?), world_size=({INTEGER})(?:, \w+=\d+)*\)"
)
_GPU_UNREGISTERED = re.compile(r"Unregistered KV cache for GPU ID (\d+)(?!\d)")
_CONTEXT_UNREGISTERED = re.compile(r"Unregistered non-CUDA context for instance ID (\d+)(?!\d)")
# The server's reaper dropping a worker that went silent (its KV cache's or its shared-memory context; a Q ring's reap
# is the same worker's second registration, and stays a warning).
_REAPED = re.compile(rf"Reaped (GPU|non-GPU) instance (\d+): silent for ({DECIMAL})s \(pinged=(True|False)\)")
_REGISTRATION_STARTS = (
    "Registered KV cache for GPU ID",
    "Registered non-GPU context for instance",
    "Unregistered KV cache for GPU ID",
    "Unregistered non-CUDA context for instance ID",
    "Reaped GPU instance",
    "Reaped non-GPU instance",
)


def parse_registration(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """The multiprocess server's ``Registered ...``, ``Unregistered ...`` and ``Reaped ...`` of a vLLM worker's KV
    cache."""
    if line.startswith("Rea", start):
        m = _REAPED.match(line, start)
        if m is not None:
            gpu, instance, silent, pinged = m.groups()
            change = LmcacheEngineRegistration(
                stamp, "reaped", instance, gpu == "GPU", silent_seconds=float(silent), pinged=pinged == "True"
            )
            return (change,)
    elif line.startswith("R", start):
        m = _GPU_REGISTERED.match(line, start)
        if m is not None:
            return (LmcacheEngineRegistration(stamp, "registered", m.group(1), True, int(m.group(2))),)
        m = _CONTEXT_REGISTERED.match(line, start)
        if m is not None:
            instance, model, world_size = m.group(1), m.group(2), int(m.group(3))
            return (LmcacheEngineRegistration(stamp, "registered", instance, False, None, model, world_size),)
    else:
        m = _GPU_UNREGISTERED.match(line, start)
        if m is not None:
            return (LmcacheEngineRegistration(stamp, "unregistered", m.group(1), True),)
        m = _CONTEXT_UNREGISTERED.match(line, start)
        if m is not None:
            return (LmcacheEngineRegistration(stamp, "unregistered", m.group(1), False),)
    # Another message that begins with the word gives nothing; one of these messages that does not read, a suspect.
    return None if line.startswith(_REGISTRATION_STARTS, start) else ()


# The multiprocess server asked by a worker it does not hold: a lookup for a model none of its workers serves, a
# store or a load refused (LMCache 0.5.6 on a GPU), or the exception a store's or a load's handler raised before.
UNREGISTERED_LOOKUP = re.compile(rf"No GPU context found for model (.+?) with world size ({INTEGER}) during lookup!")
UNREGISTERED_REFUSAL = re.compile(r"Rejecting (STORE|RETRIEVE) for unregistered GPU instance ID (\d+)(?!\d)")
_REFUSAL_STARTS = ("Rejecting STORE for unregistered", "Rejecting RETRIEVE for unregistered")
UNREGISTERED_EXCEPTION = re.compile(
    r"(?:ValueError|AssertionError|RuntimeError): (?:No GPU context registered for instance ID|"
    r"non-GPU context not registered \(or reaped\) for instance ID|KV cache not registered for GPU ID) (\d+)(?!\d)"
)


def parse_unregistered_lookup(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``No GPU context found for model M with world size W during lookup!``; LMCache's other words that begin
    with ``No`` give nothing."""
    m = UNREGISTERED_LOOKUP.match(line, start)
    if m is not None:
        return (LmcacheUnregisteredWorker(stamp, "lookup", model=m.group(1), world_size=int(m.group(2))),)
    return None if line.startswith("No GPU context found for model", start) else ()


def parse_unregistered_refusal(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``Rejecting STORE for unregistered GPU instance ID N`` and ``Rejecting RETRIEVE ...``."""
    m = UNREGISTERED_REFUSAL.match(line, start)
    if m is None:
        return None if line.startswith(_REFUSAL_STARTS, start) else ()
    return (LmcacheUnregisteredWorker(stamp, "store" if m.group(1) == "STORE" else "retrieve", m.group(2)),)


def parse_unregistered_exception(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """The last line of the traceback the server logs when a store's or a load's handler finds no such worker."""
    m = UNREGISTERED_EXCEPTION.match(line, start)
    return (LmcacheUnregisteredWorker(stamp, "transfer", m.group(1)),) if m is not None else ()


# What the multiprocess server could not move between its tiers: a prefetch's L1 reservations (the tag is the
# prefetch request's, ``prefetch:N``), and an L2 adapter's store task (its keys' list may run long, or be cut).
PREFETCH_TAG = "prefetch:"
PREFETCH_OUT_OF_MEMORY = re.compile(
    rf"prefetch:\d+: ({INTEGER}) L1 reservations failed with out-of-memory(?:; L1 may be under memory pressure)?"
)
L2_STORE_FAILED = re.compile(rf"Store task \d+ to adapter ({INTEGER}) failed for keys:(?: (\[.*\]))?")
_KEY_REPR = "ObjectKey("


def parse_prefetch_out_of_memory(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """``prefetch:N: K L1 reservations failed with out-of-memory; L1 may be under memory pressure``."""
    m = PREFETCH_OUT_OF_MEMORY.match(line, start)
    return (LmcacheKeysFailed(stamp, "prefetch", int(m.group(1))),) if m is not None else ()


def _l2_store_failed(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """``Store task N to adapter A failed for keys: [ObjectKey(...), ...]``; None for other ``Store task`` words."""
    m = L2_STORE_FAILED.match(line, start)
    if m is None:
        return None
    listed = m.group(2)  # the keys' list where it is whole (a user's copy may elide it: ``failed for keys: ....``)
    keys = listed.count(_KEY_REPR) if listed is not None else None
    return (LmcacheKeysFailed(stamp, "l2_store", keys, int(m.group(1))),)


def parse_failed(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    if line.startswith("Failed to initialize LMCacheManager components", start):
        return (LmcacheDegraded(stamp),)
    if line.startswith(_ALLOCATION_FAILED, start):
        return (LmcacheStoreSkipped(stamp, "memory_pressure", rank=rank),)
    return ()


def parse_memory_pressure(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``Local cpu memory under pressure so choosing to store only N total chunks of KV cache.``"""
    m = MEMORY_PRESSURE.match(line, start)
    if m is None:  # LMCache's other words on its memory (the backend's own, a benchmark generator's): no store
        return ()
    chunks = m.group(1)
    return (LmcacheStoreSkipped(stamp, "memory_pressure", int(chunks) if chunks is not None else None, rank),)


def parse_unhealthy_skip(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """``LMCache is unhealthy, skipping <operation> operation``."""
    m = UNHEALTHY_SKIP.match(line, start)
    return _skipped_while_unhealthy(m.group(1), stamp, rank) if m is not None else ()


def _skipped_while_unhealthy(operation: str, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """A store LMCache skipped while unhealthy, or a load or lookup."""
    if operation == "store":
        return (LmcacheStoreSkipped(stamp, "unhealthy", rank=rank),)
    return (LmcacheUnhealthySkip(stamp, "retrieve" if operation == "retrieve" else "lookup", rank),)


def parse_health(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """``HealthMonitor: System unhealthy, entering degraded mode`` or ``... recovered, restoring normal
    operations``; its other words give nothing."""
    m = HEALTH.match(line, start)
    if m is None:
        return ()
    return (LmcacheHealth(stamp, m.group(1).startswith("recovered")),)


def parse_mp_lookup_timeout(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """The multiprocess connector's ``LOOKUP to URL timed out after Ns. Marking server as unhealthy.`` and
    ``QUERY_PREFETCH_STATUS to URL timed out. Marking unhealthy.``: a lookup given up on, reported as no hit."""
    return (LmcacheLookupTimeout(stamp, rank),) if MP_LOOKUP_TIMEOUT.match(line, start) else ()


def parse_mp_store_dropped(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """The multiprocess connector's ``Dropping store for request X while the server is unhealthy; ...``."""
    return (LmcacheStoreSkipped(stamp, "unhealthy", rank=rank),) if MP_STORE_DROPPED.match(line, start) else ()


def parse_backend_bypass(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """``StorageManager: Backend X is now bypassed`` or ``... bypass removed, restored to normal operation``."""
    m = BACKEND_BYPASS.match(line, start)
    if m is None:
        return ()
    return (LmcacheBackendBypass(stamp, m.group(1), m.group(2) == "is now bypassed"),)


def parse_request(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    """``Request X failed to load N tokens across M blocks`` or ``Request X is still waiting for async lookup
    after N seconds``; LMCache's other words on a request give nothing."""
    m = LOAD_FAILED.match(line, start)
    if m is not None:
        return (LmcacheLoadFailed(stamp, m.group(1), int(m.group(2)), int(m.group(3)), rank),)
    m = ASYNC_LOOKUP_TIMEOUT.match(line, start)
    if m is not None:
        return (LmcacheLookupTimeout(stamp, rank, m.group(1), int(m.group(2))),)
    return ()


def parse_timeout(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...]:
    m = RPC_TIMEOUT.match(line, start)
    if m is None:
        return ()
    return (LmcacheLookupTimeout(stamp, int(m.group(1))),)


def parse_prefetch(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """The MP server's ``Prefetch request completed (L1+L2): H/R retained keys (a L1, b L2) in T ms (...)``."""
    m = PREFETCH.match(line, start)
    if m is None:
        return None if line.startswith("Prefetch request completed", start) else ()
    ids = m.group(6)
    external = _EXTERNAL_ID.search(ids) if ids else None
    l1, l2, ms = m.group(3), m.group(4), m.group(5)
    return (
        LmcachePrefetch(
            stamp,
            external.group(1) if external else None,
            int(m.group(1)),
            int(m.group(2)),
            int(l1) if l1 is not None else None,
            int(l2) if l2 is not None else None,
            float(ms) if ms is not None else None,
        ),
    )


# The multiprocess server's event log at DEBUG (LMCache 0.3.15 on): a lookup's end names the request (its session).
MP_LOOKUP_END = re.compile(rf"MP lookup/prefetch end: session=(\S+) found_count=({INTEGER})(?: \(| \x1b|$)")


def parse_mp_event(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``MP lookup/prefetch end: session=<id> found_count=N``; the server's other ``MP ...`` events (a store's or
    a retrieve's start and end) give nothing."""
    m = MP_LOOKUP_END.match(line, start)
    if m is None:
        return None if line.startswith("MP lookup/prefetch end", start) else ()
    return (LmcacheMpLookup(stamp, m.group(1), int(m.group(2))),)


# The multiprocess connector in vLLM on a preemption (2026): a step's preempted or resumed requests (a Python
# set), and the lookup of a preempted request about to resume.
PREEMPTION = re.compile(r"<preempted> by (preempted|resumed) requests: (?=[{\[])")
RESUME_LOAD = re.compile(
    rf"<resume-load> req=(\S{{1,256}}) apc=({INTEGER}) lmcache=({INTEGER}) load=({INTEGER})(?: \(| \x1b|$)"
)


def parse_preemption(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``<preempted> by preempted requests: {'X', ...}`` or ``... by resumed requests: ...``: one event per id."""
    m = PREEMPTION.match(line, start)
    if m is None:
        return None if line.startswith("<preempted> by ", start) else ()
    ids = set_members(line, m.end())
    if not ids:
        return None
    if m.group(1) == "preempted":
        return tuple(RequestPreempted(stamp, request_id, "recompute") for request_id in ids)
    return tuple(RequestResumed(stamp, request_id) for request_id in ids)


def parse_resume_load(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``<resume-load> req=X apc=A lmcache=L load=N``."""
    m = RESUME_LOAD.match(line, start)
    if m is None:
        return None if line.startswith("<resume-load> ", start) else ()
    return (LmcacheResumeLoad(stamp, m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4))),)


# The multiprocess connector giving up a failed asynchronous load: the request is computed again.
LOAD_BYPASSED = re.compile(r"Bypassing LMCache for request (\S{1,256}) after a failed async KV load")


def parse_bypassing(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    """``Bypassing LMCache for request X after a failed async KV load; the prompt will be recomputed locally.``"""
    m = LOAD_BYPASSED.match(line, start)
    if m is None:
        return None if line.startswith("Bypassing LMCache for request ", start) else ()
    return (LmcacheLoadBypassed(stamp, m.group(1)),)


def parse_l1_usage(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    m = L1_USAGE.match(line, start)
    if m is None:
        if _L1_WATERMARK.match(line, start):
            return ()  # the eviction loop's verdict (0.3.10+), a ratio against its watermark
        return None if line.startswith("L1 memory usage", start) else ()
    return (LmcacheL1Usage(stamp, float(m.group(1)), float(m.group(2)), ratio(float(m.group(3)))),)


# The multiprocess server's hit-rate summary (LMCache/LMCache#5063), a CacheBlend server's with its second plane.
LOOKUP_SUMMARY = re.compile(
    rf"lookup hit rate \(over ({INTEGER}) lookup\(s\)\): prefix=({DECIMAL})%(?: non_prefix=({DECIMAL})%)?"
)


def parse_lookup_summary(line: str, start: int, stamp: str | None, rank: int | None) -> tuple[Event, ...] | None:
    m = LOOKUP_SUMMARY.match(line, start)
    if m is None:
        return None if line.startswith("lookup hit rate", start) else ()
    non_prefix = m.group(3)
    return (
        LmcacheLookupSummary(
            stamp,
            int(m.group(1)),
            ratio(decimal(m.group(2))),
            ratio(decimal(non_prefix)) if non_prefix is not None else None,
        ),
    )


# First word of an LMCache message -> (parser, the family a line that does not parse is suspected of).
FIRST_WORDS: dict[str, tuple[LmcacheParser, str]] = {
    "Reqid:": (parse_lookup, "lmcache_lookup"),
    "Hybrid": (parse_hybrid_lookup, "lmcache_lookup"),
    "Stored": (parse_stored, "lmcache_store"),
    "Store": (parse_store_old, "lmcache_store"),
    "Retrieved": (parse_retrieved, "lmcache_retrieve"),
    "Retrived": (parse_retrieved, "lmcache_retrieve"),  # LMCache v0.1.0-v0.1.2-alpha's spelling
    "Storing": (parse_storing, "lmcache_store_start"),
    "LMCache": (parse_initialized, "lmcache_initialized"),
    "Failed": (parse_failed, "lmcache_degraded"),
    "Local": (parse_memory_pressure, "lmcache_store_skipped"),
    "Request": (parse_request, "lmcache_load_failed"),
    "Timeout": (parse_timeout, "lmcache_lookup_timeout"),
    "HealthMonitor:": (parse_health, "lmcache_health"),
    "StorageManager:": (parse_backend_bypass, "lmcache_backend_bypass"),
    "LOOKUP": (parse_mp_lookup_timeout, "lmcache_lookup_timeout"),
    "QUERY_PREFETCH_STATUS": (parse_mp_lookup_timeout, "lmcache_lookup_timeout"),
    "Dropping": (parse_mp_store_dropped, "lmcache_store_skipped"),
    "Prefetch": (parse_prefetch, "lmcache_prefetch"),
    "MP": (parse_mp_event, "lmcache_mp_lookup"),
    "L1": (parse_l1_usage, "lmcache_l1_usage"),
    "lookup": (parse_lookup_summary, "lmcache_lookup_summary"),
    "Server": (parse_remote_server_start, "lmcache_server_started"),
    "Registered": (parse_registration, "lmcache_engine_registration"),
    "Unregistered": (parse_registration, "lmcache_engine_registration"),
    "Reaped": (parse_registration, "lmcache_engine_registration"),
    "Rejecting": (parse_unregistered_refusal, "lmcache_unregistered_worker"),
    "No": (parse_unregistered_lookup, "lmcache_unregistered_worker"),
    "<preempted>": (parse_preemption, "request_preempted"),
    "<resume-load>": (parse_resume_load, "lmcache_resume_load"),
    "Bypassing": (parse_bypassing, "lmcache_load_bypassed"),
}
