"""Prometheus view of :class:`agent.sinks.stats.ServerStats`, rendered at scrape time.

A custom collector turns the plain numbers into metric families only when
someone asks (a scrape, or the end of a replay), so the per-line cost stays
that of updating a few ints.  Every series carries a ``server`` label; stats
series add ``engine``.  Names use the ``kvwatch_`` prefix so they never clash
with vLLM's ``vllm:`` or LMCache's ``lmcache:`` series.

Each metric is declared once, in :data:`CATALOGUE`: its name, type, labels and
help, and how to read its samples from the stats.  Components of the running
agent declare their own series the same way, beside the code that counts them.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar

from agent.sinks.stats import EngineStatsState, Histogram, ServerStats

# A sample: the values of the labels after ``server`` (or of all labels, for a series
# without one), and the value (a number, or a Histogram).
Sample = tuple[tuple[str, ...], Any]
Samples = Callable[[Any, tuple[str, ...]], Iterable[Sample]]


@dataclass(frozen=True, slots=True)
class Spec:
    """One metric: name, type (counter, gauge, histogram), labels, help, and where its samples come from."""

    name: str
    type: str
    labels: tuple[str, ...]
    help: str
    samples: Samples | None = None

    def family(self) -> Metric:
        if self.type == "histogram":
            return HistogramMetricFamily(self.name, self.help, labels=self.labels)
        return _FAMILY_TYPES[self.type](self.name, self.help, labels=self.labels)


_FAMILY_TYPES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}


def _spec(type_: str, name: str, help_: str, samples: Samples | None, labels: str, per_server: bool) -> Spec:
    names = (("server",) if per_server else ()) + tuple(labels.split())
    return Spec(name, type_, names, help_, samples)


def counter(name: str, help_: str, samples: Samples | None = None, labels: str = "", per_server: bool = True) -> Spec:
    return _spec("counter", name, help_, samples, labels, per_server)


def gauge(name: str, help_: str, samples: Samples | None = None, labels: str = "", per_server: bool = True) -> Spec:
    return _spec("gauge", name, help_, samples, labels, per_server)


def histogram(name: str, help_: str, samples: Samples | None = None, labels: str = "", per_server: bool = True) -> Spec:
    return _spec("histogram", name, help_, samples, labels, per_server)


# -- where samples come from -------------------------------------------------------------


def value_of(attribute: str) -> Samples:
    """A number of the stats (a counter always; a gauge once it has a value)."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        value = getattr(s, attribute)
        return [((), value)] if value is not None else []

    return samples


def keyed(attribute: str) -> Samples:
    """A dict of the stats: its key (or key tuple) gives the labels after ``server``."""

    def samples(s: ServerStats, labels: tuple[str, ...]) -> Iterable[Sample]:
        return [(key if isinstance(key, tuple) else (key,), v) for key, v in sorted(getattr(s, attribute).items())]

    return samples


def histogram_of(attribute: str, when: str | None = None) -> Samples:
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
    ),
    counter(
        "kvwatch_lmcache_lookup_tokens_total",
        "Tokens looked up (Total tokens of each lookup).",
        value_of("lookup_tokens"),
    ),
    counter(
        "kvwatch_canary_requests_total",
        "kvwatch canary requests the engine added (kept out of the request counters).",
        value_of("canary_requests"),
    ),
    counter(
        "kvwatch_canary_lookups_total",
        "LMCache lookups of kvwatch canary requests (kept out of the lookup counters and hit ratio).",
        value_of("canary_lookups"),
    ),
    counter(
        "kvwatch_canary_lookup_tokens_total",
        "Tokens looked up for kvwatch canary requests.",
        value_of("canary_lookup_tokens"),
    ),
    counter(
        "kvwatch_canary_hit_tokens_total",
        "LMCache hit tokens of kvwatch canary requests.",
        value_of("canary_hit_tokens"),
    ),
    counter("kvwatch_lmcache_hit_tokens_total", "Tokens LMCache found (LMCache hit tokens).", value_of("hit_tokens")),
    counter(
        "kvwatch_lmcache_need_to_load_tokens_total",
        "Positive need-to-load values of lookups that were not skipped by min_retrieve.",
        value_of("need_to_load_tokens"),
    ),
    counter(
        "kvwatch_lmcache_engine_computed_tokens_total",
        "Tokens vLLM already had in its own prefix cache at lookup (Inference Engine computed tokens).",
        value_of("engine_computed_tokens"),
    ),
    counter(
        "kvwatch_lmcache_lookups_pending_total",
        "Lookups reported with hit tokens None (asynchronous lookup not finished).",
        value_of("lookups_pending"),
    ),
    counter(
        "kvwatch_lmcache_lookups_below_min_retrieve_total",
        "Lookups whose hit was below min_retrieve_tokens, so nothing was loaded.",
        value_of("lookups_below_min_retrieve"),
    ),
    histogram(
        "kvwatch_lmcache_lookup_hit_ratio",
        "Hit tokens / total tokens of each lookup with total > 0.",
        histogram_of("hit_ratio"),
    ),
    counter(
        "kvwatch_lmcache_lookup_timeouts_total",
        "Lookup RPC timeouts (no hit reported).",
        value_of("lookup_timeouts"),
    ),
    counter("kvwatch_lmcache_stores_total", "Store lines (one per tensor-parallel rank).", value_of("stores")),
    counter("kvwatch_lmcache_stored_tokens_total", "Tokens stored.", value_of("stored_tokens")),
    counter(
        "kvwatch_lmcache_stored_bytes_total",
        "Bytes of KV cache stored (LMCache's GB = 2^30).",
        value_of("stored_bytes"),
    ),
    histogram(
        "kvwatch_lmcache_store_duration_seconds",
        "Time of each store (LMCache's cost).",
        histogram_of("store_duration"),
    ),
    counter(
        "kvwatch_lmcache_store_starts_total",
        "Store operations issued (Storing KV cache for ...).",
        value_of("store_starts"),
    ),
    counter(
        "kvwatch_lmcache_store_start_tokens_total",
        "Tokens selected for storing when issued.",
        value_of("store_start_tokens"),
    ),
    counter("kvwatch_lmcache_retrieves_total", "Retrieve lines (one per tensor-parallel rank).", value_of("retrieves")),
    counter("kvwatch_lmcache_retrieved_tokens_total", "Tokens retrieved.", value_of("retrieved_tokens")),
    counter(
        "kvwatch_lmcache_retrieve_requested_tokens_total",
        "Tokens asked for by retrieves (required tokens).",
        value_of("retrieve_requested_tokens"),
    ),
    counter("kvwatch_lmcache_retrieved_bytes_total", "Bytes of KV cache retrieved.", value_of("retrieved_bytes")),
    histogram("kvwatch_lmcache_retrieve_duration_seconds", "Time of each retrieve.", histogram_of("retrieve_duration")),
    gauge(
        "kvwatch_lmcache_degraded",
        "1 after LMCache reported it could not start its engine (degraded, recompute only) since the last start.",
        value_of("lmcache_degraded"),
    ),
    gauge(
        "kvwatch_lmcache_info",
        "LMCache version as its start-up line prints it.",
        _lmcache_info,
        labels="version vllm_version",
    ),
    # LMCache's multiprocess server
    counter(
        "kvwatch_lmcache_prefetches_total",
        "Prefetches the multiprocess server completed with a hit (it logs none when nothing hit).",
        value_of("prefetches"),
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
    ),
    histogram(
        "kvwatch_lmcache_prefetch_duration_seconds",
        "Time of each completed prefetch.",
        histogram_of("prefetch_duration", when="prefetches"),
    ),
    gauge(
        "kvwatch_lmcache_l1_used_bytes",
        "L1 memory in use (multiprocess server, extra logging).",
        value_of("l1_used_bytes"),
    ),
    gauge(
        "kvwatch_lmcache_l1_capacity_bytes",
        "L1 memory size (multiprocess server, extra logging).",
        value_of("l1_capacity_bytes"),
    ),
    counter(
        "kvwatch_lmcache_server_starts_total",
        "Starts of the multiprocess server's HTTP server.",
        value_of("lmcache_server_starts"),
    ),
    # KV connectors
    counter(
        "kvwatch_kv_transfer_lines_total",
        "KV Transfer metrics lines (one per logging interval in which the connector moved data).",
        kv_transfer("lines"),
    ),
    counter(
        "kvwatch_kv_transfer_bytes_total",
        "Bytes a KV connector moved: load (into the GPU), store (out of it), transfer (NIXL, between instances).",
        kv_transfer("bytes"),
        labels="direction",
    ),
    counter(
        "kvwatch_kv_transfer_seconds_total",
        "Time spent moving them (direction lookup: LMCache MP lookup latency, summed).",
        kv_transfer("seconds"),
        labels="direction",
    ),
    counter(
        "kvwatch_kv_transfer_operations_total",
        "Transfers (load, store, transfer).",
        kv_transfer("transfers"),
        labels="direction",
    ),
    counter(
        "kvwatch_kv_transfer_failures_total",
        "Failed transfers (NIXL).",
        kv_transfer("failures"),
        labels="direction",
    ),
    counter("kvwatch_kv_transfer_lookups_total", "Lookups LMCache's MP connector reported.", kv_transfer("lookups")),
    counter(
        "kvwatch_kv_transfer_unknown_keys_total",
        "Keys of KV Transfer metrics lines kvwatch does not know (a new connector or release); not exported as labels.",
        kv_transfer("unknown_keys"),
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
    ),
    gauge(
        "kvwatch_vllm_prompt_throughput_tokens_per_second",
        "Avg prompt throughput of the last stats line.",
        engine_gauge("prompt_throughput"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_generation_throughput_tokens_per_second",
        "Avg generation throughput of the last stats line.",
        engine_gauge("generation_throughput"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_throughput_tokens_per_second",
        "Throughput of the 2023 (v0.1) stats line.",
        engine_gauge("throughput"),
        labels="engine",
    ),
    gauge("kvwatch_vllm_requests_running", "Running requests.", engine_gauge("running"), labels="engine"),
    gauge("kvwatch_vllm_requests_waiting", "Waiting (V0: pending) requests.", engine_gauge("waiting"), labels="engine"),
    gauge(
        "kvwatch_vllm_requests_swapped",
        "Swapped requests (V0 engine only).",
        engine_gauge("swapped"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_requests_deferred",
        "Waiting requests deferred by transient constraints.",
        engine_gauge("deferred"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_requests_kv_fetch",
        "Waiting requests by asynchronous KV load stage (waiting_to_start, in_progress, completed_waiting).",
        _kv_fetch,
        labels="engine stage",
    ),
    gauge(
        "kvwatch_vllm_kv_cache_usage_ratio",
        "KV cache usage of the engine's own pool (GPU, CPU, XPU ...).",
        engine_gauge("kv_cache_usage"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_cpu_kv_cache_usage_ratio",
        "CPU swap-space KV usage (V0 engine only).",
        engine_gauge("cpu_kv_cache_usage"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_prefix_cache_hit_ratio",
        "vLLM's prefix cache hit rate (last 1000 requests in V1, cumulative in V0).",
        engine_gauge("prefix_cache_hit_rate"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_cpu_prefix_cache_hit_ratio",
        "V0's CPU prefix cache hit rate.",
        engine_gauge("cpu_prefix_cache_hit_rate"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_external_prefix_cache_hit_ratio",
        "Hit rate of the KV connector (LMCache) as vLLM reports it.",
        engine_gauge("external_prefix_cache_hit_rate"),
        labels="engine",
    ),
    gauge(
        "kvwatch_vllm_mm_cache_hit_ratio",
        "Multimodal processor cache hit rate.",
        engine_gauge("mm_cache_hit_rate"),
        labels="engine",
    ),
    counter(
        "kvwatch_vllm_preemptions_total",
        "Preemptions (sum of each interval's Preemptions).",
        per_engine(lambda e: e.preemptions, when=lambda e: e.lines),
        labels="engine",
    ),
    counter(
        "kvwatch_vllm_corrupted_requests_total",
        "Requests with NaN logits (Corrupted).",
        per_engine(lambda e: e.corrupted, when=lambda e: e.lines),
        labels="engine",
    ),
    counter(
        "kvwatch_vllm_spec_decode_accepted_tokens_total",
        "Speculative tokens accepted.",
        per_engine(lambda e: e.spec_accepted, when=_has_spec),
        labels="engine",
    ),
    counter(
        "kvwatch_vllm_spec_decode_drafted_tokens_total",
        "Speculative tokens drafted.",
        per_engine(lambda e: e.spec_drafted, when=_has_spec),
        labels="engine",
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
    # requests
    counter("kvwatch_vllm_requests_received_total", "Received request lines (front end).", value_of("received")),
    counter("kvwatch_vllm_requests_added_total", "Added request lines (engine).", value_of("added")),
    counter("kvwatch_vllm_requests_finished_total", "Finished request lines (V0 engine).", value_of("finished")),
    counter(
        "kvwatch_vllm_requests_aborted_total",
        "Aborted requests (one per id of an abort line).",
        value_of("aborted"),
    ),
    counter("kvwatch_vllm_requests_cancelled_total", "Requests whose client went away.", value_of("cancelled")),
    counter(
        "kvwatch_vllm_request_failures_total",
        "Requests that failed (engine_dead, bad_request, input_error).",
        keyed("failures"),
        labels="reason",
    ),
    counter(
        "kvwatch_http_responses_total",
        'HTTP responses from uvicorn\'s access log; unknown paths are counted as path="other".',
        keyed("http"),
        labels="method path status",
    ),
    # server lifecycle
    counter("kvwatch_vllm_server_starts_total", "Server starts seen in the log.", value_of("starts")),
    counter("kvwatch_vllm_server_shutdowns_total", "Server shutdowns seen in the log.", value_of("shutdowns")),
    gauge(
        "kvwatch_vllm_server_ready",
        "1 once the log says the server is ready, 0 after a start or shutdown.",
        value_of("ready"),
    ),
    gauge("kvwatch_vllm_info", "vLLM version and model from the start-up lines.", _vllm_info, labels="version model"),
    gauge("kvwatch_vllm_model_load_seconds", "Model loading time of the last start.", value_of("model_load_seconds")),
    gauge(
        "kvwatch_vllm_model_memory_bytes",
        "Memory the model weights took at the last start.",
        value_of("model_memory_bytes"),
    ),
    gauge(
        "kvwatch_vllm_engine_init_seconds",
        "Engine initialisation time (profile, KV cache, warm-up).",
        value_of("engine_init_seconds"),
    ),
    gauge(
        "kvwatch_vllm_startup_phase_seconds",
        "Time of a start-up step of the last start: weights_loading, torch_compile, graph_capture, engine_init.",
        keyed("startup_phases"),
        labels="phase",
    ),
    gauge(
        "kvwatch_vllm_kv_cache_memory_bytes",
        "Memory left for the KV cache at the last start (Available KV cache memory; negative: none).",
        value_of("kv_cache_memory_bytes"),
    ),
    gauge("kvwatch_vllm_kv_cache_capacity_tokens", "KV cache size in tokens.", value_of("kv_capacity_tokens")),
    gauge(
        "kvwatch_vllm_kv_cache_max_concurrency",
        "Maximum concurrency for max-model-len requests the KV cache allows.",
        value_of("kv_max_concurrency"),
    ),
    gauge("kvwatch_vllm_kv_cache_blocks", "KV cache blocks (device gpu or cpu).", keyed("kv_blocks"), labels="device"),
    counter(
        "kvwatch_vllm_errors_total",
        "Fatal error lines by kind: oom, engine_dead, cuda_error, kv_cache_too_small, other.",
        keyed("errors"),
        labels="error",
    ),
    # vllm bench
    gauge(
        "kvwatch_bench_requests_per_second",
        "Last benchmark request throughput.",
        bench("requests_per_second"),
        labels="benchmark",
    ),
    gauge(
        "kvwatch_bench_tokens_per_second",
        "Last benchmark token throughput (tokens total or output).",
        bench("tokens_per_second"),
        labels="benchmark tokens",
    ),
    gauge(
        "kvwatch_bench_tokens",
        "Tokens processed by the last benchmark (prompt, output).",
        bench("tokens"),
        labels="benchmark tokens",
    ),
    gauge(
        "kvwatch_bench_latency_seconds",
        "Last benchmark latency statistics (mean, median, std, pN) of a measure (batch, ttft, tpot, itl, e2el).",
        bench("latency_seconds"),
        labels="benchmark measure statistic",
    ),
    gauge(
        "kvwatch_bench_duration_seconds",
        "Duration of the last benchmark run.",
        bench("duration_seconds"),
        labels="benchmark",
    ),
    gauge(
        "kvwatch_bench_requests",
        "Requests of the last benchmark (completed, failed).",
        bench("requests"),
        labels="benchmark outcome",
    ),
    # kvwatch itself
    counter("kvwatch_lines_total", "Lines read.", value_of("lines")),
    counter(
        "kvwatch_lines_unparsed_total",
        "Lines read that gave no event (suspicious ones included).",
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
        "Lines not parsed: invalid_utf8, nul, too_long, partial (an unterminated last line), split_too_long.",
        keyed("skipped"),
        labels="reason",
    ),
)


def _declared(name: str, type_: str, labels: str, help_: str) -> Spec:
    return Spec(name, type_, tuple(labels.split()), help_)


_SERVER = "server"

# Series only the running agent has (supervision, tailing, the host): not in replay.
AGENT_CATALOGUE: tuple[Spec, ...] = (
    _declared("kvwatch_build_info", "gauge", "version python_version", "Always 1; kvwatch's version."),
    _declared(
        "kvwatch_server_info",
        "gauge",
        "server vllm_version lmcache_version model",
        "Always 1; versions from the log or the server's installed packages, and the model.",
    ),
    _declared("kvwatch_server_up", "gauge", _SERVER, "1 while the supervised server's process runs."),
    _declared(
        "kvwatch_server_state",
        "gauge",
        "server state",
        "1 for the supervised server's current state: starting, running, unhealthy, stalled, backoff, "
        "crash_loop, stopping, stopped, exited.",
    ),
    _declared("kvwatch_server_restarts_total", "counter", _SERVER, "Times kvwatch started the server again."),
    _declared(
        "kvwatch_server_last_exit_code",
        "gauge",
        _SERVER,
        "Exit code of the server's last exit (not by a signal).",
    ),
    _declared("kvwatch_server_last_exit_signal", "gauge", _SERVER, "Signal that ended the server's last run."),
    _declared(
        "kvwatch_server_last_error",
        "gauge",
        "server error",
        "Always 1; the last error seen: an error kind of its log (oom, engine_dead ...), stalled or start_failed.",
    ),
    _declared("kvwatch_server_uptime_seconds", "gauge", _SERVER, "Seconds since the running server process started."),
    _declared("kvwatch_server_health_up", "gauge", _SERVER, "1 when the last health probe got a 2xx answer."),
    _declared(
        "kvwatch_server_health_probe_duration_seconds",
        "gauge",
        _SERVER,
        "Duration of the last health probe.",
    ),
    _declared(
        "kvwatch_server_progress_age_seconds",
        "gauge",
        _SERVER,
        "Seconds since the log last showed inference moving (throughput, a request, an access line).",
    ),
    _declared(
        "kvwatch_server_log_rotations_total",
        "counter",
        _SERVER,
        "Rotations of the server's raw log done by kvwatch.",
    ),
    _declared(
        "kvwatch_gpus",
        "gauge",
        "vendor",
        "GPUs the host exposes, by vendor (vendor=none: 0 when none is seen).",
    ),
    _declared("kvwatch_gpus_expected", "gauge", "", "GPUs the host should expose (agent.expected_gpus)."),
    _declared(
        "kvwatch_gpus_missing",
        "gauge",
        "",
        "Expected GPUs the host does not expose (0 when all are visible).",
    ),
    _declared("kvwatch_tail_offset_bytes", "gauge", "server path", "Bytes of the followed file read so far."),
    _declared("kvwatch_tail_size_bytes", "gauge", "server path", "Size of the followed file."),
    _declared(
        "kvwatch_tail_rotations_total",
        "counter",
        "server path",
        "Times the path began naming another file (rename, delete, symlink switch).",
    ),
    _declared("kvwatch_tail_truncations_total", "counter", "server path", "Times the followed file was truncated."),
    _declared(
        "kvwatch_tail_lag_seconds",
        "gauge",
        "server path",
        "Time from the file's last modification to kvwatch reading it, at the last read.",
    ),
    _declared(
        "kvwatch_tail_read_error",
        "gauge",
        "server path reason",
        "1 while a followed file cannot be read (permission_denied, read_error); retried.",
    ),
    _declared("kvwatch_journal_up", "gauge", _SERVER, "1 while journalctl follows the unit's journal."),
    _declared(
        "kvwatch_canary_ok",
        "gauge",
        "server reason",
        "1 when the last periodic canary found the repeated prompt from the second request on; reason: works, "
        "not_loaded, degraded, short_prompt, hash_seed, no_hits, no_answer, error.",
    ),
    _declared(
        "kvwatch_canary_runs_total",
        "counter",
        "server result",
        "Periodic canary runs: ok, failed (the cache did not hit), error (it could not run).",
    ),
    _declared("kvwatch_canary_last_run_timestamp_seconds", "gauge", _SERVER, "When the last periodic canary ran."),
    _declared(
        "kvwatch_canary_last_hit_tokens",
        "gauge",
        _SERVER,
        "LMCache hit tokens of the last canary: the least of any request after the first.",
    ),
    _declared("kvwatch_canary_last_latency_seconds", "gauge", _SERVER, "Mean latency of the last canary's requests."),
    _declared(
        "kvwatch_bench_last_result",
        "gauge",
        "benchmark model params result",
        "The last `kvwatch bench` run of each parameter set: one series per result (requests_per_second, "
        "avg_latency_seconds, mean_ttft_ms ...).",
    ),
    _declared(
        "kvwatch_bench_last_run_timestamp_seconds",
        "gauge",
        "benchmark model params",
        "When the last `kvwatch bench` run of each parameter set began.",
    ),
)
# Series of the trace builder and exporter: present while tracing is on (run, or replay --traces).
TRACE_CATALOGUE: tuple[Spec, ...] = (
    _declared(
        "kvwatch_trace_open_requests",
        "gauge",
        _SERVER,
        "Requests begun and not yet ended in the open-request table.",
    ),
    _declared(
        "kvwatch_trace_requests_total",
        "counter",
        "server outcome",
        "Requests ended into a trace: finished, aborted, cancelled, failed (by their id), responded (by an "
        "access line), evicted (end never seen).",
    ),
    _declared(
        "kvwatch_trace_requests_evicted_total",
        "counter",
        "server reason",
        "Requests ended without their end: idle_timeout, table_full, server_restart, server_stopped, log_ended, "
        "agent_stopped.",
    ),
    _declared(
        "kvwatch_trace_unmatched_ends_total",
        "counter",
        _SERVER,
        "End lines naming a request never seen (it began before kvwatch followed the log).",
    ),
    _declared("kvwatch_trace_spans_exported_total", "counter", "", "Spans the exporter delivered."),
    _declared(
        "kvwatch_trace_spans_dropped_total",
        "counter",
        "reason",
        "Spans lost: queue_full (the collector was slower than the log), export_failed (it refused or was down).",
    ),
)


def families(specs: Iterable[Spec], sources: Iterable[tuple[list[str], Any]]) -> Iterator[Metric]:
    """The families of ``specs`` that have samples in ``sources``: (label values every series of a
    source starts with -- ``[server]``, or none --, the object its specs read)."""
    sources = list(sources)
    for spec in specs:
        fam = None
        for prefix, source in sources:
            for labels, value in spec.samples(source, spec.labels[len(prefix) :]):
                if fam is None:
                    fam = spec.family()
                if spec.type == "histogram":
                    _add_histogram(fam, prefix + list(labels), value)
                else:
                    fam.add_metric(prefix + list(labels), value)
        if fam is not None:
            yield fam


def _add_histogram(family: HistogramMetricFamily, labels: list[str], histogram: Histogram) -> None:
    cumulative = histogram.cumulative()
    bounds = [repr(float(bound)) for bound in histogram.bounds] + ["+Inf"]
    exemplars = histogram.exemplars
    if exemplars is None:
        buckets = list(zip(bounds, cumulative, strict=True))
    else:
        # Shown in the OpenMetrics exposition only; Grafana links the trace id to the trace.
        buckets = [
            (le, count) if mark is None else (le, count, Exemplar({"trace_id": mark[0]}, mark[1], mark[2]))
            for le, count, mark in zip(bounds, cumulative, exemplars, strict=True)
        ]
    family.add_metric(labels, buckets, histogram.sum)


SPECS: dict[str, Spec] = {spec.name: spec for spec in CATALOGUE + AGENT_CATALOGUE + TRACE_CATALOGUE}


def collect_families(servers: Iterable[ServerStats]) -> Iterator[Metric]:
    """Every family of :data:`CATALOGUE` that has samples for these servers."""
    return families(CATALOGUE, (([s.server], s) for s in servers))


def trace_families(tracing, builders: Iterable) -> Iterator[Metric]:
    """The :data:`TRACE_CATALOGUE` families of a :class:`agent.sinks.otlp.Tracing` and its trace builders."""
    fams = {spec.name: spec.family() for spec in TRACE_CATALOGUE}
    for builder in builders:
        server = builder.stats.server
        fams["kvwatch_trace_open_requests"].add_metric([server], builder.open_requests)
        for outcome, count in sorted(builder.ended_by.items()):
            fams["kvwatch_trace_requests_total"].add_metric([server, outcome], count)
        for reason, count in sorted(builder.evicted.items()):
            fams["kvwatch_trace_requests_evicted_total"].add_metric([server, reason], count)
        fams["kvwatch_trace_unmatched_ends_total"].add_metric([server], builder.unmatched_ends)
    fams["kvwatch_trace_spans_exported_total"].add_metric([], tracing.counts["exported"])
    for reason, count in sorted(tracing.dropped.items()):
        fams["kvwatch_trace_spans_dropped_total"].add_metric([reason], count)
    yield from fams.values()


class StatsCollector(Collector):
    """A prometheus-client collector over whatever servers ``source`` returns at scrape time."""

    def __init__(self, source: Callable[[], Iterable[ServerStats]]) -> None:
        self._source = source

    def describe(self) -> list[Metric]:
        return []  # families depend on what the log held; nothing to check in advance

    def collect(self) -> Iterator[Metric]:
        return collect_families(self._source())


class TraceCollector(Collector):
    """The :data:`TRACE_CATALOGUE` families of a tracing pipeline and its builders (replay --traces)."""

    def __init__(self, tracing, builders: Iterable) -> None:
        self._tracing = tracing
        self._builders = builders

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        return trace_families(self._tracing, self._builders)


def registry_for(source: Callable[[], Iterable[ServerStats]], *extra: Collector) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StatsCollector(source))
    for collector in extra:
        registry.register(collector)
    return registry
