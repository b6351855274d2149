#!/usr/bin/env python3
"""What the wrappers of users' log pipelines cost a line, against the line alone.

    make bench-wrappers   # or: .venv/bin/python tests/benchmarks/run_wrapper_bench.py [--rounds R] [--number N]

Each of a few lines (a vLLM record behind its process tag, LMCache's coloured lookup,
uvicorn's access line, a message alone) is parsed alone and inside each wrapper a
tool or a pipeline puts around it (a container runtime's record, journald's and
syslog's framing, a log merger's prefix, a collector's record, another program's
header).  Every line is parsed warm, ``--number`` times a round, each time with its
times advanced as a log's lines have them; rounds alternate with the bare lines',
and the report gives each wrapped line's median microseconds
and its ratio to the bare line's median in the same run.  It also says whether the
wrapped line gives the bare line's events (their stamps aside: a wrapper's full time
wins): a ``no`` there is a wrapper that refuses that kind of line on purpose (an
access line behind SGLang's ``[date time] `` header) or a miss.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
CACHE = ROOT / ".cache" / "bench"
sys.path.insert(0, str(ROOT))

from parsers import parse_line  # noqa: E402
from tests.support.lines import event_dict  # noqa: E402
from tests.support.quoting import go_quoted  # noqa: E402

LINES = {
    "vllm": "(APIServer pid=383) INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-904844fa7f576854-"
    "7673ba93.",
    "lmcache": "\x1b[32;20m[2025-12-14 16:00:00,006] LMCache INFO:\x1b[0m Reqid: chatcmpl-9, Total tokens 1123, "
    "LMCache hit tokens: 768, need to load: 768 \x1b[3m(vllm_v1_adapter.py:1520:lmcache.integration.vllm."
    "vllm_v1_adapter)\x1b[0m",
    "access": 'INFO:     127.0.0.1:38613 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    "message": "Added request chatcmpl-904844fa7f576854-7673ba93.",
}
TIME = "2025-12-14T08:18:29.123456789Z"


def _json_string(text: str) -> str:
    return json.dumps(text, separators=(",", ":"))


def _escaped(text: str) -> str:
    """``text`` quoted escaping only quotes and backslashes (Vector's logfmt)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


# (name, what writes it, the physical line around a line)
WRAPPERS: list[tuple[str, Callable[[str], str]]] = [
    ("bare", lambda line: line),
    ("docker logs -t", lambda line: f"{TIME} {line}"),
    ("containerd (CRI) record", lambda line: f"{TIME} stdout F {line}"),
    (
        "Docker json-file record",
        lambda line: f'{{"log":{_json_string(line + chr(10))},"stream":"stdout","time":"{TIME}"}}',
    ),
    ("journalctl (short)", lambda line: f"Dec 14 16:18:29 gpu-node-1 vllm[4242]: {line}"),
    ("journalctl -o short-iso", lambda line: f"2025-12-14T16:18:29+0000 gpu-node-1 vllm[4242]: {line}"),
    ("syslog RFC 5424", lambda line: f"<14>1 2025-12-14T16:18:29.123Z gpu-node-1 vllm 4242 - - {line}"),
    ("syslog RFC 3164, priority", lambda line: f"<14>Dec 14 16:18:29 gpu-node-1 vllm[4242]: {line}"),
    ("kubectl logs --prefix", lambda line: f"[pod/vllm-0/vllm] {line}"),
    ("kubectl --prefix --timestamps", lambda line: f"[pod/vllm-0/vllm] {TIME} {line}"),
    ("stern", lambda line: f"vllm-0 vllm {line}"),
    ("docker compose logs", lambda line: f"vllm-1  | {line}"),
    ("Foreman / honcho", lambda line: f"16:18:29 web.1  | {line}"),
    ("srun --label (Slurm)", lambda line: f"0: {line}"),
    ("pm2 logs", lambda line: f"0|vllm     | {line}"),
    ("pm2 --time", lambda line: f"2025-12-14T16:18:29: {line}"),
    ("pm2 logs --timestamp", lambda line: f"2025-12-14-16:18:29 0|vllm     | {line}"),
    ("pm2 logs --format", lambda line: f"app=vllm id=0 type=out message={line}"),
    ("logcli (Loki)", lambda line: f'2025-12-14T16:18:29Z {{app="vllm", pod="vllm-0"}} {line}'),
    ("logfmt (logrus)", lambda line: f'time="2025-12-14T16:18:29Z" level=info msg={go_quoted(line)}'),
    ("Vector logfmt", lambda line: f"host=gpu-node-1 message={_escaped(line)} source_type=file timestamp={TIME}"),
    ("collector debug exporter", lambda line: f"Body: Str({line})"),
    ("time column and tab", lambda line: f"2025-12-14T16:18:29.123Z\t{line}"),
    ("Grafana's text download", lambda line: f"2025-12-14 16:18:29.123\t{line}"),
    ("another program's header", lambda line: f"2025-12-14 16:18:29,123 INFO [worker] {line}"),
    ("loguru", lambda line: f"2025-12-14 16:18:29.123 | INFO     | launcher:stream:42 - {line}"),
    ("ts '[%F %T]'", lambda line: f"[2025-12-14 16:18:29] {line}"),
]


def events_of(line: str) -> list[dict]:
    """A line's events, their stamps aside."""
    return [{key: value for key, value in event_dict(event).items() if key != "stamp"} for event in parse_line(line)]


# Each parse is of a line of its own time, as a log's lines are: the wrapper's time and the line's advance second by
# second over more seconds than any verdict the parser keeps on a prefix or a header holds (a verdict kept for
# one line's text would serve the next only where it is kept by the text's shape).
_TIMES = re.compile(r"(?<![\d:])(16|08):(18|00):(29|00)(?!\d)")
TIMES_A_ROUND = 1200


def timed_variants(line: str) -> list[str]:
    """``line`` with every time of the wrapper's and of the line's (at a minute and a second) advanced."""
    return [_TIMES.sub(lambda m, i=i: f"{m.group(1)}:{i // 60:02d}:{i % 60:02d}", line) for i in range(TIMES_A_ROUND)]


def time_one(lines: list[str], number: int) -> float:
    """Microseconds a line takes to parse, over ``number`` parses of ``lines`` in turn."""
    turn = list(itertools.islice(itertools.cycle(lines), number))
    start = time.perf_counter()
    for line in turn:
        parse_line(line)
    return (time.perf_counter() - start) / number * 1e6


def measure(rounds: int, number: int) -> list[dict]:
    """Every wrapper around every line: its median microseconds, ratio to the bare line's, same events."""
    cases = [(name, kind, make(line)) for name, make in WRAPPERS for kind, line in LINES.items()]
    times: dict[tuple[str, str], list[float]] = {(name, kind): [] for name, kind, _ in cases}
    variants = {(name, kind): timed_variants(wrapped) for name, kind, wrapped in cases}
    for line in (wrapped for _, _, wrapped in cases):
        parse_line(line)  # warm: compiled patterns
    for index in range(rounds):
        order = cases if index % 2 == 0 else cases[::-1]
        for name, kind, _ in order:
            times[(name, kind)].append(time_one(variants[(name, kind)], number))
    rows = []
    for name, kind, wrapped in cases:
        median = statistics.median(times[(name, kind)])
        base = statistics.median(times[("bare", kind)])
        same = events_of(wrapped) == events_of(LINES[kind])
        rows.append({"wrapper": name, "line": kind, "us": median, "ratio": median / base, "same_events": same})
    return rows


def report(rows: list[dict]) -> str:
    kinds = list(LINES)
    head = f"  {'wrapper':32s}" + "".join(f"{kind:>20s}" for kind in kinds)
    out = [
        "µs a line by parse_line, warm (median), times the bare line's in the same run; * where the events differ",
        head,
    ]
    by = {(row["wrapper"], row["line"]): row for row in rows}
    for name, _ in WRAPPERS:
        cells = []
        for kind in kinds:
            row = by[(name, kind)]
            mark = "" if row["same_events"] else " *"
            cells.append(f"{row['us']:7.2f} ({row['ratio']:4.1f}x){mark:2s}")
        out.append((f"  {name:32s}" + "".join(f"{cell:>20s}" for cell in cells)).rstrip())
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="rounds, alternating order (default 5)")
    parser.add_argument("--number", type=int, default=2000, help="parses of each line a round (default 2000)")
    parser.add_argument("--json", type=Path, help="also write the rows here (default: .cache/bench/)")
    args = parser.parse_args(argv)
    rows = measure(args.rounds, args.number)
    print(report(rows))
    target = args.json or CACHE / f"wrappers-{time.strftime('%Y%m%d-%H%M%S')}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(rows, indent=1) + "\n", encoding="utf-8")
    print(f"\nresults: {target}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
