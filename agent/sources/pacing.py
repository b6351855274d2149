"""How often a source reads while lines keep coming: at once for a trickle, in batches for a flow.

Each wake-up of a reading thread costs about what a hundred lines do (after a
pause the parsing runs on cold CPU caches), so at a busy server's rate the
number of batches, not the lines, sets the cost; the same holds for a flow
over many files, each bringing a line or two per cycle, where polling the
files (a few system calls and a hand-over each) is the cost.  A trickle (a
line now and then) is read 2 ms after it comes.  A flow (once bytes come
faster than FLOWING_RATE a second, until they come slower than QUIET_RATE) is
read in batches of about FLOWING_BATCH bytes, at least MIN_ and at most
MAX_FLOWING_PAUSE (mtail's poll interval) apart; when the flow is fast the
batches are large anyway and come sooner.  Files (:mod:`agent.sources.tail`),
journalctl's pipe (:mod:`agent.sources.journal`) and a pipe ``kvwatch replay -``
reads (:mod:`agent.sources.lines`) are paced alike; a pipe is widened to hold a
batch, so that its writer need not wait while kvwatch does.
"""

from __future__ import annotations

import contextlib
import fcntl
import time
from collections.abc import Callable, Iterator

BUSY_PAUSE = 0.002
FLOWING_BATCH = 256 << 10
MIN_FLOWING_PAUSE = 0.025
MAX_FLOWING_PAUSE = 0.25
FLOWING_RATE = 64 << 10
QUIET_RATE = 16 << 10
# The rate is judged over this many seconds at least: two lines read a millisecond apart are no flow
# (a flow's pause after them would keep the next line of a trickle waiting).
RATE_WINDOW = 0.025
# A batch is read in pieces of at most this: each piece's bytes, text and lines are freed before the
# next is read, and the parsers' code stays warm from one piece to the next.
READ_BLOCK = 128 << 10
# What a pipe read in batches is made to hold (Linux's default ceiling for a user,
# /proc/sys/fs/pipe-max-size): a flow's batch, at up to 4 MB a second.
PIPE_BYTES = 1 << 20
DEFAULT_PIPE_BYTES = 64 << 10  # Linux's default


def widen_pipe(fd: int) -> int:
    """Make the pipe ``fd`` reads hold PIPE_BYTES where the system allows; returns what it holds."""
    with contextlib.suppress(OSError):  # above pipe-max-size: the default, read in more wake-ups
        return fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    try:
        return fcntl.fcntl(fd, fcntl.F_GETPIPE_SZ)
    except OSError:
        return DEFAULT_PIPE_BYTES  # cannot tell (no pipe: a terminal)


class FlowPacer:
    """The pause after each read, from the rate at which bytes have come."""

    def __init__(self) -> None:
        # The bytes read since _window_began: the rate is judged over RATE_WINDOW at least.
        self._window_began = 0.0
        self._window_bytes = 0
        self._rate = 0.0
        self._flowing = False

    def pause_after(self, read: int, room: int | None = None) -> float:
        """Seconds to wait before reading again, ``read`` bytes having just been read; with ``room``, no
        longer than the flow takes to bring that many bytes (a pipe that cannot hold a batch: its writer
        would wait once it is full)."""
        now = time.monotonic()
        self._window_bytes += read
        elapsed = now - self._window_began
        if elapsed >= RATE_WINDOW:
            self._rate = self._window_bytes / elapsed
            self._flowing = self._rate > (QUIET_RATE if self._flowing else FLOWING_RATE)
            self._window_began, self._window_bytes = now, 0
        if not self._flowing:
            return BUSY_PAUSE
        pause = min(MAX_FLOWING_PAUSE, max(MIN_FLOWING_PAUSE, FLOWING_BATCH / self._rate))
        return pause if room is None else min(pause, room / self._rate)


def paced_reads(read: Callable[[int], bytes], capacity: int, wait: Callable[[float], object]) -> Iterator[bytes]:
    """What ``read`` gives, in pieces of READ_BLOCK at most, until it gives nothing: a pipe's bytes as they
    come.  A read that took all that had come ends a batch, after which ``wait`` the pacer's pause, as long
    as half of the pipe's ``capacity`` takes to fill, and none after a batch that filled that much: the
    pipe's writer never waits for us while it has room."""
    pacer = FlowPacer()
    batch = 0
    while chunk := read(READ_BLOCK):
        yield chunk  # its lines are read before the pause
        batch += len(chunk)
        if len(chunk) < READ_BLOCK:  # all that had come: what comes next is the next batch
            pause = pacer.pause_after(batch, room=capacity // 2)
            if batch < capacity // 2:  # else the pipe may have filled: no waiting
                wait(pause)
            batch = 0
