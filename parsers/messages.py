"""Lines without any header: ``vllm bench`` results, exception lines, a GPU runtime's fatal fault, and
whole known messages.

A logging format of ``%(message)s``, or a shipper that strips headers, leaves
only the message.  Such a line is read when the *whole* line is exactly one
known message -- anchored at both ends, every field parsed -- so that a
fragment of a hard-wrapped line, or prose that quotes the start of a message,
gives nothing.  LMCache's ``(file.py:N:logger)`` trailer may follow its messages.
Without a header a line that does not fit is not a ``suspicious_line``: nothing
shows that vLLM or LMCache wrote it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from parsers import bench, lifecycle, lmcache, requests, service, vllm_stats
from parsers.events import Events
from parsers.shapes import NOT_A_NUMBER, one_of

NOTHING: Events = ()
# How the first word of an exception's final traceback line ends, with its message (``torch.OutOfMemoryError: ...``),
# or without.
_EXCEPTION_WORDS = ("Error:", "Exception:")
EXCEPTION_WORD_ENDS = (*_EXCEPTION_WORDS, "Error")
# LMCache's ``(vllm_v1_adapter.py:1544:lmcache.integration.vllm.vllm_v1_adapter)`` after a message.
_TRAILER = r"(?: \([\w.]+\.py:\d+:[\w.]+\))?"


def _whole(pattern: str) -> str:
    """A message pattern that must span the rest of the line (an LMCache trailer and a paste's
    closing backtick allowed)."""
    return "(?:" + pattern + r")[.;]?" + _TRAILER + r"\s*`?\s*$"


MessageParser = Callable[[str, int, "str | None"], "Events | None"]


def _exact(shape: str, parse: MessageParser) -> Callable[[str, int], Events]:
    """``parse`` applied only when ``shape`` matches the whole rest of the line.  The pattern is compiled
    at the first line that needs it: most logs hold few messages alone, and every start would pay for
    compiling them all (16 to 28 ms here)."""
    matcher: Callable[[str, int], re.Match[str] | None] | None = None

    def run(line: str, start: int) -> Events:
        nonlocal matcher
        if matcher is None:
            matcher = re.compile(shape, re.ASCII).match
        if matcher(line, start) is None:
            return NOTHING
        return parse(line, start, None) or NOTHING

    return run


def _lmcache(parse: Callable[[str, int, str | None, int | None], Events | None]) -> MessageParser:
    return lambda line, start, stamp: parse(line, start, stamp, None)


def _stats(line: str, start: int) -> Events:
    return vllm_stats.parse_stats_line(line, start, None) or NOTHING


def _kv_transfer(line: str, start: int) -> Events:
    return vllm_stats.parse_kv_transfer(line, start, None) or NOTHING


def _first_of(*handlers: Callable[[str, int], Events]) -> Callable[[str, int], Events]:
    def run(line: str, start: int) -> Events:
        for handler in handlers:
            events = handler(line, start)
            if events:
                return events
        return NOTHING

    return run


def _spec_decode(line: str, start: int) -> Events:
    return vllm_stats.parse_spec_decode_v1(line, start, None) or NOTHING


_ENGINE_DIED = _exact(_whole(lifecycle.DIED.pattern + r"[^']*"), lifecycle.parse_died)
# ``Received request X: [prompt: ..., ]params: ..., lora_request: None.`` (the prompt and the parameters
# are skipped unread; the line must end as vLLM ends it).
_RECEIVED = _exact(
    _whole(
        r"Received request \S+: .*, lora_request: (?:None|LoRARequest\([^()]*\))"
        r"(?:, prompt_adapter_request: (?:None|PromptAdapterRequest\([^()]*\)))?"
    ),
    requests.parse_received,
)
_REQUEST_OUTCOME = _exact(
    _whole(r"Request \S+ (?:aborted|failed(?: \((?:engine dead|bad request|input error)\)| due to [\w.]+)?)"),
    requests.parse_request_outcome,
)
# LMCache's words on one request: a load it completed in part, a lookup it gave up on.
_LMCACHE_REQUEST = _exact(
    _whole(lmcache.LOAD_FAILED.pattern + "|" + lmcache.ASYNC_LOOKUP_TIMEOUT.pattern + lmcache.ASYNC_LOOKUP_GIVEN_UP),
    _lmcache(lmcache.parse_request),
)
_FATAL = _exact(_whole(r"EngineCore encountered a fatal error"), lifecycle.parse_engine_core)
_DP_SUPERVISOR = _exact(
    _whole(lifecycle.DP_SUPERVISOR_DOWN.pattern + "|" + lifecycle.DP_SUPERVISOR_STOP.pattern),
    lifecycle.parse_dp_supervisor,
)
_CRASH = _exact(_whole(lifecycle.CRASH.pattern), lifecycle.parse_crash)
_KV_SIZE = _exact(_whole(lifecycle.KV_SIZE.pattern), lifecycle.parse_kv_size)
_GPU_FAULT = _exact(_whole(lifecycle.GPU_MEMORY_FAULT.pattern), lifecycle.parse_gpu_fault)
_GPU_HANG = _exact(_whole(lifecycle.GPU_HANG.pattern), lifecycle.parse_gpu_fault)
# V0's profiling time (V1's DEBUG line goes on with the memory it measured), or 0.6.4's one line.
_MEMORY_PROFILING = _exact(
    _whole(
        lifecycle.MEMORY_PROFILING_TIME.pattern
        + r"(?:\. Total non KV cache memory: [^`]{1,400}GiB)?|"
        + lifecycle.KV_PROFILED.pattern
        + r"(?: gpu_memory_utilization=[\d.]{1,10})?"
    ),
    lifecycle.parse_memory_profiling,
)
_ITERATION = _exact(_whole(vllm_stats.ITERATION.pattern), vllm_stats.parse_iteration)
_ENGINE_ITERATION = _exact(
    _whole(vllm_stats.ENGINE_PREFIX.pattern + vllm_stats.ITERATION.pattern), vllm_stats.parse_engine_prefixed
)
_KV_LOAD_RECOVERED = _exact(_whole(requests.KV_LOAD_RECOVERED.pattern), requests.parse_kv_load_recovered)
_KV_LOAD_FAILING = _exact(_whole(requests.KV_LOAD_FAILING.pattern + r"(?:\{[^{}]*\})?"), requests.parse_kv_load_failing)
_MAX_CONCURRENCY = _exact(_whole(lifecycle.MAX_CONCURRENCY.pattern), lifecycle.parse_max_concurrency)
_KV_TOO_SMALL = _exact(_whole(lifecycle.KV_TOO_SMALL.pattern), lifecycle.parse_kv_too_small)
# systemd's lines about the unit, whose first word is the unit's name (``vllm.service:``).
_SERVICE = _exact(_whole(service.LINE.pattern), service.parse)

# First word of a message-only line -> its reader.
_WHOLE_MESSAGES: dict[str, Callable[[str, int], Events]] = {
    "Engine": _first_of(_stats, _ENGINE_DIED, _ENGINE_ITERATION),
    "Avg": _first_of(bench.parse_avg_latency, _stats),
    "Throughput:": bench.parse_throughput,
    "Total": bench.parse_total,
    "Reqid:": _exact(_whole(lmcache.LOOKUP_ANY), _lmcache(lmcache.parse_lookup)),
    "Hybrid": _exact(_whole(lmcache.HYBRID_LOOKUP + lmcache.LOOKUP_ANY), _lmcache(lmcache.parse_hybrid_lookup)),
    "Retrieved": _exact(_whole(lmcache.RETRIEVED_ANY), _lmcache(lmcache.parse_retrieved)),
    "Stored": _exact(_whole(lmcache.STORED_ANY), _lmcache(lmcache.parse_stored)),
    "Storing": _exact(_whole(lmcache.STORING.pattern), _lmcache(lmcache.parse_storing)),
    "Prefetch": _exact(_whole(lmcache.PREFETCH.pattern), _lmcache(lmcache.parse_prefetch)),
    "L1": _exact(_whole(lmcache.L1_USAGE.pattern), _lmcache(lmcache.parse_l1_usage)),
    "Local": _exact(_whole(lmcache.MEMORY_PRESSURE.pattern), _lmcache(lmcache.parse_memory_pressure)),
    "lookup": _exact(_whole(lmcache.LOOKUP_SUMMARY.pattern), _lmcache(lmcache.parse_lookup_summary)),
    "LMCache": _first_of(
        _exact(_whole(lmcache.SERVER_START_ANY), _lmcache(lmcache.parse_server_start)),
        _exact(_whole(lmcache.UNHEALTHY_SKIP.pattern), _lmcache(lmcache.parse_unhealthy_skip)),
        _exact(_whole(lmcache.WORKER_ADAPTER.pattern), _lmcache(lmcache.parse_initialized)),
    ),
    "HealthMonitor:": _exact(_whole(lmcache.HEALTH.pattern), _lmcache(lmcache.parse_health)),
    "StorageManager:": _exact(_whole(lmcache.BACKEND_BYPASS.pattern), _lmcache(lmcache.parse_backend_bypass)),
    "Timeout": _exact(
        _whole(lmcache.RPC_TIMEOUT.pattern + r", recreating all sockets\. Error: [^`]{0,400}"),
        _lmcache(lmcache.parse_timeout),
    ),
    "EngineCore": _FATAL,
    "DPSupervisor": _DP_SUPERVISOR,
    "Fatal": _CRASH,
    "Segmentation": _CRASH,
    "Segfault": _CRASH,
    "terminate": _CRASH,
    "Memory": _first_of(_GPU_FAULT, _MEMORY_PROFILING),
    "HW": _GPU_HANG,
    "model": _exact(_whole(lifecycle.KV_RESERVED.pattern), lifecycle.parse_kv_reserved),
    "Maximum": _first_of(_MAX_CONCURRENCY, bench.parse_serve),
    "Available": _exact(_whole(lifecycle.KV_MEMORY.pattern), lifecycle.parse_kv_memory),
    "Loading": _exact(_whole(lifecycle.WEIGHTS_LOADING.pattern), lifecycle.parse_model_loading),
    "Model": _exact(_whole(lifecycle.MODEL_LOADING.pattern), lifecycle.parse_model_loading),
    "torch.compile": _exact(_whole(lifecycle.TORCH_COMPILE.pattern), lifecycle.parse_torch_compile),
    "Initial": _exact(
        _whole(lifecycle.PROFILING_RUN.pattern + "|" + lifecycle.KV_PINNED.pattern + r"[^`]{0,400}"),
        lifecycle.parse_initial,
    ),
    "Graph": _exact(_whole(lifecycle.GRAPH_CAPTURE.pattern), lifecycle.parse_graph_capture),
    "init": _exact(_whole(lifecycle.ENGINE_INIT_TIME.pattern), lifecycle.parse_init_engine),
    "KV": _kv_transfer,
    "Added": _exact(_whole(requests.ADDED.pattern), requests.parse_added),
    "Received": _RECEIVED,
    "SpecDecoding": _spec_decode,
    "DiffusionDecoding": _exact(_whole(vllm_stats.DIFFUSION.pattern), vllm_stats.parse_diffusion),
    "Application": _exact(_whole(r"Application startup complete"), requests.parse_uvicorn),
    "Starting": _exact(_whole(r"Starting vLLM (?:API )?server(?: \d+)? on \S+"), lifecycle.parse_starting),
    "vLLM": _exact(_whole(r"vLLM API server version \S+"), lifecycle.parse_vllm_version),
    "Finished": _exact(_whole(requests.FINISHED.pattern), requests.parse_finished),
    "Aborted": _exact(_whole(requests.ABORTED.pattern), requests.parse_aborted),
    "Recovered": _KV_LOAD_RECOVERED,
    "Sequence": _exact(_whole(requests.PREEMPTED.pattern), requests.parse_preempted),
    "Failing": _KV_LOAD_FAILING,
    "It": _exact(_whole(lifecycle.SLEEP.pattern), lifecycle.parse_sleep),
    "Sleep": _exact(_whole(lifecycle.SLEEP_FREED.pattern), lifecycle.parse_sleep_memory),
    "setting": _exact(_whole(lifecycle.PAUSE.pattern), lifecycle.parse_pause),
    "[Elastic": _exact(_whole(lifecycle.ELASTIC_SCALED.pattern), lifecycle.parse_elastic_scaled),
    "DPCoordinator": _exact(_whole(lifecycle.COORDINATOR_SCALED.pattern), lifecycle.parse_coordinator_scaled),
    **dict.fromkeys(lifecycle.KV_TOO_SMALL_WORDS, _KV_TOO_SMALL),
    # ``No available ...`` (the refusal above, or a block of vLLM's processes' queue), or LMCache's lookup for a
    # model none of its multiprocess server's workers serves.
    "No": _first_of(
        _exact(_whole(lifecycle.KV_TOO_SMALL.pattern + "|" + lifecycle.STALL.pattern), lifecycle.parse_no_available),
        _exact(_whole(lmcache.UNREGISTERED_LOOKUP.pattern), _lmcache(lmcache.parse_unregistered_lookup)),
    ),
    "Rejecting": _exact(_whole(lmcache.UNREGISTERED_REFUSAL.pattern), _lmcache(lmcache.parse_unregistered_refusal)),
    # LMCache's multiprocess server: a store task to an L2 adapter that failed (its keys' list may run long).
    "Store": _exact(_whole(lmcache.L2_STORE_FAILED.pattern + r"[^`]*"), _lmcache(lmcache.parse_store_old)),
}
# LMCache's multiprocess server: a prefetch that found no room in L1 (``prefetch:N: ...``: its number in the word).
_PREFETCH_OUT_OF_MEMORY = _exact(
    _whole(lmcache.PREFETCH_OUT_OF_MEMORY.pattern), _lmcache(lmcache.parse_prefetch_out_of_memory)
)

# LMCache's messages that its request tag may stand before (``[req_id=X] Stored ...``).
_REQUEST_TAGGED = {word: _WHOLE_MESSAGES[word] for word in ("Stored", "Retrieved")}
# abseil's ``*** SIGSEGV received at ...``: read from the signal's name, after the stars.
for _signal in lifecycle.FATAL_SIGNALS:
    _WHOLE_MESSAGES[_signal] = _CRASH
for _device in lifecycle.KV_DEVICES:
    _WHOLE_MESSAGES[_device] = _KV_SIZE
# ``Request throughput ...`` of ``vllm bench serve``, a request's outcome, or LMCache's words on a request.
_WHOLE_MESSAGES["Request"] = _first_of(bench.parse_serve, _REQUEST_OUTCOME, _LMCACHE_REQUEST)
# ``vllm bench serve`` result lines, by first word.
for _word in (
    "Successful",
    "Failed",
    "Benchmark",
    "Output",
    "Peak",
    "Mean",
    "Median",
    "Std",
    "Input",
    "Acceptance",
):
    _WHOLE_MESSAGES[_word] = bench.parse_serve


# Where a whole known message may begin after another logging format's header: one of the first words
# above, after a blank, a bracket, a colon or a bar.
# (An engine step's first word holds its number, as a benchmark's percentile does: ``10% percentile latency``,
# ``P99 TTFT (ms):``, and LMCache's prefetch tag: ``prefetch:12:``.)
_NUMBERED_WORDS = r"Iteration\(\d{1,18}\):|\d{1,3}%|P\d{1,3}(?:\.\d{1,3})?|prefetch:\d{1,18}:"
MESSAGE_START = re.compile(
    r"(?<=[\s\]):|>-])(?:" + one_of(sorted(_WHOLE_MESSAGES, key=len, reverse=True)) + "|" + _NUMBERED_WORDS + ")(?= )"
)


def begins_with_message(line: str) -> bool:
    """Whether a line's first word is the first word of a message read alone (a record without a header
    may begin so), an exception's last line among them."""
    space = line.find(" ")
    if space <= 0:
        return False
    word = line[:space]
    if word in _WHOLE_MESSAGES or word.startswith(lmcache.PREFETCH_TAG):
        return True
    return word.endswith(_EXCEPTION_WORDS) or word.endswith(service.UNIT_ENDS)


def exception_events(line: str, start: int, stamp: str | None) -> Events:
    """A traceback's last line: LMCache's multiprocess server raising for a worker it does not hold, else an
    exception that tells an error (``torch.OutOfMemoryError: ...``)."""
    return lmcache.parse_unregistered_exception(line, start, stamp) or lifecycle.parse_exception(line, start, stamp)


def message_only(line: str, start: int) -> Events:
    """The events of a line that is one whole known message, a bench result or an exception line."""
    space = line.find(" ", start)
    word = line[start:space] if space != -1 else line[start:]
    handler = _WHOLE_MESSAGES.get(word)
    if handler is None:
        if word.startswith("[req_id=") and space != -1:
            # LMCache's request tag before its store and retrieve messages (``[req_id=X] Stored ...``): their
            # patterns take it.
            after = line.find(" ", space + 1)
            handler = _REQUEST_TAGGED.get(line[space + 1 : after] if after != -1 else line[space + 1 :])
        elif word.endswith("%"):
            handler = bench.parse_percentile_latency
        elif word[:1] == "P" and word[1:2].isdigit():
            handler = bench.parse_serve
        elif word.startswith("Iteration("):
            handler = _ITERATION
        elif word.startswith(lmcache.PREFETCH_TAG):
            handler = _PREFETCH_OUT_OF_MEMORY
        elif word.endswith(service.UNIT_ENDS):
            handler = _SERVICE
    if handler is not None:
        try:
            return handler(line, start)
        except NOT_A_NUMBER:  # not that message after all
            return NOTHING
    if word.endswith(EXCEPTION_WORD_ENDS) and start == 0:
        return exception_events(line, start, None)
    if ": error: " in line:
        return lifecycle.parse_usage_error(line, start, None)
    if "rocdevice.cpp" in word:
        return lifecycle.parse_gpu_fault(line, start, None)
    return NOTHING
