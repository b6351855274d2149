"""``kvwatch bench -- vllm bench ...``: run a benchmark, keep its results, compare with the last run.

The benchmark runs as a child with its output streamed through; the result
lines (``vllm bench throughput``, ``latency`` and ``serve``) are parsed by
the same parsers as any log into ``bench_*`` events.  Each run is appended to
a JSON-lines history file with the parameters read from its command line, so
that runs of the same parameter set can be compared; a running ``kvwatch
run`` with the same state directory exposes the last result of each parameter
set on ``/metrics``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TextIO

from prometheus_client.core import Metric

from agent.commands import EXIT_FAILED, EXIT_OK, CommandError, add_config_option, load_config
from agent.exposition import families
from agent.families import gauge
from parsers import LogStream
from parsers import events as ev

HISTORY = "bench-history.jsonl"
MODES = ("throughput", "latency", "serve")

# Command-line flags of `vllm bench` that define a parameter set -> the name it is kept under.
PARAMETERS = {
    "--model": "model",
    "--tensor-parallel-size": "tensor_parallel_size",
    "-tp": "tensor_parallel_size",
    "--input-len": "input_len",
    "--output-len": "output_len",
    "--random-input-len": "input_len",
    "--random-output-len": "output_len",
    # The shared prefix of every prompt: what the prefix cache and LMCache can hit.
    "--prefix-len": "prefix_len",
    "--random-prefix-len": "prefix_len",
    "--prefix-repetition-prefix-len": "prefix_len",
    "--prefix-repetition-num-prefixes": "num_prefixes",
    "--batch-size": "batch_size",
    "--num-prompts": "num_prompts",
    "--max-num-seqs": "max_num_seqs",
    "--max-concurrency": "max_concurrency",
    "--request-rate": "request_rate",
    "--dataset-name": "dataset",
    "--num-iters": "num_iters",
    "--dtype": "dtype",
    "--max-model-len": "max_model_len",
    "--kv-transfer-config": "kv_transfer_config",
}


def parse_command(argv: Sequence[str]) -> tuple[str | None, dict[str, str]]:
    """The benchmark mode (``vllm bench MODE`` or ``benchmark_MODE.py``) and its parameters."""
    mode = None
    for i, arg in enumerate(argv):
        if arg == "bench" and i + 1 < len(argv) and argv[i + 1] in MODES:
            mode = argv[i + 1]
            break
        for name in MODES:
            if arg.endswith(f"benchmark_{name}.py"):
                mode = name
    params: dict[str, str] = {}
    i = 0
    while i < len(argv):
        arg = argv[i]
        flag, _, inline = arg.partition("=")
        if flag in PARAMETERS:
            value = inline if inline else (argv[i + 1] if i + 1 < len(argv) else "")
            params[PARAMETERS[flag]] = value
            i += 1 if inline else 2
            continue
        i += 1
    if "kv_transfer_config" in params:  # a JSON blob: keep its connector only
        try:
            params["kv_connector"] = json.loads(params.pop("kv_transfer_config")).get("kv_connector", "")
        except (ValueError, AttributeError):
            params.pop("kv_transfer_config", None)
    return mode, params


def results_of(events: Iterable[ev.Event]) -> dict[str, float]:
    """A flat name -> value of the result lines: vLLM's own key names where it has them."""
    out: dict[str, float] = {}
    for e in events:
        if isinstance(e, ev.BenchThroughput):
            out["requests_per_second"] = e.requests_per_second
            _put(out, "total_tokens_per_second", e.total_tokens_per_second)
            _put(out, "output_tokens_per_second", e.output_tokens_per_second)
        elif isinstance(e, ev.BenchTokens):
            _put(out, "prompt_tokens", e.prompt_tokens)
            _put(out, "output_tokens", e.output_tokens)
        elif isinstance(e, ev.BenchLatency):
            if e.avg_seconds is not None:
                out["avg_latency_seconds"] = e.avg_seconds
            elif e.percentile is not None:
                _put(out, f"p{e.percentile:g}_latency_seconds", e.seconds)
        elif isinstance(e, ev.BenchServe):
            _put(out, e.name, e.value)
    return out


def _put(results: dict[str, float], name: str, value: float | None) -> None:
    if value is not None:
        results[name] = value


def params_key(params: dict[str, str]) -> str:
    """The parameter set as one stable string (the ``params`` label)."""
    return ",".join(f"{k}={v}" for k, v in sorted(params.items()) if k != "model")


def run(argv: Sequence[str], history: Path, out: TextIO = sys.stdout, window=None) -> tuple[int, dict]:
    """Run the benchmark, stream its output to ``out``, append the run to ``history`` (with what the cache
    did meanwhile, when ``window``, a :class:`agent.sinks.bench_cache.CacheWindow`, reads a running kvwatch)."""
    mode, params = parse_command(argv)
    if window is not None:
        window.start()
    started = time.time()
    stream = LogStream()
    events: list[ev.Event] = []
    try:
        child = subprocess.Popen(
            list(argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1
        )
    except OSError as exc:
        raise BenchError(f"cannot run {argv[0]}: {exc.strerror or exc}") from None
    previous = signal.signal(signal.SIGINT, lambda *_: child.send_signal(signal.SIGINT))  # Ctrl-C: the child stops
    try:
        assert child.stdout is not None
        for line in child.stdout:
            out.write(line)
            out.flush()
            events.extend(stream.feed(line.rstrip("\n")))
        code = child.wait()
    finally:
        signal.signal(signal.SIGINT, previous)
    events.extend(stream.close())
    entry = {
        "time": round(started, 3),
        "duration_seconds": round(time.time() - started, 3),
        "mode": mode,
        "model": params.get("model", ""),
        "params": {k: v for k, v in params.items() if k != "model"},
        "command": [os.path.basename(argv[0]), *argv[1:]],
        "exit_code": code,
        "results": results_of(events),
    }
    if window is not None:
        entry["cache"] = window.stop()  # per server: deltas over the run ({} when kvwatch could not be read)
    history.parent.mkdir(parents=True, exist_ok=True)
    with open(history, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    return code, entry


class BenchError(Exception):
    pass


def read_history(path: Path) -> list[dict]:
    """Every recorded run, oldest first; lines that are not JSON are skipped."""
    entries = []
    try:
        with open(path, encoding="utf-8") as handle:
            for line in handle:
                try:
                    entry = json.loads(line)
                except ValueError:
                    continue
                if isinstance(entry, dict) and isinstance(entry.get("results"), dict):
                    entries.append(entry)
    except FileNotFoundError:
        return []
    return entries


def last_per_parameter_set(entries: list[dict]) -> dict[tuple[str, str, str], dict]:
    """(mode, model, params) -> the newest successful run."""
    last: dict[tuple[str, str, str], dict] = {}
    for entry in entries:
        if entry.get("exit_code") == 0 and entry["results"]:
            last[(entry.get("mode") or "", entry.get("model") or "", params_key(entry.get("params") or {}))] = entry
    return last


class BenchHistory:
    """The last run per parameter set of a history file, re-read only when the file changes.

    A running ``kvwatch run`` serves them on ``/metrics``, so a dashboard
    shows a benchmark's results beside the live numbers."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[float, int] | None = None  # (mtime, size) of the file last read
        self._last: dict[tuple[str, str, str], dict] = {}

    def last_runs(self) -> dict[tuple[str, str, str], dict]:
        try:
            stat = self.path.stat()
        except OSError:
            return {}
        seen = (stat.st_mtime, stat.st_size)
        if seen != self._seen:
            self._last = last_per_parameter_set(read_history(self.path))
            self._seen = seen
        return self._last

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [(list(key), entry) for key, entry in self.last_runs().items()])


def _run_time(entry: dict, labels: tuple[str, ...]) -> Iterable:
    return [((), entry["time"])]


def _run_results(entry: dict, labels: tuple[str, ...]) -> Iterable:
    return [((result,), value) for result, value in sorted(entry["results"].items())]


SPECS = (
    gauge(
        "kvwatch_bench_last_result",
        "The last `kvwatch bench` run of each parameter set: one series per result (requests_per_second, "
        "avg_latency_seconds, mean_ttft_ms ...).",
        _run_results,
        labels="benchmark model params result",
        per_server=False,
        doc=(
            "the last `kvwatch bench` run of each parameter set (read from the state directory's history): one "
            "series per result (`requests_per_second`, `avg_latency_seconds`, `p99_latency_seconds`, "
            "`request_throughput`, `mean_ttft_ms` …)"
        ),
        native="`vllm bench`'s own results",
    ),
    gauge(
        "kvwatch_bench_last_run_timestamp_seconds",
        "When the last `kvwatch bench` run of each parameter set began.",
        _run_time,
        labels="benchmark model params",
        per_server=False,
        doc="when that run began",
    ),
)


# The figure a table shows per mode, and whether more is better.
HEADLINE = {
    "throughput": ("requests_per_second", True),
    "latency": ("avg_latency_seconds", False),
    "serve": ("request_throughput", True),
}


def history_table(entries: list[dict]) -> str:
    """Newest first, with the change against the previous run of the same parameter set."""
    rows = [
        f"{'when':19} {'mode':10} {'model':24} {'result':>26} {'change':>8}  {'cache during the run':36}  parameters"
    ]
    previous: dict[tuple[str, str, str], dict] = {}
    lines = []
    for entry in entries:
        key = (entry.get("mode") or "", entry.get("model") or "", params_key(entry.get("params") or {}))
        name, _higher = HEADLINE.get(key[0], ("", True))
        value = entry["results"].get(name)
        before = previous.get(key)
        change = ""
        if value is not None and before is not None and before["results"].get(name):
            change = f"{(value / before['results'][name] - 1) * 100:+.1f}%"
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(entry.get("time", 0)))
        shown = f"{name} {value:g}" if value is not None else f"exit {entry.get('exit_code')}, no result"
        lines.append(
            f"{when:19} {key[0]:10} {key[1][-24:]:24} {shown:>26} {change:>8}  {cache_summary(entry):36}  {key[2]}"
        )
        if value is not None and entry.get("exit_code") == 0:
            previous[key] = entry
    return "\n".join(rows + lines[::-1])


def cache_summary(entry: dict) -> str:
    """``LMCache 41.5% of 2,468 tok, prefix 62.3%``: the run's cache numbers, summed over its servers."""
    cache = entry.get("cache") or {}
    if not cache:
        return "—"
    looked_up = sum(c.get("lmcache_lookup_tokens") or 0 for c in cache.values())
    hit = sum(c.get("lmcache_hit_tokens") or 0 for c in cache.values())
    rates = [c["prefix_cache_hit_rate"] for c in cache.values() if c.get("prefix_cache_hit_rate") is not None]
    lmcache = f"LMCache {hit / looked_up * 100:.1f}% of {looked_up:,.0f} tok" if looked_up else "LMCache no lookup"
    return lmcache + (f", prefix {max(rates) * 100:.1f}%" if rates else "")


# -- the command ----------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction) -> None:
    bench = commands.add_parser(
        "bench",
        help="run a vllm bench command, record its results, compare with earlier runs",
        description="Run `vllm bench throughput|latency|serve ...` (after --), stream its output, and append its "
        "results and parameters to the history in the state directory, where a running kvwatch shows the last "
        "run of each parameter set on /metrics.  --history prints the history, newest first.",
        usage="kvwatch bench [options] -- vllm bench MODE [ARGS...]\n       kvwatch bench --history [options]",
    )
    bench.add_argument("--history", action="store_true", help="print the recorded runs instead of running one")
    add_config_option(bench, "use this configuration's agent.state_dir", default=False)
    bench.add_argument("--history-file", metavar="FILE", help=f"default: STATE_DIR/{HISTORY}")
    bench.add_argument(
        "--kvwatch-url",
        metavar="URL",
        help="the running kvwatch whose numbers give the run's cache deltas (default: the one --config names, "
        "else http://127.0.0.1:10067; unreachable: the run is recorded without them)",
    )
    bench.add_argument("--server", metavar="NAME", help="record the cache deltas of this server only")
    bench.add_argument("--grafana-url", metavar="URL", help="also mark the run as a Grafana annotation")
    bench.add_argument("--token-file", metavar="FILE", help="Grafana API token (default $GRAFANA_TOKEN)")
    bench.add_argument("command", nargs=argparse.REMAINDER, help="the benchmark command, after --")
    bench.set_defaults(handler=main)


def _history_path(args: argparse.Namespace) -> Path:
    if args.history_file:
        return Path(args.history_file)
    from agent.config import DEFAULT_STATE_DIR

    state_dir = load_config(args.config).agent.state_dir if args.config else Path(DEFAULT_STATE_DIR)
    return state_dir / HISTORY


def main(args: argparse.Namespace) -> int:
    history = _history_path(args)
    if args.history:
        print(history_table(read_history(history)))
        return EXIT_OK
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        raise CommandError("bench needs a command after --, e.g. kvwatch bench -- vllm bench latency ...")
    token = None
    if args.grafana_url:
        from agent.commands.dashboards import grafana_token

        token = grafana_token(args.token_file)  # read before the run: a bad file fails at once
    from agent.commands.top import kvwatch_reader
    from agent.sinks.bench_cache import CacheWindow

    window = CacheWindow(kvwatch_reader(args.kvwatch_url, args.config), args.server)
    try:
        code, entry = run(command, history, window=window)
    except BenchError as exc:
        raise CommandError(str(exc)) from None
    except OSError as exc:
        raise CommandError(f"cannot record the run in {history}: {exc.strerror or exc}", EXIT_FAILED) from None
    print(f"kvwatch: recorded {entry['mode'] or 'benchmark'} run in {history}: {len(entry['results'])} results")
    if entry.get("cache"):
        print(f"kvwatch: the cache during the run: {cache_summary(entry)}")
    else:
        print(f"kvwatch: no cache numbers recorded (no running kvwatch read: {window.error or 'no server'})")
    if args.grafana_url:
        _annotate(args.grafana_url, token, entry)
    return code


def _annotate(grafana_url: str, token: str | None, entry: dict) -> None:
    from agent.commands import dashboards

    results = ", ".join(f"{k} {v:g}" for k, v in sorted(entry["results"].items())[:6])
    text = f"vllm bench {entry['mode']} {entry['model']} ({params_key(entry['params'])}): {results}"
    try:
        dashboards.annotate(grafana_url, token, text, ["kvwatch", "bench", entry["mode"] or "bench"], entry["time"])
    except dashboards.PushError as exc:
        print(f"kvwatch: annotation: {exc}", file=sys.stderr)
