#!/usr/bin/env python3
"""The standard library's ``re`` against the ``regex`` package on kvwatch's parsers.

    make bench-regex      # or: .venv/bin/python tests/benchmarks/run_regex_bench.py [--lines N] [--rounds R]

1. Throughput.  The project's generator writes a log in each style (classic, and the
   vLLM 0.32 / LMCache 0.5.6 formats); every line is parsed through ``LogStream``,
   once with the parsers as shipped (``re``) and once with every compiled pattern of
   ``parsers/`` swapped for ``regex.compile`` of the same pattern and flags.  Rounds
   alternate the order; the report gives the median CPU seconds and the ratio of
   each round, and checks both give the same events.

2. Hostile lines.  Whole lines built to make a backtracking engine work -- a long
   run of one character that the patterns' loops accept, ending in one that makes
   them fail -- alone or after a vLLM header, the start of a stats line, an LMCache
   header, a process tag or inside a JSON record, at two lengths ten times apart,
   go through the parsers as shipped and with ``regex``: a line whose time grows
   much faster than its length is the trouble ``regex``'s optimisations (or its
   atomic groups and per-call timeout) would guard against.

The lines kvwatch reads are cut at ``max_line_length`` (4 MiB by default) before
any pattern sees them.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import re
import statistics
import sys
import time
from pathlib import Path

import regex

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "bench"
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from gen_log import generate  # noqa: E402

import parsers  # noqa: E402
from parsers import LogStream  # noqa: E402

HOSTILE_RUNS = ("a", " ", "0", "x-", "[", "(", ".", "=", ",", "a ", "0.", "A", ":", "/")
# Header-like pieces: the parsers look for a header after any prefix.
HEADER_RUNS = (
    "(APIServer pid=1) ",
    "INFO 12-14 16:18:29 ",
    "[x.py:1] ",
    "LMCache INFO: ",
    "\x1b[0m",
    '{"log": ',
    "vllm.",  # a logger's name, as a header that names its logger holds it
    "INFO vllm ",
    "vllm.x - INFO - ",
    "DEBUG a::",  # a Rust program's module path, as a relayed vLLM header holds it
    "[W1203 10:00:00.1 ",  # PyTorch's own header
    "INFO 2025-12-14 16:00:00,123 a b -- ",  # Ray Serve's header
    "| INFO     | vllm",  # loguru's header
    '"a",',  # CSV fields
    ", lora_request: LoRARequest(",  # the end of a request line read alone
    " |",  # a markdown table's bar, read from a line's end
    " `",  # a closing backtick
    "</b>",  # a closing HTML tag
    "Engine ",  # a known message's first word, looked for after any logging format's header
    "\tINFO\t",  # a tab-separated header's level
)


def parser_patterns() -> list[tuple[object, str, re.Pattern]]:
    """Every compiled pattern a module of ``parsers/`` holds as a module attribute."""
    found = []
    for info in pkgutil.iter_modules(parsers.__path__):
        module = importlib.import_module(f"parsers.{info.name}")
        for name, value in vars(module).items():
            if isinstance(value, re.Pattern):
                found.append((module, name, value))
    return found


def swap(patterns: list[tuple[object, str, re.Pattern]], engine: str) -> None:
    """Point each module attribute at the pattern compiled by ``engine`` (``re`` or ``regex``)."""
    for module, name, original in patterns:
        compiled = original if engine == "re" else regex.compile(original.pattern, original.flags)
        setattr(module, name, compiled)


def parse_all(lines: list[str]) -> tuple[float, int]:
    """CPU seconds to parse the lines, and how many events they gave."""
    stream, count = LogStream(), 0
    began = time.process_time()
    for line in lines:
        count += len(stream.feed(line))
    return time.process_time() - began, count


def throughput(patterns, logs: dict[str, list[str]], rounds: int) -> list[str]:
    report = [
        "| log | lines | re, CPU s | regex, CPU s | regex / re (median of rounds) | same events |",
        "|---|---|---|---|---|---|",
    ]
    for style, lines in logs.items():
        times: dict[str, list[float]] = {"re": [], "regex": []}
        events: dict[str, int] = {}
        for n in range(rounds):
            for engine in ("re", "regex") if n % 2 == 0 else ("regex", "re"):
                swap(patterns, engine)
                seconds, events[engine] = parse_all(lines)
                times[engine].append(seconds)
        swap(patterns, "re")
        ratios = [b / a for a, b in zip(times["re"], times["regex"], strict=True)]
        report.append(
            f"| {style} | {len(lines):,} | {statistics.median(times['re']):.2f} | "
            f"{statistics.median(times['regex']):.2f} | {statistics.median(ratios):.2f} | "
            f"{'yes' if events['re'] == events['regex'] else 'NO'} |"
        )
    return report


# Where a hostile run can stand (what comes before it, what ends the line): a line of its own, after a
# vLLM header (and the start of a stats line), after an LMCache header, after a process tag, inside a
# JSON record; and inside lines read by how they end: a CSV row's quoted field, Ray Serve's access
# line, a request line read without its header, a paste's closing marks (a table's bar, a backtick).
PREFIXES = {
    "bare": ("", "\x00"),
    "vLLM header": ("INFO 12-14 16:18:29 [x.py:1] ", "\x00"),
    "stats line": ("INFO 12-14 16:18:29 [loggers.py:1] Engine 000: Avg prompt throughput: ", "\x00"),
    "LMCache header": ("[2025-12-14 16:18:24,320] LMCache INFO: Reqid: ", "\x00"),
    "process tag": ("(APIServer pid=1) INFO 12-14 16:18:29 [x.py:1] ", "\x00"),
    "JSON record": ('{"log": "', "\x00"),
    "CSV row": ('2025-12-14 16:00:00,"', '"'),
    "Ray Serve line": ("INFO 2025-12-14 16:00:00,123 d r -- GET /", " 200 1.0ms"),
    "request line alone": ("Received request x: ", ", lora_request: None."),
    "table row": ("| 2025-12-14 16:00:00 | INFO 12-14 16:18:29 [x.py:1] Added request a.", "x |"),
    "inline code": ("`INFO 12-14 16:18:29 [x.py:1] Added request a.", "x`"),
}


def seconds_to_parse(line: str) -> float:
    began = time.perf_counter()
    LogStream().feed(line)
    return time.perf_counter() - began


def hostile(patterns, short: int, long: int) -> list[str]:
    """Whole hostile lines through the parsers: the slowest, with ``re`` at two lengths, and with ``regex``."""
    rows = []
    for where, (prefix, end) in PREFIXES.items():
        for piece in HOSTILE_RUNS + HEADER_RUNS:
            times = {}
            for engine in ("re", "regex"):
                swap(patterns, engine)
                for length in (short, long):
                    times[engine, length] = seconds_to_parse(prefix + piece * (length // len(piece)) + end)
            swap(patterns, "re")
            rows.append((times["re", long], where, piece, times))
    rows.sort(key=lambda row: row[0], reverse=True)
    report = [
        f"| line | run of | re, {short:,} chars | re, {long:,} chars | growth | regex, {short:,} | regex, {long:,} |",
        "|---|---|---|---|---|---|---|",
    ]
    for _, where, piece, t in rows[:10]:
        report.append(
            f"| {where} | `{piece!r}` | {t['re', short] * 1e3:.2f} ms | {t['re', long] * 1e3:.2f} ms | "
            f"{t['re', long] / t['re', short]:.0f}x | {t['regex', short] * 1e3:.2f} ms | "
            f"{t['regex', long] * 1e3:.2f} ms |"
        )
    worst = max(rows, key=lambda row: row[3]["re", long] / max(row[3]["re", short], 1e-6))
    report.append("")
    report.append(
        f"{len(rows)} hostile lines; the fastest-growing with re: {worst[1]} + a run of {worst[2]!r}, "
        f"{worst[3]['re', long] / max(worst[3]['re', short], 1e-6):.0f}x for 10x the length"
    )
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=300_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--hostile", type=int, default=100_000, help="the long hostile input, characters")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    logs = {}
    for style in ("classic", "current"):
        path = CACHE / f"regex-{style}-{args.lines}.log"
        if not path.exists():
            generate(path, args.lines, style=style)
        logs[style] = path.read_text(encoding="utf-8").splitlines()
    patterns = parser_patterns()
    print(f"regex {regex.__version__}, Python {sys.version.split()[0]}; {len(patterns)} patterns in parsers/")
    print()
    print("\n".join(throughput(patterns, logs, args.rounds)))
    print()
    print("\n".join(hostile(patterns, args.hostile // 10, args.hostile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
