"""Follow a systemd unit's journal through ``journalctl --follow -o json``.

journalctl keeps its place in a cursor file in the state directory, so a
restarted kvwatch goes on after the last entry it was given.  Its output is
kvwatch's own child's pipe (not a server's), read line by line into the same
pipeline as a file; the JSON records are unwrapped by the parsers.  If
journalctl exits, it is started again after a pause.
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

from prometheus_client.core import Metric

from agent.config import FollowConfig
from agent.families import families, flag, gauge
from agent.periodic import Periodic
from agent.sources import Deliver, lower_thread_priority
from agent.sources.lines import LineSplitter

log = logging.getLogger("kvwatch.journal")
RESTART_PAUSE = 5.0


class JournalSource:
    """One ``[[follow]]`` of a systemd unit: journalctl run (and run again) in a thread of its own."""

    def __init__(
        self,
        follow: FollowConfig,
        state_dir: Path,
        max_line: int,
        skipped: dict[str, int],
        deliver: Deliver,
        journalctl: str = "journalctl",
        nice: int = 0,
    ) -> None:
        self.follow = follow
        self.cursor_file = state_dir / f"journal-{follow.name}.cursor"
        self.max_line = max_line
        self.skipped = skipped
        self.deliver = deliver
        self.journalctl = os.environ.get("KVWATCH_JOURNALCTL", journalctl)
        self.nice = nice
        self.process: subprocess.Popen | None = None
        self.running = False
        self._loop = Periodic(f"kvwatch-journal {follow.name}", self._turn)

    def command(self) -> list[str]:
        argv = [self.journalctl, "--follow", "--output=json", f"--unit={self.follow.journal_unit}"]
        argv.append(f"--cursor-file={self.cursor_file}")
        if not self.cursor_file.exists():
            argv.append("--lines=0" if self.follow.start_at == "end" else "--lines=all")
        return argv

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()  # journalctl writes its cursor file as it exits
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._loop.stop(wait=5)

    def _turn(self) -> float:
        """Run journalctl and read it to its end; returns the pause before it is started again."""
        lower_thread_priority(self.nice)  # journalctl, started from here, inherits it too
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            log.warning("cannot run journalctl for %s: %s", self.follow.journal_unit, exc.strerror or exc)
            return RESTART_PAUSE
        self.running = True
        splitter = LineSplitter(self.max_line, self.skipped)
        assert self.process.stdout is not None
        for chunk in iter(lambda: self.process.stdout.read1(1 << 16), b""):
            lines = splitter.feed(chunk)
            if lines:
                self.deliver(self.follow.name, lines)
        self.running = False
        code = self.process.wait()
        if not self._loop.stopping.is_set():
            error = (
                (self.process.stderr.read() or b"").decode("utf-8", "replace").strip() if self.process.stderr else ""
            )
            log.warning(
                "journalctl for %s exited with %s%s; starting it again in %.0f s",
                self.follow.journal_unit,
                code,
                f": {error}" if error else "",
                RESTART_PAUSE,
            )
        return RESTART_PAUSE

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [([self.follow.name], self)])


SPECS = (
    gauge(
        "kvwatch_journal_up",
        "1 while journalctl follows the unit's journal.",
        flag(lambda j: j.running),
        doc="1 while `journalctl --follow` runs for a `journal_unit` follow",
    ),
)
