#!/usr/bin/env python3
"""A log writer for the live benchmarks: the lines of a file, over and over, to stdout or a file.

    writer.py SOURCE --bytes N [--out FILE] [--timing FILE]     as fast as it can, one write per line, until N bytes
    writer.py SOURCE --rate L --seconds S [--out FILE]          L lines per second for S seconds

Only whole copies of SOURCE are written in the first form (at least N
bytes), so the numbers of what was written are SOURCE's times the copies.
``--timing`` receives ``{"seconds", "bytes", "lines", "copies"}`` as JSON once
the last byte is written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def as_fast_as_possible(fd: int, block: bytes, target: int) -> tuple[int, int]:
    """One write per line, as a logging handler writes one record at a time."""
    lines = block.splitlines(keepends=True)
    copies = written = 0
    write = os.write
    while written < target:
        for line in lines:
            done = write(fd, line)
            if done != len(line):  # a short write (a full disk, a signal): finish the line
                write_all(fd, line[done:])
        written += len(block)
        copies += 1
    return copies, written


def at_rate(fd: int, lines: list[bytes], rate: float, seconds: float) -> tuple[int, int]:
    """Write ``rate`` lines a second in 10 ms batches, keeping to the schedule rather than to the sleeps."""
    start = time.monotonic()
    sent = written = 0
    total = int(rate * seconds)
    while sent < total:
        due = min(total, int((time.monotonic() - start) * rate) + 1)
        if due > sent:
            batch = b"".join(lines[i % len(lines)] for i in range(sent, due))
            write_all(fd, batch)
            written += len(batch)
            sent = due
        time.sleep(0.01)
    return sent, written


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("--bytes", type=int)
    parser.add_argument("--rate", type=float)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--timing", type=Path)
    args = parser.parse_args()
    data = args.source.read_bytes()
    fd = os.open(args.out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640) if args.out else sys.stdout.fileno()
    began = time.perf_counter()
    if args.bytes is not None:
        copies, written = as_fast_as_possible(fd, data, args.bytes)
        lines = copies * data.count(b"\n")
    else:
        lines, written = at_rate(fd, data.splitlines(keepends=True), args.rate, args.seconds)
        copies = 0
    seconds = time.perf_counter() - began
    if args.out:
        os.close(fd)
    if args.timing:
        timing = {"seconds": seconds, "bytes": written, "lines": lines, "copies": copies}
        args.timing.write_text(json.dumps(timing))
    return 0


if __name__ == "__main__":
    sys.exit(main())
