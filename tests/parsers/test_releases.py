"""Every vLLM release ``make compat`` ran, offline: its kept raw log replayed gives the run's verdicts.

``tests/fixtures/releases/<version>/`` holds the raw log of a real run of that release under
``kvwatch run`` (idle stats lines thinned), vLLM's own ``/metrics`` at the end of that run and the
workload's answers.  Replayed through the parsers and the stats here, each check of
tests/compat/run_compat.py must come out as it did live: exact where it was exact (against vLLM's
counters or the workload's known counts), the same number where the table explains a difference.
Every shape of line such a log holds that gives no event is reviewed (tests/compat/reviewed.toml).
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from agent.sinks.prometheus import registry_for
from agent.sinks.stats import ServerStats
from parsers import Clock, LogStream
from tests.compat.run_compat import FIXTURES, RESULTS, checks, reviewed_shapes, samples, unmatched_shapes, unreviewed

RELEASES = sorted(p.name for p in FIXTURES.glob("*") if (p / "server.log").exists())


def replayed(path: Path) -> dict:
    stats = ServerStats("compat", Clock(UTC, datetime(2026, 12, 1, tzinfo=UTC)))
    stream = LogStream()
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            for event in stream.feed(line.rstrip("\n")):
                stats.observe(event)
    return samples(generate_latest(registry_for(lambda: [stats])).decode())


@pytest.mark.parametrize("version", RELEASES)
def test_a_kept_release_log_replays_to_its_live_verdicts(version: str) -> None:
    directory = FIXTURES / version
    run = json.loads((directory / "workload.json").read_text(encoding="utf-8"))
    native = samples((directory / "vllm-metrics.txt").read_text(encoding="utf-8"))
    again = checks(replayed(directory / "server.log"), native, run["statuses"], lmcache=bool(run.get("lmcache")))
    assert [(c["check"], c["kvwatch"], c["exact"]) for c in again] == [
        (c["check"], c["kvwatch"], c["exact"]) for c in run["checks"]
    ]


def test_there_is_a_kept_log_of_at_least_one_release() -> None:
    assert RELEASES, f"no release logs under {FIXTURES} (make compat keeps them)"


@pytest.mark.parametrize("version", RELEASES)
def test_every_line_a_kept_release_log_leaves_unread_is_reviewed(version: str) -> None:
    """A line kvwatch turns into no event is ignored on purpose, with the reason in reviewed.toml."""
    assert unreviewed(unmatched_shapes(FIXTURES / version / "server.log"), reviewed_shapes()) == []


def test_every_reviewed_shape_is_still_printed_by_a_kept_release() -> None:
    """An entry no kept log needs (its lines are parsed now, say) goes, so the review stays current."""
    shapes = {shape for version in RELEASES for shape in unmatched_shapes(FIXTURES / version / "server.log")}
    unused = [e["pattern"] for e in reviewed_shapes() if not any(re.search(e["pattern"], s) for s in shapes)]
    assert unused == []


def test_every_release_that_cannot_run_here_is_covered_by_its_published_lines() -> None:
    """A release whose build cannot start on this machine (tests/compat/results.json) has real lines of its
    own, published in public threads, among the parser's line cases (their ``release``)."""
    published = {
        case["release"]
        for path in (FIXTURES.parent / "lines").glob("*.json")
        for case in json.loads(path.read_text(encoding="utf-8"))
        if "release" in case
    }
    results = json.loads(RESULTS.read_text(encoding="utf-8"))
    not_run = [r["vllm"] for r in results.values() if not r.get("checks") and not r.get("lmcache")]
    if not not_run:
        pytest.skip("every release in the list runs on this machine")
    assert [v for v in not_run if ".".join(v.split(".")[:3]) not in published] == []
