"""Every metric kvwatch exports, gathered from the files that declare them.

Nothing here is used at run time: the docs' metrics reference is written from
these lists (``python -m agent.catalogue``; ``--check`` in the tests) and the
dashboards are checked against them, so a metric added in its component's
file cannot be left out of either.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from agent import statedir
from agent.commands import bench, canary, run
from agent.families import Spec
from agent.sinks import otlp, prometheus, traces
from agent.sources import containers, journal, tail
from agent.supervise import gpus, server

# From the log: the same in `kvwatch run` and `kvwatch replay`.
CATALOGUE: tuple[Spec, ...] = prometheus.CATALOGUE
# Only the running agent has these (supervision, tailing, the host).
AGENT_CATALOGUE: tuple[Spec, ...] = (
    *run.BUILD_SPECS,
    *run.RELOAD_SPECS,
    *run.INFO_SPECS,
    *server.SPECS,
    *tail.RAW_LOG_SPECS,
    *gpus.SPECS,
    *tail.PATH_SPECS,
    *tail.PATTERN_SPECS,
    *journal.SPECS,
    *containers.SPECS,
    *canary.SPECS,
    *bench.SPECS,
    *statedir.STATE_SPECS,
)
# Present while tracing is on (run, or replay --traces).
TRACE_CATALOGUE: tuple[Spec, ...] = (*traces.SPECS, *otlp.SPECS)

SPECS: dict[str, Spec] = {spec.name: spec for spec in CATALOGUE + AGENT_CATALOGUE + TRACE_CATALOGUE}


# -- the metrics reference in the docs ------------------------------------------------------------

DOC_PATH = Path(__file__).resolve().parents[1] / "docs" / "metrics.md"
TABLES = {"log": CATALOGUE, "agent": AGENT_CATALOGUE, "traces": TRACE_CATALOGUE}


def _meaning(spec: Spec) -> str:
    if spec.doc:
        return spec.doc
    text = spec.help.rstrip(".")
    return text[:1].lower() + text[1:] if text[1:2].islower() else text


def table(specs: tuple[Spec, ...]) -> str:
    rows = ["| name | type | labels | meaning | relates to |", "|---|---|---|---|---|"]
    for spec in specs:
        labels = ", ".join(f"`{label}`" for label in spec.labels)
        rows.append(f"| `{spec.name}` | {spec.type} | {labels} | {_meaning(spec)} | {spec.native or '—'} |")
    return "\n".join(rows)


def with_tables(text: str) -> str:
    """``text`` with each ``<!-- metrics: NAME -->`` ... ``<!-- end of the metrics table -->`` written anew."""
    for name, specs in TABLES.items():
        begin = f"<!-- metrics: {name} (written by `python -m agent.catalogue` from the code; edit the Spec) -->"
        head, rest = text.split(begin, 1)
        _old, tail = rest.split(END, 1)
        text = f"{head}{begin}\n\n{table(specs)}\n\n{END}{tail}"
    return text


END = "<!-- end of the metrics table -->"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write the tables of docs/metrics.md from the metrics' declarations.")
    parser.add_argument("--check", action="store_true", help="exit 1 if the tables are not what the code declares")
    args = parser.parse_args(argv)
    text = DOC_PATH.read_text(encoding="utf-8")
    wanted = with_tables(text)
    if args.check:
        if wanted != text:
            print("docs/metrics.md is not what the code declares; run python -m agent.catalogue")
            return 1
        return 0
    if wanted != text:
        DOC_PATH.write_text(wanted, encoding="utf-8")
        print("wrote docs/metrics.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
