#!/usr/bin/env python3
"""Benchmarks of the live agent (``kvwatch run``), each beside a baseline measured in the same run.

    make bench-live       # or: .venv/bin/python tests/benchmarks/run_live_bench.py [--only NAME ...]

freshness  Time from a line written to a followed file until ``/metrics`` shows it, over
           ``--lines`` lines, one at a time.  Baselines: mtail following the same kind of file
           with the project's mtail program (it polls every 250 ms), and the time of a scrape
           alone (the floor of what can be measured this way).  Target: p99 <= 50 ms.
overhead   A supervised child writes ``--gigabytes`` of real-format log lines as fast as it
           can, one write per line, into the raw log kvwatch tails (and rotates); the baselines
           are the same child writing to a plain file, alone and with GNU ``tail -f`` following
           it.  Median of ``--rounds`` rotating rounds; after each supervised round every line
           and every stats line must be on ``/metrics``, exactly.
           Target: no slower than the baseline, within noise.
footprint  kvwatch following a file written at ``--rate`` lines/s for ``--seconds``: CPU (share
           of one core) and peak RSS, beside mtail following the same writer; kvwatch as
           configured by default, with its recent requests asked for every second (as
           ``kvwatch top`` does: their lines are joined only then), and without them.  Targets:
           <= 25 % of one core, <= 80 MB.

Logs are made by ``gen_log.py`` (vLLM 0.32 / LMCache 0.5.6 formats) under ``.cache/bench``.
"""

from __future__ import annotations

import argparse
import http.client
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

from agent.supervise.rawlog import open_raw_log  # noqa: E402
from tests.benchmarks.gen_log import generate  # noqa: E402
from tests.support.harness import Agent, free_port, wait_for  # noqa: E402

STATS = (
    "(APIServer pid=4242) INFO 12-14 16:18:29 [loggers.py:118] Engine 000: Avg prompt throughput: 149.1 tokens/s, "
    "Avg generation throughput: 3.0 tokens/s, Running: {n} reqs, Waiting: 0 reqs, GPU KV cache usage: 0.0%, "
    "Prefix cache hit rate: 92.6%\n"
)
CLK_TCK = os.sysconf("SC_CLK_TCK")


def scrape(port: int, accept: str | None = None, path: str = "/metrics") -> str:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        connection.request("GET", path, headers={"Accept": accept} if accept else {})
        return connection.getresponse().read().decode()
    finally:
        connection.close()


def sample(text: str, pattern: re.Pattern) -> float | None:
    match = pattern.search(text)
    return float(match.group(1)) if match else None


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK  # utime + stime


def rss_kib(pid: int, key: str = "VmRSS") -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    return 0


class Mtail:
    """mtail following a new empty file, ``log``, on a free port (the peer baseline); or, given
    ``logs`` (a path or a glob), what they name."""

    def __init__(self, directory: Path, logs: str | None = None) -> None:
        self.log = log = directory / "mtail.log"
        if logs is None:
            log.write_text("")
        self.port = free_port()
        progs = directory / "progs"
        progs.mkdir(exist_ok=True)
        shutil.copy(HERE / "kvwatch.mtail", progs / "kvwatch.mtail")
        self.process = subprocess.Popen(
            ["mtail", "--progs", str(progs), "--logs", logs or str(log), "--address", "127.0.0.1",
             "--port", str(self.port), "--logtostderr"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        wait_for(lambda: scrape(self.port), what="mtail to serve /metrics")

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


# -- freshness ----------------------------------------------------------------------------


def measure_freshness(log: Path, port: int, pattern: str, lines: int) -> list[float]:
    """Seconds from each write to the scrape that first shows it."""
    wanted = re.compile(pattern)
    latencies = []
    fd = os.open(log, os.O_WRONLY | os.O_APPEND)
    try:
        for n in range(1, lines + 1):
            line = STATS.format(n=n).encode()
            began = time.perf_counter()
            os.write(fd, line)
            while sample(scrape(port), wanted) != n:
                pass
            latencies.append(time.perf_counter() - began)
            time.sleep(0.005)  # lines arrive apart, not in one burst
    finally:
        os.close(fd)
    return latencies


def following_kvwatch(work: Path, agent_settings: str = "") -> tuple[Path, Agent]:
    """An empty log file, and a kvwatch following it as server ``f`` (``agent_settings``: more [agent] keys)."""
    log = work / "kvwatch.log"
    log.write_text("")
    directory = work / "kvwatch"
    directory.mkdir()
    agent = Agent(directory, f'[[follow]]\nname = "f"\npaths = ["{log}"]\n')
    agent.config.write_text(agent.config.read_text().replace("[agent]\n", f"[agent]\n{agent_settings}", 1))
    return log, agent.start()


def freshness(args: argparse.Namespace, work: Path) -> dict:
    log, agent = following_kvwatch(work)
    try:
        kvwatch = measure_freshness(
            log, agent.port, r'kvwatch_vllm_requests_running\{engine="0",server="f"\} (\S+)', args.lines
        )
        floor = []
        for _ in range(200):
            began = time.perf_counter()
            scrape(agent.port)
            floor.append(time.perf_counter() - began)
    finally:
        agent.kill()
    mtail = Mtail(work)
    try:
        peer = measure_freshness(mtail.log, mtail.port, r"\nrequests_running\{[^}]*\} (\S+)", args.mtail_lines)
    finally:
        mtail.stop()
    rows = {"kvwatch run": kvwatch, "mtail (250 ms poll)": peer, "scrape alone": floor}
    report = {
        name: {"n": len(v), "p50_ms": percentile(v, 0.5) * 1e3, "p99_ms": percentile(v, 0.99) * 1e3}
        for name, v in rows.items()
    }
    print("\nfreshness: write -> visible on /metrics")
    print(f"  {'':22} {'lines':>6} {'p50 ms':>8} {'p99 ms':>8}")
    for name, row in report.items():
        print(f"  {name:22} {row['n']:>6} {row['p50_ms']:>8.2f} {row['p99_ms']:>8.2f}")
    k, m = report["kvwatch run"], report["mtail (250 ms poll)"]
    print(f"  mtail p99 / kvwatch p99: {m['p99_ms'] / k['p99_ms']:.1f}x; target p99 <= 50 ms: "
          f"{'met' if k['p99_ms'] <= 50 else 'NOT met'}")  # fmt: skip
    return report


# -- overhead -----------------------------------------------------------------------------


def source_log(lines: int) -> tuple[Path, dict]:
    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"live-source-{lines}.log"
    truth_path = Path(str(path) + ".truth.json")
    if not truth_path.exists():
        generate(path, lines, style="current")
    return path, json.loads(truth_path.read_text())


def writer_command(source: Path, *extra: str) -> list[str]:
    return [sys.executable, str(HERE / "writer.py"), str(source), *extra]


def plain_round(source: Path, target: int, work: Path, follower: list[str] | None = None) -> float:
    """The writer alone on a plain file, or with ``follower`` (e.g. ``tail -f``) reading it meanwhile."""
    out, timing = work / "plain.log", work / "plain.json"
    fd = open_raw_log(out)  # opened as kvwatch opens a raw log: the one difference left is kvwatch
    reader = subprocess.Popen([*follower, str(out)], stdout=subprocess.DEVNULL) if follower else None
    try:
        subprocess.run(writer_command(source, "--bytes", str(target), "--timing", str(timing)), stdout=fd, check=True)
    finally:
        os.close(fd)
        if reader is not None:
            reader.terminate()
            reader.wait()
    out.unlink()
    return json.loads(timing.read_text())["seconds"]


def supervised_round(
    source: Path, truth: dict, target: int, work: Path, number: int
) -> tuple[float, float, bool, float]:
    """(writer seconds, seconds until kvwatch had every line, every number exact, raw-log rotations)."""
    directory = work / f"supervised-{number}"
    directory.mkdir()
    timing = directory / "timing.json"
    argv = writer_command(source, "--bytes", str(target), "--timing", str(timing))
    command = ", ".join(json.dumps(a) for a in argv)
    body = (
        f'[[server]]\nname = "w"\ncommand = [{command}]\nrestart = "never"\nhealth_url = ""\n'
        'log_max_bytes = "256MiB"\nlog_backups = 2\n'
    )
    agent = Agent(directory, body).start()
    began = time.perf_counter()
    try:
        wait_for(timing.exists, timeout=600, what="the writer to finish")
        record = json.loads(timing.read_text())
        lines_total = re.compile(r'kvwatch_lines_total\{server="w"\} (\S+)')
        wait_for(lambda: sample(scrape(agent.port), lines_total) == record["lines"], timeout=900,
                 what="kvwatch to read every line")  # fmt: skip
        caught_up = time.perf_counter() - began
        text = scrape(agent.port)
        copies = record["copies"]
        skipped = re.findall(r'kvwatch_lines_skipped_total\{reason="[^"]+",server="w"\} (\S+)', text)
        exact = (
            sample(text, re.compile(r'kvwatch_vllm_stats_lines_total\{engine="0",server="w"\} (\S+)'))
            == truth["stats_lines"] * copies
            and sample(text, re.compile(r'kvwatch_lmcache_hit_tokens_total\{server="w"\} (\S+)'))
            == truth["lmcache_hit_tokens"] * copies
            and all(float(value) == 0 for value in skipped)
        )
        rotations = sample(text, re.compile(r'kvwatch_server_log_rotations_total\{server="w"\} (\S+)')) or 0.0
    finally:
        agent.kill()
    shutil.rmtree(directory, ignore_errors=True)
    return record["seconds"], caught_up, exact, rotations


def overhead(args: argparse.Namespace, work: Path) -> dict:
    source, truth = source_log(20_000)
    target = int(args.gigabytes * (1 << 30))
    plain, tail_f, supervised, catch_up, exact, rotations = [], [], [], [], [], []
    plain_round(source, target, work)  # a warm-up, not counted: the first write of a run is the slowest
    kinds = ["plain", "tail -f", "supervised"]
    for number in range(args.rounds):
        for kind in kinds[number % 3 :] + kinds[: number % 3]:
            os.sync()  # the last round's dirty pages are not this round's to write back
            if kind == "plain":
                plain.append(plain_round(source, target, work))
            elif kind == "tail -f":
                tail_f.append(plain_round(source, target, work, ["tail", "-f"]))
            else:
                seconds, caught, ok, rotated = supervised_round(source, truth, target, work, number)
                supervised.append(seconds)
                catch_up.append(caught)
                exact.append(ok)
                rotations.append(rotated)
    report = {
        "bytes": target,
        "plain_median_s": statistics.median(plain),
        "supervised_median_s": statistics.median(supervised),
        "plain_s": plain,
        "tail_f_s": tail_f,
        "supervised_s": supervised,
        "kvwatch_all_read_median_s": statistics.median(catch_up),
        "exact": all(exact),
        "rotations": rotations,
    }
    ratio = report["supervised_median_s"] / report["plain_median_s"]
    print(f"\noverhead: a child writing {target / (1 << 30):.1f} GiB of log lines as fast as it can, "
          f"median of {args.rounds}")  # fmt: skip
    rows = (
        ("to a plain file", plain),
        ("to a plain file, with tail -f on it", tail_f),
        ("supervised (raw log kvwatch tails)", supervised),
    )
    for name, times in rows:
        rounds = ", ".join(f"{t:.3f}" for t in sorted(times))
        print(f"  {name:35} median {statistics.median(times):.3f} s, fastest {min(times):.3f} s  ({rounds})")
    tail_ratio = statistics.median(tail_f) / statistics.median(plain)
    print(f"  supervised / plain: {ratio:.2f}; tail -f / plain: {tail_ratio:.2f}")
    print(f"  kvwatch had every line {report['kvwatch_all_read_median_s']:.1f} s "
          f"after start (median), rotating the raw log {statistics.median(rotations):.0f} times; "
          f"every number exact: {'yes' if report['exact'] else 'NO'}")  # fmt: skip
    return report | {"ratio": ratio}


# -- footprint ----------------------------------------------------------------------------


def follow_under_load(
    pid: int, port: int, pattern: re.Pattern, log: Path, source: Path, args, watched: bool = False
) -> dict:
    """CPU and memory of the process ``pid`` following ``log`` while a writer fills it; ``watched``: the
    recent requests asked for every second meanwhile, as ``kvwatch top`` does."""
    lines = int(args.rate * args.seconds)
    cpu_before = cpu_seconds(pid)
    idle_rss = rss_kib(pid)
    writer = subprocess.Popen(
        writer_command(source, "--rate", str(args.rate), "--seconds", str(args.seconds), "--out", str(log))
    )
    began = time.perf_counter()
    peak = 0
    asked = 0.0
    while writer.poll() is None:
        peak = max(peak, rss_kib(pid))
        if watched and time.perf_counter() - asked >= 1.0:
            asked = time.perf_counter()
            scrape(port, path="/api/requests")
        time.sleep(0.25 if watched else 0.5)
    wait_for(lambda: sample(scrape(port), pattern) == lines, timeout=120, what="every line read")
    elapsed = time.perf_counter() - began
    used = cpu_seconds(pid) - cpu_before
    return {
        "lines": lines,
        "seconds": elapsed,
        "cpu_share": used / elapsed,
        "idle_rss_mib": idle_rss / 1024,
        "peak_rss_mib": max(peak, rss_kib(pid, "VmHWM")) / 1024,
    }


def footprint(args: argparse.Namespace, work: Path) -> dict:
    source, _truth = source_log(20_000)
    lines = re.compile(r'kvwatch_lines_total\{server="f"\} (\S+)')
    measured = {}
    # As configured by default (requests joined for kvwatch top's rows only while someone reads them), with
    # someone reading them all along, and without the recent requests.
    for name, settings, watched in (
        ("kvwatch run", "", False),
        ("watched", "", True),
        ("no joiner", "recent_requests = 0\n", False),
    ):
        place = work / name.replace(" ", "-")
        place.mkdir()
        log, agent = following_kvwatch(place, settings)
        try:
            measured[name] = follow_under_load(agent.process.pid, agent.port, lines, log, source, args, watched)
        finally:
            agent.kill()
    kvwatch = measured["kvwatch run"]
    mtail = Mtail(work)
    try:
        peer = follow_under_load(
            mtail.process.pid, mtail.port, re.compile(r"\nmtail_lines_total (\S+)"), mtail.log, source, args
        )
    finally:
        mtail.stop()
    print(f"\nfootprint: following {args.rate:.0f} lines/s for {args.seconds:.0f} s")
    print(f"  {'':12} {'CPU (1 core)':>13} {'idle RSS MiB':>13} {'peak RSS MiB':>13}")
    for name, row in (*measured.items(), ("mtail", peer)):
        print(f"  {name:12} {row['cpu_share']:>12.1%} {row['idle_rss_mib']:>13.1f} {row['peak_rss_mib']:>13.1f}")
    ok = kvwatch["cpu_share"] <= 0.25 and kvwatch["peak_rss_mib"] <= 80
    print(f"  kvwatch CPU / mtail CPU: {kvwatch['cpu_share'] / peer['cpu_share']:.2f}; targets (<= 25 %, <= 80 MB): "
          f"{'met' if ok else 'NOT met'}")  # fmt: skip
    watched = measured["watched"]
    print(f"  watched (the recent requests asked every second) / mtail CPU: "
          f"{watched['cpu_share'] / peer['cpu_share']:.2f}")  # fmt: skip
    return {"kvwatch": kvwatch, "kvwatch_watched": watched, "kvwatch_no_joiner": measured["no joiner"], "mtail": peer}


BENCHMARKS = {"freshness": freshness, "overhead": overhead, "footprint": footprint}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=tuple(BENCHMARKS), default=list(BENCHMARKS))
    parser.add_argument("--lines", type=int, default=1000, help="freshness: lines measured on kvwatch")
    parser.add_argument("--mtail-lines", type=int, default=200, help="freshness: lines measured on mtail")
    parser.add_argument("--gigabytes", type=float, default=1.0, help="overhead: GiB each child writes")
    parser.add_argument("--rounds", type=int, default=5, help="overhead: rounds of each kind")
    parser.add_argument("--rate", type=float, default=5000.0, help="footprint: lines per second")
    parser.add_argument("--seconds", type=float, default=60.0, help="footprint: seconds of load")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    if shutil.which("mtail") is None:
        print("run_live_bench: mtail is missing (Debian package mtail; make bench installs it)", file=sys.stderr)
        return 2
    CACHE.mkdir(parents=True, exist_ok=True)
    results = {}
    with tempfile.TemporaryDirectory(dir=CACHE, prefix="live-") as tmp:
        for name in args.only:
            work = Path(tmp) / name
            work.mkdir()
            results[name] = BENCHMARKS[name](args, work)
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
