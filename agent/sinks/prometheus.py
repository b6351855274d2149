"""Prometheus view of :class:`agent.sinks.stats.ServerStats`, rendered at scrape time.

A custom collector turns the plain numbers into metric families only when
someone asks (a scrape, or the end of a replay), so the per-line cost stays
that of updating a few ints.  Every series carries a ``server`` label; stats
series add ``engine``.  Names use the ``kvwatch_`` prefix so they never clash
with vLLM's ``vllm:`` or LMCache's ``lmcache:`` series.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry
from prometheus_client.samples import Exemplar

from agent.sinks.stats import ServerStats


@dataclass(frozen=True, slots=True)
class Spec:
    name: str
    type: str  # counter | gauge | histogram
    labels: tuple[str, ...]
    help: str


def _s(name: str, type_: str, labels: str, help_: str) -> Spec:
    return Spec(name, type_, tuple(labels.split()) if labels else (), help_)


_SERVER = "server"
_ENGINE = "server engine"

CATALOGUE: tuple[Spec, ...] = (
    # LMCache
    _s(
        "kvwatch_lmcache_lookups_total",
        "counter",
        _SERVER,
        "LMCache lookup lines (a request is looked up again after a preemption or a retry).",
    ),
    _s("kvwatch_lmcache_lookup_tokens_total", "counter", _SERVER, "Tokens looked up (Total tokens of each lookup)."),
    _s(
        "kvwatch_canary_requests_total",
        "counter",
        _SERVER,
        "kvwatch canary requests the engine added (kept out of the request counters).",
    ),
    _s(
        "kvwatch_canary_lookups_total",
        "counter",
        _SERVER,
        "LMCache lookups of kvwatch canary requests (kept out of the lookup counters and hit ratio).",
    ),
    _s("kvwatch_canary_lookup_tokens_total", "counter", _SERVER, "Tokens looked up for kvwatch canary requests."),
    _s("kvwatch_canary_hit_tokens_total", "counter", _SERVER, "LMCache hit tokens of kvwatch canary requests."),
    _s("kvwatch_lmcache_hit_tokens_total", "counter", _SERVER, "Tokens LMCache found (LMCache hit tokens)."),
    _s(
        "kvwatch_lmcache_need_to_load_tokens_total",
        "counter",
        _SERVER,
        "Positive need-to-load values of lookups that were not skipped by min_retrieve.",
    ),
    _s(
        "kvwatch_lmcache_engine_computed_tokens_total",
        "counter",
        _SERVER,
        "Tokens vLLM already had in its own prefix cache at lookup (Inference Engine computed tokens).",
    ),
    _s(
        "kvwatch_lmcache_lookups_pending_total",
        "counter",
        _SERVER,
        "Lookups reported with hit tokens None (asynchronous lookup not finished).",
    ),
    _s(
        "kvwatch_lmcache_lookups_below_min_retrieve_total",
        "counter",
        _SERVER,
        "Lookups whose hit was below min_retrieve_tokens, so nothing was loaded.",
    ),
    _s(
        "kvwatch_lmcache_lookup_hit_ratio",
        "histogram",
        _SERVER,
        "Hit tokens / total tokens of each lookup with total > 0.",
    ),
    _s("kvwatch_lmcache_lookup_timeouts_total", "counter", _SERVER, "Lookup RPC timeouts (no hit reported)."),
    _s("kvwatch_lmcache_stores_total", "counter", _SERVER, "Store lines (one per tensor-parallel rank)."),
    _s("kvwatch_lmcache_stored_tokens_total", "counter", _SERVER, "Tokens stored."),
    _s("kvwatch_lmcache_stored_bytes_total", "counter", _SERVER, "Bytes of KV cache stored (LMCache's GB = 2^30)."),
    _s("kvwatch_lmcache_store_duration_seconds", "histogram", _SERVER, "Time of each store (LMCache's cost)."),
    _s("kvwatch_lmcache_store_starts_total", "counter", _SERVER, "Store operations issued (Storing KV cache for ...)."),
    _s("kvwatch_lmcache_store_start_tokens_total", "counter", _SERVER, "Tokens selected for storing when issued."),
    _s("kvwatch_lmcache_retrieves_total", "counter", _SERVER, "Retrieve lines (one per tensor-parallel rank)."),
    _s("kvwatch_lmcache_retrieved_tokens_total", "counter", _SERVER, "Tokens retrieved."),
    _s(
        "kvwatch_lmcache_retrieve_requested_tokens_total",
        "counter",
        _SERVER,
        "Tokens asked for by retrieves (required tokens).",
    ),
    _s("kvwatch_lmcache_retrieved_bytes_total", "counter", _SERVER, "Bytes of KV cache retrieved."),
    _s("kvwatch_lmcache_retrieve_duration_seconds", "histogram", _SERVER, "Time of each retrieve."),
    _s(
        "kvwatch_lmcache_degraded",
        "gauge",
        _SERVER,
        "1 after LMCache reported it could not start its engine (degraded, recompute only) since the last start.",
    ),
    _s(
        "kvwatch_lmcache_info",
        "gauge",
        "server version vllm_version",
        "LMCache version as its start-up line prints it.",
    ),
    # LMCache's multiprocess server
    _s(
        "kvwatch_lmcache_prefetches_total",
        "counter",
        _SERVER,
        "Prefetches the multiprocess server completed with a hit (it logs none when nothing hit).",
    ),
    _s(
        "kvwatch_lmcache_prefetch_requested_keys_total",
        "counter",
        _SERVER,
        "Cache keys those prefetches asked for (keys are chunks per KV group and rank, not tokens).",
    ),
    _s(
        "kvwatch_lmcache_prefetch_hit_keys_total",
        "counter",
        "server tier",
        "Cache keys found, by tier: l1 (memory), l2 (loaded from storage), unknown (a release that prints no split).",
    ),
    _s("kvwatch_lmcache_prefetch_duration_seconds", "histogram", _SERVER, "Time of each completed prefetch."),
    _s("kvwatch_lmcache_l1_used_bytes", "gauge", _SERVER, "L1 memory in use (multiprocess server, extra logging)."),
    _s("kvwatch_lmcache_l1_capacity_bytes", "gauge", _SERVER, "L1 memory size (multiprocess server, extra logging)."),
    _s("kvwatch_lmcache_server_starts_total", "counter", _SERVER, "Starts of the multiprocess server's HTTP server."),
    # KV connectors
    _s(
        "kvwatch_kv_transfer_lines_total",
        "counter",
        _SERVER,
        "KV Transfer metrics lines (one per logging interval in which the connector moved data).",
    ),
    _s(
        "kvwatch_kv_transfer_bytes_total",
        "counter",
        "server direction",
        "Bytes a KV connector moved: load (into the GPU), store (out of it), transfer (NIXL, between instances).",
    ),
    _s(
        "kvwatch_kv_transfer_seconds_total",
        "counter",
        "server direction",
        "Time spent moving them (direction lookup: LMCache MP lookup latency, summed).",
    ),
    _s("kvwatch_kv_transfer_operations_total", "counter", "server direction", "Transfers (load, store, transfer)."),
    _s("kvwatch_kv_transfer_failures_total", "counter", "server direction", "Failed transfers (NIXL)."),
    _s("kvwatch_kv_transfer_lookups_total", "counter", _SERVER, "Lookups LMCache's MP connector reported."),
    _s(
        "kvwatch_kv_transfer_unknown_keys_total",
        "counter",
        _SERVER,
        "Keys of KV Transfer metrics lines kvwatch does not know (a new connector or release); not exported as labels.",
    ),
    # vLLM engine stats
    _s("kvwatch_vllm_stats_lines_total", "counter", _ENGINE, "Periodic stats lines."),
    _s(
        "kvwatch_vllm_stats_last_seen_timestamp_seconds",
        "gauge",
        _ENGINE,
        "Log time of the last stats line; vLLM stops printing stats when idle, so the gauges freeze.",
    ),
    _s(
        "kvwatch_vllm_prompt_throughput_tokens_per_second",
        "gauge",
        _ENGINE,
        "Avg prompt throughput of the last stats line.",
    ),
    _s(
        "kvwatch_vllm_generation_throughput_tokens_per_second",
        "gauge",
        _ENGINE,
        "Avg generation throughput of the last stats line.",
    ),
    _s("kvwatch_vllm_throughput_tokens_per_second", "gauge", _ENGINE, "Throughput of the 2023 (v0.1) stats line."),
    _s("kvwatch_vllm_requests_running", "gauge", _ENGINE, "Running requests."),
    _s("kvwatch_vllm_requests_waiting", "gauge", _ENGINE, "Waiting (V0: pending) requests."),
    _s("kvwatch_vllm_requests_swapped", "gauge", _ENGINE, "Swapped requests (V0 engine only)."),
    _s("kvwatch_vllm_requests_deferred", "gauge", _ENGINE, "Waiting requests deferred by transient constraints."),
    _s(
        "kvwatch_vllm_requests_kv_fetch",
        "gauge",
        "server engine stage",
        "Waiting requests by asynchronous KV load stage (waiting_to_start, in_progress, completed_waiting).",
    ),
    _s(
        "kvwatch_vllm_kv_cache_usage_ratio",
        "gauge",
        _ENGINE,
        "KV cache usage of the engine's own pool (GPU, CPU, XPU ...).",
    ),
    _s("kvwatch_vllm_cpu_kv_cache_usage_ratio", "gauge", _ENGINE, "CPU swap-space KV usage (V0 engine only)."),
    _s(
        "kvwatch_vllm_prefix_cache_hit_ratio",
        "gauge",
        _ENGINE,
        "vLLM's prefix cache hit rate (last 1000 requests in V1, cumulative in V0).",
    ),
    _s("kvwatch_vllm_cpu_prefix_cache_hit_ratio", "gauge", _ENGINE, "V0's CPU prefix cache hit rate."),
    _s(
        "kvwatch_vllm_external_prefix_cache_hit_ratio",
        "gauge",
        _ENGINE,
        "Hit rate of the KV connector (LMCache) as vLLM reports it.",
    ),
    _s("kvwatch_vllm_mm_cache_hit_ratio", "gauge", _ENGINE, "Multimodal processor cache hit rate."),
    _s("kvwatch_vllm_preemptions_total", "counter", _ENGINE, "Preemptions (sum of each interval's Preemptions)."),
    _s("kvwatch_vllm_corrupted_requests_total", "counter", _ENGINE, "Requests with NaN logits (Corrupted)."),
    _s("kvwatch_vllm_spec_decode_accepted_tokens_total", "counter", _ENGINE, "Speculative tokens accepted."),
    _s("kvwatch_vllm_spec_decode_drafted_tokens_total", "counter", _ENGINE, "Speculative tokens drafted."),
    _s("kvwatch_vllm_spec_decode_mean_acceptance_length", "gauge", _ENGINE, "Mean acceptance length, last interval."),
    _s("kvwatch_vllm_spec_decode_draft_acceptance_ratio", "gauge", _ENGINE, "Draft acceptance rate, last interval."),
    # requests
    _s("kvwatch_vllm_requests_received_total", "counter", _SERVER, "Received request lines (front end)."),
    _s("kvwatch_vllm_requests_added_total", "counter", _SERVER, "Added request lines (engine)."),
    _s("kvwatch_vllm_requests_finished_total", "counter", _SERVER, "Finished request lines (V0 engine)."),
    _s("kvwatch_vllm_requests_aborted_total", "counter", _SERVER, "Aborted requests (one per id of an abort line)."),
    _s("kvwatch_vllm_requests_cancelled_total", "counter", _SERVER, "Requests whose client went away."),
    _s(
        "kvwatch_vllm_request_failures_total",
        "counter",
        "server reason",
        "Requests that failed (engine_dead, bad_request, input_error).",
    ),
    _s(
        "kvwatch_http_responses_total",
        "counter",
        "server method path status",
        'HTTP responses from uvicorn\'s access log; unknown paths are counted as path="other".',
    ),
    # server lifecycle
    _s("kvwatch_vllm_server_starts_total", "counter", _SERVER, "Server starts seen in the log."),
    _s("kvwatch_vllm_server_shutdowns_total", "counter", _SERVER, "Server shutdowns seen in the log."),
    _s(
        "kvwatch_vllm_server_ready",
        "gauge",
        _SERVER,
        "1 once the log says the server is ready, 0 after a start or shutdown.",
    ),
    _s("kvwatch_vllm_info", "gauge", "server version model", "vLLM version and model from the start-up lines."),
    _s("kvwatch_vllm_model_load_seconds", "gauge", _SERVER, "Model loading time of the last start."),
    _s("kvwatch_vllm_model_memory_bytes", "gauge", _SERVER, "Memory the model weights took at the last start."),
    _s(
        "kvwatch_vllm_engine_init_seconds", "gauge", _SERVER, "Engine initialisation time (profile, KV cache, warm-up)."
    ),
    _s(
        "kvwatch_vllm_startup_phase_seconds",
        "gauge",
        "server phase",
        "Time of a start-up step of the last start: weights_loading, torch_compile, graph_capture, engine_init.",
    ),
    _s(
        "kvwatch_vllm_kv_cache_memory_bytes",
        "gauge",
        _SERVER,
        "Memory left for the KV cache at the last start (Available KV cache memory; negative: none).",
    ),
    _s("kvwatch_vllm_kv_cache_capacity_tokens", "gauge", _SERVER, "KV cache size in tokens."),
    _s(
        "kvwatch_vllm_kv_cache_max_concurrency",
        "gauge",
        _SERVER,
        "Maximum concurrency for max-model-len requests the KV cache allows.",
    ),
    _s("kvwatch_vllm_kv_cache_blocks", "gauge", "server device", "KV cache blocks (device gpu or cpu)."),
    _s(
        "kvwatch_vllm_errors_total",
        "counter",
        "server error",
        "Fatal error lines by kind: oom, engine_dead, cuda_error, kv_cache_too_small, other.",
    ),
    # vllm bench
    _s("kvwatch_bench_requests_per_second", "gauge", "server benchmark", "Last benchmark request throughput."),
    _s(
        "kvwatch_bench_tokens_per_second",
        "gauge",
        "server benchmark tokens",
        "Last benchmark token throughput (tokens total or output).",
    ),
    _s(
        "kvwatch_bench_tokens",
        "gauge",
        "server benchmark tokens",
        "Tokens processed by the last benchmark (prompt, output).",
    ),
    _s(
        "kvwatch_bench_latency_seconds",
        "gauge",
        "server benchmark measure statistic",
        "Last benchmark latency statistics (mean, median, std, pN) of a measure (batch, ttft, tpot, itl, e2el).",
    ),
    _s("kvwatch_bench_duration_seconds", "gauge", "server benchmark", "Duration of the last benchmark run."),
    _s(
        "kvwatch_bench_requests",
        "gauge",
        "server benchmark outcome",
        "Requests of the last benchmark (completed, failed).",
    ),
    # kvwatch itself
    _s("kvwatch_lines_total", "counter", _SERVER, "Lines read."),
    _s("kvwatch_lines_unparsed_total", "counter", _SERVER, "Lines read that gave no event (suspicious ones included)."),
    _s(
        "kvwatch_lines_suspicious_total",
        "counter",
        "server family",
        "Lines with an intact vLLM/LMCache header that start like a known family but did not parse.",
    ),
    _s(
        "kvwatch_lines_skipped_total",
        "counter",
        "server reason",
        "Lines not parsed: invalid_utf8, nul, too_long, partial (an unterminated last line), split_too_long.",
    ),
)

# Series only the running agent has (supervision, tailing, the host): not in replay.
AGENT_CATALOGUE: tuple[Spec, ...] = (
    _s("kvwatch_build_info", "gauge", "version python_version", "Always 1; kvwatch's version."),
    _s(
        "kvwatch_server_info",
        "gauge",
        "server vllm_version lmcache_version model",
        "Always 1; versions from the log or the server's installed packages, and the model.",
    ),
    _s("kvwatch_server_up", "gauge", _SERVER, "1 while the supervised server's process runs."),
    _s(
        "kvwatch_server_state",
        "gauge",
        "server state",
        "1 for the supervised server's current state: starting, running, unhealthy, stalled, backoff, "
        "crash_loop, stopping, stopped, exited.",
    ),
    _s("kvwatch_server_restarts_total", "counter", _SERVER, "Times kvwatch started the server again."),
    _s("kvwatch_server_last_exit_code", "gauge", _SERVER, "Exit code of the server's last exit (not by a signal)."),
    _s("kvwatch_server_last_exit_signal", "gauge", _SERVER, "Signal that ended the server's last run."),
    _s(
        "kvwatch_server_last_error",
        "gauge",
        "server error",
        "Always 1; the last error seen: an error kind of its log (oom, engine_dead ...), stalled or start_failed.",
    ),
    _s("kvwatch_server_uptime_seconds", "gauge", _SERVER, "Seconds since the running server process started."),
    _s("kvwatch_server_health_up", "gauge", _SERVER, "1 when the last health probe got a 2xx answer."),
    _s(
        "kvwatch_server_health_probe_duration_seconds",
        "gauge",
        _SERVER,
        "Duration of the last health probe.",
    ),
    _s(
        "kvwatch_server_progress_age_seconds",
        "gauge",
        _SERVER,
        "Seconds since the log last showed inference moving (throughput, a request, an access line).",
    ),
    _s(
        "kvwatch_server_log_rotations_total",
        "counter",
        _SERVER,
        "Rotations of the server's raw log done by kvwatch.",
    ),
    _s("kvwatch_gpus", "gauge", "vendor", "GPUs the host exposes, by vendor (vendor=none: 0 when none is seen)."),
    _s("kvwatch_gpus_expected", "gauge", "", "GPUs the host should expose (agent.expected_gpus)."),
    _s("kvwatch_gpus_missing", "gauge", "", "Expected GPUs the host does not expose (0 when all are visible)."),
    _s("kvwatch_tail_offset_bytes", "gauge", "server path", "Bytes of the followed file read so far."),
    _s("kvwatch_tail_size_bytes", "gauge", "server path", "Size of the followed file."),
    _s(
        "kvwatch_tail_rotations_total",
        "counter",
        "server path",
        "Times the path began naming another file (rename, delete, symlink switch).",
    ),
    _s("kvwatch_tail_truncations_total", "counter", "server path", "Times the followed file was truncated."),
    _s(
        "kvwatch_tail_lag_seconds",
        "gauge",
        "server path",
        "Time from the file's last modification to kvwatch reading it, at the last read.",
    ),
    _s(
        "kvwatch_tail_read_error",
        "gauge",
        "server path reason",
        "1 while a followed file cannot be read (permission_denied, read_error); retried.",
    ),
    _s("kvwatch_journal_up", "gauge", _SERVER, "1 while journalctl follows the unit's journal."),
    _s(
        "kvwatch_canary_ok",
        "gauge",
        "server reason",
        "1 when the last periodic canary found the repeated prompt from the second request on; reason: works, "
        "not_loaded, degraded, short_prompt, hash_seed, no_hits, no_answer, error.",
    ),
    _s(
        "kvwatch_canary_runs_total",
        "counter",
        "server result",
        "Periodic canary runs: ok, failed (the cache did not hit), error (it could not run).",
    ),
    _s("kvwatch_canary_last_run_timestamp_seconds", "gauge", _SERVER, "When the last periodic canary ran."),
    _s(
        "kvwatch_canary_last_hit_tokens",
        "gauge",
        _SERVER,
        "LMCache hit tokens of the last canary: the least of any request after the first.",
    ),
    _s("kvwatch_canary_last_latency_seconds", "gauge", _SERVER, "Mean latency of the last canary's requests."),
    _s(
        "kvwatch_bench_last_result",
        "gauge",
        "benchmark model params result",
        "The last `kvwatch bench` run of each parameter set: one series per result (requests_per_second, "
        "avg_latency_seconds, mean_ttft_ms ...).",
    ),
    _s(
        "kvwatch_bench_last_run_timestamp_seconds",
        "gauge",
        "benchmark model params",
        "When the last `kvwatch bench` run of each parameter set began.",
    ),
)
# Series of the trace builder and exporter: present while tracing is on (run, or replay --traces).
TRACE_CATALOGUE: tuple[Spec, ...] = (
    _s("kvwatch_trace_open_requests", "gauge", _SERVER, "Requests begun and not yet ended in the open-request table."),
    _s(
        "kvwatch_trace_requests_total",
        "counter",
        "server outcome",
        "Requests ended into a trace: finished, aborted, cancelled, failed (by their id), responded (by an "
        "access line), evicted (end never seen).",
    ),
    _s(
        "kvwatch_trace_requests_evicted_total",
        "counter",
        "server reason",
        "Requests ended without their end: idle_timeout, table_full, server_restart, server_stopped, log_ended, "
        "agent_stopped.",
    ),
    _s(
        "kvwatch_trace_unmatched_ends_total",
        "counter",
        _SERVER,
        "End lines naming a request never seen (it began before kvwatch followed the log).",
    ),
    _s("kvwatch_trace_spans_exported_total", "counter", "", "Spans the exporter delivered."),
    _s(
        "kvwatch_trace_spans_dropped_total",
        "counter",
        "reason",
        "Spans lost: queue_full (the collector was slower than the log), export_failed (it refused or was down).",
    ),
)
SPECS: dict[str, Spec] = {spec.name: spec for spec in CATALOGUE + AGENT_CATALOGUE + TRACE_CATALOGUE}

_FAMILY_TYPES = {"counter": CounterMetricFamily, "gauge": GaugeMetricFamily}

_ENGINE_GAUGES = (
    ("kvwatch_vllm_prompt_throughput_tokens_per_second", "prompt_throughput"),
    ("kvwatch_vllm_generation_throughput_tokens_per_second", "generation_throughput"),
    ("kvwatch_vllm_throughput_tokens_per_second", "throughput"),
    ("kvwatch_vllm_requests_running", "running"),
    ("kvwatch_vllm_requests_waiting", "waiting"),
    ("kvwatch_vllm_requests_swapped", "swapped"),
    ("kvwatch_vllm_requests_deferred", "deferred"),
    ("kvwatch_vllm_kv_cache_usage_ratio", "kv_cache_usage"),
    ("kvwatch_vllm_cpu_kv_cache_usage_ratio", "cpu_kv_cache_usage"),
    ("kvwatch_vllm_prefix_cache_hit_ratio", "prefix_cache_hit_rate"),
    ("kvwatch_vllm_cpu_prefix_cache_hit_ratio", "cpu_prefix_cache_hit_rate"),
    ("kvwatch_vllm_external_prefix_cache_hit_ratio", "external_prefix_cache_hit_rate"),
    ("kvwatch_vllm_mm_cache_hit_ratio", "mm_cache_hit_rate"),
)
_KV_FETCH_STAGES = (
    ("waiting_to_start", "kv_fetch_waiting"),
    ("in_progress", "kv_fetch_in_progress"),
    ("completed_waiting", "kv_fetch_completed"),
)
_SERVER_COUNTERS = (
    ("kvwatch_lmcache_lookups_total", "lookups"),
    ("kvwatch_lmcache_lookup_tokens_total", "lookup_tokens"),
    ("kvwatch_canary_requests_total", "canary_requests"),
    ("kvwatch_canary_lookups_total", "canary_lookups"),
    ("kvwatch_canary_lookup_tokens_total", "canary_lookup_tokens"),
    ("kvwatch_canary_hit_tokens_total", "canary_hit_tokens"),
    ("kvwatch_lmcache_hit_tokens_total", "hit_tokens"),
    ("kvwatch_lmcache_need_to_load_tokens_total", "need_to_load_tokens"),
    ("kvwatch_lmcache_engine_computed_tokens_total", "engine_computed_tokens"),
    ("kvwatch_lmcache_lookups_pending_total", "lookups_pending"),
    ("kvwatch_lmcache_lookups_below_min_retrieve_total", "lookups_below_min_retrieve"),
    ("kvwatch_lmcache_lookup_timeouts_total", "lookup_timeouts"),
    ("kvwatch_lmcache_stores_total", "stores"),
    ("kvwatch_lmcache_stored_tokens_total", "stored_tokens"),
    ("kvwatch_lmcache_stored_bytes_total", "stored_bytes"),
    ("kvwatch_lmcache_store_starts_total", "store_starts"),
    ("kvwatch_lmcache_store_start_tokens_total", "store_start_tokens"),
    ("kvwatch_lmcache_retrieves_total", "retrieves"),
    ("kvwatch_lmcache_retrieved_tokens_total", "retrieved_tokens"),
    ("kvwatch_lmcache_retrieve_requested_tokens_total", "retrieve_requested_tokens"),
    ("kvwatch_lmcache_retrieved_bytes_total", "retrieved_bytes"),
    ("kvwatch_vllm_requests_received_total", "received"),
    ("kvwatch_vllm_requests_added_total", "added"),
    ("kvwatch_vllm_requests_finished_total", "finished"),
    ("kvwatch_vllm_requests_aborted_total", "aborted"),
    ("kvwatch_vllm_requests_cancelled_total", "cancelled"),
    ("kvwatch_vllm_server_starts_total", "starts"),
    ("kvwatch_vllm_server_shutdowns_total", "shutdowns"),
    ("kvwatch_lmcache_prefetches_total", "prefetches"),
    ("kvwatch_lmcache_prefetch_requested_keys_total", "prefetch_requested_keys"),
    ("kvwatch_lmcache_server_starts_total", "lmcache_server_starts"),
    ("kvwatch_lines_total", "lines"),
    ("kvwatch_lines_unparsed_total", "unparsed_lines"),
)
_SERVER_GAUGES = (
    ("kvwatch_lmcache_degraded", "lmcache_degraded"),
    ("kvwatch_vllm_server_ready", "ready"),
    ("kvwatch_vllm_model_load_seconds", "model_load_seconds"),
    ("kvwatch_vllm_model_memory_bytes", "model_memory_bytes"),
    ("kvwatch_vllm_engine_init_seconds", "engine_init_seconds"),
    ("kvwatch_vllm_kv_cache_capacity_tokens", "kv_capacity_tokens"),
    ("kvwatch_vllm_kv_cache_max_concurrency", "kv_max_concurrency"),
    ("kvwatch_vllm_kv_cache_memory_bytes", "kv_cache_memory_bytes"),
    ("kvwatch_lmcache_l1_used_bytes", "l1_used_bytes"),
    ("kvwatch_lmcache_l1_capacity_bytes", "l1_capacity_bytes"),
)
_SERVER_DICTS = (
    # metric, attribute, label of the dict key
    ("kvwatch_vllm_request_failures_total", "failures", "reason"),
    ("kvwatch_vllm_kv_cache_blocks", "kv_blocks", "device"),
    ("kvwatch_vllm_errors_total", "errors", "error"),
    ("kvwatch_lines_suspicious_total", "suspicious", "family"),
    ("kvwatch_lines_skipped_total", "skipped", "reason"),
    ("kvwatch_lmcache_prefetch_hit_keys_total", "prefetch_hit_keys", "tier"),
    ("kvwatch_vllm_startup_phase_seconds", "startup_phases", "phase"),
)
# KvTransferTotals quantity -> family (by direction).
_KV_TRANSFER_FAMILIES = {
    "bytes": "kvwatch_kv_transfer_bytes_total",
    "seconds": "kvwatch_kv_transfer_seconds_total",
    "transfers": "kvwatch_kv_transfer_operations_total",
    "failures": "kvwatch_kv_transfer_failures_total",
}


def _family(name: str) -> Metric:
    spec = SPECS[name]
    if spec.type == "histogram":
        return HistogramMetricFamily(name, spec.help, labels=spec.labels)
    return _FAMILY_TYPES[spec.type](name, spec.help, labels=spec.labels)


def _histogram(family: HistogramMetricFamily, labels: list[str], histogram) -> None:
    cumulative = histogram.cumulative()
    bounds = [_le(bound) for bound in histogram.bounds] + ["+Inf"]
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


def _le(bound: float) -> str:
    return repr(float(bound))


def collect_families(servers: Iterable[ServerStats]) -> Iterator[Metric]:
    """Every family of :data:`CATALOGUE` that has samples for these servers."""
    servers = list(servers)
    families: dict[str, Metric] = {}

    def family(name: str) -> Metric:
        fam = families.get(name)
        if fam is None:
            fam = families[name] = _family(name)
        return fam

    for s in servers:
        server = s.server
        for name, attribute in _SERVER_COUNTERS:
            family(name).add_metric([server], getattr(s, attribute))
        for name, attribute in _SERVER_GAUGES:
            value = getattr(s, attribute)
            if value is not None:
                family(name).add_metric([server], value)
        for name, attribute, _label in _SERVER_DICTS:
            for key, value in sorted(getattr(s, attribute).items()):
                family(name).add_metric([server, key], value)
        for (method, path, status), value in sorted(s.http.items()):
            family("kvwatch_http_responses_total").add_metric([server, method, path, status], value)
        _histogram(family("kvwatch_lmcache_lookup_hit_ratio"), [server], s.hit_ratio)
        _histogram(family("kvwatch_lmcache_store_duration_seconds"), [server], s.store_duration)
        _histogram(family("kvwatch_lmcache_retrieve_duration_seconds"), [server], s.retrieve_duration)
        if s.prefetches:
            _histogram(family("kvwatch_lmcache_prefetch_duration_seconds"), [server], s.prefetch_duration)
        _kv_transfer_samples(family, server, s.kv_transfer)
        if s.version or s.model:
            family("kvwatch_vllm_info").add_metric([server, s.version or "", s.model or ""], 1)
        if s.lmcache_info is not None:
            family("kvwatch_lmcache_info").add_metric([server, *s.lmcache_info], 1)
        for engine, state in sorted(s.engines.items()):
            labels = [server, engine]
            if state.lines:
                family("kvwatch_vllm_stats_lines_total").add_metric(labels, state.lines)
                family("kvwatch_vllm_preemptions_total").add_metric(labels, state.preemptions)
                family("kvwatch_vllm_corrupted_requests_total").add_metric(labels, state.corrupted)
            if state.last_seen is not None:
                family("kvwatch_vllm_stats_last_seen_timestamp_seconds").add_metric(labels, state.last_seen)
            for name, key in _ENGINE_GAUGES:
                value = state.gauges.get(key)
                if value is not None:
                    family(name).add_metric(labels, value)
            for stage, key in _KV_FETCH_STAGES:
                value = state.gauges.get(key)
                if value is not None:
                    family("kvwatch_vllm_requests_kv_fetch").add_metric([server, engine, stage], value)
            if state.spec_accepted or state.spec_drafted or state.spec_gauges:
                family("kvwatch_vllm_spec_decode_accepted_tokens_total").add_metric(labels, state.spec_accepted)
                family("kvwatch_vllm_spec_decode_drafted_tokens_total").add_metric(labels, state.spec_drafted)
            for key, name in (
                ("mean_acceptance_length", "kvwatch_vllm_spec_decode_mean_acceptance_length"),
                ("draft_acceptance_rate", "kvwatch_vllm_spec_decode_draft_acceptance_ratio"),
            ):
                if key in state.spec_gauges:
                    family(name).add_metric(labels, state.spec_gauges[key])
        for (kind, labels), value in sorted(s.bench.items()):
            fam = family("kvwatch_bench_" + kind)
            by_name = dict(labels)
            fam.add_metric([server] + [by_name[label] for label in SPECS["kvwatch_bench_" + kind].labels[1:]], value)
    for spec in CATALOGUE:
        if spec.name in families:
            yield families[spec.name]


def _kv_transfer_samples(family: Callable[[str], Metric], server: str, totals) -> None:
    if not totals.lines:
        return
    family("kvwatch_kv_transfer_lines_total").add_metric([server], totals.lines)
    family("kvwatch_kv_transfer_unknown_keys_total").add_metric([server], totals.unknown_keys)
    for (quantity, direction), value in sorted(totals.totals.items()):
        if quantity == "lookups":
            family("kvwatch_kv_transfer_lookups_total").add_metric([server], value)
        else:
            family(_KV_TRANSFER_FAMILIES[quantity]).add_metric([server, direction], value)


def trace_families(tracing, builders: Iterable) -> Iterator[Metric]:
    """The :data:`TRACE_CATALOGUE` families of a :class:`agent.sinks.otlp.Tracing` and its trace builders."""
    fams = {spec.name: _family(spec.name) for spec in TRACE_CATALOGUE}
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
