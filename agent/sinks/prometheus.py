"""Prometheus view of :class:`agent.sinks.stats.ServerStats`, rendered at scrape time.

A custom collector turns the plain numbers into metric families only when
someone asks (a scrape, or the end of a replay), so the per-line cost stays
that of updating a few ints.  Every series carries a ``server`` label; stats
series add ``engine``.  Names use the ``kvwatch_`` prefix so they never clash
with vLLM's ``vllm:`` or LMCache's ``lmcache:`` series.

Each metric is declared once, in :data:`CATALOGUE`: its name, type, labels and
help, and how to read its samples from the stats (see :mod:`agent.families`).
"""

from __future__ import annotations

import glob
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

from agent.families import Sample, Samples, Spec, computed, counter, flag, gauge, histogram, keyed, value_of
from agent.sinks.stats import EngineStatsState, ServerStats, declare_count
from parsers import events as ev

if TYPE_CHECKING:
    from prometheus_client.core import Metric
    from prometheus_client.registry import Collector, CollectorRegistry


def counted(event: type, amount: str | None = None, by: str | None = None, always: tuple[str, ...] = ()) -> Samples:
    """A count kept from events alone (see :mod:`agent.sinks.stats`): one per ``event``, or the sum of its
    ``amount`` attribute; labelled by the value of its ``by`` attribute when given.  Always present, and with
    ``by`` the values in ``always`` from the start (so that an alert's ``increase()`` sees the first one)."""
    rule = declare_count(event, amount, by)

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        if by is None:
            return [((), s.count_of(rule))]
        values = dict.fromkeys(always, 0)
        values.update(s.counts_by(rule))
        return sorted(((value,), count) for value, count in values.items())

    return samples


def histogram_of(attribute: str, when: str | None = None) -> Samples:
    """A histogram of the stats (once ``when``, an attribute, is non-zero, if given)."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        return [((), getattr(s, attribute))] if when is None or getattr(s, when) else []

    return samples


def per_engine(
    value: Callable[[EngineStatsState], Any], when: Callable[[EngineStatsState], Any] | None = None
) -> Samples:
    """One sample per engine (the ``engine`` label) that has a value."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        out = []
        for engine, state in sorted(s.engines.items()):
            if when is None or when(state):
                v = value(state)
                if v is not None:
                    out.append(((engine,), v))
        return out

    return samples


def engine_gauge(key: str) -> Samples:
    """A value of the engine's last stats line."""
    return per_engine(lambda state: state.gauges.get(key))


def diffusion_total(key: str) -> Samples:
    """A diffusion model's running total (none for an engine that never logged its companion line)."""
    return per_engine(lambda state: state.diffusion.get(key))


def per_unit(attribute: str, kinds: tuple[str, ...] = ()) -> Samples:
    """A dict of systemd's counts by unit (the ``unit`` label), or by unit and kind (``kinds``: the second label's
    values).  The server's own unit, where it is known by name, is there from the start at 0, so that an alert's
    ``increase()`` sees its first one; any other unit once a line named it."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        values = dict(getattr(s, attribute))
        own = s.service_unit
        if own is not None and not glob.has_magic(own):
            for key in [(own, kind) for kind in kinds] if kinds else [own]:
                values.setdefault(key, 0)
        return [(key if isinstance(key, tuple) else (key,), v) for key, v in sorted(values.items())]

    return samples


# vLLM's kv_load_failure_policy values.
KV_LOAD_POLICIES = ("recompute", "fail")


def per_engine_keyed(
    value: Callable[[EngineStatsState], dict[str, Any]], when: Callable[[EngineStatsState], Any] | None = None
) -> Samples:
    """One sample per engine and key of a dict of the engine's (the ``engine`` label, then the key's)."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        return [
            ((engine, key), v)
            for engine, state in sorted(s.engines.items())
            if when is None or when(state)
            for key, v in sorted(value(state).items())
        ]

    return samples


def _has_iterations(state: EngineStatsState) -> bool:
    return state.iteration_seconds.count > 0


def _sleeping(state: EngineStatsState) -> int | None:
    return None if state.asleep is None else int(bool(state.asleep))


def _sleep_memory(index: int) -> Samples:
    """Bytes freed (0) or still in use (1) when each worker last fell asleep."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        return [((rank,), values[index]) for rank, values in sorted(s.sleep_memory.items())]

    return samples


def _has_spec(state: EngineStatsState) -> bool:
    return bool(state.spec_accepted or state.spec_drafted or state.spec_gauges)


# KV fetch stages of the stats line -> the ``stage`` label.
_KV_FETCH_STAGES = (
    ("waiting_to_start", "kv_fetch_waiting"),
    ("in_progress", "kv_fetch_in_progress"),
    ("completed_waiting", "kv_fetch_completed"),
)


def _kv_fetch(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
    return [
        ((engine, stage), state.gauges[key])
        for engine, state in sorted(s.engines.items())
        for stage, key in _KV_FETCH_STAGES
        if key in state.gauges
    ]


def _vllm_info(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
    return [((s.version or "", s.model or ""), 1)] if s.version or s.model else []


def _lmcache_info(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
    return [(s.lmcache_info, 1)] if s.lmcache_info is not None else []


def bench(family: str) -> Samples:
    """The last ``vllm bench`` results of one family, labelled as the spec names them."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        out = []
        for (kind, named), value in sorted(s.bench.items()):
            if kind == family:
                by_name = dict(named)
                out.append((tuple(by_name[label] for label in labels), value))
        return out

    return samples


def kv_transfer(quantity: str) -> Samples:
    """What KV Transfer metrics lines added up to: ``lines``, ``unknown_keys``, ``lookups``, or a
    quantity by direction (``bytes``, ``seconds``, ``transfers``, ``failures``)."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        totals = s.kv_transfer
        if not totals.lines:
            return []
        if quantity in ("lines", "unknown_keys"):
            return [((), getattr(totals, quantity))]
        if quantity == "lookups":
            return [((), v) for (q, _direction), v in sorted(totals.totals.items()) if q == "lookups"]
        return [((direction,), v) for (q, direction), v in sorted(totals.totals.items()) if q == quantity]

    return samples


CATALOGUE: tuple[Spec, ...] = (
    # LMCache
    counter(
        "kvwatch_lmcache_lookups_total",
        "LMCache lookup lines (a request is looked up again after a preemption or a retry).",
        value_of("lookups"),
        doc="LMCache lookup lines; a preempted request is looked up again",
        native="`lmcache:num_lookup_requests_total`",
    ),
    counter(
        "kvwatch_lmcache_lookup_tokens_total",
        "Tokens looked up (Total tokens of each lookup).",
        value_of("lookup_tokens"),
        doc="tokens looked up (`Total tokens`)",
        native="`lmcache:num_lookup_tokens_total`; `vllm:prompt_tokens_total` when each request is looked up once",
    ),
    counter(
        "kvwatch_canary_requests_total",
        "kvwatch canary requests the engine added (kept out of the request counters).",
        value_of("canary_requests"),
        doc="`kvwatch canary` requests the engine added (not in `kvwatch_vllm_requests_added_total`)",
    ),
    counter(
        "kvwatch_canary_lookups_total",
        "LMCache lookups of kvwatch canary requests (kept out of the lookup counters and hit ratio).",
        value_of("canary_lookups"),
        doc="LMCache lookups of canary requests (not in the lookup counters nor the hit-ratio histogram)",
    ),
    counter(
        "kvwatch_canary_lookup_tokens_total",
        "Tokens looked up for kvwatch canary requests.",
        value_of("canary_lookup_tokens"),
        doc="tokens looked up for canary requests",
    ),
    counter(
        "kvwatch_canary_hit_tokens_total",
        "LMCache hit tokens of kvwatch canary requests.",
        value_of("canary_hit_tokens"),
        doc="LMCache hit tokens of canary requests",
    ),
    counter(
        "kvwatch_lmcache_hit_tokens_total",
        "Tokens LMCache found (LMCache hit tokens).",
        value_of("hit_tokens"),
        doc="`LMCache hit tokens`",
        native="`lmcache:num_lookup_hits_total`",
    ),
    counter(
        "kvwatch_lmcache_need_to_load_tokens_total",
        "Positive need-to-load values of lookups that were not skipped by min_retrieve.",
        value_of("need_to_load_tokens"),
        doc="positive `need to load` values of lookups not skipped by `min_retrieve`",
        native="`vllm:external_prefix_cache_hits_total` (vLLM ≥ 0.11.1)",
    ),
    counter(
        "kvwatch_lmcache_engine_computed_tokens_total",
        "Tokens vLLM already had in its own prefix cache at lookup (Inference Engine computed tokens).",
        value_of("engine_computed_tokens"),
        doc="`Inference Engine computed tokens`: vLLM's own prefix-cache tokens at lookup",
        native="`lmcache:num_vllm_hit_tokens_total`",
    ),
    counter(
        "kvwatch_lmcache_lookups_pending_total",
        "Lookups reported with hit tokens None (asynchronous lookup not finished).",
        value_of("lookups_pending"),
        doc="lookups with `hit tokens: None` (asynchronous, asked again)",
    ),
    counter(
        "kvwatch_lmcache_lookups_below_min_retrieve_total",
        "Lookups whose hit was below min_retrieve_tokens, so nothing was loaded.",
        value_of("lookups_below_min_retrieve"),
        doc="lookups whose hit was below `min_retrieve_tokens` (nothing loaded)",
    ),
    histogram(
        "kvwatch_lmcache_lookup_hit_ratio",
        "Hit tokens / total tokens of each lookup with total > 0.",
        histogram_of("hit_ratio"),
        doc='hit / total tokens per lookup with total > 0; bucket `le="0"` counts misses',
        native="`lmcache:request_cache_hit_rate`",
    ),
    counter(
        "kvwatch_lmcache_lookup_timeouts_total",
        "Lookups LMCache gave up on, reporting no hit: an RPC timeout, or one request's asynchronous lookup.",
        value_of("lookup_timeouts"),
        doc="lookups LMCache gave up on and reported no hit for, so vLLM computed the prompt: a lookup RPC's "
        "timeout (`Timeout occurred for rank N`, one per rank), a request's asynchronous lookup past its "
        "`lookup_timeout_ms` (`Request X is still waiting for async lookup after N seconds`), or in multiprocess "
        "mode a lookup or prefetch query to the LMCache server (`LOOKUP to URL timed out`, "
        "`QUERY_PREFETCH_STATUS to URL timed out`)",
    ),
    counter(
        "kvwatch_lmcache_stores_total",
        "Store lines (one per tensor-parallel rank).",
        value_of("stores"),
        doc="store lines, one per TP rank",
        native="`lmcache:num_store_requests_total`",
    ),
    counter(
        "kvwatch_lmcache_load_failures_total",
        "Loads LMCache completed only in part (Request X failed to load N tokens across M blocks).",
        counted(ev.LmcacheLoadFailed),
        doc=(
            "loads of a request's KV that LMCache completed only in part (`Request X failed to load N tokens "
            "across M blocks`, one per tensor-parallel rank): the hit it promised was not delivered; vLLM from "
            "autumn 2025 reports the same failures itself (`kvwatch_vllm_kv_load_failures_total`)"
        ),
    ),
    counter(
        "kvwatch_lmcache_load_failed_tokens_total",
        "Tokens LMCache failed to load (vLLM computes them again, or fails the request).",
        counted(ev.LmcacheLoadFailed, "tokens"),
        doc="tokens of those loads that LMCache did not load: vLLM computes them again (or fails the request)",
    ),
    counter(
        "kvwatch_lmcache_loads_bypassed_total",
        "Requests computed again after a failed asynchronous load (LMCache's multiprocess connector).",
        counted(ev.LmcacheLoadBypassed),
        doc=(
            "requests whose asynchronous load from LMCache failed, so that its multiprocess connector bypassed "
            "LMCache and vLLM computed the whole prompt again (`Bypassing LMCache for request X after a failed "
            "async KV load`); vLLM reports the same failures itself (`kvwatch_vllm_kv_load_failures_total`)"
        ),
    ),
    counter(
        "kvwatch_lmcache_stores_skipped_total",
        "Stores LMCache cut short or skipped: memory_pressure (its local CPU memory full), unhealthy.",
        counted(ev.LmcacheStoreSkipped, by="reason", always=ev.STORE_SKIP_REASONS),
        labels="reason",
        doc=(
            "stores LMCache cut short or skipped (one per line, each tensor-parallel rank its own): "
            "`memory_pressure` (`Local cpu memory under pressure so choosing to store only N total chunks`, "
            "earlier `Failed to allocate memory for the KV cache`: its local CPU memory full, "
            "`max_local_cpu_size` too small for the working set), `unhealthy` (`LMCache is unhealthy, skipping "
            "store operation`, or `store_layer`); what was not stored cannot hit later"
        ),
    ),
    counter(
        "kvwatch_lmcache_stored_tokens_total",
        "Tokens stored.",
        value_of("stored_tokens"),
        native="`lmcache:num_stored_tokens_total`",
    ),
    counter(
        "kvwatch_lmcache_stored_bytes_total",
        "Bytes of KV cache stored (LMCache's GB = 2^30).",
        value_of("stored_bytes"),
        doc="bytes of KV cache stored",
    ),
    histogram(
        "kvwatch_lmcache_store_duration_seconds",
        "Time of each store (LMCache's cost).",
        histogram_of("store_duration"),
        doc="store time (LMCache's cost)",
        native="`lmcache:time_to_store`",
    ),
    counter(
        "kvwatch_lmcache_store_starts_total",
        "Store operations issued (Storing KV cache for ..., or V0's Store skips ... and then stores ...).",
        value_of("store_starts"),
        doc="stores issued (`Storing KV cache for …`; the vLLM V0 adapter's `Store skips … and then stores …`)",
    ),
    counter(
        "kvwatch_lmcache_store_start_tokens_total",
        "Tokens selected for storing when issued.",
        value_of("store_start_tokens"),
    ),
    counter(
        "kvwatch_lmcache_retrieves_total",
        "Retrieve lines (one per tensor-parallel rank).",
        value_of("retrieves"),
        doc="retrieve lines, one per TP rank",
        native="`lmcache:num_retrieve_requests_total`",
    ),
    counter(
        "kvwatch_lmcache_retrieved_tokens_total",
        "Tokens retrieved.",
        value_of("retrieved_tokens"),
        native="`lmcache:num_hit_tokens_total`",
    ),
    counter(
        "kvwatch_lmcache_retrieve_requested_tokens_total",
        "Tokens asked for by retrieves (required tokens).",
        value_of("retrieve_requested_tokens"),
        doc="tokens retrieves asked for (`required`)",
        native="`lmcache:num_requested_tokens_total`",
    ),
    counter("kvwatch_lmcache_retrieved_bytes_total", "Bytes of KV cache retrieved.", value_of("retrieved_bytes")),
    histogram(
        "kvwatch_lmcache_retrieve_duration_seconds",
        "Time of each retrieve.",
        histogram_of("retrieve_duration"),
        doc="retrieve time",
        native="`lmcache:time_to_retrieve`",
    ),
    gauge(
        "kvwatch_lmcache_degraded",
        "1 after LMCache reported it could not start its engine (degraded, recompute only) since the last start.",
        value_of("lmcache_degraded"),
        doc="1 after LMCache said it could not start its engine (recompute only), until the next server start",
        native="`lmcache:lmcache_is_healthy` (inverse)",
    ),
    gauge(
        "kvwatch_lmcache_unhealthy",
        "1 while LMCache's health monitor holds it unhealthy (degraded mode: its lookups, loads and stores skipped).",
        flag(lambda s: bool(s.lmcache_unhealthy)),
        doc=(
            "1 from LMCache's `HealthMonitor: System unhealthy, entering degraded mode` (a remote backend failing its "
            "health checks; in multiprocess mode the connector's `LMCache server is unhealthy — entering degraded "
            "mode`) until it recovers (`System recovered, restoring normal operations`, `LMCache server is healthy "
            "again`) or the server's next start: meanwhile LMCache skips its lookups (each a miss), loads and stores"
        ),
        native="`lmcache:lmcache_is_healthy` (inverse)",
    ),
    gauge(
        "kvwatch_lmcache_backend_bypassed",
        "1 while LMCache's storage manager bypasses a storage backend, 0 once it restored it.",
        keyed("lmcache_bypassed_backends"),
        labels="backend",
        doc=(
            "1 while LMCache's storage manager bypasses the storage `backend` (`StorageManager: Backend X is now "
            "bypassed`: its health check failed and LMCache fell back to its local CPU memory, or its bypass API "
            "said so), 0 once restored (`... bypass removed`) or the server started anew; none before a backend "
            "was bypassed.  What that backend held does not hit meanwhile"
        ),
    ),
    counter(
        "kvwatch_lmcache_unhealthy_skips_total",
        "Lookups and loads LMCache skipped while unhealthy: lookup (reported as no hit), retrieve.",
        counted(ev.LmcacheUnhealthySkip, by="operation", always=ev.UNHEALTHY_SKIP_OPERATIONS),
        labels="operation",
        doc=(
            "lookups and loads LMCache skipped while its health monitor held it unhealthy (`LMCache is unhealthy, "
            "skipping lookup operation`: the lookup reports no hit; `... retrieve operation` or `retrieve_layer`: "
            "vLLM computes those tokens); the stores it skipped so are "
            '`kvwatch_lmcache_stores_skipped_total{reason="unhealthy"}`'
        ),
    ),
    gauge(
        "kvwatch_lmcache_info",
        "LMCache version as its start-up line prints it.",
        _lmcache_info,
        labels="version vllm_version",
        doc="LMCache version from its start-up line",
    ),
    # LMCache's multiprocess server
    counter(
        "kvwatch_lmcache_prefetches_total",
        "Prefetches the multiprocess server completed with a hit (it logs none when nothing hit).",
        value_of("prefetches"),
        doc=(
            "prefetches LMCache's multiprocess server completed with a hit (`Prefetch request completed`; it logs "
            "none for a miss)"
        ),
        native="`lmcache_mp:` prefetch counters on the server's own `/metrics`",
    ),
    counter(
        "kvwatch_lmcache_prefetch_requested_keys_total",
        "Cache keys those prefetches asked for (keys are chunks per KV group and rank, not tokens).",
        value_of("prefetch_requested_keys"),
    ),
    counter(
        "kvwatch_lmcache_prefetch_hit_keys_total",
        "Cache keys found, by tier: l1 (memory), l2 (loaded from storage), unknown (a release that prints no split).",
        keyed("prefetch_hit_keys"),
        labels="tier",
        doc="cache keys found: `l1` (memory), `l2` (loaded from storage), `unknown` (a release that prints no split)",
        native="`lmcache_mp:` L1/L2 hit counters",
    ),
    histogram(
        "kvwatch_lmcache_prefetch_duration_seconds",
        "Time of each completed prefetch.",
        histogram_of("prefetch_duration", when="prefetches"),
    ),
    counter(
        "kvwatch_lmcache_mp_lookups_total",
        "Lookups the multiprocess server ended, by result: hit, miss (its DEBUG MP lookup/prefetch end lines).",
        counted(ev.LmcacheMpLookup, by="result", always=ev.MP_LOOKUP_RESULTS),
        labels="result",
        doc=(
            "lookups LMCache's multiprocess server ended, `hit` or `miss` (`MP lookup/prefetch end: session=<id> "
            "found_count=N`, logged at DEBUG with `LMCACHE_LOG_LEVEL=DEBUG`): the one line that counts a miss too"
        ),
        native="`lmcache_mp:` lookup counters on the server's own `/metrics`",
    ),
    counter(
        "kvwatch_lmcache_mp_lookup_found_chunks_total",
        "Chunks of the prompts' prefixes those lookups found (a chunk is the server's chunk size in tokens).",
        counted(ev.LmcacheMpLookup, "found_chunks"),
    ),
    counter(
        "kvwatch_lmcache_resume_loads_total",
        "Preempted requests resumed with KV LMCache loaded for them (multiprocess connector).",
        computed(lambda s: s.resume_loads.loads),
        doc=(
            "preempted requests resumed with KV that LMCache loaded rather than vLLM computing it again: the "
            "resumes (`<preempted> by resumed requests`) that a `<resume-load> req=... lmcache=N load=N` line of "
            "LMCache's multiprocess connector preceded (a resume without one was computed again)"
        ),
    ),
    counter(
        "kvwatch_lmcache_resume_load_tokens_total",
        "Tokens LMCache was to load for those resumes (the load of each one's last resume-load line).",
        computed(lambda s: s.resume_loads.tokens),
        doc="tokens LMCache was to load for those resumes, as its last `<resume-load>` line before each resume "
        "printed them (`load=`, beyond vLLM's own prefix cache)",
    ),
    gauge(
        "kvwatch_lmcache_l1_used_bytes",
        "L1 memory in use (multiprocess server, extra logging).",
        value_of("l1_used_bytes"),
        doc="L1 memory in use (multiprocess server with `--enable-extra-logging`)",
        native="`lmcache_mp:` L1 usage",
    ),
    gauge(
        "kvwatch_lmcache_l1_capacity_bytes",
        "L1 memory size (multiprocess server, extra logging).",
        value_of("l1_capacity_bytes"),
        doc="L1 memory size (same line)",
    ),
    counter(
        "kvwatch_lmcache_server_lookups_total",
        "Lookups the multiprocess server's hit-rate summaries covered (lookups that asked for nothing left out).",
        value_of("server_lookups"),
        doc="lookups the multiprocess server's hit-rate summaries covered (`lookup hit rate (over N lookup(s))`, "
        "at most one line every 30 s; lookups that asked for no tokens are left out)",
        native="`lmcache_mp_lookup_requested_tokens_total` counts their tokens",
    ),
    gauge(
        "kvwatch_lmcache_server_lookup_hit_ratio",
        "Share of the tokens the multiprocess server's lookups asked for that were found, token-weighted, over the "
        "lookups of its last summary: prefix, and non_prefix on a CacheBlend server.",
        keyed("server_lookup_hit_ratio"),
        labels="plane",
        doc="share of the tokens its lookups asked for that were found (token-weighted, 0-1) over the lookups of the "
        "server's last summary line: `prefix`, and `non_prefix` (outside the prefix) on a CacheBlend server",
        native="`rate(lmcache_mp_lookup_hit_tokens_total) / rate(lmcache_mp_lookup_requested_tokens_total)`",
    ),
    counter(
        "kvwatch_lmcache_server_starts_total",
        "Starts of LMCache's multiprocess server, or of its remote cache server.",
        value_of("lmcache_server_starts"),
        doc="starts of the multiprocess server (`LMCache cache server is running...`, after `LMCache ZMQ cache "
        "server is running on …` in releases that name the address: one start per pair), with an HTTP front "
        "end or without; and of the remote cache server several vLLM servers share through `lm://` (`python -m "
        "lmcache.v1.server HOST PORT`: `Server started at HOST:PORT`)",
    ),
    counter(
        "kvwatch_lmcache_engine_registrations_total",
        "vLLM workers' KV caches registered with LMCache's multiprocess server, unregistered from it, or reaped.",
        counted(ev.LmcacheEngineRegistration, by="change", always=ev.ENGINE_REGISTRATION_CHANGES),
        labels="change",
        doc="vLLM workers whose KV cache joined the multiprocess server (`registered`: `Registered KV cache for GPU "
        "ID N with L layers`, `Registered non-GPU context for instance N (…)`; one per tensor-parallel worker, at "
        "each start of vLLM) or left it (`unregistered`: `Unregistered KV cache for GPU ID N`, `Unregistered "
        "non-CUDA context for instance ID N`; a vLLM that crashes says nothing), or dropped by the server's reaper "
        "for their silence (`reaped`: `Reaped GPU instance N: silent for S s (pinged=…)`, `Reaped non-GPU instance "
        "N: …`; a crashed or hung worker after the reap timeout, 120 s by default, or one that stored and loaded "
        "nothing within the registration grace, an hour); read from the server's own log",
    ),
    gauge(
        "kvwatch_lmcache_engines_registered",
        "vLLM workers LMCache's multiprocess server holds now, as its log since its start says.",
        computed(lambda s: s.lmcache_workers.count),
        doc="the vLLM workers whose KV cache is registered with the multiprocess server now: registered since its "
        "last start (`registered` above) and neither unregistered nor reaped since; one per tensor-parallel worker. "
        "A crashed vLLM's worker stays until the server's reaper drops it, and a worker reaped while its vLLM runs on "
        "is not registered again: its lookups, stores and loads are refused (below), and the cache is not used for "
        "it.  Exported once the server's start was read (kvwatch read its log from that start on: supervised, or a "
        "followed log read from its beginning); read from the server's own log",
        native="none (the server's HTTP API lists them: `GET /status`)",
    ),
    counter(
        "kvwatch_lmcache_unregistered_worker_requests_total",
        "Lookups, stores and loads LMCache's multiprocess server was asked for by vLLM workers it does not hold.",
        counted(ev.LmcacheUnregisteredWorker, by="operation", always=ev.UNREGISTERED_WORKER_OPERATIONS),
        labels="operation",
        doc="requests of a vLLM worker the multiprocess server does not hold (reaped, or registered with the server "
        "before it started again): `lookup` (`No GPU context found for model M with world size W during lookup!`: no "
        "hit), `store` and `retrieve` (LMCache 0.5.6 on a GPU: `Rejecting STORE for unregistered GPU instance ID N`, "
        "`Rejecting RETRIEVE …`: nothing stored, nothing loaded), `transfer` (a store or a load whose handler raised "
        "`No GPU context registered for instance ID N`, `non-GPU context not registered (or reaped) for instance ID "
        "N` or `KV cache not registered for GPU ID N`: the server does not answer it and the request waits for "
        "ever); read from the server's own log",
        native="none",
    ),
    counter(
        "kvwatch_lmcache_key_failures_total",
        "Prefetches and L2 store tasks of LMCache's multiprocess server that failed for some of their keys.",
        counted(ev.LmcacheKeysFailed, by="operation", always=ev.KEYS_FAILED_OPERATIONS),
        labels="operation",
        doc="lines of LMCache's multiprocess server saying it could not move keys between its tiers: `prefetch` "
        "(`prefetch:N: K L1 reservations failed with out-of-memory; L1 may be under memory pressure`: keys not loaded "
        "from L2 for want of room in L1, their tokens computed again; an L1 whose eviction stopped fails every one), "
        "`l2_store` (`Store task N to adapter A failed for keys: [...]`: keys not kept in L2; with an adapter that "
        "leaves them visible to lookups, later loads of them serve corrupt KV, LMCache/LMCache#4991); read from the "
        "server's own log",
        native="LMCache's `L2_PREFETCH_FAILED` and `L2_STORE_COMPLETED` events (its OpenTelemetry metrics)",
    ),
    # KV connectors
    counter(
        "kvwatch_kv_transfer_lines_total",
        "KV Transfer metrics lines (one per logging interval in which the connector moved data).",
        kv_transfer("lines"),
        doc="`KV Transfer metrics` lines (one per logging interval in which the KV connector reported)",
    ),
    counter(
        "kvwatch_kv_transfer_bytes_total",
        "Bytes a KV connector moved: load (into the GPU), store (out of it), transfer (NIXL, between instances).",
        kv_transfer("bytes"),
        labels="direction",
        doc=(
            "bytes the KV connector moved: `load` (offloaded KV back to the GPU), `store` (out of it), `transfer` "
            "(NIXL, between instances: transfers × average MB)"
        ),
        native="`vllm:kv_offload_total_bytes`, `vllm:nixl_bytes_transferred`",
    ),
    counter(
        "kvwatch_kv_transfer_seconds_total",
        "Time spent moving them (direction lookup: LMCache MP lookup latency, summed).",
        kv_transfer("seconds"),
        labels="direction",
        doc=(
            'time spent on them; `direction="lookup"`: LMCache MP lookups (count × average latency), so '
            "`rate(seconds)/rate(lookups)` is their mean latency"
        ),
        native="`vllm:kv_offload_total_time`, `vllm:nixl_xfer_time_seconds`, `vllm:lmcache_mp_lookup_duration_seconds`",
    ),
    counter(
        "kvwatch_kv_transfer_operations_total",
        "Transfers (load, store, transfer).",
        kv_transfer("transfers"),
        labels="direction",
        doc="transfers (NIXL's successful transfers; the offloading connector's load and store counts)",
        native="`vllm:nixl_xfer_time_seconds_count`",
    ),
    counter(
        "kvwatch_kv_transfer_failures_total",
        "Failed transfers (NIXL, Mooncake: transfer, receive; 3FS: load, store).",
        kv_transfer("failures"),
        labels="direction",
        native="`vllm:nixl_num_failed_transfers`",
    ),
    counter(
        "kvwatch_kv_transfer_expired_requests_total",
        "Requests whose KV expired before the other instance read it (NIXL, Mooncake: P/D disaggregation).",
        kv_transfer("expired"),
        labels="direction",
        doc="requests whose KV blocks expired before the decode instance read them (`Num KV expired reqs` of NIXL "
        "and Mooncake): the prefill side freed them, so the decode side computes them again; vLLM calls it a "
        "signal for the autoscaler",
        native="`vllm:nixl_num_kv_expired_reqs`",
    ),
    counter(
        "kvwatch_kv_transfer_notifications_after_expiry_total",
        "Transfer notifications that came after the KV expired (NIXL): the blocks may have been reused.",
        kv_transfer("late_notifications"),
        labels="direction",
        doc="NIXL's `Num notifs after expiry`: a reader finished with KV blocks that had already expired (and "
        "may have been reused)",
        native="`vllm:nixl_num_notifications_after_expiry`",
    ),
    counter(
        "kvwatch_kv_transfer_lookups_total",
        "Lookups LMCache's MP connector reported.",
        kv_transfer("lookups"),
        native="`vllm:lmcache_mp_lookup_duration_seconds_count`",
    ),
    counter(
        "kvwatch_kv_transfer_unknown_keys_total",
        "Keys of KV Transfer metrics lines kvwatch does not know (a new connector or release); not exported as labels.",
        kv_transfer("unknown_keys"),
        doc=(
            "keys of `KV Transfer metrics` lines kvwatch does not know (a new connector or release): counted, never "
            "labels"
        ),
    ),
    # vLLM engine stats
    counter(
        "kvwatch_vllm_stats_lines_total",
        "Periodic stats lines.",
        per_engine(lambda e: e.lines, when=lambda e: e.lines),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_stats_last_seen_timestamp_seconds",
        "Log time of the last stats line; vLLM stops printing stats when idle, so the gauges freeze.",
        per_engine(lambda e: e.last_seen),
        labels="engine",
        doc=(
            "log time of the last stats line: vLLM stops printing stats when idle, so the gauges below freeze; this "
            "tells stale from current.  When the server starts anew they read 0 (the new process runs nothing and "
            "its cache is empty) until its first stats line"
        ),
    ),
    gauge(
        "kvwatch_vllm_prompt_throughput_tokens_per_second",
        "Avg prompt throughput of the last stats line.",
        engine_gauge("prompt_throughput"),
        labels="engine",
        doc="Avg prompt throughput",
        native=(
            "`rate(vllm:prompt_tokens_total)`; from 0.16.0 "
            '`rate(vllm:prompt_tokens_by_source_total{source="local_compute"})`'
        ),
    ),
    gauge(
        "kvwatch_vllm_generation_throughput_tokens_per_second",
        "Avg generation throughput of the last stats line.",
        engine_gauge("generation_throughput"),
        labels="engine",
        doc="Avg generation throughput",
        native="`rate(vllm:generation_tokens_total)`",
    ),
    gauge(
        "kvwatch_vllm_throughput_tokens_per_second",
        "Throughput of the 2023 (v0.1) stats line.",
        engine_gauge("throughput"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_requests_running",
        "Running requests.",
        engine_gauge("running"),
        labels="engine",
        doc="Running",
        native="`vllm:num_requests_running`",
    ),
    gauge(
        "kvwatch_vllm_requests_waiting",
        "Waiting (V0: pending) requests.",
        engine_gauge("waiting"),
        labels="engine",
        doc="Waiting (V0: Pending)",
        native="`vllm:num_requests_waiting`",
    ),
    gauge(
        "kvwatch_vllm_requests_swapped",
        "Swapped requests (V0 engine only).",
        engine_gauge("swapped"),
        labels="engine",
        doc="Swapped (V0)",
        native="`vllm:num_requests_swapped`",
    ),
    gauge(
        "kvwatch_vllm_requests_deferred",
        "Waiting requests deferred by transient constraints.",
        engine_gauge("deferred"),
        labels="engine",
        doc="Deferred (0 when a V1 line omits it)",
        native='`vllm:num_requests_waiting_by_reason{reason="deferred"}`',
    ),
    gauge(
        "kvwatch_vllm_requests_kv_fetch",
        "Waiting requests by asynchronous KV load stage (waiting_to_start, in_progress, completed_waiting).",
        _kv_fetch,
        labels="engine stage",
        doc="waiting requests by async KV load stage: `waiting_to_start`, `in_progress`, `completed_waiting`",
        native="`vllm:num_requests_kv_fetch_by_stage`",
    ),
    gauge(
        "kvwatch_vllm_kv_cache_usage_ratio",
        "KV cache usage of the engine's own pool (GPU, CPU, XPU ...).",
        engine_gauge("kv_cache_usage"),
        labels="engine",
        doc="KV cache usage of the engine's own pool",
        native="`vllm:kv_cache_usage_perc` (`vllm:gpu_cache_usage_perc` before 0.9.2)",
    ),
    gauge(
        "kvwatch_vllm_cpu_kv_cache_usage_ratio",
        "CPU swap-space KV usage (V0 engine only).",
        engine_gauge("cpu_kv_cache_usage"),
        labels="engine",
        doc="CPU swap-space KV usage (V0)",
        native="`vllm:cpu_cache_usage_perc`",
    ),
    gauge(
        "kvwatch_vllm_prefix_cache_hit_ratio",
        "vLLM's prefix cache hit rate (last 1000 requests in V1, cumulative in V0).",
        engine_gauge("prefix_cache_hit_rate"),
        labels="engine",
        doc="prefix-cache hit rate (last 1000 requests in V1, cumulative in V0)",
        native="`vllm:prefix_cache_hits_total / vllm:prefix_cache_queries_total`",
    ),
    gauge(
        "kvwatch_vllm_cpu_prefix_cache_hit_ratio",
        "V0's CPU prefix cache hit rate.",
        engine_gauge("cpu_prefix_cache_hit_rate"),
        labels="engine",
        doc="V0 CPU prefix-cache hit rate",
        native="`vllm:cpu_prefix_cache_hit_rate`",
    ),
    gauge(
        "kvwatch_vllm_external_prefix_cache_hit_ratio",
        "Hit rate of the KV connector (LMCache) as vLLM reports it.",
        engine_gauge("external_prefix_cache_hit_rate"),
        labels="engine",
        doc="the KV connector's (LMCache's) hit rate as vLLM reports it",
        native="`vllm:external_prefix_cache_hits_total / vllm:external_prefix_cache_queries_total`",
    ),
    gauge(
        "kvwatch_vllm_mm_cache_hit_ratio",
        "Multimodal processor cache hit rate.",
        engine_gauge("mm_cache_hit_rate"),
        labels="engine",
        doc="multimodal cache hit rate",
        native="`vllm:mm_cache_hits_total / vllm:mm_cache_queries_total`",
    ),
    counter(
        "kvwatch_vllm_preemptions_total",
        "Preemptions (V1: sum of each interval's Preemptions; V0: the count its preemption warning prints).",
        per_engine(
            lambda e: e.preemptions + e.cumulative_preemptions.total,
            when=lambda e: e.lines or e.cumulative_preemptions.first is not None,
        ),
        labels="engine",
        doc=(
            "V1: sum of each interval's Preemptions; V0: the count since the server started its preemption "
            "warning prints (`total_num_cumulative_preemption=N`, at every 50th), added up over restarts"
        ),
        native="`vllm:num_preemptions_total`",
    ),
    counter(
        "kvwatch_vllm_preempted_requests_total",
        "Requests named preempted one by one (LMCache's multiprocess connector's <preempted> lines).",
        value_of("preempted"),
        doc=(
            "requests a line names as preempted, one by one: LMCache's multiprocess connector's `<preempted> by "
            "preempted requests: {...}` (2026), the one count of preemptions in a vLLM log whose stats line omits "
            "them (0.32's never prints its Preemptions part); a step that also resumed a request logs only the "
            "resume, so this can fall short of vLLM's own count"
        ),
        native="`vllm:num_preemptions_total`",
    ),
    counter(
        "kvwatch_vllm_resumed_requests_total",
        "Preempted requests resumed (LMCache's multiprocess connector's <preempted> by resumed requests lines).",
        counted(ev.RequestResumed),
        doc="preempted requests the scheduler resumed, one by one (`<preempted> by resumed requests: {...}` of "
        "LMCache's multiprocess connector, 2026; vLLM logs no resume)",
    ),
    counter(
        "kvwatch_vllm_corrupted_requests_total",
        "Requests with NaN logits (Corrupted).",
        per_engine(lambda e: e.corrupted, when=lambda e: e.lines),
        labels="engine",
        doc="sum of each interval's Corrupted",
        native="`vllm:corrupted_requests_total`",
    ),
    counter(
        "kvwatch_vllm_spec_decode_accepted_tokens_total",
        "Speculative tokens accepted.",
        per_engine(lambda e: e.spec_accepted, when=_has_spec),
        labels="engine",
        native="`vllm:spec_decode_num_accepted_tokens_total`",
    ),
    counter(
        "kvwatch_vllm_spec_decode_drafted_tokens_total",
        "Speculative tokens drafted.",
        per_engine(lambda e: e.spec_drafted, when=_has_spec),
        labels="engine",
        native="`vllm:spec_decode_num_draft_tokens_total`",
    ),
    gauge(
        "kvwatch_vllm_spec_decode_mean_acceptance_length",
        "Mean acceptance length, last interval.",
        per_engine(lambda e: e.spec_gauges.get("mean_acceptance_length")),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_spec_decode_draft_acceptance_ratio",
        "Draft acceptance rate, last interval.",
        per_engine(lambda e: e.spec_gauges.get("draft_acceptance_rate")),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_diffusion_committed_throughput_tokens_per_second",
        "Tokens a diffusion model committed a second, last interval.",
        engine_gauge("committed_throughput"),
        labels="engine",
        doc="tokens/s a diffusion language model committed, last interval (`DiffusionDecoding metrics:` line)",
    ),
    counter(
        "kvwatch_vllm_diffusion_committed_tokens_total",
        "Tokens a diffusion model committed.",
        diffusion_total("committed_tokens"),
        labels="engine",
        doc="tokens a diffusion language model committed (the sum of each interval's `Committed`)",
        native="`vllm:spec_decode_num_accepted_tokens_total`, which vLLM reuses for them",
    ),
    counter(
        "kvwatch_vllm_diffusion_denoising_steps_total",
        "Denoising steps a diffusion model ran (committed tokens over them: tokens per step).",
        diffusion_total("denoising_steps"),
        labels="engine",
        native="`vllm:spec_decode_num_drafts_total`",
    ),
    counter(
        "kvwatch_vllm_diffusion_canvas_positions_total",
        "Canvas positions the denoising steps evaluated (over committed tokens: vLLM's mean steps per canvas).",
        diffusion_total("canvas_positions"),
        labels="engine",
        native="`vllm:spec_decode_num_draft_tokens_total`",
    ),
    gauge(
        "kvwatch_vllm_device_flops_per_second",
        "Floating-point operations a second each device achieved, as vLLM estimates them (last interval).",
        engine_gauge("flops_per_second"),
        labels="engine",
        doc="FLOP/s each device achieved as vLLM estimates them, last interval (`MFU:` line, `--enable-mfu-metrics`)",
        native="`rate(vllm:estimated_flops_per_gpu_total)`",
    ),
    gauge(
        "kvwatch_vllm_device_memory_bytes_per_second",
        "Bytes a second each device read and wrote, as vLLM estimates them (last interval).",
        engine_gauge("memory_bytes_per_second"),
        labels="engine",
        doc="bytes/s each device read and wrote as vLLM estimates them, last interval (`MFU:` line)",
        native="`rate(vllm:estimated_read_bytes_per_gpu_total) + rate(vllm:estimated_write_bytes_per_gpu_total)`",
    ),
    # engine steps (--enable-logging-iteration-details)
    histogram(
        "kvwatch_vllm_iteration_seconds",
        "Time each engine step took (iteration details; a data-parallel rank's dummy steps left out).",
        per_engine(lambda e: e.iteration_seconds, when=_has_iterations),
        labels="engine",
        doc=(
            "time each engine step took, from `Iteration(N): ... iteration elapsed time: X ms` "
            "(`--enable-logging-iteration-details`); dummy steps left out"
        ),
    ),
    histogram(
        "kvwatch_vllm_iteration_tokens",
        "Tokens each engine step computed, context and generation (iteration details).",
        per_engine(lambda e: e.iteration_tokens, when=_has_iterations),
        labels="engine",
        native="`vllm:iteration_tokens_total`",
    ),
    counter(
        "kvwatch_vllm_scheduled_tokens_total",
        "Tokens engine steps computed, by phase: context (prompt tokens prefilled), generation (decoded).",
        per_engine_keyed(lambda e: e.iteration_scheduled_tokens, when=_has_iterations),
        labels="engine phase",
        doc="tokens engine steps computed: `context` (prompt tokens prefilled), `generation` (tokens decoded)",
        native=(
            "`vllm:prompt_tokens_total` less prefix-cache hits; `vllm:generation_tokens_total` less each request's "
            "first token (its prefill step's)"
        ),
    ),
    counter(
        "kvwatch_vllm_scheduled_requests_total",
        "Requests in engine steps, by phase, summed over steps (divided by the steps: the mean batch).",
        per_engine_keyed(lambda e: e.iteration_scheduled_requests, when=_has_iterations),
        labels="engine phase",
        doc=(
            "requests in engine steps by phase, summed over the steps: over `kvwatch_vllm_iteration_seconds_count`, "
            "the mean batch"
        ),
    ),
    counter(
        "kvwatch_vllm_dummy_iterations_total",
        "Dummy engine steps a data-parallel rank ran with no requests of its own.",
        per_engine(lambda e: e.dummy_iterations, when=lambda e: e.dummy_iterations),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_data_parallel_size",
        "Engines (data-parallel ranks) of the server: its start's configuration, then each elastic scaling's.",
        value_of("data_parallel_size"),
        doc=(
            "engines (data-parallel ranks): `data_parallel_size=` of the engine's start-up configuration line, then "
            "each elastic scaling's (`--enable-elastic-ep`: `[Elastic EP] Scale up completed, new data parallel size: "
            "N`, `DPCoordinator scaled down from A to B engines`; `changes()` counts them).  The engines a scale-down "
            "took away read 0 from then on"
        ),
    ),
    counter(
        "kvwatch_vllm_engine_stall_seconds_total",
        "Seconds vLLM's processes reported waiting on each other (No available shared memory broadcast block "
        "found in N seconds).",
        counted(ev.EngineStall, "seconds"),
        doc=(
            "seconds vLLM's processes reported waiting on each other through their shared-memory queue (`No "
            "available shared memory broadcast block found in N seconds`, a line for every N seconds of one wait): "
            "with requests in flight a worker that hangs, at start-up a long compile; 0.5 and 0.6 also reported "
            "idle workers' waits"
        ),
    ),
    # sleep mode (--enable-sleep-mode)
    gauge(
        "kvwatch_vllm_sleeping",
        "1 while the engine is asleep (sleep mode: its weights or KV cache released), 0 awake; once the log shows "
        "sleep mode.",
        per_engine(_sleeping),
        labels="engine",
        doc=(
            "1 from `It took X seconds to fall asleep` (or `to discard tags`) until a wake-up that wakes every part "
            "(`weights`, `kv_cache`), 0 awake; present once the log shows sleep mode, 0 again when the server starts "
            "anew"
        ),
        native='`vllm:engine_sleep_state{sleep_state!="awake"}` (vLLM 0.32, with `VLLM_SERVER_DEV_MODE`)',
    ),
    gauge(
        "kvwatch_vllm_paused",
        "1 while the engine's scheduler is paused (/pause, or on the way to sleep), 0 going; once the log shows a "
        "pause.",
        per_engine(lambda e: None if e.paused is None else int(e.paused)),
        labels="engine",
        doc=(
            "1 from `setting pause state to PAUSED_NEW` (or `PAUSED_ALL`: `/pause`, weight updates between "
            "training steps, sleep) until `UNPAUSED`, 0 going (vLLM 0.32); present once the log shows a pause"
        ),
    ),
    counter(
        "kvwatch_vllm_sleep_transitions_total",
        "Sleep-mode transitions: sleep (fell asleep), wake_up, discard (the KV cache's memory released).",
        per_engine_keyed(lambda e: e.sleep_transitions, when=lambda e: e.sleep_transitions),
        labels="engine transition",
        native="`vllm:sleep_mode_operation_duration_seconds_count` (the front end's, which adds pausing the engine)",
    ),
    counter(
        "kvwatch_vllm_sleep_transition_seconds_total",
        "Seconds those transitions took (over kvwatch_vllm_sleep_transitions_total: the mean).",
        per_engine_keyed(lambda e: e.sleep_transition_seconds, when=lambda e: e.sleep_transitions),
        labels="engine transition",
        doc="seconds the executor took for them, as its `It took X seconds to …` lines say",
        native="`vllm:sleep_mode_operation_duration_seconds_sum`",
    ),
    gauge(
        "kvwatch_vllm_sleep_freed_bytes",
        "Device memory the worker's latest sleep freed.",
        _sleep_memory(0),
        labels="rank",
        doc=(
            "device memory the worker's latest sleep freed (`Sleep mode freed X GiB memory, …`), by tensor-parallel "
            "rank from the worker's process tag (0 where it names none: an engine's only worker)"
        ),
    ),
    gauge(
        "kvwatch_vllm_sleep_memory_in_use_bytes",
        "Device memory still in use after the worker's latest sleep (by anything on the device).",
        _sleep_memory(1),
        labels="rank",
        doc=(
            "device memory still in use once the worker fell asleep (`…, Y GiB memory is still in use`), by "
            "anything on the device: what another workload cannot have"
        ),
    ),
    # requests
    counter(
        "kvwatch_vllm_requests_received_total",
        "Received request lines (front end).",
        value_of("received"),
        doc="`Received request` lines (request logging on)",
    ),
    counter(
        "kvwatch_vllm_requests_added_total",
        "Added request lines (engine).",
        value_of("added"),
        doc="`Added request` lines",
        native="`vllm:request_success_total` summed over reasons, once finished",
    ),
    counter(
        "kvwatch_vllm_requests_finished_total",
        "Finished request lines (V0 engine).",
        value_of("finished"),
        doc="`Finished request` lines (V0)",
        native="`vllm:request_success_total`",
    ),
    counter(
        "kvwatch_vllm_requests_aborted_total",
        "Aborted requests (one per id of an abort line).",
        value_of("aborted"),
        doc="aborted requests, one per id",
        native='`vllm:request_success_total{finished_reason="abort"}`',
    ),
    counter("kvwatch_vllm_requests_cancelled_total", "Requests whose client went away.", value_of("cancelled")),
    counter(
        "kvwatch_vllm_requests_aborted_at_shutdown_total",
        "Requests a stop aborted in flight (vLLM's shutdown without a drain).",
        counted(ev.ShutdownAborted, "requests"),
        doc="requests a stop aborted in flight (`[shutdown] EngineCore: aborting in-flight requests count=N`, "
        "vLLM 0.32 with its default shutdown timeout of 0); a drain (`--shutdown-timeout`) lets them finish",
    ),
    counter(
        "kvwatch_vllm_request_failures_total",
        "Requests that failed (engine_dead, bad_request, input_error, error).",
        keyed("failures"),
        labels="reason",
        doc="failed requests: `engine_dead`, `bad_request`, `input_error`, `error` (an unexpected exception)",
        native='`vllm:request_success_total{finished_reason="error"}`',
    ),
    counter(
        "kvwatch_vllm_kv_load_failures_total",
        "Requests whose KV the connector could not load, by policy: recompute (computed again) or fail (failed).",
        counted(ev.KvLoadFailure, "requests", by="policy", always=KV_LOAD_POLICIES),
        labels="policy",
        doc=(
            "requests whose KV the connector (LMCache, NIXL ...) could not load, by vLLM's `kv_load_failure_policy`: "
            "`recompute` (`Recovered from KV load failure`: computed again), `fail` (`Failing N request(s) due to KV "
            "load failure`)"
        ),
    ),
    counter(
        "kvwatch_vllm_kv_load_failed_tokens_total",
        "Tokens of those requests whose KV could not be loaded, by policy.",
        counted(ev.KvLoadFailure, "tokens", by="policy", always=KV_LOAD_POLICIES),
        labels="policy",
        doc="tokens whose KV could not be loaded: computed again (`recompute`) or lost with the request (`fail`)",
    ),
    counter(
        "kvwatch_http_responses_total",
        "HTTP responses from the access log (uvicorn's, vLLM's Rust front end's or Ray Serve's); unknown paths are "
        'counted as path="other".',
        keyed("http"),
        labels="method path status",
        doc="access lines (uvicorn's, vLLM's Rust front end's `http request …`, or Ray Serve's `-- POST /v1/… 200 …ms` "
        "where vLLM runs under Ray Serve LLM); a WebSocket's handshake (vLLM's `/v1/realtime`) counts as a `GET` "
        "answered `101` when accepted",
        native="vLLM's `http_requests_total` (FastAPI instrumentator)",
    ),
    # server lifecycle
    counter(
        "kvwatch_vllm_server_starts_total",
        "Server starts seen in the log.",
        value_of("starts"),
        doc="server starts seen in the log (one per start, however many start lines)",
    ),
    counter(
        "kvwatch_vllm_server_shutdowns_total",
        "Server shutdowns seen in the log (its own shutdown, or systemd's word that its main process ended).",
        value_of("shutdowns"),
        doc="server shutdowns seen in the log: its own shutdown lines, or systemd's `Main process exited` of the unit "
        "a `journal_unit` follow reads (an OOM kill or a signal leaves no line of the server's)",
    ),
    gauge(
        "kvwatch_vllm_server_ready",
        "1 once the log says the server is ready (or, read from mid-run, shows it taking a request), 0 after a "
        "start or shutdown.",
        value_of("ready"),
        doc=(
            "1 once the log says the server is ready, or (a log first read while the server runs, without its start) "
            "once it shows the server taking a request: an access line or an added request; 0 after a start or a "
            "shutdown"
        ),
    ),
    gauge(
        "kvwatch_vllm_server_stopped",
        "1 while the log says the server has shut down (its shutdown seen, no start since).",
        value_of("stopped"),
        doc=(
            "1 while the log says the server has shut down: its shutdown (or systemd's `Main process exited` of its "
            "followed unit) seen and no start since (0 while it starts, runs, or the log read so far showed neither)"
        ),
    ),
    # the service manager: systemd's lines about units, by unit (a unit's journal names its own, a syslog file every
    # unit's); the server's own unit (a journal_unit follow's) is exported from the start
    counter(
        "kvwatch_service_exits_total",
        "Ends of a unit's main process systemd logged, by how: exited (an exit code), killed or dumped (a signal).",
        per_unit("service_exits", ev.SERVICE_EXITS),
        labels="unit how",
        doc="ends of a unit's main process that systemd logged (`vllm.service: Main process exited, code=killed, "
        "status=9/KILL`), by `how`: `exited` (an exit code), `killed` (a signal), `dumped` (a signal, core dumped); "
        "systemd logs a clean exit at debug level only, so these are the unclean ones; the end of the main process "
        "of the unit a `journal_unit` follow names is its server's shutdown",
    ),
    gauge(
        "kvwatch_service_last_exit_code",
        "Exit code of the last exit systemd logged of a unit's main process (not ended by a signal).",
        keyed("service_exit_codes"),
        labels="unit",
        doc="exit code of the last exit of a unit's main process that systemd logged and no signal caused (203: "
        "systemd could not execute the command)",
    ),
    gauge(
        "kvwatch_service_last_exit_signal",
        "Signal number that last ended a unit's main process, as systemd logged it (9 after an OOM kill).",
        keyed("service_exit_signals"),
        labels="unit",
        doc="signal number that last ended a unit's main process, as systemd logged it (9 after an OOM kill)",
    ),
    counter(
        "kvwatch_service_failures_total",
        "Times systemd put a unit in its failed state, by its result (exit-code, signal, core-dump, oom-kill, "
        "timeout, watchdog, start-limit-hit, resources, other).",
        per_unit("service_failures", ev.SERVICE_RESULTS),
        labels="unit result",
        doc="times systemd put a unit in its failed state (`Failed with result 'oom-kill'`), by systemd's `result`: "
        "`exit-code`, `signal`, `core-dump`, `oom-kill`, `timeout` (a start or stop that took too long), `watchdog`, "
        "`start-limit-hit`, `resources`, `other`",
        native='node_exporter\'s `node_systemd_unit_state{state="failed"}`',
    ),
    counter(
        "kvwatch_service_restarts_total",
        "Restarts of a unit systemd scheduled (Restart=).",
        per_unit("service_restarts"),
        labels="unit",
        doc="restarts of a unit that systemd scheduled (`Scheduled restart job, restart counter is at N`, its "
        "`Restart=` setting)",
        native="node_exporter's `node_systemd_service_restart_total` (systemd's `NRestarts`)",
    ),
    counter(
        "kvwatch_service_oom_kills_total",
        "Processes of a unit the kernel's OOM killer or systemd-oomd killed (host memory, not a device's).",
        per_unit("service_oom_kills"),
        labels="unit",
        doc="processes of a unit that the kernel's OOM killer (`A process of this unit has been killed by the OOM "
        "killer`) or systemd-oomd (`systemd-oomd killed N process(es) in this unit`) killed: host memory ran out, "
        "not a GPU's (that is `kvwatch_vllm_errors_total{error=\"oom\"}`); of a server's unit, an engine core or a "
        "worker may be the one killed, and the server dies with it",
    ),
    counter(
        "kvwatch_service_start_limit_hits_total",
        "Times systemd gave up restarting a unit (Start request repeated too quickly).",
        per_unit("service_start_limit_hits"),
        labels="unit",
        doc="times systemd gave up (re)starting a unit (`Start request repeated too quickly`: more starts than "
        "`StartLimitBurst=` within `StartLimitIntervalSec=`); it stays down until `systemctl reset-failed` and a "
        "start",
    ),
    gauge(
        "kvwatch_vllm_info",
        "vLLM version and model from the start-up lines.",
        _vllm_info,
        labels="version model",
        native="`vllm:cache_config_info`",
    ),
    gauge(
        "kvwatch_vllm_model_load_seconds",
        "Model loading time of the last start.",
        value_of("model_load_seconds"),
        doc="model loading time at the last start",
    ),
    gauge(
        "kvwatch_vllm_model_memory_bytes",
        "Memory the model weights took at the last start.",
        value_of("model_memory_bytes"),
        doc="memory the weights took at the last start",
    ),
    gauge(
        "kvwatch_vllm_engine_init_seconds",
        "Engine initialisation time (profile, KV cache, warm-up).",
        value_of("engine_init_seconds"),
    ),
    gauge(
        "kvwatch_vllm_startup_phase_seconds",
        "Time of a start-up step of the last start: weights_loading, memory_profiling, torch_compile, graph_capture, "
        "engine_init.",
        keyed("startup_phases"),
        labels="phase",
        doc=(
            "a start-up step of the last start: `weights_loading`, `memory_profiling` (V0's, and the 2026 "
            "releases' `Initial profiling/warmup run`), `torch_compile`, `graph_capture`, `engine_init`; where "
            "vLLM names the compiled parts (`[backbone]`, `[eagle_head]`), their times added up — "
            "a slow start after an upgrade shows which step grew"
        ),
    ),
    gauge(
        "kvwatch_vllm_kv_cache_memory_bytes",
        "Memory left for the KV cache at the last start (Available KV cache memory; negative: none).",
        value_of("kv_cache_memory_bytes"),
        doc=(
            "memory left for the KV cache at the last start (`Available KV cache memory`; V0: `the rest of the "
            "memory reserved for KV Cache is`; negative: none; the CPU backend: the pool it was given, "
            "`Explicitly set (N/M) GiB for KV cache`; a pool `--kv-cache-memory-bytes` set: its size) — a "
            "shrunken KV pool after an upgrade shows here"
        ),
    ),
    gauge("kvwatch_vllm_kv_cache_capacity_tokens", "KV cache size in tokens.", value_of("kv_capacity_tokens")),
    gauge(
        "kvwatch_vllm_kv_cache_max_concurrency",
        "Maximum concurrency for max-model-len requests the KV cache allows.",
        value_of("kv_max_concurrency"),
        doc="maximum concurrency for max-model-len requests",
    ),
    gauge(
        "kvwatch_vllm_kv_cache_blocks",
        "KV cache blocks (device gpu or cpu).",
        keyed("kv_blocks"),
        labels="device",
        doc="KV cache blocks (`gpu`: the engine's pool, `cpu`: V0 swap)",
        native="`vllm:cache_config_info` (`num_gpu_blocks`)",
    ),
    counter(
        "kvwatch_vllm_errors_total",
        "Fatal error lines by kind: oom, engine_dead, cuda_error, kv_cache_too_small, config_error, other.",
        keyed("errors"),
        labels="error",
        doc=(
            "fatal error lines: `oom` (CUDA or HIP; less free GPU memory at start than asked for), `engine_dead`, "
            "`cuda_error` (a CUDA, HIP, NCCL or RCCL error, ROCm's GPU memory access fault, GPU hang or HIP queue "
            "abort, no GPU to run on), `kv_cache_too_small`, "
            "`config_error` (the server refused its command line (argparse's usage error), a configuration class's "
            "validation, a model that cannot be found as named, or a module it needs missing), `other` (any other "
            "fatal exception, and a process's crash report: a segmentation fault, an uncaught C++ exception); all six "
            "are always exported, one crash may log several"
        ),
    ),
    counter(
        "kvwatch_log_problem_lines_total",
        "Warning, error and critical lines of vLLM, LMCache, uvicorn and PyTorch that no other metric counts.",
        keyed("problem_lines"),
        labels="producer level",
        doc=(
            "lines under a `WARNING`, `ERROR` or `CRITICAL` header of `vllm`, `lmcache` or `uvicorn`, or a warning, "
            "error or fatal header of PyTorch's C++ runtime (`torch`: NCCL watchdog timeouts and the like), that give "
            "no other event (each line of a traceback under vLLM's header counts; the tracebacks of a shutdown do "
            "not); all twelve series are always exported"
        ),
    ),
    # vllm bench
    gauge(
        "kvwatch_bench_requests_per_second",
        "Last benchmark request throughput.",
        bench("requests_per_second"),
        labels="benchmark",
        doc="last `vllm bench` request throughput (`throughput`, `serve`)",
    ),
    gauge(
        "kvwatch_bench_tokens_per_second",
        "Last benchmark token throughput (tokens total or output).",
        bench("tokens_per_second"),
        labels="benchmark tokens",
        doc="last benchmark token throughput (`total`, `output`)",
    ),
    gauge(
        "kvwatch_bench_tokens",
        "Tokens processed by the last benchmark (prompt, output).",
        bench("tokens"),
        labels="benchmark tokens",
        doc="tokens of the last benchmark (`prompt`, `output`)",
    ),
    gauge(
        "kvwatch_bench_latency_seconds",
        "Last benchmark latency statistics (mean, median, std, pN) of a measure (batch, ttft, tpot, itl, e2el).",
        bench("latency_seconds"),
        labels="benchmark measure statistic",
        doc=(
            "last benchmark latency: `measure` `batch` (latency bench), `ttft`, `tpot`, `itl`, `e2el`; `statistic` "
            "`mean`, `median`, `std`, `p10` …"
        ),
    ),
    gauge(
        "kvwatch_bench_duration_seconds",
        "Duration of the last benchmark run.",
        bench("duration_seconds"),
        labels="benchmark",
        doc="duration of the last `vllm bench serve`",
    ),
    gauge(
        "kvwatch_bench_requests",
        "Requests of the last benchmark (completed, failed).",
        bench("requests"),
        labels="benchmark outcome",
        doc="requests of the last `vllm bench serve` (`completed`, `failed`)",
    ),
    # kvwatch itself
    counter("kvwatch_lines_total", "Lines read.", value_of("lines")),
    counter(
        "kvwatch_lines_unparsed_total",
        "Lines read whose message no parser read (suspicious and warning/error lines included).",
        value_of("unparsed_lines"),
    ),
    counter(
        "kvwatch_lines_suspicious_total",
        "Lines with an intact vLLM/LMCache header that start like a known family but did not parse.",
        keyed("suspicious"),
        labels="family",
    ),
    counter(
        "kvwatch_lines_skipped_total",
        "Lines not parsed: invalid_utf8, nul, too_long, partial (an unterminated last line), split_too_long, "
        "parser_error.",
        keyed("skipped"),
        labels="reason",
        doc=(
            "lines not parsed: `invalid_utf8`, `nul`, `too_long`, `partial` (an unterminated last line), "
            "`split_too_long` (a Docker/CRI split line over the limit), `parser_error` (a parser raised on it: "
            "a kvwatch bug, logged; the lines after it are read)"
        ),
    ),
    counter(
        "kvwatch_sink_errors_total",
        "Events a sink raised on (a kvwatch bug, logged): stats, requests (the request joiner), supervisor.",
        keyed("sink_errors"),
        labels="sink",
        doc=(
            "events a sink raised on: `stats`, `requests` (the request joiner: traces and `kvwatch top`'s rows), "
            "`supervisor` (a kvwatch bug, logged the first time with where it was raised; the event still reaches the "
            "other sinks, and the events after it are read)"
        ),
    ),
)


# The catalogue is imported with the stats (``agent.sinks``), the client library only where metrics are rendered:
# a replay's summary never loads it.
def collect_families(servers: Iterable[ServerStats]) -> Iterator[Metric]:
    """Every family of :data:`CATALOGUE` that has samples for these servers."""
    from agent.exposition import families

    return families(CATALOGUE, (([s.server], s) for s in servers))


def registry_for(source: Callable[[], Iterable[ServerStats]], *extra: Collector) -> CollectorRegistry:
    from prometheus_client.registry import CollectorRegistry

    from agent.exposition import RenderedAtScrape

    registry = CollectorRegistry(auto_describe=False)
    registry.register(RenderedAtScrape(lambda: collect_families(source())))
    for collector in extra:
        registry.register(collector)
    return registry
