"""Files kvwatch keeps in its state directory (read positions, server records): replaced whole.

A file is written beside its final name and renamed over it, so a kill at any
moment leaves either the old content or the new, never a half-written file.

``kvwatch run`` holds the directory (:func:`hold`) for as long as it runs: a
second one on it stops at its start.

A write that fails (a full disk, a directory made read-only) is retried at the
next save; the failure is logged once, and again only when its reason changes,
its end too (read positions are saved every second: a full disk must not fill
the journal with a warning a second), and it is counted on /metrics
(``STATE_SPECS``).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import logging
import os
import threading
import weakref
from collections.abc import Iterable
from pathlib import Path
from typing import ClassVar

from agent.exposition import families
from agent.families import counter, gauge

log = logging.getLogger("kvwatch.state")


# The file that names the pid of the ``kvwatch run`` holding the state directory (see :func:`hold`).
PID_FILE = "kvwatch.pid"
# What a file system that cannot lock a directory answers (some network ones).
_NO_LOCKS = (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EBADF)


class StateDirInUse(Exception):
    """Another process holds the state directory."""

    def __init__(self, directory: Path, holder: int | None) -> None:
        super().__init__(f"{directory} is in use by another kvwatch{f' (pid {holder})' if holder else ''}")


class StateDirHold:
    """The lock a :func:`hold` took: kept until :meth:`close` or the process's end."""

    def __init__(self, fd: int | None) -> None:
        self._fd = fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def hold(directory: Path) -> StateDirHold:
    """Lock ``directory`` for this process, or raise :class:`StateDirInUse` naming the pid that has it.

    Two kvwatch on one state directory would each adopt the other's servers (and restart or stop them) and
    write over each other's read positions.  The lock is the kernel's, on the directory itself (``flock``):
    it goes with the process however it ends, a SIGKILL too; the servers kvwatch starts, which outlive it,
    never hold it (the descriptor is not inherited); and it is taken also where kvwatch may not write the
    directory (its files' writes then fail and are counted, as ever).  :data:`PID_FILE` names the holder
    where it can be written.  A directory that cannot be locked (a file system without locks, one this user
    may write but not list) is used with a warning, unlocked."""
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    except PermissionError as exc:  # a directory this user may enter and write but not list
        return _unlocked(directory, exc)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise StateDirInUse(directory, _holder(directory)) from None
    except OSError as exc:
        os.close(fd)
        if exc.errno not in _NO_LOCKS:
            raise
        return _unlocked(directory, exc)
    with contextlib.suppress(OSError):
        replace_file(directory / PID_FILE, f"{os.getpid()}\n")
    return StateDirHold(fd)


def _unlocked(directory: Path, exc: OSError) -> StateDirHold:
    log.warning("%s cannot be locked (%s): nothing stops a second kvwatch from using it", directory, exc.strerror)
    return StateDirHold(None)


def _holder(directory: Path) -> int | None:
    """The pid :data:`PID_FILE` names, where that process runs (a holder that could not write the file
    leaves an earlier one's pid there)."""
    try:
        pid = int((directory / PID_FILE).read_text(encoding="utf-8")[:32])
        if pid <= 0:  # no process's: 0 and -1 would ask of a group, or of every process
            return None
        os.kill(pid, 0)
    except PermissionError:  # another user's: it runs
        return pid
    except (OSError, ValueError):
        return None
    return pid


def replace_file(path: str | Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically; raises ``OSError`` (and leaves no temporary file)."""
    tmp = f"{path}.tmp"
    try:
        with open(tmp, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(tmp)  # a full disk leaves a part-written one
        raise


class StateFile:
    """One file of the state directory: ``save`` replaces it, and keeps count of the writes that failed.

    Made with :meth:`at`: the owners of one path (a server's record before and after a reload) share
    one object, so /metrics has one series per path and its count goes on."""

    _live: ClassVar[weakref.WeakValueDictionary[str, StateFile]] = weakref.WeakValueDictionary()
    _live_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(self, path: str, what: str) -> None:
        self.path = path
        self.what = what  # for the log: "read positions", "the journal position", ...
        self.failures = 0
        self.failing: str | None = None  # why the last write failed; None once one succeeds

    @classmethod
    def at(cls, path: str | Path, what: str) -> StateFile:
        """The state file at ``path``: the one in use there, or a new one."""
        with cls._live_lock:
            file = cls._live.get(str(path))
            if file is None:
                file = cls._live[str(path)] = cls(str(path), what)
            return file

    def save(self, text: str) -> bool:
        """Replace the file with ``text``; False (logged, counted) when it cannot be written."""
        try:
            replace_file(self.path, text)
        except OSError as exc:
            self.failures += 1
            reason = exc.strerror or str(exc) or exc.__class__.__name__
            if reason != self.failing:
                log.warning("cannot save %s to %s: %s (tried again at each save)", self.what, self.path, reason)
            self.failing = reason
            return False
        if self.failing is not None:
            log.info("%s saved to %s again", self.what, self.path)
            self.failing = None
        return True

    @classmethod
    def live(cls) -> list[StateFile]:
        """The state files in use, for /metrics."""
        with cls._live_lock:
            return [file for _path, file in sorted(cls._live.items(), key=lambda item: item[0])]


def _failures(file: StateFile, labels: tuple[str, ...]) -> Iterable:
    return [((), file.failures)]


def _failing(file: StateFile, labels: tuple[str, ...]) -> Iterable:
    return [((), 1 if file.failing is not None else 0)]


STATE_SPECS = (
    counter(
        "kvwatch_state_write_failures_total",
        "Writes of a file in kvwatch's state directory that failed (full disk, no permission); retried.",
        _failures,
        labels="path",
        per_server=False,
        doc="writes of a file of the state directory (read positions, a journal position, a server record) that "
        "failed (a full disk, a permission taken away); each is tried again -- the read positions and a journal "
        "position every second, new lines or not, a running server's record at each check -- and a restart "
        "before one succeeds starts from the last good save (the lines since are read again, counted once)",
    ),
    gauge(
        "kvwatch_state_write_failing",
        "1 while the last write of the file in kvwatch's state directory failed.",
        _failing,
        labels="path",
        per_server=False,
        doc="1 while the last write of the file failed (its reason is in kvwatch's log, once)",
    ),
)


def state_families() -> Iterable:
    """The series of the state files in use (label: path)."""
    return families(STATE_SPECS, [([file.path], file) for file in StateFile.live()])
