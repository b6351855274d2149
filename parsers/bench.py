"""Result lines of ``vllm bench throughput``, ``latency`` and ``serve`` (plain ``print`` output).

These lines have no log header, so each pattern is anchored to the whole line
and ``serve`` labels are taken only from the fixed list vLLM prints.  vLLM's
2023 engine stats line also starts with ``Throughput:``, but it carries a log
header and ``tokens/s, Running:``; it never reaches this module.
"""

from __future__ import annotations

import re

from parsers.events import BenchLatency, BenchServe, BenchThroughput, BenchTokens, Event
from parsers.shapes import DECIMAL, INTEGER, decimal

_THROUGHPUT = re.compile(
    rf"Throughput: ({DECIMAL}) requests/s, ({DECIMAL}) (?:total )?tokens/s(?:, ({DECIMAL}) output tokens/s)?\s*$"
)
_TOTAL_TOKENS = re.compile(rf"Total num (prompt|output) tokens: +({INTEGER})\s*$")
_AVG_LATENCY = re.compile(r"Avg latency: ([\d.eE+-]+) seconds\s*$")
_PERCENTILE_LATENCY = re.compile(rf"({DECIMAL})% percentile latency: ([\d.eE+-]+) seconds\s*$")
_SERVE_LINE = re.compile(rf"([A-Z][A-Za-z0-9 ()/.%-]*?): +(-?{DECIMAL}|inf|nan)\s*$")
_SERVE_STAT = re.compile(r"(Mean|Median|Std|P[\d.]+) (TTFT|TPOT|ITL|E2EL) \(ms\)")

# vLLM's printed label -> the key it writes in its own result JSON.
_SERVE_KEYS = {
    "Successful requests": "completed",
    "Failed requests": "failed",
    "Maximum request concurrency": "max_concurrency",
    "Request rate configured (RPS)": "request_rate",
    "Benchmark duration (s)": "duration",
    "Total input tokens": "total_input_tokens",
    "Total generated tokens": "total_output_tokens",
    "Request throughput (req/s)": "request_throughput",
    "Request goodput (req/s)": "request_goodput",
    "Output token throughput (tok/s)": "output_throughput",
    "Peak output token throughput (tok/s)": "max_output_tokens_per_s",
    "Peak concurrent requests": "max_concurrent_requests",
    "Total Token throughput (tok/s)": "total_token_throughput",
    "Total token throughput (tok/s)": "total_token_throughput",
    "Input throughput (inputs/s)": "input_throughput",
    "Acceptance rate (%)": "spec_decode_acceptance_rate",
    "Acceptance length": "spec_decode_acceptance_length",
}


def parse_throughput(line: str, start: int) -> tuple[Event, ...]:
    m = _THROUGHPUT.match(line, start)
    if m is None:
        return ()
    output = m.group(3)
    return (BenchThroughput(None, float(m.group(1)), float(m.group(2)), float(output) if output else None),)


def parse_total(line: str, start: int) -> tuple[Event, ...]:
    m = _TOTAL_TOKENS.match(line, start)
    if m is not None:
        count = int(m.group(2))
        if m.group(1) == "prompt":
            return (BenchTokens(None, prompt_tokens=count),)
        return (BenchTokens(None, output_tokens=count),)
    return parse_serve(line, start)


def parse_avg_latency(line: str, start: int) -> tuple[Event, ...]:
    m = _AVG_LATENCY.match(line, start)
    return (BenchLatency(None, avg_seconds=decimal(m.group(1))),) if m else ()


def parse_percentile_latency(line: str, start: int) -> tuple[Event, ...]:
    m = _PERCENTILE_LATENCY.match(line, start)
    if m is None:
        return ()
    percentile = float(m.group(1))
    if not 0 <= percentile <= 100:
        return ()
    return (
        BenchLatency(
            None,
            percentile=int(percentile) if percentile.is_integer() else percentile,
            seconds=decimal(m.group(2)),
        ),
    )


def parse_serve(line: str, start: int) -> tuple[Event, ...]:
    m = _SERVE_LINE.match(line, start)
    if m is None:
        return ()
    label, text = m.group(1), m.group(2)
    key = _SERVE_KEYS.get(label)
    if key is None:
        stat = _SERVE_STAT.fullmatch(label)
        if stat is None:
            return ()
        key = f"{stat.group(1).lower()}_{stat.group(2).lower()}_ms"
    if text == "nan":
        return ()
    # vLLM prints "inf" for the request rate when none was set (all requests at once): no number.
    return (BenchServe(None, key, float(text) if text != "inf" else None),)
