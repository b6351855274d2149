"""The benchmark's own parts are right: its generator's truth, kvwatch and the mtail program agree.

The timing runs are not part of the suite (see tests/benchmarks/); this checks,
on a small log of each style, that the numbers the benchmark compares are exact.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.benchmarks.gen_log import generate
from tests.benchmarks.run_replay_bench import check, mtail_command

HERE = Path(__file__).parent


@pytest.fixture(scope="module", params=["classic", "current"])
def generated(request, tmp_path_factory) -> tuple[Path, dict]:
    log = tmp_path_factory.mktemp("bench") / f"{request.param}.log"
    truth = generate(log, 30_000, seed=7, style=request.param)
    return log, truth


@pytest.fixture(scope="module")
def replayed(generated: tuple[Path, dict]) -> str:
    command = [sys.executable, "-m", "agent", "replay", "-f", "prometheus", str(generated[0])]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout


def test_generator_is_deterministic(tmp_path: Path) -> None:
    a, b = tmp_path / "a.log", tmp_path / "b.log"
    assert generate(a, 5000, seed=3, style="current") == generate(b, 5000, seed=3, style="current")
    assert a.read_bytes() == b.read_bytes()
    assert len(a.read_bytes().splitlines()) == 5000


def test_kvwatch_matches_the_ground_truth(generated: tuple[Path, dict], replayed: str) -> None:
    truth = generated[1]
    assert check(replayed, truth, mtail=False) == []
    assert truth["lmcache_lookups"] > truth["requests_added"] > 1000  # preempted requests are looked up twice
    assert truth["substring_lines"] > truth["lmcache_lookups"]  # echoed prompts quote the lookup text


def test_the_checker_catches_a_wrong_number(generated: tuple[Path, dict], replayed: str) -> None:
    truth = generated[1]
    wrong = replayed.replace("kvwatch_lmcache_hit_tokens_total{", "kvwatch_lmcache_hit_tokens_totalX{")
    assert any("kvwatch_lmcache_hit_tokens_total" in p for p in check(wrong, truth, mtail=False))


def test_mtail_program_matches_the_ground_truth(generated: tuple[Path, dict], tmp_path: Path) -> None:
    if shutil.which("mtail") is None:
        pytest.skip("mtail not installed (Debian package mtail; `make test` installs it)")
    log, truth = generated
    progs = tmp_path / "progs"
    progs.mkdir()
    shutil.copy(HERE / "kvwatch.mtail", progs)
    result = subprocess.run(mtail_command(log, progs), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert check(result.stdout, truth, mtail=True) == []


def test_trace_bench_memory_measure_counts_the_open_table() -> None:
    sys.path.insert(0, str(HERE))
    from tests.benchmarks.run_trace_bench import memory

    result = memory(2000)
    assert result["requests"] == 2000
    # The table holds ids, times and lookups: well above the ids alone, and below the documented bound.
    assert result["baseline_bytes_per_request"] < result["bytes_per_request"] <= result["bound_bytes_per_request"]


def test_wrapper_bench_reads_each_wrapped_line_as_the_line_alone() -> None:
    from tests.benchmarks.run_wrapper_bench import LINES, WRAPPERS, events_of, measure, timed_variants

    rows = measure(rounds=1, number=1)
    assert len(rows) == len(WRAPPERS) * len(LINES)
    assert all(row["ratio"] == 1.0 for row in rows if row["wrapper"] == "bare")
    # Only an access line behind a bracketed date and time reads otherwise: that is SGLang's header.
    differing = [(row["wrapper"], row["line"]) for row in rows if not row["same_events"]]
    assert differing == [("ts '[%F %T]'", "access")]
    # The lines timed, their times advanced, read as the line itself does.
    for _, make in WRAPPERS:
        for line in LINES.values():
            variants = timed_variants(make(line))
            assert [events_of(variants[i]) for i in (0, 61, -1)] == [events_of(make(line))] * 3
