#!/usr/bin/env python3
"""Benchmark ``kvwatch replay`` against ``mtail --one_shot`` on the same generated log.

    make bench            # or: .venv/bin/python tests/benchmarks/run_replay_bench.py [options]

Each round runs every command once on the same file, in an order rotated from
round to round: kvwatch replay (prometheus format), mtail one-shot with
``kvwatch.mtail``, and two baselines measured in the same run -- ``wc -l`` and a
bare Python loop with a substring test and one regex.  Every run's output is
checked against the generator's ground truth, exactly.  The report gives each
command's median wall time, lines/s, CPU seconds and peak memory, and its
speed relative to mtail as the median of per-round ratios.

When the project's shared research folder sits next to the checkout
(``../shared/bench``), its independent generator, mtail program and checker
are run through the same loop as a cross-check.
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
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "bench"
SHARED = ROOT.parent / "shared" / "bench"
sys.path.insert(0, str(HERE))

from gen_log import VERSION, generate  # noqa: E402

# truth key -> (kvwatch series, mtail series); "[status]" compares the per-status breakdown.
QUANTITIES = {
    "requests_added": ("kvwatch_vllm_requests_added_total", "added_requests"),
    "lmcache_lookups": ("kvwatch_lmcache_lookups_total", "lmcache_lookups"),
    "lmcache_lookup_tokens": ("kvwatch_lmcache_lookup_tokens_total", "lmcache_lookup_tokens"),
    "lmcache_hit_tokens": ("kvwatch_lmcache_hit_tokens_total", "lmcache_hit_tokens"),
    "lmcache_need_to_load_tokens": ("kvwatch_lmcache_need_to_load_tokens_total", "lmcache_need_to_load_tokens"),
    "lmcache_stores": ("kvwatch_lmcache_stores_total", "lmcache_stores"),
    "lmcache_stored_tokens": ("kvwatch_lmcache_stored_tokens_total", "lmcache_stored_tokens"),
    "lmcache_retrieves": ("kvwatch_lmcache_retrieves_total", "lmcache_retrieves"),
    "lmcache_retrieved_tokens": ("kvwatch_lmcache_retrieved_tokens_total", "lmcache_retrieved_tokens"),
    "http_responses[status]": ("kvwatch_http_responses_total", "http_responses"),
    "stats_lines": ("kvwatch_vllm_stats_lines_total", "stats_lines"),
    "stats_last.prompt_throughput": ("kvwatch_vllm_prompt_throughput_tokens_per_second", "prompt_throughput"),
    "stats_last.generation_throughput": (
        "kvwatch_vllm_generation_throughput_tokens_per_second",
        "generation_throughput",
    ),
    "stats_last.running": ("kvwatch_vllm_requests_running", "requests_running"),
    "stats_last.waiting": ("kvwatch_vllm_requests_waiting", "requests_waiting"),
    "stats_last.kv_cache_usage": ("kvwatch_vllm_kv_cache_usage_ratio", "kv_cache_usage_percent"),
    "stats_last.prefix_cache_hit_rate": ("kvwatch_vllm_prefix_cache_hit_ratio", "prefix_cache_hit_percent"),
}
# Only kvwatch's own quantities beyond what mtail extracts.
KVWATCH_ONLY = {
    "requests_received": "kvwatch_vllm_requests_received_total",
    "requests_aborted": "kvwatch_vllm_requests_aborted_total",
    "lmcache_store_starts": "kvwatch_lmcache_store_starts_total",
}
SAMPLE = re.compile(r"^([a-zA-Z_:][\w:]*)(?:\{([^}]*)\})? (\S+)")


def read_prometheus(text: str) -> dict[str, dict[tuple, float]]:
    series: dict[str, dict[tuple, float]] = {}
    for line in text.splitlines():
        m = SAMPLE.match(line)
        if m is None or line.startswith("#"):
            continue
        labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(2) or "")))
        series.setdefault(m.group(1), {})[labels] = float(m.group(3))
    return series


def check(text: str, truth: dict, mtail: bool) -> list[str]:
    """Mismatches between an output and the truth (empty when every number is exact)."""
    got = read_prometheus(text)
    problems = []
    items = [(key, names[1] if mtail else names[0]) for key, names in QUANTITIES.items()]
    if not mtail:
        items += list(KVWATCH_ONLY.items())
    for key, name in items:
        values = got.get(name, {})
        if key.endswith("[status]"):
            want = {status: float(n) for status, n in truth[key[: -len("[status]")]].items()}
            have: dict[str, float] = {}
            for labels, value in values.items():
                status = dict(labels).get("status")
                have[status] = have.get(status, 0.0) + value
            if {k: v for k, v in have.items() if v} != want:
                problems.append(f"{name} by status: want {want} got {have}")
            continue
        want = truth
        for part in key.split("."):
            want = want[part]
        if mtail and name.endswith("_percent"):
            want = round(want * 100.0, 6)
        have_total = sum(values.values()) if values else None
        if have_total is None or abs(have_total - want) > 1e-9 * max(1.0, abs(want)):
            problems.append(f"{name}: want {want} got {have_total}")
    return problems


GNU_TIME = shutil.which("time") and Path("/usr/bin/time")


def timed(argv: list[str], out: Path, err: Path | None = None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, peak RSS KiB) of one whole process and its children.

    Wall time is taken here; CPU and peak memory come from GNU time (Debian
    package ``time``), which reports the command itself rather than this forked
    interpreter; without it they read 0.  Standard error goes to ``err`` if given."""
    report = out.with_suffix(".time")
    wrapped = [str(GNU_TIME), "-f", "%U %S %M", "-o", str(report), *argv] if GNU_TIME else argv
    start = time.perf_counter()
    with out.open("wb") as stdout, err.open("wb") if err else open(os.devnull, "wb") as stderr:
        result = subprocess.run(wrapped, stdout=stdout, stderr=stderr)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed with status {result.returncode}")
    if not GNU_TIME:
        return wall, 0.0, 0
    user, system, rss = report.read_text().split()[-3:]
    return wall, float(user) + float(system), int(rss)


def mtail_command(log: Path, progs: Path) -> list[str]:
    # --port 0 / --address: even one-shot mtail starts its HTTP server (default [::]:3903).
    return [
        "mtail", "--one_shot", "--one_shot_format=prometheus", "--progs", str(progs), "--logs", str(log),
        "--logtostderr", "--address", "127.0.0.1", "--port", "0",
    ]  # fmt: skip


def commands(log: Path, mtail_progs: Path) -> dict[str, list[str]]:
    kvwatch = str(Path(sys.executable).with_name("kvwatch"))
    return {
        "kvwatch replay": [kvwatch, "replay", "--format", "prometheus", str(log)],
        "mtail --one_shot": mtail_command(log, mtail_progs),
        "wc -l": ["wc", "-l", str(log)],
        "python regex loop": [sys.executable, str(HERE / "baselines" / "regex_loop.py"), str(log)],
    }


def run_rounds(name: str, log: Path, mtail_progs: Path, rounds: int, verify) -> dict:
    cmds = commands(log, mtail_progs)
    lines = sum(1 for _ in log.open("rb"))
    order = list(cmds)
    runs: dict[str, list[tuple[float, float, int]]] = {c: [] for c in cmds}
    failures: dict[str, list[str]] = {c: [] for c in cmds}
    out_dir = CACHE / "out"
    out_dir.mkdir(parents=True, exist_ok=True)
    for round_no in range(rounds + 1):  # round 0 warms the page cache and is not counted
        order = order[1:] + order[:1]
        for command in order:
            out = out_dir / (command.split()[0] + ".txt")
            measured = timed(cmds[command], out)
            if round_no:
                runs[command].append(measured)
                failures[command] += verify(command, out.read_text(errors="replace"), lines)
    report = {"name": name, "log": str(log), "lines": lines, "rounds": rounds, "commands": {}}
    mtail_walls = [r[0] for r in runs["mtail --one_shot"]]
    for command, measured in runs.items():
        walls = [r[0] for r in measured]
        median = statistics.median(walls)
        report["commands"][command] = {
            "wall_median_s": round(median, 3),
            "wall_min_s": round(min(walls), 3),
            "lines_per_s": round(lines / median),
            "cpu_median_s": round(statistics.median(r[1] for r in measured), 3),
            "peak_rss_mib": round(max(r[2] for r in measured) / 1024, 1),
            "x_mtail": round(statistics.median(m / w for m, w in zip(mtail_walls, walls, strict=True)), 2),
            "check": "PASS" if not failures[command] else "FAIL: " + "; ".join(sorted(set(failures[command]))[:5]),
        }
    return report


def print_report(report: dict) -> None:
    print(f"\n{report['name']}: {report['log']} ({report['lines']:,} lines), median of {report['rounds']} rounds")
    print(f"  {'command':<20} {'wall s':>8} {'lines/s':>11} {'CPU s':>7} {'RSS MiB':>8} {'x mtail':>8}  check")
    for command, r in report["commands"].items():
        print(
            f"  {command:<20} {r['wall_median_s']:>8.3f} {r['lines_per_s']:>11,} {r['cpu_median_s']:>7.2f} "
            f"{r['peak_rss_mib']:>8.1f} {r['x_mtail']:>8.2f}  {r['check']}"
        )


def own_benchmark(style: str, lines: int, rounds: int) -> dict:
    CACHE.mkdir(parents=True, exist_ok=True)
    log = CACHE / f"replay-{style}-{lines}.log"
    truth_path = Path(str(log) + ".truth.json")
    wanted = {"version": VERSION, "seed": 1214, "lines": lines, "style": style}
    if not truth_path.exists() or json.loads(truth_path.read_text())["generator"] != wanted:
        print(f"generating {log} ...", flush=True)
        generate(log, lines, style=style)
    truth = json.loads(truth_path.read_text())
    progs = CACHE / "mtail-progs"
    progs.mkdir(parents=True, exist_ok=True)
    shutil.copy(HERE / "kvwatch.mtail", progs / "kvwatch.mtail")

    def verify(command: str, output: str, log_lines: int) -> list[str]:
        if command == "kvwatch replay":
            return check(output, truth, mtail=False)
        if command.startswith("mtail"):
            return check(output, truth, mtail=True)
        if command == "wc -l":
            return [] if output.split()[0] == str(log_lines) else [f"wc: {output.strip()}"]
        count, hits = (int(x) for x in output.split())
        ok = count == truth["substring_lines"] and hits == truth["substring_hit_sum"]
        return [] if ok else [f"regex loop: {output.strip()}"]

    return run_rounds(f"kvwatch generator, {style} style", log, progs, rounds, verify)


def shared_benchmark(lines: int, rounds: int) -> dict | None:
    """The shared folder's independent generator, mtail program and checker, same loop."""
    if not (SHARED / "gen_log.py").exists():
        return None
    log = CACHE / f"shared-classic-{lines}.log"
    truth = Path(str(log) + ".truth.json")
    if not truth.exists():
        print(f"generating {log} with the shared generator ...", flush=True)
        subprocess.run([sys.executable, str(SHARED / "gen_log.py"), "-n", str(lines), str(log)], check=True)
    want_substring = json.loads(truth.read_text())["substring_line_counts"]["LMCache hit tokens"]

    def verify(command: str, output: str, log_lines: int) -> list[str]:
        if command == "kvwatch replay" or command.startswith("mtail"):
            mapping = SHARED / ("kvwatch_map.json" if command == "kvwatch replay" else "mtail/metric_map.json")
            out = CACHE / "out" / "shared-check.prom"
            out.write_text(output)
            result = subprocess.run(
                [sys.executable, str(SHARED / "check_prom.py"), "-q", str(out), str(truth), str(mapping)],
                capture_output=True,
                text=True,
            )
            return [] if result.returncode == 0 else [result.stdout.strip().splitlines()[-1]]
        if command == "wc -l":
            return [] if output.split()[0] == str(log_lines) else [f"wc: {output.strip()}"]
        count = int(output.split()[0])  # echoed prompts also hold the substring: compare with its count
        return [] if count == want_substring else [f"regex loop counted {count}"]

    return run_rounds("cross-check: shared generator and mtail program", log, SHARED / "mtail", rounds, verify)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--style", choices=("classic", "current", "both"), default="both")
    parser.add_argument("--no-shared", action="store_true", help="skip the cross-check with ../shared/bench")
    args = parser.parse_args()
    if shutil.which("mtail") is None:
        print("mtail is not installed (Debian package mtail; `make bench` installs it)", file=sys.stderr)
        return 2
    reports = []
    for style in ("classic", "current") if args.style == "both" else (args.style,):
        reports.append(own_benchmark(style, args.lines, args.rounds))
        print_report(reports[-1])
    if not args.no_shared:
        shared = shared_benchmark(args.lines, max(1, args.rounds // 2))
        if shared is not None:
            reports.append(shared)
            print_report(shared)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (CACHE / f"results-{stamp}.json").write_text(json.dumps(reports, indent=1) + "\n")
    print(f"\nresults: {CACHE / f'results-{stamp}.json'}")
    failed = [r for report in reports for r in report["commands"].values() if r["check"] != "PASS"]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
