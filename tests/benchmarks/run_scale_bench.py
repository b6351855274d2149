#!/usr/bin/env python3
"""One kvwatch following many servers' logs: how CPU, memory, freshness and a scrape grow with N.

    make bench-scale      # or: .venv/bin/python tests/benchmarks/run_scale_bench.py [--servers 1 8 32] [--rate R]

For each N, one ``kvwatch run`` follows N files as N servers (``[[follow]]``), and one
writer process appends to each file ``--rate`` lines a second (the generator's vLLM
0.32 / LMCache 0.5.6 log: every family, LMCache on) for ``--seconds``.  Measured:
in the first half, the freshness of a probe line (a stats line written once a
second to one more followed file, until ``/metrics`` shows it: p50 and p99); in
the second half, with no probe, kvwatch's CPU (share of one core, until every
line is read); peak RSS throughout; and one scrape of ``/metrics`` at the end
(median of 20, and its size), in the Prometheus text format and in OpenMetrics (which
Prometheus asks for).  Then the same total rate spread over 50 files of one server,
against the same rate in one file, for what following many files costs, and mtail
following the same two sets of files (its CPU, the baseline).  Every line must be
read: the run waits until kvwatch (and mtail) have counted them all.

An 8-GPU host runs 8 servers; 32 stands for one server per GPU of four such hosts.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "bench"
sys.path.insert(0, str(ROOT))

from tests.benchmarks.gen_log import generate  # noqa: E402
from tests.benchmarks.run_live_bench import STATS, Mtail, cpu_seconds, percentile, rss_kib, sample, scrape  # noqa: E402
from tests.support.harness import Agent, wait_for  # noqa: E402

WRITER = """
import os, sys, time
source, rate, seconds, outs = sys.argv[1], float(sys.argv[2]), float(sys.argv[3]), sys.argv[4:]
lines = open(source, "rb").read().splitlines(keepends=True)
fds = [os.open(o, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640) for o in outs]
start, sent, total = time.monotonic(), 0, int(rate * seconds)
while sent < total:
    due = min(total, int((time.monotonic() - start) * rate) + 1)
    if due > sent:
        for k, fd in enumerate(fds):  # each file its own slice of the source, so the servers differ
            os.write(fd, b"".join(lines[(i + k * 997) % len(lines)] for i in range(sent, due)))
        sent = due
    time.sleep(0.01)
"""


def source_log() -> Path:
    path = CACHE / "scale-source-20000.log"
    if not path.exists():
        generate(path, 20_000, style="current")
    return path


def lines_read(port: int) -> float:
    text = scrape(port)
    return sum(float(v) for v in re.findall(r'kvwatch_lines_total\{server="s\d+"\} (\S+)', text))


def one_setting(work: Path, files: int, servers: int, rate_per_file: float, seconds: float, source: Path) -> dict:
    """kvwatch following ``files`` files (as ``servers`` servers), each written at ``rate_per_file`` lines/s."""
    work.mkdir(parents=True)
    logs = [work / f"s{n}.log" for n in range(files)]
    for log in logs:
        log.write_text("")
    probe = work / "probe.log"
    probe.write_text("")
    per_server = files // servers
    groups = [[str(p) for p in logs[n * per_server : (n + 1) * per_server]] for n in range(servers)]
    body = "".join(f'[[follow]]\nname = "s{n}"\npaths = {json.dumps(paths)}\n' for n, paths in enumerate(groups))
    body += f'[[follow]]\nname = "probe"\npaths = ["{probe}"]\n'
    (work / "kvwatch").mkdir()
    agent = Agent(work / "kvwatch", body).start()
    try:
        pid, port = agent.process.pid, agent.port
        wanted = re.compile(r'kvwatch_vllm_requests_running\{engine="0",server="probe"\} (\S+)')
        began = time.perf_counter()
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(source), str(rate_per_file), str(seconds)] + [str(p) for p in logs]
        )
        fresh, peak, n = [], 0, 0
        fd = os.open(probe, os.O_WRONLY | os.O_APPEND)
        try:  # the first half: probes (whose scrapes cost kvwatch CPU too); the second: CPU alone
            while writer.poll() is None and time.perf_counter() - began < seconds / 2:
                n += 1
                written = time.perf_counter()
                os.write(fd, STATS.format(n=n).encode())
                while sample(scrape(port), wanted) != n and time.perf_counter() - written < 10:
                    time.sleep(0.001)
                fresh.append(time.perf_counter() - written)
                peak = max(peak, rss_kib(pid))
                time.sleep(max(0.0, 1.0 - (time.perf_counter() - written)))
        finally:
            os.close(fd)
        cpu_before, quiet_began, read_before = cpu_seconds(pid), time.perf_counter(), lines_read(port)
        while writer.poll() is None:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.5)
        total = int(rate_per_file * seconds) * files
        wait_for(lambda: lines_read(port) >= total, timeout=300, what="every line read")
        elapsed = time.perf_counter() - quiet_began
        cpu = cpu_seconds(pid) - cpu_before
        read_quiet = lines_read(port) - read_before
        scrapes: dict[str | None, list[float]] = {None: [], PROMETHEUS_ACCEPT: []}
        for _ in range(20):
            for accept, times in scrapes.items():
                t = time.perf_counter()
                text = scrape(port, accept)
                times.append(time.perf_counter() - t)
                if accept is None:
                    plain = text
        return {
            "files": files,
            "servers": servers,
            "lines_per_second": rate_per_file * files,
            "cpu_share": cpu / elapsed,
            "cpu_us_per_line": cpu / read_quiet * 1e6,
            "peak_rss_mib": max(peak, rss_kib(pid, "VmHWM")) / 1024,
            "freshness_p50_ms": percentile(fresh, 0.5) * 1000,
            "freshness_p99_ms": percentile(fresh, 0.99) * 1000,
            "scrape_ms": statistics.median(scrapes[None]) * 1000,
            "exposition_kib": len(plain) / 1024,
            "openmetrics_scrape_ms": statistics.median(scrapes[PROMETHEUS_ACCEPT]) * 1000,
            "openmetrics_kib": len(text) / 1024,
        }
    finally:
        agent.kill()


# What Prometheus (2.x and 3.x, by default) asks a target for: OpenMetrics before the text format.
PROMETHEUS_ACCEPT = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,"
    "text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
MTAIL_LINES = re.compile(r"^mtail_lines_total(?:\{[^}]*\})? (\S+)", re.MULTILINE)


def mtail_setting(work: Path, files: int, rate_per_file: float, seconds: float, source: Path) -> dict:
    """The peer baseline: mtail following ``files`` files written as for kvwatch; its CPU in the second
    half of the writing, until it has read every line (no probe: mtail is not asked for freshness here)."""
    logs = work / "logs"
    logs.mkdir(parents=True)
    paths = [logs / f"s{n}.log" for n in range(files)]
    for path in paths:
        path.write_text("")
    mtail = Mtail(work, str(logs / "*.log"))
    try:
        pid, port = mtail.process.pid, mtail.port
        began = time.perf_counter()
        writer = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(source), str(rate_per_file), str(seconds)] + [str(p) for p in paths]
        )
        time.sleep(seconds / 2)
        cpu_before, quiet_began = cpu_seconds(pid), time.perf_counter()
        peak = 0
        while writer.poll() is None:
            peak = max(peak, rss_kib(pid))
            time.sleep(0.5)
        total = int(rate_per_file * seconds) * files
        wait_for(
            lambda: sum(float(v) for v in MTAIL_LINES.findall(scrape(port))) >= total,
            timeout=300,
            what="mtail to read every line",
        )
        elapsed = time.perf_counter() - quiet_began
        return {
            "files": files,
            "lines_per_second": rate_per_file * files,
            "cpu_share": (cpu_seconds(pid) - cpu_before) / elapsed,
            "peak_rss_mib": max(peak, rss_kib(pid, "VmHWM")) / 1024,
            "seconds": time.perf_counter() - began,
        }
    finally:
        mtail.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--servers", type=int, nargs="+", default=[1, 8, 32])
    parser.add_argument("--rate", type=float, default=500.0, help="lines per second per server")
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--many-files", type=int, default=50, help="files the same total rate is spread over")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    CACHE.mkdir(parents=True, exist_ok=True)
    source = source_log()
    rows = []
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="scale-") as tmp:
        for n in args.servers:
            rows.append(one_setting(Path(tmp) / f"n{n}", n, n, args.rate, args.seconds, source))
        spread = args.rate / args.many_files
        rows.append(one_setting(Path(tmp) / "one-file", 1, 1, args.rate, args.seconds, source))
        rows.append(one_setting(Path(tmp) / "many-files", args.many_files, 1, spread, args.seconds, source))
        peers = []
        if shutil.which("mtail") is not None:
            peers.append(mtail_setting(Path(tmp) / "mtail-one-file", 1, args.rate, args.seconds, source))
            peers.append(mtail_setting(Path(tmp) / "mtail-many-files", args.many_files, spread, args.seconds, source))
    print(f"\nkvwatch following N servers at {args.rate:.0f} lines/s each for {args.seconds:.0f} s (2-core machine)")
    head = ("files", "servers", "lines/s", "CPU", "CPU µs per line", "peak RSS MiB", "fresh p50 ms", "p99 ms")
    scrape_head = ("scrape ms", "KiB", "OpenMetrics scrape ms", "KiB")
    print("| " + " | ".join((*head, *scrape_head)) + " |")
    print("|" + "---|" * (len(head) + len(scrape_head)))
    for r in rows:
        print(
            f"| {r['files']} | {r['servers']} | {r['lines_per_second']:,.0f} | {r['cpu_share']:.1%} | "
            f"{r['cpu_us_per_line']:.1f} | {r['peak_rss_mib']:.1f} | {r['freshness_p50_ms']:.1f} | "
            f"{r['freshness_p99_ms']:.1f} | {r['scrape_ms']:.1f} | {r['exposition_kib']:.0f} | "
            f"{r['openmetrics_scrape_ms']:.1f} | {r['openmetrics_kib']:.0f} |"
        )
    one, many = rows[-2], rows[-1]
    print(
        f"\n{args.many_files} files vs 1 file at the same total rate: CPU {many['cpu_share'] / one['cpu_share']:.2f}x"
    )
    if peers:
        mtail_one, mtail_many = peers
        ratio = mtail_many["cpu_share"] / mtail_one["cpu_share"]
        print(
            f"mtail, same writers (it polls every 250 ms): 1 file {mtail_one['cpu_share']:.1%}, "
            f"{args.many_files} files {mtail_many['cpu_share']:.1%} of a core ({ratio:.2f}x); "
            f"peak RSS {mtail_one['peak_rss_mib']:.1f} / {mtail_many['peak_rss_mib']:.1f} MiB"
        )
    else:
        print("mtail is missing (Debian package mtail; make bench installs it): no peer baseline")
    if args.json:
        args.json.write_text(json.dumps({"kvwatch": rows, "mtail": peers}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
