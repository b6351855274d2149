#!/usr/bin/env python3
"""Benchmark the trace builder: memory of the open-request table, and ``kvwatch replay --traces``.

    make bench-traces     # or: .venv/bin/python tests/benchmarks/run_trace_bench.py [options]

1. Memory.  100,000 requests are opened (each a ``Received request``, an
   ``Added request`` with the engine's suffixed id, and an LMCache lookup: what
   a request holds while it runs) and none ends.  The table's allocations are
   measured with tracemalloc, beside a baseline measured in the same run: a
   dict holding just the 100,000 ids, the least any table keyed by request
   could hold.  The bound this checks is documented in docs/traces.md.

2. Churn.  1,000,000 distinct request ids pass through the table with tracing on (every request
   sampled, its spans built and handed to the SDK's batch processor, exported as OTLP/JSON to
   /dev/null): each request is received, added and looked up; nine in ten finish, one in ten never
   ends (a client that vanished), and log time moves a millisecond per request.  The process's
   resident memory is read every 100,000 requests: it must stay bounded (the table holds at most
   ``max_open_requests``, the ended ids a fixed number, the SDK's queue its size), not grow with
   the requests seen.

3. Throughput.  The shared 2M-line log (``../shared/bench/gen_log.py``, or
   this folder's generator when the shared folder is absent) is replayed by
   one process: plain (the baseline), writing OTLP/JSON to a file, and
   exporting OTLP/HTTP to a receiver on loopback (a separate process that reads
   and counts the bodies, as a collector's receiver would before its
   pipeline).  Rounds rotate the order; the report gives medians and each
   command's time relative to plain replay in the same round.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT))

from run_replay_bench import CACHE, SHARED, timed  # noqa: E402

from agent.sinks.stats import ServerStats  # noqa: E402
from agent.sinks.traces import TraceBuilder  # noqa: E402
from parsers import events as ev  # noqa: E402
from parsers.timestamps import Clock  # noqa: E402

# The documented bound (docs/traces.md): bytes per open request.
BYTES_PER_OPEN_REQUEST_BOUND = 1536

RECEIVER = """
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *args):
        pass
server = ThreadingHTTPServer(("127.0.0.1", 0), H)
print(server.server_address[1], flush=True)
server.serve_forever()
"""


def memory(requests: int) -> dict:
    clock = Clock(UTC, datetime(2026, 12, 1, tzinfo=UTC))
    stats = ServerStats("bench", clock)
    ids = [f"chatcmpl-{i:032x}" for i in range(requests)]
    events = []
    for i, rid in enumerate(ids):
        stamp = f"2026-11-30 12:{(i // 60000) % 60:02d}:{(i // 1000) % 60:02d},{i % 1000:03d}"
        events.append(ev.RequestReceived("11-30 12:00:00", rid, 256, 1024))
        events.append(ev.RequestAdded("11-30 12:00:00", f"{rid}-{i & 0xFFFFFFFF:08x}"))
        events.append(ev.LmcacheLookup(stamp, f"{rid}-{i & 0xFFFFFFFF:08x}", 1024, 512, 256, 0))
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    builder = TraceBuilder(stats, clock, lambda request: None, max_open=requests)
    for event in events:
        builder.observe(event)
    gc.collect()
    table = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert builder.open_requests == requests, builder.open_requests
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    baseline_table = {rid: None for rid in (f"chatcmpl-{i:032x}" for i in range(requests))}
    baseline = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    del baseline_table
    per_request = table / requests
    return {
        "requests": requests,
        "table_bytes": table,
        "bytes_per_request": round(per_request),
        "baseline_bytes_per_request": round(baseline / requests),
        "ratio_to_baseline": round(table / baseline, 2),
        "bound_bytes_per_request": BYTES_PER_OPEN_REQUEST_BOUND,
        "within_bound": per_request <= BYTES_PER_OPEN_REQUEST_BOUND,
    }


def rss_mib() -> float:
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def churn(requests: int, max_open: int = 20_000) -> dict:
    from agent.sinks.otlp import OtlpJsonFileExporter, Tracing

    clock = Clock(UTC, datetime(2026, 12, 1, tzinfo=UTC))
    stats = ServerStats("bench", clock)
    with open("/dev/null", "w", encoding="utf-8") as sink:
        tracing = Tracing(OtlpJsonFileExporter(sink), wait_when_full=True)
        builder = tracing.builder(stats, clock, "tiny-llama", max_open=max_open)
        start = datetime(2026, 11, 30, tzinfo=UTC).timestamp()
        samples = []
        began = time.perf_counter()
        for i in range(requests):
            when = datetime.fromtimestamp(start + i / 1000, UTC)
            stamp = when.strftime("%Y-%m-%d %H:%M:%S,") + f"{when.microsecond // 1000:03d}"
            rid = f"chatcmpl-{i:032x}"
            engine_id = f"{rid}-{i & 0xFFFFFFFF:08x}"
            builder.observe(ev.RequestReceived(stamp, rid, 1024, 64))
            builder.observe(ev.RequestAdded(stamp, engine_id))
            builder.observe(ev.LmcacheLookup(stamp, engine_id, 1024, 512, 256, 0))
            if i % 10:
                builder.observe(ev.RequestFinished(stamp, engine_id))
            if (i + 1) % (requests // 10) == 0:
                samples.append((i + 1, round(rss_mib(), 1), builder.open_requests))
        builder.close()
        tracing.flush()
        seconds = time.perf_counter() - began
    # Bounded: the last readings no higher than the early ones by more than noise (the SDK's queue fills early).
    early = max(rss for n, rss, _ in samples[: len(samples) // 2])
    late = max(rss for n, rss, _ in samples[len(samples) // 2 :])
    return {
        "requests": requests,
        "max_open": max_open,
        "seconds": round(seconds, 1),
        "samples": samples,
        "evicted": dict(builder.evicted),
        "exported_spans": tracing.counts["exported"],
        "dropped": tracing.dropped,
        "bounded": late <= early * 1.05 + 2 and max(o for _, _, o in samples) <= max_open,
    }


def shared_log(lines: int) -> Path:
    log = CACHE / f"shared-classic-{lines}.log"
    if not log.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
        generator = SHARED / "gen_log.py" if (SHARED / "gen_log.py").exists() else HERE / "gen_log.py"
        print(f"generating {log} with {generator} ...", flush=True)
        subprocess.run([sys.executable, str(generator), "-n", str(lines), str(log)], check=True)
    return log


def throughput(log: Path, rounds: int) -> dict:
    receiver = subprocess.Popen([sys.executable, "-c", RECEIVER], stdout=subprocess.PIPE, text=True)
    port = int(receiver.stdout.readline())
    out = CACHE / "out"
    out.mkdir(parents=True, exist_ok=True)
    kvwatch = [sys.executable, "-m", "agent", "replay", "--jobs", "1", "--format", "prometheus"]
    commands = {
        "replay (plain)": [*kvwatch, str(log)],
        "replay --traces-file": [*kvwatch, "--traces-file", str(out / "traces.jsonl"), str(log)],
        "replay --traces (OTLP/HTTP)": [*kvwatch, "--traces-endpoint", f"http://127.0.0.1:{port}/v1/traces", str(log)],
    }
    results: dict[str, dict] = {name: {"wall": [], "cpu": [], "rss_kib": [], "ratio": []} for name in commands}
    summaries: dict[str, str] = {}
    names = list(commands)
    try:
        for round_ in range(rounds):
            order = names[round_ % len(names) :] + names[: round_ % len(names)]
            walls = {}
            for name in order:
                err = out / "trace-bench.err"
                wall, cpu, rss = timed(commands[name], out / "trace-bench.out", err)
                walls[name] = wall
                results[name]["wall"].append(wall)
                results[name]["cpu"].append(cpu)
                results[name]["rss_kib"].append(rss)
                summary = [line for line in err.read_text().splitlines() if "traces:" in line]
                if summary:
                    summaries[name] = summary[-1]
                print(f"  round {round_ + 1} {name}: {wall:.1f} s", flush=True)
            for name in names:
                results[name]["ratio"].append(walls[name] / walls["replay (plain)"])
    finally:
        receiver.kill()
        receiver.wait()
    lines = sum(1 for _ in log.open("rb"))
    report = {"log": str(log), "lines": lines, "rounds": rounds, "commands": {}}
    for name, r in results.items():
        wall = statistics.median(r["wall"])
        report["commands"][name] = {
            "wall_s": round(wall, 2),
            "lines_per_s": round(lines / wall),
            "cpu_s": round(statistics.median(r["cpu"]), 2),
            "peak_rss_mib": round(max(r["rss_kib"]) / 1024, 1),
            "time_vs_plain": round(statistics.median(r["ratio"]), 2),
            "traces": summaries.get(name, ""),
        }
    return report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=100_000, help="open requests for the memory test")
    parser.add_argument("--lines", type=int, default=2_000_000, help="lines of the shared log")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--churn", type=int, default=1_000_000, help="request ids for the churn test (0: skip)")
    args = parser.parse_args()

    mem = memory(args.requests)
    print(
        f"\nopen-request table: {mem['requests']:,} requests, {mem['table_bytes'] / 2**20:.1f} MiB, "
        f"{mem['bytes_per_request']} B per request (bound {mem['bound_bytes_per_request']} B: "
        f"{'within' if mem['within_bound'] else 'EXCEEDED'}); baseline (ids alone) "
        f"{mem['baseline_bytes_per_request']} B, ratio {mem['ratio_to_baseline']}x\n",
        flush=True,
    )
    if args.churn:
        turned = churn(args.churn)
        print(
            f"churn: {turned['requests']:,} distinct request ids with tracing on, in {turned['seconds']} s; "
            f"table capped at {turned['max_open']:,}; evicted {turned['evicted']}; "
            f"{turned['exported_spans']:,} spans exported, dropped {turned['dropped']}"
        )
        print(f"  {'requests seen':>14} {'RSS MiB':>8} {'open':>7}")
        for seen, rss, open_now in turned["samples"]:
            print(f"  {seen:>14,} {rss:>8.1f} {open_now:>7,}")
        print(f"  memory {'bounded' if turned['bounded'] else 'GROWING'}\n", flush=True)
    else:
        turned = {"bounded": True}
    report = throughput(shared_log(args.lines), args.rounds)
    print(f"\n{report['lines']:,} lines, median of {report['rounds']} rounds")
    print(f"{'command':30} {'wall s':>8} {'lines/s':>10} {'CPU s':>7} {'peak MiB':>9} {'vs plain':>9}")
    for name, r in report["commands"].items():
        print(
            f"{name:30} {r['wall_s']:8.1f} {r['lines_per_s']:10,} {r['cpu_s']:7.1f} {r['peak_rss_mib']:9.1f} "
            f"{r['time_vs_plain']:8.2f}x"
        )
        if r["traces"]:
            print(f"{'':30} {r['traces']}")
    stamp = time.strftime("%Y%m%d-%H%M%S")
    path = CACHE / f"traces-{stamp}.json"
    path.write_text(json.dumps({"memory": mem, "churn": turned, "throughput": report}, indent=1) + "\n")
    print(f"\nresults: {path}")
    lost = any(" 0 lost" not in r["traces"] for name, r in report["commands"].items() if name != "replay (plain)")
    return 0 if mem["within_bound"] and turned["bounded"] and not lost else 1


if __name__ == "__main__":
    sys.exit(main())
