"""Typed events: what one log line means, and nothing else.

Every event class is a small slotted dataclass.  Its fields are exactly the
fields of ``kvwatch replay --format events`` (the JSON envelope adds ``line``,
``file``, ``kind`` and the resolved ``time``).  The contract is additive: new
kinds and new optional fields may appear, existing names never change.

``stamp`` is the timestamp text exactly as the line printed it (vLLM's
``MM-DD HH:MM:SS`` without a year, LMCache's ``YYYY-MM-DD HH:MM:SS,mmm``, a
wrapper's ISO 8601 time, ...).  It is kept raw because resolving it needs
context a single line does not have (the year, the time zone); see
:mod:`parsers.timestamps`.  Sizes and rates are kept as the log prints them;
percentages become ratios 0-1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import ClassVar

# LMCache's "GB" (``size: 0.0312 gb``) and vLLM's "GiB" are both 2**30 bytes.
GIB = 1 << 30


@dataclass(slots=True)
class Event:
    kind: ClassVar[str] = "event"
    stamp: str | None


# --- vLLM periodic statistics -------------------------------------------------


@dataclass(slots=True)
class EngineStats(Event):
    """One periodic stats line of any engine generation (V0 2023 .. V1 today)."""

    kind: ClassVar[str] = "engine_stats"
    engine: int | None = None
    engines: int | None = None
    prompt_throughput: float | None = None
    generation_throughput: float | None = None
    throughput: float | None = None
    running: int | None = None
    waiting: int | None = None
    swapped: int | None = None
    preempted: int | None = None
    deferred: int | None = None
    kv_cache_usage: float | None = None
    kv_cache_device: str | None = None
    cpu_kv_cache_usage: float | None = None
    prefix_cache_hit_rate: float | None = None
    cpu_prefix_cache_hit_rate: float | None = None
    external_prefix_cache_hit_rate: float | None = None
    mm_cache_hit_rate: float | None = None
    corrupted: int | None = None
    kv_fetch_waiting: int | None = None
    kv_fetch_in_progress: int | None = None
    kv_fetch_completed: int | None = None


@dataclass(slots=True)
class SpecDecodeStats(Event):
    """Speculative decoding companion line (V1 ``SpecDecoding metrics:``, V0 ``Speculative metrics:``)."""

    kind: ClassVar[str] = "spec_decode_stats"
    engine: int | None = None
    mean_acceptance_length: float | None = None
    accepted_throughput: float | None = None
    drafted_throughput: float | None = None
    accepted_tokens: int | None = None
    drafted_tokens: int | None = None
    emitted_tokens: int | None = None
    draft_acceptance_rate: float | None = None
    system_efficiency: float | None = None
    per_position_acceptance_rate: list[float] | None = None


@dataclass(slots=True)
class KvTransferStats(Event):
    """``KV Transfer metrics: <key>=<value>, ...``: one logging interval of a KV connector
    (NIXL, vLLM's offloading connector, LMCache's MP connector), keys as printed."""

    kind: ClassVar[str] = "kv_transfer_stats"
    engine: int | None = None
    values: dict[str, float] | None = None


# --- LMCache --------------------------------------------------------------------


@dataclass(slots=True)
class LmcacheLookup(Event):
    """The scheduler-side lookup of one request (repeats on every scheduling attempt)."""

    kind: ClassVar[str] = "lmcache_lookup"
    request_id: str = ""
    total_tokens: int = 0
    hit_tokens: int = 0
    need_to_load: int | None = None
    engine_computed_tokens: int | None = None
    min_retrieve_tokens: int | None = None


@dataclass(slots=True)
class LmcacheLookupPending(Event):
    """``LMCache hit tokens: None.``: an asynchronous lookup not finished yet; vLLM asks again."""

    kind: ClassVar[str] = "lmcache_lookup_pending"
    request_id: str = ""
    total_tokens: int = 0
    engine_computed_tokens: int | None = None


@dataclass(slots=True)
class LmcacheStoreStart(Event):
    kind: ClassVar[str] = "lmcache_store_start"
    request_id: str | None = None
    tokens: int = 0
    total_tokens: int = 0
    skip_leading_tokens: int = 0
    rank: int | None = None


@dataclass(slots=True)
class LmcacheStore(Event):
    """One store, once per tensor-parallel rank.  ``size_gb`` is LMCache's GB (2**30 bytes)."""

    kind: ClassVar[str] = "lmcache_store"
    request_id: str | None = None
    stored_tokens: int = 0
    total_tokens: int | None = None
    size_gb: float | None = None
    cost_ms: float | None = None
    throughput_gbps: float | None = None
    offload_ms: float | None = None
    put_ms: float | None = None
    rank: int | None = None


@dataclass(slots=True)
class LmcacheRetrieve(Event):
    """One retrieve, once per tensor-parallel rank; ``throughput_gbps`` is GB per second."""

    kind: ClassVar[str] = "lmcache_retrieve"
    request_id: str | None = None
    retrieved_tokens: int = 0
    required_tokens: int | None = None
    total_tokens: int | None = None
    size_gb: float | None = None
    cost_ms: float | None = None
    throughput_gbps: float | None = None
    rank: int | None = None


@dataclass(slots=True)
class LmcacheInitialized(Event):
    kind: ClassVar[str] = "lmcache_initialized"
    role: str | None = None
    version: str | None = None
    vllm_version: str | None = None


@dataclass(slots=True)
class LmcacheDegraded(Event):
    """LMCache could not start its engine and runs without caching (recompute)."""

    kind: ClassVar[str] = "lmcache_degraded"


@dataclass(slots=True)
class LmcacheLookupTimeout(Event):
    """A lookup RPC timed out (LMCache recreates its sockets and reports no hit)."""

    kind: ClassVar[str] = "lmcache_lookup_timeout"
    rank: int | None = None


@dataclass(slots=True)
class LmcachePrefetch(Event):
    """LMCache's multiprocess server found a request's prefix (``Prefetch request completed``;
    printed only when something hit).  Counts are cache keys (chunks per KV group and rank),
    not tokens; ``request_id`` is vLLM's id of the request (external_request_id)."""

    kind: ClassVar[str] = "lmcache_prefetch"
    request_id: str | None = None
    hit_keys: int = 0
    requested_keys: int | None = None
    l1_keys: int | None = None
    l2_keys: int | None = None
    ms: float | None = None


@dataclass(slots=True)
class LmcacheL1Usage(Event):
    """``L1 memory usage: U/T GiB (P%)`` of the multiprocess server (``--enable-extra-logging``)."""

    kind: ClassVar[str] = "lmcache_l1_usage"
    used_gib: float = 0.0
    total_gib: float | None = None
    ratio: float | None = None


@dataclass(slots=True)
class LmcacheServerStarted(Event):
    """The multiprocess server's HTTP front end started (``Starting LMCache HTTP server on URL``)."""

    kind: ClassVar[str] = "lmcache_server_started"
    url: str | None = None


# --- request lifecycle --------------------------------------------------------


@dataclass(slots=True)
class RequestReceived(Event):
    """The front end accepted a request.  ``prompt_tokens`` is a count, never the text."""

    kind: ClassVar[str] = "request_received"
    request_id: str = ""
    max_tokens: int | None = None
    prompt_tokens: int | None = None
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(slots=True)
class RequestAdded(Event):
    kind: ClassVar[str] = "request_added"
    request_id: str = ""
    trace_id: str | None = None
    span_id: str | None = None


@dataclass(slots=True)
class RequestFinished(Event):
    kind: ClassVar[str] = "request_finished"
    request_id: str = ""


@dataclass(slots=True)
class ResponseGenerated(Event):
    """``Generated response X: output: ..., finish_reason: R`` (``--enable-log-outputs``).

    The output text is never read.  ``stream`` is ``delta`` for one streamed
    piece, ``complete`` for a stream's last line, None for a whole response;
    ``output_tokens`` counts the listed token ids (lines from 0.28 list none)."""

    kind: ClassVar[str] = "response_generated"
    request_id: str = ""
    stream: str | None = None
    finish_reason: str | None = None
    output_tokens: int | None = None


@dataclass(slots=True)
class RequestAborted(Event):
    kind: ClassVar[str] = "request_aborted"
    request_id: str = ""


@dataclass(slots=True)
class RequestCancelled(Event):
    """``Request X aborted.``: the client went away (logged after the engine-side abort)."""

    kind: ClassVar[str] = "request_cancelled"
    request_id: str = ""


@dataclass(slots=True)
class RequestFailed(Event):
    """``Request X failed (reason)``; the reason is one of engine_dead, bad_request, input_error."""

    kind: ClassVar[str] = "request_failed"
    request_id: str = ""
    reason: str = ""


@dataclass(slots=True)
class HttpAccess(Event):
    """A uvicorn access line.  ``path`` is printed without its query string."""

    kind: ClassVar[str] = "http_access"
    client: str = ""
    method: str = ""
    path: str = ""
    status: int = 0


# --- server lifecycle -----------------------------------------------------------


@dataclass(slots=True)
class ServerStarting(Event):
    kind: ClassVar[str] = "server_starting"
    version: str | None = None
    model: str | None = None


@dataclass(slots=True)
class EngineStarting(Event):
    """``Initializing ... LLM engine (vX) with config: model=...``."""

    kind: ClassVar[str] = "engine_starting"
    version: str | None = None
    model: str | None = None
    tensor_parallel_size: int | None = None


@dataclass(slots=True)
class ServerReady(Event):
    kind: ClassVar[str] = "server_ready"


@dataclass(slots=True)
class ModelLoaded(Event):
    kind: ClassVar[str] = "model_loaded"
    memory_gib: float | None = None
    seconds: float | None = None


@dataclass(slots=True)
class EngineInitialized(Event):
    """``init engine (profile, create kv cache, warmup model) took X s``: the engine is up."""

    kind: ClassVar[str] = "engine_initialized"
    seconds: float | None = None


@dataclass(slots=True)
class KvCacheCapacity(Event):
    kind: ClassVar[str] = "kv_cache_capacity"
    tokens: int | None = None
    tokens_per_request: int | None = None
    max_concurrency: float | None = None
    gpu_blocks: int | None = None
    cpu_blocks: int | None = None
    device: str | None = None


@dataclass(slots=True)
class StartupPhase(Event):
    """A start-up step vLLM times: ``phase`` is weights_loading, torch_compile, graph_capture,
    engine_init (``seconds``) or kv_cache_memory (``bytes`` of the KV pool)."""

    kind: ClassVar[str] = "startup_phase"
    phase: str = ""
    seconds: float | None = None
    bytes: float | None = None


SERVER_ERRORS = ("oom", "engine_dead", "cuda_error", "kv_cache_too_small", "other")


@dataclass(slots=True)
class ServerError(Event):
    """A fatal error.  ``error`` is one of :data:`SERVER_ERRORS`; ``exception`` is a class name."""

    kind: ClassVar[str] = "server_error"
    error: str = "other"
    exception: str | None = None


@dataclass(slots=True)
class ServerShutdown(Event):
    kind: ClassVar[str] = "server_shutdown"


# --- vllm bench -------------------------------------------------------------------


@dataclass(slots=True)
class BenchThroughput(Event):
    kind: ClassVar[str] = "bench_throughput"
    requests_per_second: float = 0.0
    total_tokens_per_second: float | None = None
    output_tokens_per_second: float | None = None


@dataclass(slots=True)
class BenchTokens(Event):
    kind: ClassVar[str] = "bench_tokens"
    prompt_tokens: int | None = None
    output_tokens: int | None = None


@dataclass(slots=True)
class BenchLatency(Event):
    """``Avg latency`` (``avg_seconds``) or one ``N% percentile latency`` line."""

    kind: ClassVar[str] = "bench_latency"
    avg_seconds: float | None = None
    percentile: float | None = None
    seconds: float | None = None


@dataclass(slots=True)
class BenchServe(Event):
    """One result line of ``vllm bench serve``; ``name`` is vLLM's own result key (``mean_ttft_ms`` ...)."""

    kind: ClassVar[str] = "bench_serve"
    name: str = ""
    value: float = 0.0


# --- self-observation --------------------------------------------------------------


@dataclass(slots=True)
class SuspiciousLine(Event):
    """A line with an intact vLLM/LMCache header that starts like ``family`` but matched no parser.

    The usual cause is a release that changed a format; the line text itself is
    never carried (it may hold a prompt)."""

    kind: ClassVar[str] = "suspicious_line"
    family: str = ""


EVENT_TYPES: tuple[type[Event], ...] = (
    EngineStats,
    SpecDecodeStats,
    KvTransferStats,
    LmcacheLookup,
    LmcacheLookupPending,
    LmcacheStoreStart,
    LmcacheStore,
    LmcacheRetrieve,
    LmcacheInitialized,
    LmcacheDegraded,
    LmcacheLookupTimeout,
    LmcachePrefetch,
    LmcacheL1Usage,
    LmcacheServerStarted,
    RequestReceived,
    RequestAdded,
    RequestFinished,
    ResponseGenerated,
    RequestAborted,
    RequestCancelled,
    RequestFailed,
    HttpAccess,
    ServerStarting,
    EngineStarting,
    ServerReady,
    ModelLoaded,
    EngineInitialized,
    KvCacheCapacity,
    StartupPhase,
    ServerError,
    ServerShutdown,
    BenchThroughput,
    BenchTokens,
    BenchLatency,
    BenchServe,
    SuspiciousLine,
)

EVENT_KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in EVENT_TYPES}


def payload_fields(cls: type[Event]) -> tuple[str, ...]:
    """The contract fields of an event class, in order (everything but ``stamp``)."""
    return tuple(f.name for f in fields(cls) if f.name != "stamp")
