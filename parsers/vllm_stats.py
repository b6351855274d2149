"""vLLM's periodic statistics lines, every generation.

The message is a list of ``label: value`` parts joined by ``", "`` whose
members come and go between releases (V0 2023 ``Throughput``/``Swapped``/
``Pending``; V1 ``Running``/``Waiting`` with optional ``Deferred``,
``KV fetch``, ``Preemptions``, ``<DEV> KV cache usage``, prefix, external and
multimodal hit rates, ``Corrupted``).  So the parts are read one by one by
label, unknown labels are skipped, and a known label with an unreadable value
makes the whole line suspicious (returns None) rather than half-parsed.
"""

from __future__ import annotations

import math
import re

from parsers import lifecycle
from parsers.events import (
    DiffusionDecodeStats,
    EngineIteration,
    EngineMfu,
    EngineStats,
    Event,
    KvCacheCapacity,
    KvTransferStats,
    SpecDecodeStats,
    SuspiciousLine,
    VllmParser,
)
from parsers.shapes import DECIMAL, INTEGER, decimal, integer, opens_with, ratio

ENGINE_PREFIX = re.compile(rf"Engine ({INTEGER}): ")
AGGREGATED_PREFIX = re.compile(rf"({INTEGER}) Engines Aggregated: ")
# What a stats message starts with, after any engine prefix.
STATS_STARTS = ("Avg prompt throughput", "Running: ", "RUNNING: ", "Throughput: ")
_CACHE_CONFIG = re.compile(rf"vllm cache_config_info with initialization after num_gpu_blocks is: ({INTEGER})")
_AGGREGATED_CACHE_CONFIG = re.compile(
    rf"({INTEGER}) Engines: vllm cache_config_info with initialization after num_gpu_blocks is: ({INTEGER})"
)
_V0_PREFIX_RATES = re.compile(rf"Prefix cache hit rate: GPU: (-?{DECIMAL})%, CPU: (-?{DECIMAL})%")
# One engine step (``--enable-logging-iteration-details``): logged by the engine core from January 2026, a DP
# rank's dummy step marked from mid-2026, then by the front end after ``Engine NNN: `` with the KV cache
# usage (``GPU``, later the device's name) and, for multimodal steps, the encoder's inputs.
ITERATION = re.compile(
    rf"Iteration\(({INTEGER})\): ({INTEGER}) context requests, ({INTEGER}) context tokens, "
    rf"({INTEGER}) generation requests, ({INTEGER}) generation tokens, iteration elapsed time: ({DECIMAL}) ms"
    rf"( \(dummy\))?(?:, (?:(\w+) )?KV cache usage: ({DECIMAL})%)?"
    rf"(?:, encoder inputs: ({INTEGER}), encoder output embeddings: ({INTEGER}))?",
    re.ASCII,
)
# The FLOPs and memory traffic vLLM estimates (``--enable-mfu-metrics``): per ``GPU``, later per ``device``.
_MFU = re.compile(rf"MFU: ({DECIMAL}) TF/s/\w+ ({DECIMAL}) GB/s/\w+")
_KV_FETCH = re.compile(rf"({INTEGER}) waiting to start, ({INTEGER}) in progress, ({INTEGER}) completed waiting")


def _percent(value: str) -> float | None:
    if not value.endswith("%"):
        raise ValueError(value)
    number = float(value[:-1])
    if number != number:  # nan: the window had nothing to divide; no value to report
        return None
    if not math.isfinite(number):
        raise ValueError(value)
    return ratio(number)


def _rate(value: str) -> float:
    number, _, unit = value.partition(" ")
    if unit not in ("tokens/s", "toks/s", ""):
        raise ValueError(value)
    return decimal(number)


def _count(value: str) -> int:
    number, _, unit = value.partition(" ")
    if unit not in ("reqs", "", "tokens"):
        raise ValueError(value)
    return integer(number)


# label -> (field, converter).  vLLM's Rust front end (vllm-rs) prints its own wording of the same line:
# ``Avg prompt tput: 1.0 toks/s, Avg generation tput: 2.0 toks/s, Reqs Running: 1, Waiting: 0,
# GPU KV cache used: 3.0%, Prefix cache hit rate: 4.0%`` (its llm/src/log_stats.rs).
_FIELDS = {
    "Avg prompt throughput": ("prompt_throughput", _rate),
    "Avg generation throughput": ("generation_throughput", _rate),
    "Avg prompt tput": ("prompt_throughput", _rate),
    "Avg generation tput": ("generation_throughput", _rate),
    "Reqs Running": ("running", _count),
    "Throughput": ("throughput", _rate),
    "Running": ("running", _count),
    "RUNNING": ("running", _count),
    "Waiting": ("waiting", _count),
    "WAITING": ("waiting", _count),
    "Pending": ("waiting", _count),
    "Swapped": ("swapped", _count),
    "Deferred": ("deferred", _count),
    "Preemptions": ("preempted", _count),
    "Corrupted": ("corrupted", _count),
    "Prefix cache hit rate": ("prefix_cache_hit_rate", _percent),
    "External prefix cache hit rate": ("external_prefix_cache_hit_rate", _percent),
    "MM cache hit rate": ("mm_cache_hit_rate", _percent),
}


def _kv_usage_device(label: str) -> str | None:
    """The device a KV cache usage's label names (``GPU``, ``XPU``, ``CPU`` ...; "" where it names none,
    ``KV cache usage: 5.0%``), or None for another label."""
    device, sep, rest = label.rpartition("KV cache ")
    if not sep or rest not in ("usage", "used") or (device and device[-1] != " "):
        return None
    return device.rstrip()


def _parts(text: str) -> list[tuple[str, str]]:
    """``a: 1, b: 2, 3`` -> [(a, 1), (b, "2, 3")]: a part without a label continues the previous one."""
    labelled: list[tuple[str, list[str]]] = []
    for part in text.split(", "):
        label, sep, value = part.partition(": ")
        if sep:
            labelled.append((label, [value]))
        elif labelled:
            labelled[-1][1].append(part)  # joined once at the end: a line of many stays linear
    return [(label, ", ".join(pieces)) for label, pieces in labelled]


def _read_part(label: str, value: str, values: dict[str, object], usage: dict[str, float]) -> bool:
    """Put one ``label: value`` part of a stats line into ``values`` or ``usage``; False for a label
    this version does not know (kept out), ``ValueError`` for a known one that does not read."""
    known = _FIELDS.get(label)
    if known is not None:
        converted = known[1](value.strip())
        if converted is not None:
            values[known[0]] = converted
    elif (device := _kv_usage_device(label)) is not None:
        ratio = _percent(value.strip())
        if ratio is not None:
            usage[device] = ratio
    elif label == "KV fetch":
        m = _KV_FETCH.fullmatch(value)
        if m is None:
            raise ValueError(value)
        values["kv_fetch_waiting"] = int(m.group(1))
        values["kv_fetch_in_progress"] = int(m.group(2))
        values["kv_fetch_completed"] = int(m.group(3))
    else:
        return False
    return True


def parse_stats(
    line: str,
    start: int,
    stamp: str | None,
    engine: int | None = None,
    engines: int | None = None,
    exact: bool = False,
) -> tuple[Event, ...] | None:
    """The stats message starting at ``start`` (after any ``Engine NNN:`` prefix).

    ``exact`` (a line without a header): every part must be a known label with its unit,
    and running, waiting and a KV cache usage must all be there -- a whole stats line,
    not a fragment or prose that happens to start like one."""
    text = line[start:].rstrip(" .")
    # v0.7.1-0.7.2 printed "Waiting: 0 reqs GPU KV cache usage: 7.9%" without a comma.
    text = text.replace(" reqs GPU KV", " reqs, GPU KV").replace(" | ", ", ")
    values: dict[str, object] = {}
    usage: dict[str, float] = {}
    label = value = ""
    try:
        for label, value in _parts(text):
            if exact and not _has_unit(label, value):
                return None
            if not _read_part(label, value, values, usage) and exact:
                return None
    except ValueError:
        return None
    if not _has_unit(label, value) and (label in _FIELDS or _kv_usage_device(label) is not None):
        return None  # the line ends inside its last number: cut short (a wrapped paste), the number too
    if not values and not usage:
        return None
    if exact and not (usage and "running" in values and "waiting" in values):
        return None
    if "GPU" in usage:
        values["kv_cache_usage"] = usage["GPU"]
        values["kv_cache_device"] = "GPU"
        if "CPU" in usage:
            values["cpu_kv_cache_usage"] = usage["CPU"]
    elif usage:
        device, ratio = next(iter(usage.items()))
        values["kv_cache_usage"] = ratio
        values["kv_cache_device"] = device or None
    return (EngineStats(stamp, engine=engine, engines=engines, **values),)


# Parts printed without a unit: the Rust front end's request counts among them.
_UNITLESS = frozenset(("KV fetch", "Preemptions", "Corrupted", "Reqs Running", "Waiting", "RUNNING", "WAITING"))


def _has_unit(label: str, value: str) -> bool:
    """A part of a whole stats line: counts and rates carry their unit, ratios their percent sign."""
    value = value.strip()
    return value.endswith(("%", " tokens/s", " toks/s", " reqs")) or label in _UNITLESS


def parse_stats_line(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """A whole stats message standing alone (``%(message)s`` logging): ``[Engine NNN: ]<stats>``."""
    m = ENGINE_PREFIX.match(line, start)
    engine = int(m.group(1)) if m is not None else None
    pos = m.end() if m is not None else start
    if not line.startswith(_WHOLE_STATS_STARTS, pos):
        return None  # a fragment of a wrapped line starts mid-way
    return parse_stats(line, pos, stamp, engine=engine, exact=True)


_KV_TRANSFER = "KV Transfer metrics: "
# The same pairs inside an object's printed form (``KVTransferAggregatedStats(key=value, ...)``, as the
# first proposal of these lines printed them).
_REPR = re.compile(r"[A-Za-z_]\w*\((.*)\)", re.DOTALL)
_WHOLE_STATS_STARTS = ("Avg prompt throughput: ", "Throughput: ", "Avg prompt tput: ")
_AVG_OPENINGS = ("Avg prompt throughput", "Avg prompt tput")
# What may follow ``Engine NNN: `` in a message this module reads.
_ENGINE_OPENINGS = (*STATS_STARTS, "SpecDecoding metrics: ", _KV_TRANSFER, "Iteration(")


def parse_kv_transfer(line: str, start: int, stamp: str | None, engine: int | None = None) -> tuple[Event, ...] | None:
    """``KV Transfer metrics: <key>=<value>, ...``: keys as printed (they may hold spaces and parentheses)."""
    if not line.startswith(_KV_TRANSFER, start):
        return ()  # other messages starting with "KV"
    text = line[start + len(_KV_TRANSFER) :].rstrip()
    wrapped = _REPR.fullmatch(text)
    if wrapped is not None:
        text = wrapped.group(1)
    values: dict[str, float] = {}
    for part in text.split(", "):
        key, sep, text = part.rpartition("=")
        key = key.strip()
        if not sep or not key:
            return None
        try:
            number: float = integer(text)  # past its digits, a float (dropped when infinite)
        except ValueError:
            try:
                number = float(text)
            except ValueError:
                return None
        if math.isfinite(number):
            values[key] = number
    return (KvTransferStats(stamp, engine, values),)


def parse_v0_prefix_rates(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """V0's separate ``Prefix cache hit rate: GPU: x%, CPU: y%`` (negative = caching off)."""
    m = _V0_PREFIX_RATES.match(line, start)
    if m is None:
        return None
    gpu, cpu = float(m.group(1)), float(m.group(2))
    return (
        EngineStats(
            stamp,
            prefix_cache_hit_rate=ratio(gpu) if gpu >= 0 else None,
            cpu_prefix_cache_hit_rate=ratio(cpu) if cpu >= 0 else None,
        ),
    )


_SPEC_FIELDS = {
    "Mean acceptance length": ("mean_acceptance_length", decimal),
    "Accepted throughput": ("accepted_throughput", _rate),
    "Drafted throughput": ("drafted_throughput", _rate),
    "Accepted": ("accepted_tokens", _count),
    "Drafted": ("drafted_tokens", _count),
    "Number of accepted tokens": ("accepted_tokens", integer),
    "Number of draft tokens": ("drafted_tokens", integer),
    "Number of draft tokens tokens": ("drafted_tokens", integer),
    "Number of emitted tokens": ("emitted_tokens", integer),
    "Number of emitted tokens tokens": ("emitted_tokens", integer),
    "System efficiency": ("system_efficiency", decimal),
}


def _acceptance(value: str) -> float | None:
    # V1 prints a percentage, V0 a ratio with three decimals.
    return _percent(value) if value.endswith("%") else decimal(value)


def parse_spec_decode(line: str, start: int, stamp: str | None, engine: int | None = None) -> tuple[Event, ...] | None:
    """``SpecDecoding metrics: ...`` (V1) or ``Speculative metrics: ...`` (V0), from after the colon."""
    values: dict[str, object] = {}
    try:
        for label, value in _parts(line[start:].rstrip(" .")):
            known = _SPEC_FIELDS.get(label)
            if known is not None:
                values[known[0]] = known[1](value.strip())
            elif label in ("Draft acceptance rate", "Avg Draft acceptance rate"):
                rate = _acceptance(value.strip())
                if rate is not None:
                    values["draft_acceptance_rate"] = rate
            elif label == "Per-position acceptance rate":
                values["per_position_acceptance_rate"] = [decimal(v) for v in value.split(", ")]
    except ValueError:
        return None
    if not values:
        return None
    return (SpecDecodeStats(stamp, engine=engine, **values),)


def parse_iteration(line: str, start: int, stamp: str | None, engine: int | None = None) -> tuple[Event, ...] | None:
    """``Iteration(N): ...`` (after ``Engine NNN: `` where the front end logs it)."""
    m = ITERATION.match(line, start)
    if m is None:
        return None
    index, ctx_requests, ctx_tokens, gen_requests, gen_tokens, elapsed, dummy, device, usage, inputs, outputs = (
        m.groups()
    )
    return (
        EngineIteration(
            stamp,
            engine,
            int(index),
            int(ctx_requests),
            int(ctx_tokens),
            int(gen_requests),
            int(gen_tokens),
            decimal(elapsed),
            dummy is not None,
            ratio(decimal(usage)) if usage is not None else None,
            device,
            int(inputs) if inputs is not None else None,
            int(outputs) if outputs is not None else None,
        ),
    )


def parse_mfu(line: str, start: int, stamp: str | None, engine: int | None = None) -> tuple[Event, ...] | None:
    """``MFU: X TF/s/GPU Y GB/s/GPU`` after ``Engine NNN: ``."""
    m = _MFU.match(line, start)
    if m is None:
        return None
    return (EngineMfu(stamp, engine, decimal(m.group(1)), decimal(m.group(2))),)


def parse_cache_config(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """``vllm cache_config_info with initialization after num_gpu_blocks is: N``."""
    m = _CACHE_CONFIG.match(line, start)
    if m is None:
        return ()
    return (KvCacheCapacity(stamp, gpu_blocks=int(m.group(1))),)


def parse_engine_prefixed(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """Messages starting ``Engine NNN: ``: stats, spec decoding, cache config; others are known and ignored."""
    m = ENGINE_PREFIX.match(line, start)
    if m is None:
        return ()
    engine = int(m.group(1))
    pos = m.end()
    if line.startswith(STATS_STARTS, pos):
        return parse_stats(line, pos, stamp, engine=engine)
    if line.startswith("SpecDecoding metrics: ", pos):
        return parse_spec_decode(line, pos + 22, stamp, engine=engine)
    if line.startswith(_KV_TRANSFER, pos):
        return parse_kv_transfer(line, pos, stamp, engine=engine)
    if line.startswith("vllm cache_config_info", pos):
        return parse_cache_config(line, pos, stamp)
    if line.startswith("Iteration(", pos):  # a step line that does not parse is suspected of being one
        return parse_iteration(line, pos, stamp, engine) or (SuspiciousLine(stamp, "engine_iteration"),)
    if line.startswith("MFU: ", pos):
        return parse_mfu(line, pos, stamp, engine) or (SuspiciousLine(stamp, "engine_mfu"),)
    if opens_with(line, pos, _ENGINE_OPENINGS):
        return None
    # The CUDA graph table and MFU details (a DEBUG line) share the prefix; not parsed.
    return ()


def parse_aggregated(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """``N Engines Aggregated: <stats>`` or ``N Engines: vllm cache_config_info ...``."""
    m = AGGREGATED_PREFIX.match(line, start)
    if m is not None:
        return parse_stats(line, m.end(), stamp, engines=int(m.group(1)))
    m = _AGGREGATED_CACHE_CONFIG.match(line, start)
    if m is not None:
        return (KvCacheCapacity(stamp, gpu_blocks=int(m.group(2))),)
    return ()


# -- the first words of vLLM messages this module reads ------------------------------------


def _stats(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    return parse_stats(line, start, stamp)


def _avg(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if line.startswith(_AVG_OPENINGS, start):
        return parse_stats(line, start, stamp)
    return None if opens_with(line, start, _AVG_OPENINGS) else ()


def _engine(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if line.startswith("Engine core proc", start):  # not a stats line: an engine that died
        return lifecycle.parse_died(line, start, stamp)
    return parse_engine_prefixed(line, start, stamp)


def _prefix(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if line.startswith("Prefix cache hit rate: GPU:", start):
        return parse_v0_prefix_rates(line, start, stamp)
    return ()


DIFFUSION = re.compile(
    rf"DiffusionDecoding metrics: Committed token throughput: ({DECIMAL}) tokens/s, "
    rf"Mean denoising steps per canvas: ({DECIMAL}|nan), Mean tokens committed per denoising step: ({DECIMAL}|nan), "
    rf"Committed: ({INTEGER}) tokens, Denoising steps: ({INTEGER}), Canvas positions evaluated: ({INTEGER})"
)


def parse_diffusion(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = DIFFUSION.match(line, start)
    if m is None:
        return None if line.startswith("DiffusionDecoding metrics", start) else ()
    throughput, steps_per_canvas, per_step, committed, steps, canvas = m.groups()
    return (
        DiffusionDecodeStats(
            stamp,
            None,
            decimal(throughput),
            int(committed),
            int(steps),
            int(canvas),
            None if steps_per_canvas == "nan" else decimal(steps_per_canvas),
            None if per_step == "nan" else decimal(per_step),
        ),
    )


def parse_spec_decode_v1(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if line.startswith("SpecDecoding metrics: ", start):
        return parse_spec_decode(line, start + 22, stamp)
    return ()


def _spec_v0(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if line.startswith("Speculative metrics: ", start):
        return parse_spec_decode(line, start + 21, stamp)
    return ()


# First word of a vLLM message -> (parser, the family a line that does not parse is suspected of).
FIRST_WORDS: dict[str, tuple[VllmParser, str]] = {
    "Engine": (_engine, "engine_stats"),
    "Avg": (_avg, "engine_stats"),
    "Throughput:": (_stats, "engine_stats"),
    "Running:": (_stats, "engine_stats"),
    "RUNNING:": (_stats, "engine_stats"),
    "Prefix": (_prefix, "engine_stats"),
    "SpecDecoding": (parse_spec_decode_v1, "spec_decode_stats"),
    "Speculative": (_spec_v0, "spec_decode_stats"),
    "DiffusionDecoding": (parse_diffusion, "diffusion_decode_stats"),
    "KV": (parse_kv_transfer, "kv_transfer_stats"),
}
