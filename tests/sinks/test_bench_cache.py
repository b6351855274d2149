"""``agent.sinks.bench_cache``: the cache numbers of a benchmark's window, from readings of a running kvwatch."""

from __future__ import annotations

import time

from agent.sinks import bench_cache
from agent.sinks.bench_cache import CacheWindow
from agent.sinks.status import ServerStatus, Snapshot
from agent.sources.pacing import MAX_FLOWING_PAUSE


class Readings:
    """A kvwatch read by the window: its LMCache numbers grow at every reading, and each reading's time is kept."""

    def __init__(self) -> None:
        self.times: list[float] = []

    def __call__(self) -> Snapshot:
        self.times.append(time.monotonic())
        n = len(self.times)
        status = ServerStatus("gpu0", lmcache_lookups=n, lmcache_lookup_tokens=1000 * n, lmcache_hit_tokens=500 * n)
        status.kv_cache_usage = 0.1 * n
        return Snapshot({"gpu0": status})


def test_the_last_reading_waits_for_the_lines_the_run_ended_with() -> None:
    """A busy server's lines are read in batches up to MAX_FLOWING_PAUSE apart: the reading after the run comes
    later than that, so the lines written as the benchmark ended are counted in its window."""
    readings = Readings()
    window = CacheWindow(readings, "gpu0")
    window.start()
    ended = time.monotonic()
    cache = window.stop()
    assert readings.times[-1] - ended >= bench_cache.SETTLE_SECONDS > MAX_FLOWING_PAUSE
    assert len(readings.times) == 2  # before and after: the run was shorter than a sampling interval
    assert cache == {
        "gpu0": {
            "lmcache_lookups": 1,
            "lmcache_lookup_tokens": 1000,
            "lmcache_hit_tokens": 500,
            "lmcache_hit_ratio": 0.5,
            "prefix_cache_hit_rate": None,
            "external_prefix_cache_hit_rate": None,
            "preemptions": 0.0,
            "kv_cache_usage_peak": 0.2,
        }
    }


def test_a_kvwatch_that_cannot_be_read_leaves_the_run_without_numbers_and_without_waiting() -> None:
    def unreachable() -> Snapshot:
        raise ConnectionRefusedError("connection refused")

    window = CacheWindow(unreachable)
    window.start()
    began = time.monotonic()
    assert window.stop() == {}
    assert time.monotonic() - began < bench_cache.SETTLE_SECONDS
    assert window.error == "connection refused"
