"""``agent.sources.pacing``: a trickle read at once, a flow in batches (files, journalctl's pipe and a pipe
``kvwatch replay -`` reads alike)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time

import pytest

from agent.sources import pacing
from agent.sources.lines import LineReader
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


def test_the_pause_ends_before_a_pipe_too_small_for_a_batch_fills(monkeypatch) -> None:
    """A pipe that could not be widened (the user's pipes already hold pipe-user-pages-soft): the pause
    lasts no longer than the flow takes to fill the room left, so the writer never waits for kvwatch."""
    clock = [1000.0]
    monkeypatch.setattr(pacing.time, "monotonic", lambda: clock[0])
    pacer = FlowPacer()
    for read in (200, 50_000, 250_000):  # 1 MB/s
        clock[0] += read / 1e6
        pause = pacer.pause_after(read, room=32 << 10)
    assert pause == pytest.approx((32 << 10) / 1e6)  # 33 ms, not 250
    clock[0] += 0.25
    assert pacer.pause_after(250_000, room=pacing.PIPE_BYTES // 2) == pacing.MAX_FLOWING_PAUSE


def test_a_writer_to_a_pipe_that_could_not_be_widened_never_waits_for_the_pauses(tmp_path) -> None:
    """A server writing its log down a pipe kvwatch reads, 1 MB a second in 200-byte lines for 1.5 s, the
    pipe left at Linux's default 64 KiB: its writes never wait out a pause (before the pause took the
    room into account, they waited 2.9 s in all here, up to 250 ms a write)."""
    read_end, write_end = os.pipe()
    fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, pacing.DEFAULT_PIPE_BYTES)
    report = tmp_path / "blocked"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "line, blocked, sent = b'x' * 199 + b'\\n', 0.0, 0\n"
            "began = time.monotonic()\n"
            "while sent < 7500:\n"
            "    while sent < min(7500, int((time.monotonic() - began) * 5000)):\n"
            "        before = time.monotonic()\n"
            "        os.write(1, line)\n"
            "        blocked += time.monotonic() - before\n"
            "        sent += 1\n"
            "    time.sleep(0.001)\n"
            "open(sys.argv[1], 'w').write(str(blocked))\n",
            str(report),
        ],
        stdout=write_end,
    )
    os.close(write_end)
    read = 0
    for chunk in pacing.paced_reads(lambda size: os.read(read_end, size), pacing.DEFAULT_PIPE_BYTES, time.sleep):
        read += len(chunk)
    os.close(read_end)
    assert writer.wait(timeout=60) == 0
    assert read == 7500 * 200
    assert float(report.read_text()) < 0.5


def test_a_flow_down_a_pipe_is_read_in_batches_and_the_pipe_widened_to_hold_one() -> None:
    """``kubectl logs -f pod | kvwatch replay -``: a writer that flushes every line, 5,000 a second for a
    second.  Every line arrives, in order, in a few dozen batches rather than one per few lines."""
    read_end, write_end = os.pipe()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import os, sys, time\n"
            "began, sent = time.monotonic(), 0\n"
            "while sent < 5000:\n"
            "    while sent < min(5000, int((time.monotonic() - began) * 5000)):\n"
            "        sent += 1\n"
            "        os.write(1, f'line {sent} '.encode() + b'x' * 180 + b'\\n')\n"
            "    time.sleep(0.001)\n",
        ],
        stdout=write_end,
    )
    os.close(write_end)
    batches: list[int] = []
    lines: list[str | None] = []
    with os.fdopen(read_end, "rb") as stream:
        for batch in LineReader(stream, live=True).batches():
            if not batches:
                capacity = fcntl.fcntl(stream.fileno(), fcntl.F_GETPIPE_SZ)
            batches.append(len(batch))
            lines.extend(batch)
    assert writer.wait(timeout=60) == 0
    assert [line.split(" ", 2)[:2] for line in lines if line] == [["line", str(n)] for n in range(1, 5001)]
    # Read as they came, it took 914 batches here; paced, 21.
    assert len(batches) < 100, len(batches)
    assert capacity == (pacing.PIPE_BYTES if _pipes_can_hold(pacing.PIPE_BYTES) else pacing.DEFAULT_PIPE_BYTES)


def _pipes_can_hold(size: int) -> bool:
    """Whether this user may make a new pipe hold ``size`` bytes (``pipe-max-size``, and the pages the
    user's pipes already hold against ``pipe-user-pages-soft``)."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(read_end, fcntl.F_SETPIPE_SZ, size)
        return True
    except OSError:
        return False
    finally:
        os.close(read_end)
        os.close(write_end)
