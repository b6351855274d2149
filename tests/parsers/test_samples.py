"""Whole real logs through the parser and stats, checked against independent counts of the raw text.

The witnesses are plain substring counts and simple regexes over the file (the
samples hold no echoed prompts), and for the LMCache run vLLM's own /metrics
scraped at the end of that run.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.sinks.stats import ServerStats
from parsers import Clock, LogStream
from tests.support.lines import SAMPLES

LOGS = sorted(p.name for p in SAMPLES.glob("*.log"))


def replay(path: Path) -> ServerStats:
    stats = ServerStats(path.stem, Clock(UTC, datetime(2026, 11, 30, tzinfo=UTC)))
    stream = LogStream()
    with path.open(encoding="utf-8") as f:
        for line in f:
            for event in stream.feed(line.rstrip("\n")):
                stats.observe(event)
    return stats


def native_metric(name: str) -> float:
    text = (SAMPLES / "vllm-0.32.0-cpu-lmcache-native-metrics.txt").read_text()
    return sum(float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M))


@pytest.mark.parametrize("name", LOGS)
def test_counts_match_the_raw_text(name: str) -> None:
    text = (SAMPLES / name).read_text(encoding="utf-8")
    stats = replay(SAMPLES / name)
    assert stats.lookups == text.count("LMCache hit tokens:")
    assert stats.hit_tokens == sum(int(n) for n in re.findall(r"LMCache hit tokens: (\d+)", text))
    assert stats.lookup_tokens == sum(int(n) for n in re.findall(r"Total tokens (\d+)", text))
    # The in-process connector's "[req_id=…] Stored N out of M", the MP server's "Stored N tokens in S seconds"
    stored = re.findall(r"\bStored (\d+) (?:out of|tokens in)", text)
    assert stats.stores == len(stored)
    assert stats.stored_tokens == sum(int(n) for n in stored)
    # "Retrieved N out of M required tokens", the MP server's "Retrieved N tokens in S seconds"
    retrieved = re.findall(r"\bRetrieved (\d+) (?:out of|tokens in)", text)
    assert stats.retrieves == len(retrieved)
    assert stats.retrieved_tokens == sum(int(n) for n in retrieved)
    assert stats.added == text.count("] Added request ")
    assert stats.received == text.count("] Received request ")
    assert sum(stats.http.values()) == len(re.findall(r'^INFO: +\S+ - "', text, re.M))
    assert sum(s.lines for s in stats.engines.values()) == text.count("Avg prompt throughput")
    assert sum(stats.errors.values()) == 0
    assert stats.suspicious == {}


def test_lmcache_run_agrees_with_vllms_own_metrics() -> None:
    stats = replay(SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6.log")
    # Every request was looked up once: LMCache's total tokens are vLLM's prompt tokens.
    assert stats.lookup_tokens == native_metric("vllm:prompt_tokens_total") == 2465
    # vLLM counts as external hits exactly what LMCache said it would load.
    assert stats.need_to_load_tokens == native_metric("vllm:external_prefix_cache_hits_total") == 0
    assert stats.added == native_metric("vllm:request_success_total") == 5
    assert (stats.version, stats.lmcache_info) == ("0.32.0", ("0.5.6-g3e11e108", "0.32.0"))
    assert stats.hit_tokens == 4 * 256  # hits from the second identical request on
    assert (stats.starts, stats.ready, stats.shutdowns) == (1, 0, 1)


def test_degraded_lmcache_is_visible() -> None:
    stats = replay(SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6-degraded.log")
    assert stats.lmcache_degraded == 1
    assert stats.lookup_timeouts == 5
    assert stats.hit_tokens == 0


def test_no_prefix_caching_run_loads_from_lmcache() -> None:
    stats = replay(SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6-no-prefix-caching.log")
    assert stats.need_to_load_tokens == stats.retrieved_tokens == 4 * 256
    gauges = stats.engines["0"].gauges
    assert gauges["external_prefix_cache_hit_rate"] == 0.415
    assert "prefix_cache_hit_rate" not in gauges  # the part is absent when prefix caching is off


def test_seed_benchmark_figures() -> None:
    stats = replay(SAMPLES / "seed-rocm-mi325x.log")
    bench = {
        (kind, dict(labels).get("statistic"), dict(labels).get("tokens")): v
        for (kind, labels), v in stats.bench.items()
    }
    assert bench[("requests_per_second", None, None)] == 34.14
    assert bench[("tokens_per_second", None, "output")] == 8739.16
    assert bench[("tokens", None, "prompt")] == 255648
    assert bench[("latency_seconds", "p99", None)] == pytest.approx(1.5062954947334948)
    assert stats.need_to_load_tokens == 0  # the seed's -240 is not a load


def test_lmcache_mp_mode_the_server_and_vllm_logs_read_as_one() -> None:
    """LMCache's multiprocess server and vLLM's MP connector: the two logs of one run, as kvwatch reads them."""
    server = (SAMPLES / "lmcache-0.5.6-mp-server.log").read_text(encoding="utf-8")
    vllm = (SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log").read_text(encoding="utf-8")
    stats = replay(SAMPLES / "lmcache-0.5.6-mp-server.log")
    prefetches = re.findall(r"Prefetch request completed \(L1\+L2\): (\d+)/(\d+) retained keys \((\d+) L1", server)
    assert stats.prefetches == len(prefetches) == 2
    assert stats.prefetch_hit_keys == {"l1": sum(int(p[2]) for p in prefetches), "l2": 0}
    assert stats.prefetch_requested_keys == sum(int(p[1]) for p in prefetches)
    vllm_stats = replay(SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log")
    lookups = sum(int(n) for n in re.findall(r"LMCache MP lookup count=(\d+)", vllm))
    assert vllm_stats.kv_transfer.totals[("lookups", "lookup")] == lookups == 3
    assert vllm_stats.suspicious == {} and stats.suspicious == {}


def test_sleep_mode_run_follows_the_engine_asleep_paused_and_awake() -> None:
    """vLLM's dev routes on a real run: ``/sleep?level=1``, ``/wake_up?tags=weights``, ``/wake_up``,
    ``/sleep?level=2``, ``/wake_up``, ``/pause``, ``/resume``, ``/sleep?level=1``, then SIGTERM.  What vLLM
    answered each call (its own witness of the state) is what the stats must say after that call's lines."""
    path = SAMPLES / "vllm-0.32.0-cpu-sleep.log"
    text = path.read_text(encoding="utf-8")
    # (the last line of a call, as vLLM logged it) -> (asleep, paused) vLLM reported after it
    answers = {
        "It took 0.000229 seconds to fall asleep.": (True, True),  # {"status":"sleeping","level":1}
        "It took 0.000989 seconds to wake up tags ['weights'].": (True, True),  # {"status":"sleeping","tags":[..]}
        "04:05:17 [scheduler.py:2756] setting pause state to UNPAUSED": (False, False),  # {"status":"awake"}
        "It took 0.000266 seconds to fall asleep.": (True, True),
        "04:05:20 [scheduler.py:2756] setting pause state to UNPAUSED": (False, False),
        "04:05:20 [scheduler.py:2756] setting pause state to PAUSED_NEW": (False, True),  # {"status":"paused"}
        "04:05:22 [scheduler.py:2756] setting pause state to UNPAUSED": (False, False),  # {"status":"resumed"}
        "It took 0.000345 seconds to fall asleep.": (True, True),
    }
    stats = ServerStats(path.stem, Clock(UTC, datetime(2026, 12, 4, tzinfo=UTC)))
    stream = LogStream()
    seen = []
    for line in text.splitlines():
        for event in stream.feed(line):
            stats.observe(event)
        for end, (asleep, paused) in answers.items():
            if line.endswith(end):
                engine = stats.engines["0"]
                assert (bool(engine.asleep), engine.paused) == (asleep, paused), line
                seen.append(end)
    assert seen == list(answers)
    engine = stats.engines["0"]
    falls = [float(s) for s in re.findall(r"It took ([\d.]+) seconds to fall asleep", text)]
    wakes = [float(s) for s in re.findall(r"It took ([\d.]+) seconds to wake up", text)]
    assert engine.sleep_transitions == {"sleep": len(falls), "wake_up": len(wakes)} == {"sleep": 3, "wake_up": 3}
    assert engine.sleep_transition_seconds == pytest.approx({"sleep": sum(falls), "wake_up": sum(wakes)})
    # Stopped while asleep: the processes are gone, nothing is asleep any more.
    assert stats.state == "stopped" and engine.asleep == [] and engine.paused is False
