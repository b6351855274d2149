"""Follow a systemd unit's journal records, or those journalctl matches pick, through ``journalctl --follow``.

Its output is kvwatch's own child's pipe (not a server's), read into the same
pipeline as a file; the JSON records are unwrapped by the parsers.  A following
journalctl writes each record as it comes, so the pipe is read as a file is
(:mod:`agent.sources.pacing`): a trickle at once, a flow in batches, the pipe
widened to hold one (journalctl waits while it is full; the server never does).
If journalctl exits, it is started again after a pause.  What it says on its
standard error is logged as it says it, not only when it exits: a following
journalctl that may not read the system journal (kvwatch's user in neither
``systemd-journal`` nor ``adm``) says so once and then follows nothing.

kvwatch keeps its own place: the cursor of the last record handed on (every
record carries ``__CURSOR``), saved with the source's numbers in one atomic
write (``journal-NAME.json`` in the state directory) about once a second and
at a stop, so a restarted kvwatch -- even after a SIGKILL -- resumes with
``--after-cursor`` and counters that count exactly the records before it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import subprocess
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path

from prometheus_client.core import Metric

from agent.config import FollowConfig
from agent.exposition import families
from agent.families import flag, gauge
from agent.periodic import Periodic
from agent.sources import Deliver, lower_thread_priority
from agent.sources.lines import LineSplitter
from agent.sources.pacing import paced_reads, widen_pipe
from agent.statedir import StateFile

log = logging.getLogger("kvwatch.journal")
RESTART_PAUSE = 5.0
SAVE_INTERVAL = 1.0  # seconds between saves of the cursor and numbers while records come
CURSOR = re.compile(r'"__CURSOR"\s*:\s*"([^"]+)"')
# journalctl --output-fields (systemd 236+): records of the message and what journalctl always adds
# (cursor, times, boot id) rather than every field the journal keeps: a third of the bytes to
# decode (12.5 against 5.3 us a record here).
OUTPUT_FIELDS_SINCE = 236
_VERSION = re.compile(r"systemd (\d+)")
# Lines of journalctl's standard error logged as it says them per run (a damaged journal may name every
# file it skips), and how many of the last of the others the line that says it exited adds.
STDERR_LOGGED = 10
STDERR_KEPT = 3


# What journalctl says to a user that may read none of the system journal (systemd's own words): it then
# shows that user only the user's own journal.
_UNREADABLE = ("not seeing messages from other users", "insufficient permissions")


def program(default: str = "journalctl") -> str:
    """The journalctl kvwatch runs (``KVWATCH_JOURNALCTL`` names another, a test's stand-in)."""
    return os.environ.get("KVWATCH_JOURNALCTL", default)


def _selection(follow: FollowConfig) -> list[str]:
    """journalctl's arguments that pick a follow's records: its unit, its matches."""
    return [*((f"--unit={follow.journal_unit}",) if follow.journal_unit else ()), *follow.journal_match]


# The suffixes of systemd's unit types: a unit named without one is a service, as journalctl --unit reads it.
_UNIT_TYPES = (".service", ".socket", ".target", ".mount", ".automount", ".swap", ".path", ".timer", ".slice", ".scope")


def followed_unit(follow: FollowConfig) -> str | None:
    """The unit (or the glob of units) a ``journal_unit`` follow reads, named as systemd names it in its lines."""
    unit = follow.journal_unit
    if not unit:
        return None
    return unit if unit.endswith(_UNIT_TYPES) else unit + ".service"


def cannot_read(follow: FollowConfig) -> str | None:
    """What journalctl says when it would show this user nothing of the follow's journal records; None where
    it says nothing of the kind (or cannot be asked)."""
    try:
        done = subprocess.run(
            [program(), *_selection(follow), "--lines=0", "--no-pager"],
            capture_output=True,
            text=True,
            timeout=10,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    said = " ".join(done.stderr.split())
    return said if any(words in said for words in _UNREADABLE) else None


def _takes_output_fields(journalctl: str) -> bool:
    """Whether ``journalctl --version`` names systemd 236 or later (False when it cannot tell)."""
    try:
        shown = subprocess.run([journalctl, "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return False
    m = _VERSION.match(shown)  # "systemd 252 (252.38-1~deb12u1)"
    return m is not None and int(m.group(1)) >= OUTPUT_FIELDS_SINCE


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
        save_numbers: Callable[[], dict] | None = None,
        restore_numbers: Callable[[dict], None] | None = None,
    ) -> None:
        self.follow = follow
        self.checkpoint_file = state_dir / f"journal-{follow.name}.json"
        self._checkpoint = StateFile.at(self.checkpoint_file, "the journal position")
        self.max_line = max_line
        self.skipped = skipped
        self.deliver = deliver
        self.journalctl = program(journalctl)
        self.nice = nice
        self.save_numbers = save_numbers
        self.process: subprocess.Popen | None = None
        self.running = False
        self.cursor = self._resume(state_dir, restore_numbers)
        self._saved_cursor = self.cursor
        self._saved_at = 0.0
        # Held while lines are handed on and their cursor noted, and while the two are saved.
        self._delivering = threading.Lock()
        self._loop = Periodic(f"kvwatch-journal {follow.name}", self._turn)
        self._output_fields: bool | None = None  # whether journalctl takes --output-fields; asked once
        # Why journalctl last failed to run or follow, as said; until it hands on a record, the same failure
        # (and what journalctl says on its standard error) is not said again every RESTART_PAUSE.
        self._failure_said: str | None = None

    def _resume(self, state_dir: Path, restore_numbers: Callable[[dict], None] | None) -> str | None:
        """The cursor to go on after, with the numbers saved beside it given back."""
        try:
            saved = json.loads(self.checkpoint_file.read_text(encoding="utf-8"))
        except FileNotFoundError:
            # journalctl's own cursor file, as kvwatch 0.1 kept it: its place, without numbers
            legacy = state_dir / f"journal-{self.follow.name}.cursor"
            with contextlib.suppress(OSError):
                return legacy.read_text(encoding="utf-8").strip() or None
            return None
        except (OSError, ValueError) as exc:
            log.warning("ignoring the unreadable journal checkpoint %s: %s", self.checkpoint_file, exc)
            return None
        cursor = saved.get("cursor") if isinstance(saved, dict) else None
        if not isinstance(cursor, str) or not cursor:
            return None
        numbers = saved.get("numbers")
        if restore_numbers is not None and isinstance(numbers, dict):
            restore_numbers(numbers)
        return cursor

    def command(self) -> list[str]:
        argv = [self.journalctl, "--follow", "--output=json", *_selection(self.follow)]
        if self._output_fields is None:
            self._output_fields = _takes_output_fields(self.journalctl)
        if self._output_fields:
            argv.append("--output-fields=MESSAGE")
        if self.cursor:
            argv.append(f"--after-cursor={self.cursor}")
        else:
            argv.append("--lines=0" if self.follow.start_at == "end" else "--lines=all")
        return argv

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()
        process = self.process
        if process is not None and process.poll() is None:
            process.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)
        self._loop.stop(wait=5)
        self.save()

    def _delivered(self, lines: list[str | None]) -> None:
        """Hand lines on, note the cursor of the last record among them, save now and then."""
        if self._failure_said is not None:
            log.info("journalctl for %s follows again", self.follow.journal)
            self._failure_said = None
        with self._delivering:
            self.deliver(self.follow.name, [(lines, "")])
            for line in reversed(lines):
                if line is not None:
                    found = CURSOR.search(line)
                    if found is not None:
                        self.cursor = found.group(1)
                        break
        if time.monotonic() - self._saved_at >= SAVE_INTERVAL:
            self.save()

    def save(self) -> None:
        """Write the cursor and the numbers counted up to it, together: never while lines are handed on,
        whose numbers would then be saved with the cursor before them."""
        with self._delivering:
            self._saved_at = time.monotonic()
            if self.cursor is None or self.cursor == self._saved_cursor:
                return  # nothing handed on since the last save
            numbers = self.save_numbers() if self.save_numbers is not None else None
            if self._checkpoint.save(json.dumps({"cursor": self.cursor, "numbers": numbers})):
                self._saved_cursor = self.cursor

    def retry_save(self) -> None:
        """A save that failed, tried again at the next interval (from another thread: a quiet journal hands
        on nothing that would): a freed disk then holds the place read before it filled."""
        if self._checkpoint.failing is not None and time.monotonic() - self._saved_at >= SAVE_INTERVAL:
            self.save()

    def _turn(self) -> float:
        """Run journalctl and read it to its end; returns the pause before it is started again."""
        lower_thread_priority(self.nice)  # journalctl, started from here, inherits it too
        try:
            self.process = subprocess.Popen(
                self.command(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
            )
        except OSError as exc:
            return self._failed(f"cannot run journalctl for {self.follow.journal}: {exc.strerror or exc}")
        self.running = True
        last: deque[str] = deque(maxlen=STDERR_KEPT)
        listener = threading.Thread(
            target=self._report_stderr, args=(self.process, last), name=f"kvwatch-journal-stderr {self.follow.name}"
        )
        listener.start()
        assert self.process.stdout is not None
        self._read(self.process.stdout.fileno())
        self.running = False
        code = self.process.wait()
        listener.join(timeout=5)
        if not self._loop.stopping.is_set():
            said = f": {' / '.join(last)}" if last else ""
            return self._failed(f"journalctl for {self.follow.journal} exited with {code}{said}")
        return RESTART_PAUSE

    def _failed(self, why: str) -> float:
        """Say why journalctl does not follow (a failure said before, not again); the pause before the next try."""
        if why != self._failure_said:
            log.warning("%s; starting it again every %.0f s (said again if that changes)", why, RESTART_PAUSE)
            self._failure_said = why
        return RESTART_PAUSE

    def _report_stderr(self, process: subprocess.Popen, last: deque[str]) -> None:
        """Log what journalctl says on its standard error while it runs (its first lines, unless a failure to
        follow was said and nothing followed since); its last lines are kept in ``last`` for the line that says
        it exited."""
        assert process.stderr is not None
        logged = 0
        for raw in process.stderr:
            text = raw.decode("utf-8", "replace").strip()
            if not text:
                continue
            last.append(text)
            if logged < STDERR_LOGGED and self._failure_said is None and not self._loop.stopping.is_set():
                log.warning("journalctl for %s: %s", self.follow.journal, text)
                logged += 1

    def _read(self, fd: int) -> None:
        """Read journalctl's output to its end, paced: a trickle at once, a flow in batches."""
        splitter = LineSplitter(self.max_line, self.skipped)
        for chunk in paced_reads(partial(os.read, fd), widen_pipe(fd), self._loop.stopping.wait):
            lines = splitter.feed(chunk)
            if lines:
                self._delivered(lines)

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [([self.follow.name], self)])


SPECS = (
    gauge(
        "kvwatch_journal_up",
        "1 while journalctl follows the unit's journal.",
        flag(lambda j: j.running),
        doc="1 while `journalctl --follow` runs for a `journal_unit` or `journal_match` follow",
    ),
)
