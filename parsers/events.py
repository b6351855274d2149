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

from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import ClassVar, Literal, NewType, get_args

# LMCache's "GB" (``size: 0.0312 gb``) and vLLM's "GiB" are both 2**30 bytes.
GIB = 1 << 30

# What the events format promises (the JSON Schema's description).
CONTRACT = (
    "One line of `kvwatch replay --format events`. Additive contract: new kinds and optional fields may appear; "
    "names never change. Absent fields are omitted; percentages are ratios 0-1; numbers are JSON numbers."
)
# A count that cannot be negative (the schema says ``minimum: 0``).
NonNegativeInt = NewType("NonNegativeInt", int)


@dataclass(slots=True)
class Event:
    kind: ClassVar[str] = "event"
    stamp: str | None


# --- vLLM periodic statistics -------------------------------------------------


@dataclass(slots=True)
class EngineStats(Event):
    """One periodic stats line of any engine generation (V0 2023 .. V1 today)."""

    kind: ClassVar[str] = "engine_stats"
    engine: int | None = None  #: engine index from the `Engine NNN:` prefix
    engines: int | None = None  #: N of an `N Engines Aggregated:` line
    prompt_throughput: float | None = None  #: Avg prompt throughput, tokens/s
    generation_throughput: float | None = None  #: Avg generation throughput, tokens/s
    throughput: float | None = None  #: the single Throughput of the 2023 (v0.1) line, tokens/s
    running: int | None = None  #: running requests
    waiting: int | None = None  #: waiting requests (V0: Pending)
    swapped: int | None = None  #: swapped requests (V0)
    preempted: int | None = None  #: Preemptions in the interval
    deferred: int | None = None  #: Deferred requests
    kv_cache_usage: float | None = None  #: KV cache usage of the engine's own pool, ratio 0-1
    kv_cache_device: str | None = None  #: device label printed before `KV cache usage` (GPU, CPU, XPU ...)
    cpu_kv_cache_usage: float | None = None  #: V0's CPU swap-space KV usage, ratio 0-1
    prefix_cache_hit_rate: float | None = None  #: ratio 0-1
    cpu_prefix_cache_hit_rate: float | None = None  #: V0's CPU prefix cache, ratio 0-1
    #: KV connector (LMCache) hit rate as vLLM reports it, ratio 0-1
    external_prefix_cache_hit_rate: float | None = None
    mm_cache_hit_rate: float | None = None  #: multimodal cache hit rate, ratio 0-1
    corrupted: int | None = None  #: requests with NaN logits
    kv_fetch_waiting: int | None = None  #: KV fetch: waiting to start
    kv_fetch_in_progress: int | None = None  #: KV fetch: in progress
    kv_fetch_completed: int | None = None  #: KV fetch: completed, waiting


@dataclass(slots=True)
class SpecDecodeStats(Event):
    """Speculative decoding companion line (V1 ``SpecDecoding metrics:``, V0 ``Speculative metrics:``)."""

    kind: ClassVar[str] = "spec_decode_stats"
    engine: int | None = None  #: engine index from the `Engine NNN:` prefix
    mean_acceptance_length: float | None = None  #: tokens
    accepted_throughput: float | None = None  #: tokens/s
    drafted_throughput: float | None = None  #: tokens/s
    accepted_tokens: int | None = None  #: tokens
    drafted_tokens: int | None = None  #: tokens
    emitted_tokens: int | None = None  #: tokens (V0)
    draft_acceptance_rate: float | None = None  #: ratio 0-1
    system_efficiency: float | None = None  #: ratio 0-1 (V0)
    per_position_acceptance_rate: list[float] | None = None  #: ratios 0-1 by draft position


@dataclass(slots=True)
class DiffusionDecodeStats(Event):
    """A diffusion language model's companion line (vLLM 0.32, merged in June 2026: its denoising steps, logged where
    speculative decoding's line stands): ``DiffusionDecoding metrics: Committed token throughput: X tokens/s,
    Mean denoising steps per canvas: M, Mean tokens committed per denoising step: T, Committed: C tokens,
    Denoising steps: S, Canvas positions evaluated: P`` over the logging interval."""

    kind: ClassVar[str] = "diffusion_decode_stats"
    engine: int | None = None  #: engine index, when the line names one
    committed_throughput: float = 0.0  #: tokens/s committed (final)
    committed_tokens: NonNegativeInt = 0  #: tokens committed in the interval
    denoising_steps: NonNegativeInt = 0  #: denoising steps run in the interval
    canvas_positions: NonNegativeInt = 0  #: canvas positions the steps evaluated
    mean_steps_per_canvas: float | None = None  #: as printed; absent where vLLM printed nan (nothing committed)
    mean_committed_per_step: float | None = None  #: as printed; absent where vLLM printed nan (no step)


@dataclass(slots=True)
class KvTransferStats(Event):
    """``KV Transfer metrics: <key>=<value>, ...``: one logging interval of a KV connector
    (NIXL, vLLM's offloading connector, LMCache's MP connector), keys as printed."""

    kind: ClassVar[str] = "kv_transfer_stats"
    engine: int | None = None  #: the engine number, when the line names one
    #: each key as printed and its number (non-finite values left out)
    values: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class EngineIteration(Event):
    """One engine step, logged with ``--enable-logging-iteration-details`` (vLLM from January 2026):
    ``[Engine NNN: ]Iteration(N): a context requests, b context tokens, c generation requests,
    d generation tokens, iteration elapsed time: X ms[ (dummy)][, GPU KV cache usage: Y%][, encoder ...]``."""

    kind: ClassVar[str] = "engine_iteration"
    #: engine index from the `Engine NNN:` prefix where the front end logs the step, or the data-parallel rank of
    #: the engine core that logged it (`EngineCore_DP1`)
    engine: int | None = None
    index: NonNegativeInt = 0  #: the step's number, counted per engine core from 0
    context_requests: NonNegativeInt = 0  #: requests still in prefill
    context_tokens: NonNegativeInt = 0  #: prompt tokens computed in the step
    generation_requests: NonNegativeInt = 0  #: requests decoding
    generation_tokens: NonNegativeInt = 0  #: tokens decoded in the step
    elapsed_ms: float = 0.0  #: ms the step took
    dummy: bool = False  #: a data-parallel rank's dummy step (no requests of its own)
    kv_cache_usage: float | None = None  #: KV cache usage after the step, ratio 0-1
    kv_cache_device: str | None = None  #: device label printed before `KV cache usage` (GPU, CPU, XPU ...)
    encoder_inputs: NonNegativeInt | None = None  #: multimodal encoder inputs scheduled
    encoder_output_tokens: NonNegativeInt | None = None  #: embeddings those encoder inputs produce


@dataclass(slots=True)
class EngineMfu(Event):
    """``Engine NNN: MFU: X TF/s/GPU Y GB/s/GPU`` (``--enable-mfu-metrics``, vLLM 0.14 on; ``/device`` in
    later releases): the FLOPs and memory traffic vLLM estimates each device achieved over the interval."""

    kind: ClassVar[str] = "engine_mfu"
    engine: int | None = None  #: engine index from the `Engine NNN:` prefix
    tflops_per_device: float = 0.0  #: TF/s, 10^12 floating-point operations a second
    gbps_per_device: float = 0.0  #: GB/s read and written, 10^9 bytes a second


# --- LMCache --------------------------------------------------------------------


@dataclass(slots=True)
class LmcacheLookup(Event):
    """The scheduler-side lookup of one request (repeats on every scheduling attempt)."""

    kind: ClassVar[str] = "lmcache_lookup"
    request_id: str = ""  #: the id as printed
    total_tokens: int = 0  #: tokens
    hit_tokens: int = 0  #: LMCache hit tokens
    need_to_load: int | None = None  #: as printed; may be negative (LMCache < 0.3.14)
    engine_computed_tokens: int | None = None  #: Inference (or vLLM) computed tokens: vLLM's own prefix cache
    #: set on the `but need to load ... < min_retrieve` variant: nothing was loaded
    min_retrieve_tokens: int | None = None


@dataclass(slots=True)
class LmcacheLookupPending(Event):
    """``LMCache hit tokens: None.``: an asynchronous lookup not finished yet; vLLM asks again."""

    kind: ClassVar[str] = "lmcache_lookup_pending"
    request_id: str = ""  #: the id as printed
    total_tokens: int = 0  #: tokens
    engine_computed_tokens: int | None = None  #: Inference (or vLLM) computed tokens: vLLM's own prefix cache


@dataclass(slots=True)
class LmcacheStoreStart(Event):
    """``Storing KV cache for N out of M tokens``: a store issued (its ``Stored`` line follows when done)."""

    kind: ClassVar[str] = "lmcache_store_start"
    request_id: str | None = None  #: the id as printed
    tokens: int = 0  #: tokens to store
    total_tokens: int = 0  #: tokens
    skip_leading_tokens: int = 0  #: prefix already stored
    rank: int | None = None  #: tensor-parallel rank, when the line names it


@dataclass(slots=True)
class LmcacheStore(Event):
    """One store, once per tensor-parallel rank.  ``size_gb`` is LMCache's GB (2**30 bytes)."""

    kind: ClassVar[str] = "lmcache_store"
    request_id: str | None = None  #: the id as printed
    stored_tokens: int = 0  #: tokens stored
    total_tokens: int | None = None  #: tokens
    size_gb: float | None = None  #: LMCache's GB (2^30 bytes)
    cost_ms: float | None = None  #: milliseconds
    throughput_gbps: float | None = None  #: LMCache's GB per second (not gigabits)
    offload_ms: float | None = None  #: milliseconds
    put_ms: float | None = None  #: milliseconds
    rank: int | None = None  #: tensor-parallel rank, when the line names it


StoreSkipReason = Literal["memory_pressure", "unhealthy"]
STORE_SKIP_REASONS: tuple[str, ...] = get_args(StoreSkipReason)


@dataclass(slots=True)
class LmcacheStoreSkipped(Event):
    """LMCache stored less than vLLM handed it, and what it did not store cannot hit later: its local CPU memory
    was full (``memory_pressure``: ``Local cpu memory under pressure so choosing to store only N total chunks of
    KV cache.`` and ``... choosing to not store the KV cache.``; before mid-2025 ``Failed to allocate memory for
    the KV cache.``) or its engine was marked unhealthy (``unhealthy``: ``LMCache is unhealthy, skipping store
    operation``, or ``store_layer`` for a layer-wise store; in multiprocess mode the connector's ``Dropping store for
    request X while the server is unhealthy``)."""

    kind: ClassVar[str] = "lmcache_store_skipped"
    reason: StoreSkipReason = "memory_pressure"  #: memory_pressure or unhealthy
    stored_chunks: int | None = None  #: the chunks it stored all the same, where the line says (N of "store only N")
    rank: int | None = None  #: tensor-parallel rank, when the line names it


@dataclass(slots=True)
class LmcacheRetrieve(Event):
    """One retrieve, once per tensor-parallel rank; ``throughput_gbps`` is GB per second."""

    kind: ClassVar[str] = "lmcache_retrieve"
    request_id: str | None = None  #: the id as printed
    retrieved_tokens: int = 0  #: tokens retrieved
    required_tokens: int | None = None  #: tokens asked for
    total_tokens: int | None = None  #: tokens
    size_gb: float | None = None  #: LMCache's GB (2^30 bytes)
    cost_ms: float | None = None  #: milliseconds
    throughput_gbps: float | None = None  #: LMCache's GB per second (not gigabits)
    rank: int | None = None  #: tensor-parallel rank, when the line names it


@dataclass(slots=True)
class LmcacheInitialized(Event):
    """LMCache started: its version, and the vLLM it was built against."""

    kind: ClassVar[str] = "lmcache_initialized"
    role: str | None = None  #: scheduler or worker
    version: str | None = None  #: as printed
    vllm_version: str | None = None  #: as printed


@dataclass(slots=True)
class LmcacheDegraded(Event):
    """LMCache could not start its engine and runs without caching (recompute)."""

    kind: ClassVar[str] = "lmcache_degraded"


@dataclass(slots=True)
class LmcacheHealth(Event):
    """LMCache's health monitor (its periodic checks of a remote backend) changed its verdict: unhealthy
    (``HealthMonitor: System unhealthy, entering degraded mode``: until it recovers LMCache skips its lookups,
    which report no hit, its loads and its stores) or recovered (``System recovered, restoring normal operations``).
    In multiprocess mode, the connector in vLLM on its LMCache server (its heartbeats): ``LMCache server is unhealthy
    — entering degraded mode`` and ``LMCache server is healthy again — resuming normal operation``."""

    kind: ClassVar[str] = "lmcache_health"
    healthy: bool = True  #: false: entering degraded mode; true: recovered


@dataclass(slots=True)
class LmcacheBackendBypass(Event):
    """LMCache's storage manager bypassed one of its storage backends, or stopped doing so: ``StorageManager:
    Backend X is now bypassed`` (a failed health check's ``LOCAL_CPU`` fallback, or its bypass API: the backend is
    skipped for lookups, loads and stores) and ``... bypass removed, restored to normal operation``."""

    kind: ClassVar[str] = "lmcache_backend_bypass"
    backend: str = ""  #: the backend's name as LMCache gives it (RemoteBackend, LocalDiskBackend ...)
    bypassed: bool = True  #: true: bypassed from now on; false: restored


UnhealthySkipOperation = Literal["lookup", "retrieve"]
UNHEALTHY_SKIP_OPERATIONS: tuple[str, ...] = get_args(UnhealthySkipOperation)


@dataclass(slots=True)
class LmcacheUnhealthySkip(Event):
    """LMCache skipped a lookup (``LMCache is unhealthy, skipping lookup operation``: it reports no hit) or a load
    (``... skipping retrieve operation``, ``retrieve_layer`` for a layer-wise one: vLLM computes those tokens)
    while its health monitor held it unhealthy.  (A store it skipped so is ``lmcache_store_skipped``.)"""

    kind: ClassVar[str] = "lmcache_unhealthy_skip"
    operation: UnhealthySkipOperation = "lookup"  #: lookup or retrieve
    rank: int | None = None  #: tensor-parallel rank, when the line names it


@dataclass(slots=True)
class LmcacheLookupTimeout(Event):
    """LMCache gave up on a lookup and reports no hit, so vLLM computes the prompt: its lookup RPC timed out
    (``Timeout occurred for rank N``: it recreates its sockets), its asynchronous lookup client waited
    longer than its ``lookup_timeout_ms`` for one request (``Request X is still waiting for async lookup``), or the
    multiprocess connector's lookup or prefetch query to its server did (``LOOKUP to URL timed out after Ns.``,
    ``QUERY_PREFETCH_STATUS to URL timed out.``: it marks the server unhealthy)."""

    kind: ClassVar[str] = "lmcache_lookup_timeout"
    rank: int | None = None  #: tensor-parallel rank, when the line names it
    request_id: str | None = None  #: the request whose lookup was given up on, when the line names it
    timeout_seconds: int | None = None  #: the lookup timeout as the line gives it, whole seconds


@dataclass(slots=True)
class LmcacheLoadFailed(Event):
    """``Request X failed to load N tokens across M blocks``: LMCache retrieved less of a request's KV than its
    lookup had promised (after its errors ``The number of retrieved tokens is less than the expected number of
    tokens!``); vLLM computes those tokens again, or fails the request under ``kv_load_failure_policy=fail``."""

    kind: ClassVar[str] = "lmcache_load_failed"
    request_id: str | None = None  #: the id as printed
    tokens: NonNegativeInt = 0  #: tokens it failed to load
    blocks: NonNegativeInt | None = None  #: vLLM KV blocks those tokens were to fill
    rank: int | None = None  #: tensor-parallel rank, when the line names it


@dataclass(slots=True)
class LmcacheLoadBypassed(Event):
    """LMCache's multiprocess connector gave up a request's load that failed (``Bypassing LMCache for request X
    after a failed async KV load; the prompt will be recomputed locally.``, 2026): vLLM computes it all again."""

    kind: ClassVar[str] = "lmcache_load_bypassed"
    request_id: str = ""  #: the id as printed (the engine's)


@dataclass(slots=True)
class LmcachePrefetch(Event):
    """LMCache's multiprocess server found a request's prefix (``Prefetch request completed``;
    printed only when something hit).  Counts are cache keys (chunks per KV group and rank),
    not tokens; ``request_id`` is vLLM's id of the request (external_request_id)."""

    kind: ClassVar[str] = "lmcache_prefetch"
    request_id: str | None = None  #: vLLM's id of the request (external_request_id), when printed
    hit_keys: int = 0  #: keys retained (found in L1 or L2)
    requested_keys: int | None = None  #: keys the prefetch asked for
    l1_keys: int | None = None  #: of the hits, keys found in L1 (memory)
    l2_keys: int | None = None  #: of the hits, keys loaded from L2
    ms: float | None = None  #: time the prefetch took, milliseconds


MpLookupResult = Literal["hit", "miss"]
MP_LOOKUP_RESULTS: tuple[str, ...] = get_args(MpLookupResult)


@dataclass(slots=True)
class LmcacheMpLookup(Event):
    """LMCache's multiprocess server ended a request's lookup (DEBUG ``MP lookup/prefetch end: session=<id>
    found_count=N``, LMCache 0.3.15 on): the one line of that server that says so for a miss too
    (``found_chunks`` 0).  The hit is counted in chunks of the server's chunk size, over the whole model."""

    kind: ClassVar[str] = "lmcache_mp_lookup"
    request_id: str = ""  #: vLLM's id of the request (the server's session)
    found_chunks: int = 0  #: chunks of the prompt's prefix found (L1 or L2); 0 for a miss

    @property
    def result(self) -> MpLookupResult:
        """``hit`` or ``miss``: whether the lookup found any of the prefix."""
        return "hit" if self.found_chunks else "miss"


@dataclass(slots=True)
class LmcacheResumeLoad(Event):
    """LMCache's multiprocess connector's lookup for a preempted request the scheduler is about to resume
    (``<resume-load> req=X apc=A lmcache=L load=N``, 2026; logged only when LMCache has some of it, and again
    at every scheduling attempt until the request runs)."""

    kind: ClassVar[str] = "lmcache_resume_load"
    request_id: str = ""  #: the id as printed (the engine's)
    engine_computed_tokens: int = 0  #: tokens vLLM's own prefix cache holds (apc)
    hit_tokens: int = 0  #: tokens LMCache has, the prompt and the output so far alike
    need_to_load: int = 0  #: what LMCache is to load beyond vLLM's own, as printed


@dataclass(slots=True)
class LmcacheL1Usage(Event):
    """``L1 memory usage: U/T GiB (P%)`` of the multiprocess server (``--enable-extra-logging``)."""

    kind: ClassVar[str] = "lmcache_l1_usage"
    used_gib: float = 0.0  #: L1 memory in use, GiB
    total_gib: float | None = None  #: L1 memory size, GiB
    ratio: float | None = None  #: used / total, 0-1


@dataclass(slots=True)
class LmcacheLookupSummary(Event):
    """The multiprocess server's hit-rate summary (``lookup hit rate (over N lookup(s)): prefix=X%``, at
    most one line every 30 s; LMCache/LMCache#5063, September 2026): the token-weighted share of the
    tokens its lookups asked for that were found, over the lookups since its previous summary (lookups
    that asked for nothing are left out).  A CacheBlend server adds the share found outside the prefix
    (``non_prefix=Y%``)."""

    kind: ClassVar[str] = "lmcache_lookup_summary"
    lookups: NonNegativeInt = 0  #: lookups the line covers
    prefix_hit_rate: float = 0.0  #: share of the requested tokens found as a cached prefix, 0-1
    non_prefix_hit_rate: float | None = None  #: (CacheBlend) share found outside the prefix, 0-1


@dataclass(slots=True)
class LmcacheServerStarted(Event):
    """The multiprocess server started: ``LMCache cache server is running...`` (``cache blend server`` on a
    CacheBlend server), in every release; in releases after the first ones, ``LMCache ZMQ cache server is
    running on ADDRESS`` just before it is one too.  Such a pair is one start
    (``kvwatch_lmcache_server_starts_total``).  The remote cache server several vLLM servers share (``python -m
    lmcache.v1.server HOST PORT``) says ``Server started at HOST:PORT``: a start, its address ``lm://HOST:PORT``."""

    kind: ClassVar[str] = "lmcache_server_started"
    url: str | None = None  #: the address its request server listens on (the line that names it)


# The scheme of the remote cache server's address (``remote_url = "lm://HOST:PORT"``): a start with it is that
# server's, not the multiprocess server's.
REMOTE_SERVER_SCHEME = "lm://"

EngineRegistrationChange = Literal["registered", "unregistered", "reaped"]
ENGINE_REGISTRATION_CHANGES: tuple[str, ...] = get_args(EngineRegistrationChange)


@dataclass(slots=True)
class LmcacheEngineRegistration(Event):
    """A vLLM worker's KV cache joined LMCache's multiprocess server, or left it: ``Registered KV cache for GPU ID
    N with L layers`` and ``Unregistered KV cache for GPU ID N`` (a GPU worker), ``Registered non-GPU context for
    instance N (model=M, world_size=W)`` (later releases add the number of layer groups) and ``Unregistered
    non-CUDA context for instance ID N`` (a worker whose KV cache the server reaches through shared memory: the CPU,
    another accelerator).  Each worker of a tensor-parallel engine registers on its own; a vLLM that stops
    unregisters, one that crashes says nothing.  The server's reaper drops a worker that went silent (2026 on:
    ``Reaped GPU instance N: silent for S s (pinged=True)``, ``Reaped non-GPU instance N: …``): a crashed or hung
    worker, or one that stored or loaded nothing within the registration grace.  A vLLM started again registers anew; a
    worker reaped while its vLLM runs on is not registered again until its connector loses the server and finds it."""

    kind: ClassVar[str] = "lmcache_engine_registration"
    change: EngineRegistrationChange = "registered"  #: registered, unregistered, or reaped (dropped for its silence)
    instance: str = ""  #: the worker's id with the server (an integer LMCache chooses: a process id, a random id)
    gpu: bool = True  #: false: a worker reached through shared memory (the non-GPU context)
    layers: NonNegativeInt | None = None  #: layers of the KV cache (a GPU worker's registration)
    model: str | None = None  #: the model, where the line names it (a non-GPU worker's registration)
    world_size: NonNegativeInt | None = None  #: the engine's workers, where the line says
    silent_seconds: float | None = None  #: how long the worker had said nothing to the server (a reap)
    #: whether the worker had ever pinged the server (a reap): false for one that stored and loaded nothing since it
    #: registered (its connector's heartbeat starts with its first store or load), dropped after the longer
    #: registration grace
    pinged: bool | None = None


@dataclass(slots=True)
class LmcacheWorkerAdapter(Event):
    """A vLLM worker made its LMCache multiprocess connector, with the id the server knows it by: ``LMCache MP worker
    adapter created with instance_id=N`` (vLLM's own log, one line a worker at each start; LMCache 0.5.5 on, a random
    63-bit number, so that the workers of several vLLM servers one LMCache server serves are told apart).  The
    server's log names the worker by that id when it registers it, drops it or is asked for it
    (``lmcache_engine_registration``, ``lmcache_unregistered_worker``): kvwatch knows from it which of those are its
    vLLM's."""

    kind: ClassVar[str] = "lmcache_worker_adapter"
    instance: str = ""  #: the worker's id with the server


UnregisteredWorkerOperation = Literal["lookup", "store", "retrieve", "transfer"]
UNREGISTERED_WORKER_OPERATIONS: tuple[str, ...] = get_args(UnregisteredWorkerOperation)


@dataclass(slots=True)
class LmcacheUnregisteredWorker(Event):
    """LMCache's multiprocess server was asked to look up, store or load for a vLLM worker it does not hold: its
    reaper dropped the worker (``lmcache_engine_registration``, ``reaped``), or the server started again since the
    worker registered; a worker that runs on does not register again.  A lookup: ``No GPU context found for model M
    with world size W during lookup!`` (no hit).  A store or a load: LMCache 0.5.6 on a GPU refuses it with ``Rejecting
    STORE for unregistered GPU instance ID N`` (``RETRIEVE``: a load; vLLM computes what it would have loaded); its
    handler's exception elsewhere (``ValueError: No GPU context registered for instance ID N``; on the shared-memory
    path ``non-GPU context not registered (or reaped) for instance ID N``; early 2026 ``AssertionError: KV cache not
    registered for GPU ID N``), which the server does not answer: the request waits for ever."""

    kind: ClassVar[str] = "lmcache_unregistered_worker"
    #: lookup, store, retrieve (a load), or transfer (a store or a load: an exception's line does not say which)
    operation: UnregisteredWorkerOperation = "transfer"
    instance: str | None = None  #: the worker's id with the server (a store or a load)
    model: str | None = None  #: the model the lookup was for
    world_size: NonNegativeInt | None = None  #: the engine's workers, as the lookup says


KeysFailedOperation = Literal["prefetch", "l2_store"]
KEYS_FAILED_OPERATIONS: tuple[str, ...] = get_args(KeysFailedOperation)


@dataclass(slots=True)
class LmcacheKeysFailed(Event):
    """LMCache's multiprocess server could not move some cache keys (chunks per KV group and rank) between its
    tiers.  ``prefetch``: a prefetch from L2 found no room in L1 for them (``prefetch:N: K L1 reservations failed
    with out-of-memory; L1 may be under memory pressure``): those keys are not loaded, vLLM computes their tokens
    again; an L1 that stays full (its eviction stopped, as LMCache/LMCache#4817 found) fails every such prefetch.
    ``l2_store``: a store task to an L2 adapter failed (``Store task N to adapter A failed for keys: [...]``): the
    keys are not kept in L2, and an adapter that leaves them visible to lookups serves corrupt KV later
    (LMCache/LMCache#4991)."""

    kind: ClassVar[str] = "lmcache_keys_failed"
    operation: KeysFailedOperation = "prefetch"  #: prefetch (L2 into L1) or l2_store
    keys: NonNegativeInt | None = None  #: keys that failed, where the line says (a store's list counted when whole)
    adapter: NonNegativeInt | None = None  #: the L2 adapter's index (a store)


# --- request lifecycle --------------------------------------------------------


@dataclass(slots=True)
class RequestReceived(Event):
    """The front end accepted a request.  ``prompt_tokens`` is a count, never the text."""

    kind: ClassVar[str] = "request_received"
    request_id: str = ""  #: the id as printed
    max_tokens: int | None = None  #: SamplingParams max_tokens
    prompt_tokens: int | None = None  #: a count of prompt token ids, never the text
    #: the W3C trace id the log record that carried this line names (OpenTelemetry-shaped JSON, or text fields), 32 hex
    trace_id: str | None = None
    span_id: str | None = None  #: the span id of that record, 16 hex digits


@dataclass(slots=True)
class RequestAdded(Event):
    """The engine took a request (its id may carry the engine's suffix)."""

    kind: ClassVar[str] = "request_added"
    request_id: str = ""  #: the id as printed
    #: the W3C trace id the log record that carried this line names (OpenTelemetry-shaped JSON, or text fields), 32 hex
    trace_id: str | None = None
    span_id: str | None = None  #: the span id of that record, 16 hex digits


@dataclass(slots=True)
class RequestFinished(Event):
    """A request ended normally (V0's ``Finished request``)."""

    kind: ClassVar[str] = "request_finished"
    request_id: str = ""  #: the id as printed


@dataclass(slots=True)
class ResponseGenerated(Event):
    """``Generated response X: output: ..., finish_reason: R`` (``--enable-log-outputs``).

    The output text is never read.  ``stream`` is ``delta`` for one streamed
    piece, ``complete`` for a stream's last line, None for a whole response;
    ``output_tokens`` counts the listed token ids (lines from 0.28 list none)."""

    kind: ClassVar[str] = "response_generated"
    request_id: str = ""  #: the client's id as printed (no engine suffix)
    #: delta: one streamed piece; complete: a stream's last line; absent for a whole response
    stream: Literal["delta", "complete"] | None = None
    finish_reason: str | None = None  #: vLLM's finish reason (stop, length, abort ...); absent while a stream goes on
    #: token ids the line lists (capped by --max-log-len; 0.28+ lines list none at INFO)
    output_tokens: NonNegativeInt | None = None


@dataclass(slots=True)
class RequestAborted(Event):
    """The engine aborted a request (one event per id of an abort line naming several)."""

    kind: ClassVar[str] = "request_aborted"
    request_id: str = ""  #: the id as printed


@dataclass(slots=True)
class RequestCancelled(Event):
    """``Request X aborted.``: the client went away (logged after the engine-side abort); vLLM's Rust front
    end's ``auto-aborting request due to dropped stream request_id=X``."""

    kind: ClassVar[str] = "request_cancelled"
    request_id: str = ""  #: the id as printed


@dataclass(slots=True)
class RequestFailed(Event):
    """``Request X failed (reason)``, ``... failed due to <exception>.`` or ``... failed.``: the reason is one of
    engine_dead, bad_request, input_error, or error (an unexpected exception in the request's handling)."""

    kind: ClassVar[str] = "request_failed"
    request_id: str = ""  #: the id as printed
    #: engine_dead, bad_request, input_error or error
    reason: Literal["engine_dead", "bad_request", "input_error", "error"] = ""


@dataclass(slots=True)
class RequestPreempted(Event):
    """V0's ``Sequence group X is preempted by PreemptionMode.RECOMPUTE mode because there is not enough KV cache
    space. ... total_num_cumulative_preemption=N`` (0.4.3 to 0.10): printed for every 50th preemption, with the
    server's count so far.  Or LMCache's multiprocess connector's ``<preempted> by preempted requests: {'X', ...}``
    (2026): one event per request preempted in a step (a step that also resumed one logs only the resume)."""

    kind: ClassVar[str] = "request_preempted"
    request_id: str = ""  #: the id as printed
    mode: Literal["recompute", "swap"] = "recompute"  #: its KV dropped to be computed again, or swapped to the CPU
    cumulative: NonNegativeInt | None = None  #: preemptions since the server started, this one included


@dataclass(slots=True)
class RequestResumed(Event):
    """LMCache's multiprocess connector's ``<preempted> by resumed requests: {'X', ...}`` (2026): one event per
    preempted request the scheduler resumed in a step (vLLM itself logs no resume)."""

    kind: ClassVar[str] = "request_resumed"
    request_id: str = ""  #: the id as printed (the engine's)


@dataclass(slots=True)
class KvLoadFailure(Event):
    """The KV connector (LMCache, NIXL ...) could not load KV it had promised (vLLM from autumn 2025):
    ``Recovered from KV load failure: N request(s) rescheduled (T tokens affected).`` -- computed again --, or under
    ``kv_load_failure_policy=fail`` ``Failing N request(s) due to KV load failure (failure_policy=fail, T tokens
    affected). Request IDs: {...}``."""

    kind: ClassVar[str] = "kv_load_failure"
    requests: NonNegativeInt = 0  #: requests affected
    tokens: NonNegativeInt | None = None  #: tokens affected (to compute again, or lost with the failed requests)
    policy: Literal["recompute", "fail"] = "recompute"  #: what vLLM did: computed them again, or failed the requests
    request_ids: list[str] | None = None  #: the failed requests' ids, as printed (policy fail)


@dataclass(slots=True)
class HttpAccess(Event):
    """An HTTP access line: uvicorn's, vLLM's Rust front end's (``http request method=... path=...
    status=...``, no client address), or Ray Serve's where vLLM runs under Ray Serve LLM (``... --
    POST /v1/chat/completions 200 54.7ms``, no client address).  uvicorn's line for a WebSocket's opening
    handshake (``"WebSocket /v1/realtime" [accepted]``, vLLM's realtime API) is one too: a GET answered 101
    (Switching Protocols) when accepted, else the status it was refused with.  ``path`` is printed without its
    query string."""

    kind: ClassVar[str] = "http_access"
    client: str = ""  #: address:port as uvicorn prints it ("" from the Rust front end and Ray Serve)
    method: str = ""  #: HTTP method
    path: str = ""  #: request path without its query string
    status: int = 0  #: HTTP status code


# --- server lifecycle -----------------------------------------------------------


@dataclass(slots=True)
class ServerStarting(Event):
    """The OpenAI-compatible server starting: vLLM's version and the model."""

    kind: ClassVar[str] = "server_starting"
    version: str | None = None  #: as printed
    model: str | None = None  #: model name or path


@dataclass(slots=True)
class EngineStarting(Event):
    """``Initializing ... LLM engine (vX) with config: model=...``."""

    kind: ClassVar[str] = "engine_starting"
    version: str | None = None  #: as printed
    model: str | None = None  #: model name or path
    tensor_parallel_size: int | None = None  #: tensor parallel size
    data_parallel_size: int | None = None  #: data parallel size: the engines (V1 from 0.8)


@dataclass(slots=True)
class ServerReady(Event):
    """The server answers (``Application startup complete``, or its routes listed)."""

    kind: ClassVar[str] = "server_ready"


@dataclass(slots=True)
class ModelLoaded(Event):
    """The model's weights are loaded: their memory and the time it took."""

    kind: ClassVar[str] = "model_loaded"
    memory_gib: float | None = None  #: GiB
    seconds: float | None = None  #: seconds


@dataclass(slots=True)
class EngineInitialized(Event):
    """``init engine (profile, create kv cache, warmup model) took X s``: the engine is up."""

    kind: ClassVar[str] = "engine_initialized"
    seconds: float | None = None  #: seconds


@dataclass(slots=True)
class KvCacheCapacity(Event):
    """How much the KV cache holds: tokens, blocks, the most requests of full length at once."""

    kind: ClassVar[str] = "kv_cache_capacity"
    tokens: int | None = None  #: KV cache size, tokens
    tokens_per_request: int | None = None  #: tokens
    max_concurrency: float | None = None  #: requests
    gpu_blocks: int | None = None  #: KV blocks of the engine's own pool (on `device`)
    cpu_blocks: int | None = None  #: V0 CPU swap blocks
    device: str | None = None  #: device label


@dataclass(slots=True)
class StartupPhase(Event):
    """A start-up step vLLM times: ``phase`` is weights_loading, memory_profiling, torch_compile,
    graph_capture, engine_init (``seconds``) or kv_cache_memory (``bytes`` of the KV pool).  From 0.3x
    vLLM times the compile and the profiling run of each compiled part (``part``) apart."""

    kind: ClassVar[str] = "startup_phase"
    #: weights_loading, memory_profiling, torch_compile, graph_capture, engine_init or kv_cache_memory
    phase: str = ""
    seconds: float | None = None  #: how long the step took
    #: bytes (kv_cache_memory: the memory left for the KV cache; negative when the model left none)
    bytes: float | None = None
    #: the compiled part vLLM 0.3x names (``backbone``, ``eagle_head``, an encoder): each part's steps add up
    part: str | None = None


SleepTransition = Literal["sleep", "wake_up", "discard"]
SLEEP_TRANSITIONS: tuple[str, ...] = get_args(SleepTransition)


@dataclass(slots=True)
class EngineSleep(Event):
    """vLLM's sleep mode (``--enable-sleep-mode``: the ``/sleep`` and ``/wake_up`` routes, ``LLM.sleep()``), as
    its executor logs it (0.7.3 on): ``It took X seconds to fall asleep.`` (``transition`` sleep: the weights
    offloaded or dropped, the KV cache dropped), ``It took X seconds to wake up[ tags T].`` (wake_up) and, from
    2026, ``It took X seconds to discard tags T.`` (discard: the KV cache's memory released while the engine
    is paused)."""

    kind: ClassVar[str] = "engine_sleep"
    #: the data-parallel rank of the engine core that logged it (`EngineCore_DP1`); none for a single engine
    engine: int | None = None
    transition: SleepTransition = "sleep"  #: sleep, wake_up or discard
    seconds: float = 0.0  #: how long it took
    #: the parts woken or discarded (`weights`, `kv_cache`) as the line lists them; absent for a sleep, and for a
    #: wake-up that lists none (0.7.3 to 0.8.4, where every part wakes)
    tags: list[str] | None = None


@dataclass(slots=True)
class EnginesScaled(Event):
    """Elastic expert parallelism (``--enable-elastic-ep``, merged into vLLM in July 2025) changed the number of engines
    (data-parallel ranks) while the server runs: ``[Elastic EP] Scale up completed, new data parallel size: N``
    (``Scale down``), as the front end logs it, or ``DPCoordinator scaled up from A to B engines`` (``down``)."""

    kind: ClassVar[str] = "engines_scaled"
    direction: Literal["up", "down"] = "up"  #: up or down
    engines: NonNegativeInt = 0  #: the new data-parallel size
    engines_before: NonNegativeInt | None = None  #: the size before (the coordinator's line)


PauseState = Literal["unpaused", "paused_new", "paused_all"]


@dataclass(slots=True)
class EnginePause(Event):
    """``setting pause state to PAUSED_NEW`` (vLLM 0.32): the engine core's scheduler paused -- by ``/pause``
    (weight updates between training steps) or on the way to sleep -- or ``UNPAUSED`` again."""

    kind: ClassVar[str] = "engine_pause"
    #: the data-parallel rank of the engine core that logged it (`EngineCore_DP1`); none for a single engine
    engine: int | None = None
    #: unpaused; paused_new (no request started, those running go on); paused_all (nothing scheduled)
    state: PauseState = "unpaused"


@dataclass(slots=True)
class EngineStall(Event):
    """``No available shared memory broadcast block found in N seconds. This typically happens when some processes
    are hanging or doing some time-consuming work ...`` (0.5 and 0.6: ``No available block found in N second.``):
    one of vLLM's processes waited N seconds more for another through their shared-memory queue -- a worker
    that hangs (a collective operation that never completes, a peer gone) or, at start-up, a long compile or
    quantization.  One line for every N seconds of a wait (``VLLM_RINGBUFFER_WARNING_INTERVAL``, 60 by
    default); 0.5 and 0.6 also logged the waits of idle workers."""

    kind: ClassVar[str] = "engine_stall"
    #: the data-parallel rank of the engine core that logged it (`EngineCore_DP1`); none for a single engine or
    #: another process
    engine: int | None = None
    seconds: float | None = None  #: how much longer the process waited


# What vLLM's sleep mode puts to sleep (its sleep tags), in the order they are reported.
SLEEP_PARTS: tuple[str, ...] = ("weights", "kv_cache")


def asleep_after(asleep: list[str] | None, event: EngineSleep) -> list[str]:
    """The parts of an engine asleep after ``event``, given those asleep before it (None: not known)."""
    if event.transition == "sleep":
        return list(SLEEP_PARTS)
    if event.transition == "discard":
        return [part for part in SLEEP_PARTS if part in (asleep or ()) or part in (event.tags or ())]
    # vLLM logs a wake-up only when something was asleep: a log read from a wake-up on had it all asleep.
    # A wake-up that lists no tags, or lists the set that was asleep, wakes every part.
    before = SLEEP_PARTS if asleep is None else asleep
    return [part for part in before if event.tags and part not in event.tags]


@dataclass(slots=True)
class SleepMemory(Event):
    """``Sleep mode freed X GiB memory, Y GiB memory is still in use.``: one worker's device once it fell
    asleep (each worker logs its own)."""

    kind: ClassVar[str] = "sleep_memory"
    freed_bytes: NonNegativeInt = 0  #: device memory sleeping freed
    in_use_bytes: NonNegativeInt = 0  #: device memory still in use (by anything on the device) while asleep
    rank: int | None = None  #: the worker's tensor-parallel rank, from its process tag (`VllmWorker rank=1`)


ServerErrorKind = Literal["oom", "engine_dead", "cuda_error", "kv_cache_too_small", "config_error", "other"]
SERVER_ERRORS: tuple[str, ...] = get_args(ServerErrorKind)


@dataclass(slots=True)
class ServerError(Event):
    """A fatal error.  ``error`` is one of :data:`SERVER_ERRORS`; ``exception`` is a class name."""

    kind: ClassVar[str] = "server_error"
    #: oom, engine_dead, cuda_error, kv_cache_too_small, config_error (the server refused its command line,
    #: configuration, model or environment at start-up) or other
    error: ServerErrorKind = "other"
    exception: str | None = None  #: exception class name


@dataclass(slots=True)
class ServerShutdown(Event):
    """The server shutting down."""

    kind: ClassVar[str] = "server_shutdown"


@dataclass(slots=True)
class ShutdownAborted(Event):
    """``[shutdown] EngineCore: aborting in-flight requests count=N``: a stop without a drain (vLLM's shutdown
    timeout 0, its default) aborted the requests the engine still had."""

    kind: ClassVar[str] = "shutdown_aborted"
    #: the data-parallel rank of the engine core that logged it (`EngineCore_DP1`); none for a single engine
    engine: int | None = None
    requests: NonNegativeInt = 0  #: requests aborted


# --- the service manager -----------------------------------------------------------
# systemd's own lines about a unit, in its journal (``journalctl -u vllm`` shows them beside the server's) or a
# syslog file (every unit's): how its processes ended and what systemd did next.  A server killed by the kernel's
# OOM killer or a signal writes nothing more of its own; these lines are all that tells it.

ServiceExit = Literal["exited", "killed", "dumped"]
SERVICE_EXITS: tuple[str, ...] = get_args(ServiceExit)
# systemd's results of a unit that failed (``Failed with result 'R'``), as it names them.
ServiceResult = Literal[
    "exit-code", "signal", "core-dump", "oom-kill", "timeout", "watchdog", "start-limit-hit", "resources", "other"
]
SERVICE_RESULTS: tuple[str, ...] = get_args(ServiceResult)


@dataclass(slots=True)
class ServiceExited(Event):
    """``UNIT: Main process exited, code=exited, status=1/FAILURE``: systemd saw the unit's main process end
    (``code=killed`` by a signal, ``code=dumped`` by one that dumped core: ``status=9/KILL``).  systemd logs a
    clean exit at debug level only."""

    kind: ClassVar[str] = "service_exited"
    unit: str = ""  #: the systemd unit (`vllm.service`)
    how: ServiceExit = "exited"  #: exited (an exit code), killed (a signal) or dumped (a signal, core dumped)
    exit_code: int | None = None  #: the exit code, when it exited
    signal: int | None = None  #: the signal's number, when one ended it


@dataclass(slots=True)
class ServiceFailed(Event):
    """``UNIT: Failed with result 'R'.``: systemd put the unit in its failed state (after an exit it counts as a
    failure, a start that timed out, its watchdog, or when it gave up restarting it)."""

    kind: ClassVar[str] = "service_failed"
    unit: str = ""  #: the systemd unit
    #: systemd's result: exit-code, signal, core-dump, oom-kill, timeout, watchdog, start-limit-hit, resources;
    #: other for a word kvwatch does not know
    result: ServiceResult = "other"


@dataclass(slots=True)
class ServiceRestartScheduled(Event):
    """``UNIT: Scheduled restart job, restart counter is at N.``: systemd restarts the unit (``Restart=``)."""

    kind: ClassVar[str] = "service_restart_scheduled"
    unit: str = ""  #: the systemd unit
    restart_count: NonNegativeInt = 0  #: systemd's restart counter (NRestarts) as printed


@dataclass(slots=True)
class ServiceOomKill(Event):
    """``UNIT: A process of this unit has been killed by the OOM killer.`` (the kernel's), or ``UNIT:
    systemd-oomd killed N process(es) in this unit.``: host memory ran out, not a device's.  The main process
    or only one of the server's processes (an engine core, a worker) may be the one killed."""

    kind: ClassVar[str] = "service_oom_kill"
    unit: str = ""  #: the systemd unit
    killer: Literal["kernel", "systemd-oomd"] = "kernel"  #: the kernel's OOM killer or systemd-oomd
    processes: NonNegativeInt = 1  #: processes killed (systemd-oomd says how many; the kernel's line is one)


@dataclass(slots=True)
class ServiceStartLimitHit(Event):
    """``UNIT: Start request repeated too quickly.``: the unit was (re)started more often than its start limit
    allows (``StartLimitBurst=`` within ``StartLimitIntervalSec=``); systemd gave up and it stays down until
    ``systemctl reset-failed`` and a start."""

    kind: ClassVar[str] = "service_start_limit_hit"
    unit: str = ""  #: the systemd unit


# --- vllm bench -------------------------------------------------------------------


@dataclass(slots=True)
class BenchThroughput(Event):
    """``vllm bench throughput``'s result line."""

    kind: ClassVar[str] = "bench_throughput"
    requests_per_second: float = 0.0  #: requests/s
    total_tokens_per_second: float | None = None  #: tokens/s
    output_tokens_per_second: float | None = None  #: tokens/s


@dataclass(slots=True)
class BenchTokens(Event):
    """``vllm bench throughput``'s token totals."""

    kind: ClassVar[str] = "bench_tokens"
    prompt_tokens: int | None = None  #: a count of prompt token ids, never the text
    output_tokens: int | None = None  #: tokens


@dataclass(slots=True)
class BenchLatency(Event):
    """``Avg latency`` (``avg_seconds``) or one ``N% percentile latency`` line."""

    kind: ClassVar[str] = "bench_latency"
    avg_seconds: float | None = None  #: seconds
    percentile: float | None = None  #: as printed, e.g. 10
    seconds: float | None = None  #: seconds


@dataclass(slots=True)
class BenchServe(Event):
    """One result line of ``vllm bench serve``; ``name`` is vLLM's own result key (``mean_ttft_ms`` ...)."""

    kind: ClassVar[str] = "bench_serve"
    name: str = ""  #: vLLM's own result key (mean_ttft_ms ...)
    #: as printed; absent where vLLM printed ``inf`` (the configured request rate when none was set)
    value: float | None = None


# --- warnings and errors -----------------------------------------------------------

ProblemLevel = Literal["warning", "error", "critical"]
PROBLEM_LEVELS: tuple[str, ...] = get_args(ProblemLevel)
ProblemProducer = Literal["vllm", "lmcache", "uvicorn", "torch"]
PROBLEM_PRODUCERS: tuple[str, ...] = get_args(ProblemProducer)


@dataclass(slots=True)
class LogProblem(Event):
    """A WARNING, ERROR or CRITICAL line of vLLM, LMCache, uvicorn or PyTorch's C++ runtime that gives
    no other event.

    Each line of a message printed over several lines (a traceback under vLLM's
    header) is one event.  The message text is never carried (it may hold a prompt).
    PyTorch's own lines (``[rank0]:[E1203 10:00:00.123456789 ProcessGroupNCCL.cpp:616] ...``:
    NCCL watchdog timeouts, process groups not torn down) come from its C++ runtime inside the
    server's processes."""

    kind: ClassVar[str] = "log_problem"
    producer: ProblemProducer = "vllm"  #: whose header: vllm, lmcache, uvicorn or torch
    level: ProblemLevel = "warning"  #: warning, error or critical (a WARN or FATAL header counts as such)
    #: where the header says the message comes from: ``file.py:line`` (vLLM, LMCache, PyTorch's ``file.cpp:line``),
    #: or a logger name
    source: str | None = None


# --- self-observation --------------------------------------------------------------


@dataclass(slots=True)
class SuspiciousLine(Event):
    """A line with an intact vLLM/LMCache header that starts like ``family`` but matched no parser
    (or whose numbers do not read as numbers).

    The usual cause is a release that changed a format; the line text itself is
    never carried (it may hold a prompt)."""

    kind: ClassVar[str] = "suspicious_line"
    family: str = ""  #: the event kind the line looked like


EVENT_TYPES: tuple[type[Event], ...] = (
    EngineStats,
    SpecDecodeStats,
    DiffusionDecodeStats,
    KvTransferStats,
    EngineIteration,
    EngineMfu,
    LmcacheLookup,
    LmcacheLookupPending,
    LmcacheStoreStart,
    LmcacheStore,
    LmcacheStoreSkipped,
    LmcacheRetrieve,
    LmcacheInitialized,
    LmcacheDegraded,
    LmcacheHealth,
    LmcacheBackendBypass,
    LmcacheUnhealthySkip,
    LmcacheLookupTimeout,
    LmcacheLoadFailed,
    LmcacheLoadBypassed,
    LmcachePrefetch,
    LmcacheMpLookup,
    LmcacheResumeLoad,
    LmcacheL1Usage,
    LmcacheLookupSummary,
    LmcacheServerStarted,
    LmcacheEngineRegistration,
    LmcacheWorkerAdapter,
    LmcacheUnregisteredWorker,
    LmcacheKeysFailed,
    RequestReceived,
    RequestAdded,
    RequestFinished,
    ResponseGenerated,
    RequestAborted,
    RequestCancelled,
    RequestFailed,
    RequestPreempted,
    RequestResumed,
    KvLoadFailure,
    HttpAccess,
    ServerStarting,
    EngineStarting,
    ServerReady,
    ModelLoaded,
    EngineInitialized,
    KvCacheCapacity,
    StartupPhase,
    EngineSleep,
    SleepMemory,
    EnginePause,
    EngineStall,
    EnginesScaled,
    ServerError,
    ServerShutdown,
    ShutdownAborted,
    ServiceExited,
    ServiceFailed,
    ServiceRestartScheduled,
    ServiceOomKill,
    ServiceStartLimitHit,
    BenchThroughput,
    BenchTokens,
    BenchLatency,
    BenchServe,
    LogProblem,
    SuspiciousLine,
)

EVENT_KINDS: dict[str, type[Event]] = {cls.kind: cls for cls in EVENT_TYPES}


Events = tuple[Event, ...]
# A family parser: a message from ``start`` to its events, ``()`` for a message it knows and
# ignores, None for one that starts like the family but does not parse (a suspicious line).
VllmParser = Callable[[str, int, str | None], Events | None]
LmcacheParser = Callable[[str, int, str | None, int | None], Events | None]


def payload_fields(cls: type[Event]) -> tuple[str, ...]:
    """The contract fields of an event class, in order (everything but ``stamp``)."""
    return tuple(f.name for f in fields(cls) if f.name != "stamp")
