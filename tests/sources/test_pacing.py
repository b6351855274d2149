"""``agent.sources.pacing``: a trickle read at once, a flow in batches (files and journalctl's pipe alike)."""

from __future__ import annotations

import pytest

from agent.sources import pacing
from agent.sources.pacing import FlowPacer


def test_the_pause_follows_the_rate_bytes_come_at(monkeypatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    pacer = FlowPacer()

    def after(seconds: float, read: int) -> float:
        clock[0] += seconds
        return pacer.pause_after(read)

    assert after(0.0, 200) == pacing.BUSY_PAUSE  # the first line after a long quiet
    assert after(0.010, 300) == pacing.BUSY_PAUSE  # a trickle: 30 kB/s
    assert after(0.001, 300) == pacing.BUSY_PAUSE  # two lines a millisecond apart: no flow yet
    assert after(0.020, 300) == pacing.BUSY_PAUSE  # 900 bytes in 31 ms: still a trickle
    # A flow is read in batches of about FLOWING_BATCH bytes, 25 to 250 ms apart.
    assert after(0.004, 4000) == pacing.BUSY_PAUSE  # 1 MB/s, but judged over RATE_WINDOW
    assert after(0.022, 22_000) == pacing.MAX_FLOWING_PAUSE  # a flow: 1 MB/s, 256 KiB in 262 ms
    assert after(0.250, 250_000) == pacing.MAX_FLOWING_PAUSE
    assert after(0.250, 12_500) == pacing.MAX_FLOWING_PAUSE  # slower, 50 kB/s: still a flow
    assert after(0.050, 200_000) == pytest.approx(pacing.FLOWING_BATCH / 4e6)  # 4 MB/s: 66 ms
    assert after(0.050, 135_000) == pytest.approx(pacing.FLOWING_BATCH / 2.7e6)  # 32 busy servers: 97 ms
    assert after(0.030, 600_000) == pacing.MIN_FLOWING_PAUSE  # 20 MB/s
    assert after(0.500, 150) == pacing.BUSY_PAUSE  # quiet again
    assert after(0.010, 500) == pacing.BUSY_PAUSE
    assert after(0.020, 1000) == pacing.BUSY_PAUSE  # 50 kB/s does not start a flow
