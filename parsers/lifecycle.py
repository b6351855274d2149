"""Server lifecycle: versions, readiness, model load, KV capacity, fatal errors, shutdown.

Fatal errors come from vLLM's own messages (``EngineCore encountered a fatal
error.``, ``Engine core proc ... died unexpectedly``) and from the final line
of a traceback -- ``torch.OutOfMemoryError: HIP out of memory. ...``,
``vllm.v1.engine.exceptions.EngineDeadError: ...`` -- but only when that line
starts the message: an exception text quoted inside another line is not an
error of this server.  Exception lines that name no known fatal condition
(a bad request's ``ValueError``) produce nothing.
"""

from __future__ import annotations

import re

from parsers.events import (
    GIB,
    EngineInitialized,
    EnginePause,
    EngineSleep,
    EnginesScaled,
    EngineStall,
    EngineStarting,
    Event,
    KvCacheCapacity,
    ModelLoaded,
    ServerError,
    ServerReady,
    ServerShutdown,
    ServerStarting,
    ShutdownAborted,
    SleepMemory,
    StartupPhase,
    VllmParser,
)
from parsers.shapes import DECIMAL, INTEGER, integer

_API_SERVER_VERSION = re.compile(r"vLLM API server version (\S+)")
_SERVER_VERSION = re.compile(r"vLLM server version (\S+?),? serving model (.+)$")
# The start-up logo (0.2x+): " ▄▄ ▄█ █     █     █ ▀▄▀ █  version 0.32.0"
_LOGO_VERSION = re.compile(r"[ █▄▀▐▌]+ version (\S+)\s*$")
_ENGINE_INIT = re.compile(
    r"Initializing an? (?:V\d )?LLM engine(?: \(v?([^)\s]+)\))? with config: model=(?:'([^']*)'|([^,]*))"
)
_TP_SIZE = re.compile(rf"tensor_parallel_size=({INTEGER})")
_DP_SIZE = re.compile(rf"\bdata_parallel_size=({INTEGER})")
MODEL_LOADING = re.compile(
    rf"(?:Model loading|Loading model weights) took ({DECIMAL}) Gi?B(?: memory)?(?: and ({DECIMAL}) s(?:econds)?)?"
)
ENGINE_INIT_TIME = re.compile(rf"init engine \([^)]*\) took ({DECIMAL}) s(?:econds)?(?: \(compilation: [\d.]+ s\))?")
# Start-up steps vLLM times (users read them off the log after an upgrade).
WEIGHTS_LOADING = re.compile(rf"Loading weights took ({DECIMAL}) s(?:econds|ecs)?")
# vLLM's compile monitor: ``torch.compile takes X s in total`` (0.6.5 on; ``graph compilation takes`` in
# 0.6.4), ``took`` in the 2026 releases.  Without an AOT compile, 0.3x times the compile and the first
# profiling run together: ``torch.compile and initial profiling/warmup run together took X s in total``.
TORCH_COMPILE = re.compile(
    rf"(?:torch\.compile(?: and initial profiling/warmup run together)?|graph compilation) t(?:akes|ook) ({DECIMAL})"
    r" s in total"
)
# The profiling forward pass that sizes the KV cache, timed apart from the compile (2026 releases).
PROFILING_RUN = re.compile(rf"Initial profiling/warmup run took ({DECIMAL}) s")
# A KV pool of the size ``--kv-cache-memory-bytes`` set, with no memory profiling: ``Initial free memory
# X GiB, reserved Y GiB memory for KV Cache as specified by kv_cache_memory_bytes config and skipped ...``.
KV_PINNED = re.compile(
    rf"Initial free memory {DECIMAL} GiB, reserved ({DECIMAL}) GiB memory for KV Cache as specified by"
    r" kv_cache_memory_bytes"
)
# 0.3x names the compiled part first: ``[monitor.py:62] [backbone] torch.compile took ...``, ``[eagle_head]``,
# an encoder's class name; each part's steps are timed apart.  Only right after the header's source: a
# tool's prefix before a message alone (``[vllm] ``) or a logger's name in brackets is no part.
_PART_TAG = re.compile(r":\d{1,6}\] \[([\w-]{1,80})\] \Z")
GRAPH_CAPTURE = re.compile(rf"Graph capturing finished in ({DECIMAL}) secs?(?:, took (-?{DECIMAL}) GiB)?\.?")
KV_MEMORY = re.compile(rf"Available KV cache memory: (-?{DECIMAL}) GiB")
# V0's worker (0.6.5 to 0.10) after its profiling run, a message of three lines (each with its own
# header): ``Memory profiling takes 5.35 seconds``, ``the current vLLM instance can use ...``, and
# ``model weights take 8.63GiB; non_torch_memory takes 0.09GiB; PyTorch activation peak memory takes
# 1.16GiB; the rest of the memory reserved for KV Cache is 45.21GiB.`` (negative when the model left
# none); 0.6.4 logged one line, ``Memory profiling results: total_gpu_memory=7.92GiB ...
# kv_cache_size=5.99GiB gpu_memory_utilization=0.90``.  V1 logs the profiling time at DEBUG only:
# ``Memory profiling takes 3.10 seconds. Total non KV cache memory: ...``.
MEMORY_PROFILING_TIME = re.compile(rf"Memory profiling takes ({DECIMAL}) seconds")
KV_RESERVED = re.compile(
    rf"model weights take -?{DECIMAL}GiB;(?: [\w ]{{1,60}} takes -?{DECIMAL}GiB;){{0,6}}"
    rf" the rest of the memory reserved for KV Cache is (-?{DECIMAL}) ?GiB"
)
KV_PROFILED = re.compile(
    rf"Memory profiling results: (?:\w{{1,40}}=-?{DECIMAL}Gi[Bb] ){{0,8}}kv_cache_size=(-?{DECIMAL})GiB"
)
# The CPU backend sizes its KV pool from VLLM_CPU_KVCACHE_SPACE: "(the pool/the node's memory) GiB".
CPU_KV_MEMORY = re.compile(rf"Explicitly set \(({DECIMAL})/[\d.]+\) GiB for KV cache")
# The label names the pools: ``GPU + host`` with vLLM 0.32+'s hierarchical sparse attention (HiSparse).
KV_SIZE = re.compile(
    rf"(\w+(?: \+ host)?) KV cache size: ([\d,]+) tokens"
    rf"(?:, Maximum concurrency for ([\d,]+) tokens per request: ({DECIMAL})x)?"
)
MAX_CONCURRENCY = re.compile(rf"Maximum concurrency for ([\d,]+) tokens per request: ({DECIMAL})x")
# vLLM's sleep mode, as its executor logs it (0.7.3 on): ``It took 0.744026 seconds to fall asleep.``,
# ``It took 0.779162 seconds to wake up.`` (to 0.8.4), ``It took 1.2 seconds to wake up tags ['weights'].``
# (the tags asked for, or the set that was asleep: ``{'weights', 'kv_cache'}``), and from 2026 ``It took
# 0.01 seconds to discard tags {'kv_cache'}.`` (the KV cache's memory released while the engine is paused).
SLEEP = re.compile(
    rf"It took ({DECIMAL}) seconds to (fall asleep|wake up|discard)"
    r"(?: tags (\[[^\[\]]{0,400}\]|\{[^{}]{0,400}\}))?"
)
_SLEEP_TRANSITIONS = {"fall asleep": "sleep", "wake up": "wake_up", "discard": "discard"}
_QUOTED = re.compile(r"'([^']*)'")
# Each worker once its device fell asleep (``%.2f`` GiB to 0.10, rounded to two places after).
SLEEP_FREED = re.compile(rf"Sleep mode freed ({DECIMAL}) GiB memory, ({DECIMAL}) GiB memory is still in use")
# The engine core's scheduler paused or going again (vLLM 0.32): ``setting pause state to PAUSED_NEW``.
PAUSE = re.compile(r"setting pause state to (UNPAUSED|PAUSED_NEW|PAUSED_ALL)(?![\w])")
# Elastic EP: ``[Elastic EP] Scale down completed, new data parallel size: 2`` (the front end) and
# ``DPCoordinator scaled down from 4 to 2 engines`` (the data-parallel coordinator).
ELASTIC_SCALED = re.compile(rf"\[Elastic EP\] Scale (up|down) completed, new data parallel size: ({INTEGER})")
COORDINATOR_SCALED = re.compile(rf"DPCoordinator scaled (up|down) from ({INTEGER}) to ({INTEGER}) engines")
# Device labels of ``<DEV> KV cache size`` (and of out-of-memory messages).
KV_DEVICES = ("GPU", "CPU", "XPU", "NPU", "HPU", "TPU", "MPS", "CUDA", "ROCM")
_BLOCKS = re.compile(rf"# (\w+) blocks: ({INTEGER})(?:, # CPU blocks: ({INTEGER}))?")
DIED = re.compile(r"(?:Engine core proc|Worker proc|RayWorkerProc) \S+ died unexpectedly")
# A process of the server killed by a fatal signal or an uncaught C++ exception, as the runtimes print
# it into the server's output: Python's fault handler (``Fatal Python error: Segmentation fault``), the
# shell (``Segmentation fault (core dumped)``), PyTorch's handler (``!!!!!!! Segfault encountered
# !!!!!!!``), abseil's (``*** SIGSEGV received at time=1733212800 on cpu 3 ***``; its SIGTERM is a stop),
# C++'s terminate (``terminate called after throwing an instance of 'c10::Error'``: the class is the
# exception).
FATAL_SIGNALS = ("SIGSEGV", "SIGABRT", "SIGBUS", "SIGILL", "SIGFPE")
_FATAL_SIGNAL = "(?:" + "|".join(FATAL_SIGNALS) + ")"
# How each report begins, after the stars or the exclamation marks some put first.
CRASH_START = (
    r"Fatal Python error: |Segmentation fault|Segfault encountered|"
    + _FATAL_SIGNAL
    + r" received at time=|terminate called after throwing "
)
CRASH = re.compile(
    r"Fatal Python error: (?:Segmentation fault|Aborted|Bus error|Floating point exception|Illegal instruction)"
    r"|Segmentation fault(?: \(core dumped\))?"
    r"|(?:!{1,10} )?Segfault encountered(?: !{1,10})?"
    r"|(?:\*\*\* )?" + _FATAL_SIGNAL + r" received at time=\d{1,20}(?: on cpu \d{1,5})? \*\*\*"
    r"|terminate called after throwing an instance of '([\w:]{1,200})'"
)
_EXCEPTION = re.compile(r"((?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception))(?:: (.*))?$")


def parse_vllm_version(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = _API_SERVER_VERSION.match(line, start)
    if m is not None:
        return (ServerStarting(stamp, m.group(1)),)
    m = _SERVER_VERSION.match(line, start)
    if m is not None:
        return (ServerStarting(stamp, m.group(1), m.group(2).strip()),)
    return ()


def parse_logo(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = _LOGO_VERSION.match(line, start)
    return (ServerStarting(stamp, m.group(1)),) if m else ()


def parse_starting(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    if line.startswith("Starting vLLM server on ", start) or line.startswith("Starting vLLM API server", start):
        return (ServerReady(stamp),)
    return ()


# vLLM's Rust front end (vllm-rs, ``VLLM_USE_RUST_FRONTEND=1``): ``starting OpenAI server bind_address=...``
# (0.30), ``starting vLLM server model=...`` then ``OpenAI server is ready to accept requests ...`` (later).
_RUST_READY = ("starting OpenAI server", "starting vLLM server", "OpenAI server is ready to accept requests")


def parse_rust_ready(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    return (ServerReady(stamp),) if line.startswith(_RUST_READY, start) else ()


def parse_engine_init(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = _ENGINE_INIT.match(line, start)
    if m is None:  # an engine start that no longer reads as one is format drift; other "Initializing ..." is not
        return None if "LLM engine" in line[start : start + 40] else ()
    tp = _TP_SIZE.search(line, m.end())
    dp = _DP_SIZE.search(line, m.end())
    model = m.group(2) if m.group(2) is not None else m.group(3)
    return (
        EngineStarting(stamp, m.group(1), model, int(tp.group(1)) if tp else None, int(dp.group(1)) if dp else None),
    )


def parse_model_loading(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = MODEL_LOADING.match(line, start)
    if m is None:
        m = WEIGHTS_LOADING.match(line, start)
        if m is not None:
            return (StartupPhase(stamp, "weights_loading", float(m.group(1))),)
        if line.startswith("Model loading took", start):
            return None
        return ()
    seconds = m.group(2)
    return (ModelLoaded(stamp, float(m.group(1)), float(seconds) if seconds else None),)


def parse_init_engine(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = ENGINE_INIT_TIME.match(line, start)
    if m is None:
        return ()
    seconds = float(m.group(1))
    return (EngineInitialized(stamp, seconds), StartupPhase(stamp, "engine_init", seconds))


def _compiled_part(line: str, start: int) -> str | None:
    """The compiled part a 0.3x step names in brackets just before its message (``[backbone] ``)."""
    if not line.startswith("] ", start - 2):
        return None
    m = _PART_TAG.search(line, max(0, start - 92), start)
    return m.group(1) if m else None


def parse_torch_compile(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = TORCH_COMPILE.match(line, start)
    if m is None:
        return ()
    return (StartupPhase(stamp, "torch_compile", float(m.group(1)), part=_compiled_part(line, start)),)


def parse_initial(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """The profiling run's time, or the KV pool ``--kv-cache-memory-bytes`` set (both 2026)."""
    m = PROFILING_RUN.match(line, start)
    if m is not None:
        return (StartupPhase(stamp, "memory_profiling", float(m.group(1)), part=_compiled_part(line, start)),)
    m = KV_PINNED.match(line, start)
    return _kv_memory(stamp, m.group(1)) if m else ()


def parse_graph_capture(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = GRAPH_CAPTURE.match(line, start)
    return (StartupPhase(stamp, "graph_capture", float(m.group(1))),) if m else ()


def _kv_memory(stamp: str | None, gib: str) -> tuple[Event, ...]:
    """The memory left for the KV cache, printed in GiB."""
    return (StartupPhase(stamp, "kv_cache_memory", bytes=integer(float(gib) * (1 << 30))),)


def parse_kv_memory(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """``Available KV cache memory: X GiB`` (negative when the weights left no room)."""
    m = KV_MEMORY.match(line, start)
    if m is None:
        return None if line.startswith("Available KV cache memory", start) else ()
    return _kv_memory(stamp, m.group(1))


def parse_memory_profiling(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """V0's ``Memory profiling takes X seconds`` (V1's at DEBUG) or 0.6.4's ``Memory profiling results:
    ... kv_cache_size=X GiB ...``."""
    m = MEMORY_PROFILING_TIME.match(line, start)
    if m is not None:
        return (StartupPhase(stamp, "memory_profiling", float(m.group(1))),)
    m = KV_PROFILED.match(line, start)
    if m is not None:
        return _kv_memory(stamp, m.group(1))
    return None if line.startswith("Memory profiling", start) else ()


def parse_kv_reserved(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """V0's ``model weights take ...; the rest of the memory reserved for KV Cache is X GiB.``"""
    m = KV_RESERVED.match(line, start)
    if m is None:
        return None if line.startswith("model weights take", start) else ()
    return _kv_memory(stamp, m.group(1))


def parse_cpu_kv_memory(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """``Explicitly set (1.0/21.59) GiB for KV cache on node 0.``: the CPU backend's KV pool."""
    m = CPU_KV_MEMORY.match(line, start)
    if m is None:
        return None if line.startswith("Explicitly set (", start) else ()
    return _kv_memory(stamp, m.group(1))


def _int(text: str) -> int:
    return integer(text.replace(",", ""))


def parse_kv_size(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """``GPU KV cache size: 251,920 tokens`` (any device label), with or without the concurrency part;
    also ``NPU out of memory. ...`` logged without the exception's name."""
    m = KV_SIZE.match(line, start)
    if m is None:
        if " KV cache size:" in line[start : start + 32]:
            return None
        if line.startswith(" out of memory", line.find(" ", start)):
            return (ServerError(stamp, "oom"),)
        return ()
    per_request = m.group(3)
    return (
        KvCacheCapacity(
            stamp,
            tokens=_int(m.group(2)),
            tokens_per_request=_int(per_request) if per_request else None,
            max_concurrency=float(m.group(4)) if m.group(4) else None,
            device=m.group(1),
        ),
    )


def parse_sleep(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = SLEEP.match(line, start)
    if m is None:
        if line.startswith("It took ", start) and any(word in line for word in _SLEEP_TRANSITIONS):
            return None
        return ()
    transition = _SLEEP_TRANSITIONS[m.group(2)]
    if m.group(3) is None and (transition == "discard" or line.startswith(" tags", m.end())):
        return None  # tags cut short, or a discard without the tags it names
    tags = _QUOTED.findall(m.group(3)) if m.group(3) is not None else None
    return (EngineSleep(stamp, None, transition, float(m.group(1)), tags),)


def parse_pause(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = PAUSE.match(line, start)
    if m is None:
        return None if line.startswith("setting pause state", start) else ()
    return (EnginePause(stamp, None, m.group(1).lower()),)


def parse_elastic_scaled(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = ELASTIC_SCALED.match(line, start)
    if m is None:
        return None if line.startswith("[Elastic EP] Scale ", start) and "completed" in line else ()
    return (EnginesScaled(stamp, m.group(1), int(m.group(2))),)


def parse_coordinator_scaled(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = COORDINATOR_SCALED.match(line, start)
    if m is None:
        return None if line.startswith("DPCoordinator scaled ", start) else ()
    return (EnginesScaled(stamp, m.group(1), int(m.group(3)), int(m.group(2))),)


def parse_sleep_memory(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = SLEEP_FREED.match(line, start)
    if m is None:
        return None if line.startswith("Sleep mode freed", start) else ()
    return (SleepMemory(stamp, integer(float(m.group(1)) * GIB), integer(float(m.group(2)) * GIB)),)


def parse_max_concurrency(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = MAX_CONCURRENCY.match(line, start)
    if m is None:
        return None if line.startswith("Maximum concurrency for", start) else ()
    return (KvCacheCapacity(stamp, tokens_per_request=_int(m.group(1)), max_concurrency=float(m.group(2))),)


def parse_blocks(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """``# GPU blocks: N, # CPU blocks: M`` (V0); the CPU backend prints ``# cpu blocks: N, # CPU blocks: 0``.

    ``gpu_blocks`` is the engine's own pool, on the device the first label names; the
    second count is V0's CPU swap space."""
    m = _BLOCKS.match(line, start)
    if m is None:
        return None
    device = m.group(1).upper()
    swap = m.group(3)
    return (KvCacheCapacity(stamp, gpu_blocks=int(m.group(2)), cpu_blocks=int(swap) if swap else None, device=device),)


def parse_engine_core(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    if line.startswith("EngineCore encountered a fatal error", start):
        return (ServerError(stamp, "engine_dead"),)
    return ()


# vLLM 0.32's data-parallel supervisor (``--data-parallel-multi-port-external-lb``: an API server per local DP rank,
# each on its own port) runs the DP servers as its children and health-checks them: once they were ready, one that
# exited or stopped answering ``/health`` brings the whole server down.  Its words for that, and for the signal
# that stops it (its other lines give nothing).
DP_SUPERVISOR_DOWN = re.compile(rf"DPSupervisor (?:probe )?found ({INTEGER}) (?:exited|unhealthy) DP Servers\.")
DP_SUPERVISOR_STOP = re.compile(r"DPSupervisor received SIG[A-Z]{2,8}, shutting down\.")
_DP_SUPERVISOR_VERDICTS = ("DPSupervisor found ", "DPSupervisor probe found ", "DPSupervisor received ")


def parse_dp_supervisor(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if DP_SUPERVISOR_DOWN.match(line, start):
        return (ServerError(stamp, "engine_dead"),)
    if DP_SUPERVISOR_STOP.match(line, start):
        return (ServerShutdown(stamp),)
    return None if line.startswith(_DP_SUPERVISOR_VERDICTS, start) else ()


def parse_worker_proc(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """``WorkerProc failed to start.``: a V1 worker process could not come up (the start fails)."""
    if line.startswith("WorkerProc failed to start", start):
        return (ServerError(stamp, "other"),)
    return ()


# Python's argparse refusing a server's command line (vLLM's and LMCache's servers parse theirs with it): the
# usage, then ``api_server.py: error: unrecognized arguments: --bogus`` or ``vllm serve: error: argument
# --max-model-len: invalid int value: 'abc'``, and exit code 2.  Only argparse's own wordings count: other
# programs (a compiler a JIT build runs) print ``name: error: ...`` too.
USAGE_ERROR = re.compile(
    r"[\w.+-]{1,64}(?: [\w.+-]{1,64}){0,2}: error: "
    r"(?:unrecognized arguments: |argument [^\s:]{1,200}: |the following arguments are required: "
    r"|one of the arguments |ambiguous option: )"
)


def parse_usage_error(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    return (ServerError(stamp, "config_error"),) if USAGE_ERROR.match(line, start) else ()


def parse_crash(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = CRASH.match(line, start)
    return (ServerError(stamp, "other", m.group(1)),) if m is not None else ()


def parse_died(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    if DIED.match(line, start):
        return (ServerError(stamp, "engine_dead"),)
    return ()


_SHUTDOWN_ABORTING = re.compile(rf"\[shutdown\] EngineCore: aborting in-flight requests count=({INTEGER})")


def parse_shutdown(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if line.startswith("[shutdown] API server: shutdown triggered", start):
        return (ServerShutdown(stamp),)
    if line.startswith("[shutdown] EngineCore: aborting", start):
        m = _SHUTDOWN_ABORTING.match(line, start)
        return (ShutdownAborted(stamp, None, int(m.group(1))),) if m else None
    return ()


# --- exception lines ------------------------------------------------------------------

# ROCm's runtime when a GPU kernel touches memory it may not: written straight to the process's
# stderr, no header, and the process aborts -- AMD's counterpart of CUDA's "an illegal memory
# access was encountered": ``Memory access fault by GPU node-2 (Agent handle: 0x55d4c2a1c0b0) on
# address 0x7f1c00000000. Reason: Page not present or supervisor privilege.`` (the reason may be on
# the next line, or ``Unknown``).
GPU_MEMORY_FAULT = re.compile(
    r"Memory access fault by GPU node-\d{1,4} (?:\(Agent handle: 0x[0-9a-fA-F]{1,16}\) )?"
    r"on address (?:0x[0-9a-fA-F.]{1,16}|\(nil\))\.?(?: Reason: [\w ]{1,80}\.?)?"
)


# ROCm's HIP runtime aborting the process on a GPU queue's error, in its own log format (the
# source file padded, the line, a microsecond clock, the pid and thread in newer releases):
# ``:0:rocdevice.cpp            :3020: 5875275709338d us: [pid:20536 tid:0x7fb428fff640] Callback:
# Queue 0x7f4580c00000 aborting with error : HSA_STATUS_ERROR_EXCEPTION: An HSAIL operation
# resulted in a hardware exception. code: 0x1016``; older: ``Device::callbackQueue aborting with
# status: 0x100f``.  (The line is padded to four digits, ``:354 :``; later releases write ``tid: 0x...``.)
HIP_ABORT = re.compile(
    r"(?::?\d{1,3}:)?rocdevice\.cpp {0,40}+(?::\d{1,6} {0,4}+: {0,4}+\d{1,20}d? us: {0,4}+)?"
    r"(?:\[pid:\d{1,10} {1,4}+tid: ?0x[0-9a-fA-F]{1,16}\] {0,4}+)?"
    r"(?:Callback: Queue 0x[0-9a-fA-F]{1,16} aborting with error : HSA_STATUS_ERROR_\w{1,64}"
    r"|Device::callbackQueue aborting with status: 0x[0-9a-fA-F]{1,8})",
    re.ASCII,
)


# ROCm's runtime when the GPU stops answering (its watchdog reset the device): every process using it gets
# ``HW Exception by GPU node-1 (Agent handle: 0x563e71f098b0) reason :GPU Hang`` on stderr and aborts.
GPU_HANG = re.compile(
    r"HW Exception by GPU node-\d{1,4} (?:\(Agent handle: 0x[0-9a-fA-F]{1,16}\) )?reason ?: ?[\w ().,:/-]{1,120}"
)


def parse_gpu_fault(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """ROCm's memory access fault, its GPU hang or the HIP runtime's queue abort at ``start``: a fatal GPU
    error."""
    if (
        GPU_MEMORY_FAULT.match(line, start) is None
        and HIP_ABORT.match(line, start) is None
        and GPU_HANG.match(line, start) is None
    ):
        return ()
    return (ServerError(stamp, "cuda_error"),)


_OOM_TEXT = ("CUDA out of memory", "HIP out of memory", "XPU out of memory", "NPU out of memory")
# vLLM's start-up check: the device has less free memory than --gpu-memory-utilization asks for (often a
# previous run's process still holding it), ``Free memory on device cuda:0 (10.5/79.1 GiB) on startup is
# less than desired GPU memory utilization (0.9, 71.2 GiB)``; or weights other processes hold exceed it.
_STARTUP_MEMORY_TEXT = ("Free memory on device", "Externally held weights on device")
_GPU_ERROR_TEXT = ("CUDA error", "HIP error", "CUDA driver error", "NCCL error", "RCCL error")
_KV_TOO_SMALL_TEXT = (
    "KV cache is needed, which is larger than the available KV cache memory",
    "is larger than the maximum number of tokens that can be stored in KV cache",
    "No available memory for the cache blocks",
)
# The same refusals as the whole message, quoted without the exception's name: V0's ``The model's max seq len (N)
# is larger than the maximum number of tokens that can be stored in KV cache (M).``, V1's ``To serve at least one
# request with the model's max seq len (N), (X GiB KV cache is needed, which is larger than the available KV cache
# memory (Y GiB).`` (``models's`` before 0.11) and ``No available memory for the cache blocks.``, each with its
# advice after it, in any release's words, or without.
KV_TOO_SMALL = re.compile(
    r"(?:The model's max seq len ?\(\d{1,18}\) is larger than the maximum number of tokens that can be stored in KV "
    r"cache \(\d{1,18}\)"
    r"|To serve at least one request with the models?'s max seq len ?\(\d{1,18}\), \(?[\d.]{1,40} GiB KV cache is "
    r"needed, which is larger than the available KV cache memory \(-?[\d.]{1,40} GiB\)"
    r"|No available memory for the cache blocks)"
    r"(?:\. .{0,800})?"
)
# Their first words (common ones: never a suspicious line).
KV_TOO_SMALL_WORDS = ("The", "To", "No")
# A process of vLLM waiting on another through their shared-memory queue, once every N seconds of a wait.
STALL = re.compile(
    rf"No available (?:shared memory broadcast )?block found in ({INTEGER}) seconds?(?:\.|$)"
    r"(?: This typically happens when some processes are hanging or doing some time-consuming work \([^()]{0,200}\)\.)?"
)
# A start that failed, the cause said elsewhere or outside the server: vLLM's engine core, and the LMCache
# MP connector finding no LMCache server (``Cannot reach the LMCache MP server at 'tcp://...' within 30s.``).
_FAILED_START_TEXT = (
    "Engine core initialization failed",
    "Engine process failed to start",
    "Cannot reach the LMCache MP server at ",
)
# No accelerator for the runtime to use (a container started without its GPUs): PyTorch's and vLLM's
# words.  (PyTorch's ``Found no NVIDIA driver on your system`` is not one: vLLM's CPU workers print it
# while they stop.)
_NO_GPU_TEXT = ("No CUDA GPUs are available", "No HIP GPUs are available", "Failed to infer device type")
# The configuration refused at start-up: a config class's validation (pydantic's ``1 validation error for
# ModelConfig``, or ``for VllmConfig`` naming an unknown KV connector), a model that cannot be found as named
# (Hugging Face Hub's errors, transformers' texts), a module it needs missing or of another version (the
# LMCache connector in a server environment without LMCache, or built for another vLLM).
_CONFIG_EXCEPTIONS = (
    "ModuleNotFoundError",
    "ImportError",
    "HFValidationError",
    "RepositoryNotFoundError",
    "RevisionNotFoundError",
    "GatedRepoError",
    "LocalEntryNotFoundError",
)
_CONFIG_VALIDATION = re.compile(r"\d+ validation errors? for \w*Config\b")
# A model this vLLM does not run (raised bare before vLLM's configuration classes validated it): ``Model
# architectures ['X'] are not supported for now.``, ``Model architecture X was supported in vLLM until vN``.
_UNSUPPORTED_MODEL = re.compile(
    r"Model architectures? .{1,400}?(?:are not supported for now|was supported in vLLM until|is not supported in-tree)"
)
_MODEL_NOT_FOUND_TEXT = (
    "is not a local folder and is not a valid model identifier",
    "does not appear to have a file named",
    "Incorrect path_or_model_id",
    "is not a valid git identifier (branch name, tag name or commit id)",
    "You are trying to access a gated repo",
    "We couldn't connect to '",  # offline, and not in the cache
)


def classify_exception(exception: str, message: str) -> str | None:
    """The server error a traceback's last line names, or None when it names no fatal one."""
    if exception.endswith("OutOfMemoryError") or message.startswith(_OOM_TEXT):
        return "oom"
    if message.startswith(_GPU_ERROR_TEXT) and "error: out of memory" in message[:40]:
        return "oom"  # ``CUDA driver error: out of memory``, ``HIP error: out of memory``
    if message.startswith(_STARTUP_MEMORY_TEXT) and "GPU memory utilization" in message:
        return "oom"
    if exception.endswith("EngineDeadError"):
        return "engine_dead"
    if message.startswith(_GPU_ERROR_TEXT + _NO_GPU_TEXT) or exception.endswith("AcceleratorError"):
        return "cuda_error"
    for text in _KV_TOO_SMALL_TEXT:
        if text in message:
            return "kv_cache_too_small"
    if exception.endswith(_CONFIG_EXCEPTIONS) or (
        exception.endswith("ValidationError") and _CONFIG_VALIDATION.match(message) is not None
    ):
        return "config_error"
    if exception.endswith("OSError") and any(text in message for text in _MODEL_NOT_FOUND_TEXT):
        return "config_error"
    if message.startswith("Model architecture") and _UNSUPPORTED_MODEL.match(message) is not None:
        return "config_error"
    # A start that failed, or a port taken: the server's (vLLM binds its socket before uvicorn starts:
    # OSError), LMCache's multiprocess server's ZMQ socket (ZMQError), or torch.distributed's store of the
    # workers (DistNetworkError; often a previous run's process still holding it).
    if message.startswith(_FAILED_START_TEXT) or "ddress already in use" in message or "EADDRINUSE" in message:
        return "other"
    return None


def parse_kv_too_small(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """vLLM's message that its KV cache cannot hold one request, alone: a start refused."""
    return (ServerError(stamp, "kv_cache_too_small"),) if KV_TOO_SMALL.match(line, start) else ()


def parse_no_available(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """``No available ...``: memory for the KV cache (a start refused), or a block of the processes' queue."""
    m = STALL.match(line, start)
    if m is not None:
        return (EngineStall(stamp, None, float(m.group(1))),)
    return parse_kv_too_small(line, start, stamp)


def parse_exception(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    m = _EXCEPTION.match(line, start)
    if m is None:
        return ()
    error = classify_exception(m.group(1), m.group(2) or "")
    if error is None:
        return ()
    return (ServerError(stamp, error, m.group(1).rsplit(".", 1)[-1]),)


# First word of a vLLM message -> (parser, the family a line that does not parse is suspected of).
FIRST_WORDS: dict[str, tuple[VllmParser, str]] = {
    "vLLM": (parse_vllm_version, "server_starting"),
    "": (parse_logo, "server_starting"),
    "Starting": (parse_starting, "server_ready"),
    "starting": (parse_rust_ready, "server_ready"),
    "OpenAI": (parse_rust_ready, "server_ready"),
    "Initializing": (parse_engine_init, "engine_starting"),
    "init": (parse_init_engine, "engine_initialized"),
    "Model": (parse_model_loading, "model_loaded"),
    "Loading": (parse_model_loading, "model_loaded"),
    "Maximum": (parse_max_concurrency, "kv_cache_capacity"),
    "#": (parse_blocks, "kv_cache_capacity"),
    "EngineCore": (parse_engine_core, "server_error"),
    "Worker": (parse_died, "server_error"),
    "WorkerProc": (parse_worker_proc, "server_error"),
    "RayWorkerProc": (parse_died, "server_error"),
    "[shutdown]": (parse_shutdown, "server_shutdown"),
    "Available": (parse_kv_memory, "startup_phase"),
    "Memory": (parse_memory_profiling, "startup_phase"),
    "model": (parse_kv_reserved, "startup_phase"),
    "Explicitly": (parse_cpu_kv_memory, "startup_phase"),
    "torch.compile": (parse_torch_compile, "startup_phase"),
    "graph": (parse_torch_compile, "startup_phase"),
    "Initial": (parse_initial, "startup_phase"),
    "Graph": (parse_graph_capture, "startup_phase"),
    "It": (parse_sleep, "engine_sleep"),
    "Sleep": (parse_sleep_memory, "sleep_memory"),
    "setting": (parse_pause, "engine_pause"),
    "[Elastic": (parse_elastic_scaled, "engines_scaled"),
    "DPCoordinator": (parse_coordinator_scaled, "engines_scaled"),
    "DPSupervisor": (parse_dp_supervisor, "server_error"),
    # The refusals of a KV cache too small for one request, as their message alone.
    **dict.fromkeys(KV_TOO_SMALL_WORDS, (parse_kv_too_small, "server_error")),
    "No": (parse_no_available, "server_error"),  # ``No available ...``: that refusal, or the processes' queue
    # ``<DEV> KV cache size: N tokens``: the device label is the first word.
    **dict.fromkeys(KV_DEVICES, (parse_kv_size, "kv_cache_capacity")),
}
