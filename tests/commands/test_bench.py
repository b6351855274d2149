"""``kvwatch bench``: a real child process printing vLLM's result lines, recorded and compared."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import REPO, Agent, kvwatch, wait_for
from tests.support.stand_ins import TOKEN, FakeGrafana

FAKE = str(REPO / "tests" / "support" / "fakebench.py")


def bench(history: Path, *command: str, extra: tuple[str, ...] = (), env=None) -> subprocess.CompletedProcess:
    return kvwatch(
        "bench",
        "--history-file",
        str(history),
        *extra,
        "--",
        *command,
        timeout=120,
        env=env,
    )


def fake(mode: str, *args: str) -> list[str]:
    return [sys.executable, FAKE, "bench", mode, "--model", "Qwen/Qwen3-8B", "-tp", "2", *args]


@pytest.mark.parametrize(
    "mode, args, expected",
    [
        (
            "latency",
            ("--input-len", "32", "--output-len", "128", "--batch-size", "8"),
            {"avg_latency_seconds": 1.475279240796808, "p99_latency_seconds": 1.4799},
        ),
        (
            "throughput",
            ("--input-len", "256", "--output-len", "256", "--num-prompts", "1000"),
            {"requests_per_second": 34.14, "output_tokens_per_second": 8739.16, "prompt_tokens": 255648},
        ),
        (
            "serve",
            ("--num-prompts", "1000", "--request-rate", "inf", "--random-prefix-len", "512"),
            {"request_throughput": 42.15, "mean_ttft_ms": 9408.2, "completed": 1000, "duration": 23.73},
        ),
    ],
)
def test_a_run_is_streamed_parsed_and_recorded(tmp_path: Path, mode: str, args: tuple, expected: dict) -> None:
    history = tmp_path / "bench-history.jsonl"
    result = bench(history, *fake(mode, *args))
    assert result.returncode == 0, result.stderr
    assert f"running the {mode} benchmark" in result.stdout  # the child's own output, streamed through
    (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert entry["mode"] == mode and entry["model"] == "Qwen/Qwen3-8B" and entry["exit_code"] == 0
    assert entry["params"]["tensor_parallel_size"] == "2"
    for flag, value in zip(args[::2], args[1::2], strict=True):
        assert value in entry["params"].values(), flag
    for name, value in expected.items():
        assert entry["results"][name] == pytest.approx(value), name


def test_history_newest_first_with_the_change_against_the_same_parameters(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    args = ("--input-len", "256", "--output-len", "256", "--num-prompts", "1000")
    assert bench(history, *fake("throughput", *args)).returncode == 0
    assert bench(history, *fake("throughput", "--num-prompts", "10")).returncode == 0  # another parameter set
    assert bench(history, *fake("throughput", *args, "--scale", "1.1")).returncode == 0
    table = kvwatch("bench", "--history", "--history-file", str(history)).stdout.splitlines()
    assert len(table) == 4 and table[0].startswith("when")
    assert "requests_per_second 37.55" in table[1] and "+10.0%" in table[1]  # newest, against the first
    assert "num_prompts=10" in table[2] and "%" not in table[2]  # first of its parameter set
    assert "requests_per_second 34.14" in table[3]


def test_a_failing_benchmark_keeps_its_exit_status_and_is_recorded(tmp_path: Path) -> None:
    history = tmp_path / "h.jsonl"
    result = bench(history, *fake("latency", "--exit-code", "3"))
    assert result.returncode == 3
    assert json.loads(history.read_text())["exit_code"] == 3


def test_a_command_that_cannot_start_is_named(tmp_path: Path) -> None:
    result = bench(tmp_path / "h.jsonl", "/nonexistent/vllm", "bench", "latency")
    assert result.returncode == 2 and "cannot run /nonexistent/vllm" in result.stderr
    assert bench(tmp_path / "h.jsonl").returncode == 2  # nothing after --


def test_the_run_is_marked_in_grafana(tmp_path: Path) -> None:
    grafana = FakeGrafana()
    try:
        env = {**os.environ, "GRAFANA_TOKEN": TOKEN}
        result = bench(tmp_path / "h.jsonl", *fake("latency"), extra=("--grafana-url", grafana.url), env=env)
    finally:
        grafana.close()
    assert result.returncode == 0, result.stderr
    (call,) = [c for c in grafana.calls if c[:2] == ("POST", "/api/annotations")]
    body = call[2]
    assert body["tags"] == ["kvwatch", "bench", "latency"]
    assert "avg_latency_seconds 1.47528" in body["text"] and body["time"] > 1.7e12


def test_a_running_kvwatch_shows_the_last_run_of_each_parameter_set(tmp_path: Path) -> None:
    agent = Agent(tmp_path, "")
    agent.start()
    try:
        history = tmp_path / "state" / "bench-history.jsonl"
        for scale in ("1", "2"):
            assert bench(history, *fake("latency", "--batch-size", "8", "--scale", scale)).returncode == 0
        params = "batch_size=8,tensor_parallel_size=2"
        labels = {"benchmark": "latency", "model": "Qwen/Qwen3-8B", "params": params}
        value = wait_for(
            lambda: agent.value("kvwatch_bench_last_result", result="avg_latency_seconds", **labels),
            what="the recorded run on /metrics",
        )
        assert value == pytest.approx(2 * 1.475279240796808)  # the newer run
        assert agent.value("kvwatch_bench_last_run_timestamp_seconds", **labels) > 1.7e9
    finally:
        agent.kill()


def test_the_cache_numbers_of_the_run_are_recorded_from_the_running_kvwatch(tmp_path: Path) -> None:
    """The deltas of a real kvwatch's counters over the run (its server log here is written by the stand-in
    benchmark, as a served benchmark's requests would make vLLM and LMCache write it)."""
    log = tmp_path / "f.log"
    log.write_text(  # traffic before the run: not the run's
        "[2026-12-01 09:59:00,000] LMCache INFO: Reqid: cmpl-before, Total tokens 1000, LMCache hit tokens: 768, "
        "need to load: 768 (vllm_v1_adapter.py:1:lmcache.integration.vllm.x)\n"
    )
    agent = Agent(tmp_path, f'[[follow]]\nname = "f"\npaths = ["{log}"]\nstart_at = "beginning"\n').start()
    try:
        wait_for(lambda: agent.value("kvwatch_lmcache_lookups_total", server="f") == 1, what="the earlier lookup")
        before = {n: agent.value(f"kvwatch_lmcache_{n}_total", server="f") for n in ("lookup_tokens", "hit_tokens")}
        history = tmp_path / "bench-history.jsonl"
        command = fake("serve", "--server-log", str(log))
        result = bench(history, *command, extra=("--kvwatch-url", agent.url(""), "--server", "f"))
        assert result.returncode == 0, result.stderr
        after = {n: agent.value(f"kvwatch_lmcache_{n}_total", server="f") for n in ("lookup_tokens", "hit_tokens")}
        (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
        cache = entry["cache"]["f"]
        assert cache["lmcache_lookups"] == 3
        assert cache["lmcache_lookup_tokens"] == after["lookup_tokens"] - before["lookup_tokens"] == 1800
        assert cache["lmcache_hit_tokens"] == after["hit_tokens"] - before["hit_tokens"] == 1024
        assert cache["lmcache_hit_ratio"] == round(1024 / 1800, 4)
        assert (cache["kv_cache_usage_peak"], cache["prefix_cache_hit_rate"]) == (0.3, 0.4)
        assert "the cache during the run: LMCache 56.9% of 1,800 tok, prefix 40.0%" in result.stdout
    finally:
        agent.kill()
    shown = kvwatch("bench", "--history", "--history-file", str(history), timeout=60)
    assert "LMCache 56.9% of 1,800 tok, prefix 40.0%" in shown.stdout


def test_without_a_running_kvwatch_the_run_is_recorded_without_cache_numbers(tmp_path: Path) -> None:
    history = tmp_path / "bench-history.jsonl"
    result = bench(history, *fake("latency"), extra=("--kvwatch-url", "http://127.0.0.1:9"))
    assert result.returncode == 0, result.stderr
    assert "no cache numbers recorded" in result.stdout and "cannot reach kvwatch" in result.stdout
    (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert entry["cache"] == {} and entry["results"]["avg_latency_seconds"] > 0
