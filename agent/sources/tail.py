"""Follow log files as they grow: rotation, truncation, deletion, symlink switches, new files.

One thread reads every followed file.  inotify (:mod:`agent.sources.inotify`) wakes it
the moment a watched directory changes; a poll every ``poll_interval`` covers
what inotify cannot see (network filesystems, a watch that could not be set,
a directory that does not exist yet).  Each cycle looks at what each path
names: while it is the open file, that file is read to the size just seen;
otherwise the open file is read to its end first.  Then:

* the same file, shorter than what was read  -> truncated (copytruncate): read again from 0
* another file (rename rotation, symlink switch, delete-and-recreate)
                                             -> keep reading the old one for ``ROTATE_WAIT``
                                                seconds (its writer may not have reopened
                                                yet), then close it; read the new one from 0
* nothing                                    -> deleted or renamed away: finish the old one
                                                the same way; a file that reappears is read from 0

A file is known by its device and inode plus a fingerprint of its first
bytes (:mod:`agent.sources.positions`).  Read positions are
saved in the state directory at most every ``SAVE_INTERVAL`` while lines come
(and on the first cycle after), and at a stop, so a restarted kvwatch resumes
where the last one stopped -- including in the renamed file it had not
finished.  (After a SIGKILL, the lines since the last save are read again, and
counted once: the numbers are saved with the positions.)

A supervised server's raw log is rotated from here, because only the reader
knows what has been read: :meth:`TailedPath.rotate` calls
:class:`agent.supervise.rawlog.RawLog` once the reader is close behind.
"""

from __future__ import annotations

import contextlib
import glob
import logging
import os
import stat
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from prometheus_client.core import Metric

from agent.exposition import families
from agent.families import counter, gauge, keyed
from agent.sources import Deliver, fixed_prefix, lower_thread_priority, special_file, unlistable
from agent.sources.inotify import DirectoryWatcher
from agent.sources.lines import PACKED_OPENING, LineSplitter, packed_format
from agent.sources.names import COMPRESSED_SUFFIXES, ROTATION_COUNT, ROTATION_DATE
from agent.sources.pacing import READ_BLOCK, FlowPacer
from agent.sources.positions import FINGERPRINT_BYTES, Position, PositionStore, fingerprint
from agent.supervise.rawlog import RawLog

log = logging.getLogger("kvwatch.tail")

# O_NONBLOCK: opening a named pipe blocks until a writer comes, and would stop the reading of every
# file (the thread reads them all).  A regular file's reads ignore the flag.
OPEN_FLAGS = os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK
MAX_READ_PER_CYCLE = 16 << 20  # then the next cycle goes on, so one busy file cannot starve the rest
ROTATE_WAIT = 5.0  # seconds a rotated-away file is still read (a writer reopens late)
# A cycle's lines are handed over together (see HandOver), at the latest once they hold this many bytes: the
# memory a flood's lines take while they wait stays about one read's.
HAND_OVER_BYTES = READ_BLOCK
# A cycle reads a source's files one after the other (paced by agent.sources.pacing): lines of two
# files written within one pause reach the request joiner in file order, which is why it waits a
# moment (agent.sinks.traces.LINGER, longer than the longest pause) for a request's pieces from
# another file.
SAVE_INTERVAL = 1.0  # seconds between saves of the read positions (and the numbers with them)


def _data_start(fd: int) -> int:
    """Where a rewritten file's data begins.  A writer without O_APPEND goes on at its old offset
    after a copytruncate, leaving a hole of that size at the top (a sparse run of NUL bytes): the
    file system knows where it ends, so it is never read.  0 where it cannot tell."""
    try:
        return os.lseek(fd, 0, os.SEEK_DATA)
    except (OSError, AttributeError):  # no data yet (ENXIO), or no SEEK_DATA here
        return 0


class _OpenFile:
    """One open file being read: its identity, read offset and unfinished line."""

    __slots__ = ("dev", "fd", "head", "ino", "offset", "splitter")

    def __init__(self, fd: int, offset: int, splitter: LineSplitter) -> None:
        st = os.fstat(fd)
        self.fd = fd
        self.dev, self.ino = st.st_dev, st.st_ino
        self.offset = offset
        self.splitter = splitter
        self.head = b""
        self.note_head()

    def note_head(self) -> None:
        """Remember the first bytes read so far: a copytruncate rewrite changes them."""
        if len(self.head) < FINGERPRINT_BYTES and self.offset > len(self.head):
            self.head = os.pread(self.fd, min(self.offset, FINGERPRINT_BYTES), 0)

    def rewritten(self, size: int) -> bool:
        """True when the file (now ``size`` bytes) was truncated since it was read, even if it has grown past
        our offset again.  Its first bytes are looked at only when there is something new to read: a
        rewrite is found before anything of it is read."""
        if size < self.offset:
            return True
        return size > self.offset and bool(self.head) and os.pread(self.fd, len(self.head), 0) != self.head

    def restart(self, offset: int = 0, keep_partial: bool = False) -> None:
        """Read on from ``offset`` of content that moved; a partial line is kept when its writer goes on with it."""
        self.offset = offset
        if not keep_partial:
            self.splitter.rest = b""
        self.head = b""
        self.note_head()

    def position(self, seen: float = 0.0, **links: tuple[Position, ...]) -> Position:
        """Where a reader must start again to miss nothing: before a line not yet ended.  Raises ``OSError``."""
        skipping = self.splitter.skipping
        offset = self.offset if skipping else self.offset - len(self.splitter.rest)
        fp_len, fp = fingerprint(self.fd, min(FINGERPRINT_BYTES, offset))  # only what lies before identifies it
        return Position(self.dev, self.ino, offset, fp_len, fp, seen=seen, skipping=skipping, **links)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            os.close(self.fd)


class HandOver:
    """The lines one cycle reads, by source and file in the order read, until they go to ``deliver`` together.

    A flow spread over many files brings a line or two of each per cycle.  Handed over one file at a time,
    each file's lines cost a hold of the pipeline's lock and the sinks' end of a batch, and were parsed on
    caches the reads in between had cooled; read first and parsed one after the other, a line of 50 such files
    costs a sixth to a quarter less (docs/benchmarks.md, "Many servers, many files")."""

    __slots__ = ("_bytes", "_deliver", "_sources")

    def __init__(self, deliver: Deliver) -> None:
        self._deliver = deliver
        self._sources: dict[str, list[tuple[list, str]]] = {}
        self._bytes = 0

    def add(self, source: str, path: str, lines: list, size: int) -> None:
        """``lines`` read from ``path`` (``size`` bytes of it); handed over at once when the cycle's lines are
        many."""
        files = self._sources.get(source)
        if files is None:
            self._sources[source] = [(lines, path)]
        else:
            files.append((lines, path))
        self._bytes += size
        if self._bytes >= HAND_OVER_BYTES:
            self.flush()

    def flush(self) -> None:
        """Hand over every line read so far (before positions are saved: the numbers then count them)."""
        if not self._sources:
            return
        sources, self._sources, self._bytes = self._sources, {}, 0
        for source, files in sources.items():
            try:
                self._deliver(source, files)
            except Exception:  # a bug in one source's pipeline must not lose the other sources' lines
                log.exception("handing over the lines of %s failed", source)


@dataclass
class TailStats:
    """What the tailer tells about one path, for the self-metrics."""

    offset: int = 0
    size: int = 0
    rotations: int = 0
    truncations: int = 0
    log_rotations: int = 0  # raw-log rotations kvwatch did itself
    lag_seconds: float | None = None

    COUNTS = ("rotations", "truncations", "log_rotations")  # saved with the read positions

    def counts(self) -> list[int]:
        return [getattr(self, name) for name in self.COUNTS]

    def restore(self, saved: object) -> None:
        if isinstance(saved, list) and len(saved) == len(self.COUNTS) and all(isinstance(n, int) for n in saved):
            for name, value in zip(self.COUNTS, saved, strict=True):
                setattr(self, name, value)


class TailedPath:
    """A path followed for one source: the file it names now, and older ones being finished."""

    def __init__(
        self, source: str, path: str, max_line: int, skipped: dict[str, int], raw_log: RawLog | None = None
    ) -> None:
        self.source = source
        self.path = path
        self.max_line = max_line
        self.skipped = skipped  # shared with the source's stats
        self.raw_log = raw_log  # a supervised server's log, rotated from here
        self.raw_log_deleted = False  # its file deleted while the server writes to it (said once)
        self.current: _OpenFile | None = None
        self.draining: list[tuple[_OpenFile, float]] = []
        self.stats = TailStats()
        self.error: str | None = None
        self.error_reason = "read_error"
        self.saved: Position | None = None  # a saved position not yet applied
        # The position the file will have once a rotation's collapse is done,
        # saved beside the current one so that a kill mid-rotation loses nothing.
        self.after_rotation: Position | None = None
        self.save_hook: Callable[[], None] | None = None
        self.seen_at = 0.0  # unix time the path was last seen naming the current file
        # The source's open files, each with the path that reads it (shared by the source's paths): a file two
        # of them name is read by one.  An entry may be stale; ``holds`` says whether it still stands.
        self.held: dict[tuple[int, int], TailedPath] = {}

    def _splitter(self) -> LineSplitter:
        return LineSplitter(self.max_line, self.skipped)

    # -- opening ------------------------------------------------------------------

    def open(self, start_at_end: bool) -> None:
        """Open the path (if it exists) at its saved position, or at its start or end."""
        try:
            fd = os.open(self.path, OPEN_FLAGS)
        except FileNotFoundError:
            return
        except OSError as exc:
            self._report(exc)
            return
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):  # not a log (yet): looked at again at the next poll
            os.close(fd)
            self._report_not_a_file(st.st_mode)
            return
        packed = packed_format(os.pread(fd, PACKED_OPENING, 0))
        if packed is not None:  # a rotated copy named alone (a glob passes them over): never written to
            os.close(fd)
            self._note_error(f"{packed} data, not a log being written: `kvwatch replay` reads it", "not_a_file")
            return
        self.error = None
        if self._read_elsewhere(fd, (st.st_dev, st.st_ino)):
            return
        offset = st.st_size if start_at_end else 0
        saved, self.saved = self.saved, None
        splitter = self._splitter()
        if saved is not None:
            offset = self._resume(fd, st, saved)
            if saved.skipping and offset == saved.offset and offset:
                splitter.skip_first_line()
        self.current = _OpenFile(fd, offset, splitter)
        self._hold(self.current)
        self.seen_at = time.time()

    def _resume(self, fd: int, st: os.stat_result, saved: Position) -> int:
        """Where to start in ``fd`` given a saved position, finishing the files rotated away first."""
        for older in saved.draining:
            self._drain_later(self._find_rotated(older))
        if (st.st_dev, st.st_ino) == (saved.dev, saved.ino):
            for position in saved.candidates():
                if position.same_file(fd):
                    return position.offset if position.offset <= st.st_size else 0
            return 0  # same inode, other content: rewritten or a reused inode
        old = self._find_rotated(saved)
        if old is not None:
            self._drain_later(old)
            self.stats.rotations += 1
        self._find_generations_between(saved.seen, (st.st_dev, st.st_ino))
        return 0

    def _read_elsewhere(self, fd: int, identity: tuple[int, int]) -> bool:
        """True (and ``fd`` closed) when a path of the source reads this file already: another name of it (a
        link, a second match of a glob, its new name after a rename), or this path, which it left and came
        back to.  A file that path has let go of (renamed away from it) is carried on here from where it was
        read; one it still names stays its own."""
        other = self.held.get(identity)
        if other is None:
            return False
        if not other.holds(identity):
            del self.held[identity]  # finished since
            return False
        os.close(fd)
        opened = other.let_go(identity)
        if opened is not None:
            if other is not self:
                log.info("%s: reading on from where it was read as %s", self.path, other.path)
            self.current = opened
            self._hold(opened)
            self.seen_at = time.time()
        self.saved = None  # where this name once stood is not where the file's reading stands
        return True

    def _hold(self, opened: _OpenFile) -> None:
        self.held[(opened.dev, opened.ino)] = self

    def _release(self, opened: _OpenFile) -> None:
        identity = (opened.dev, opened.ino)
        if self.held.get(identity) is self:
            del self.held[identity]

    def holds(self, identity: tuple[int, int]) -> bool:
        """True when the file of ``identity`` is open here: as the current file, or one being finished."""
        current = self.current
        if current is not None and (current.dev, current.ino) == identity:
            return True
        return any((opened.dev, opened.ino) == identity for opened, _deadline in self.draining)

    def let_go(self, identity: tuple[int, int]) -> _OpenFile | None:
        """The open file of ``identity``, given up to another path, once this path no longer names it."""
        for index, (opened, _deadline) in enumerate(self.draining):
            if (opened.dev, opened.ino) == identity:
                del self.draining[index]
                return opened
        current = self.current
        if current is None or (current.dev, current.ino) != identity:
            return None
        try:
            st = os.stat(self.path)
            if (st.st_dev, st.st_ino) == identity:
                return None  # still ours
        except OSError:
            pass
        self.current = None  # renamed away: the path opens what it names at the next poll
        self.stats.rotations += 1
        return current

    def _drain_later(self, opened: _OpenFile | None) -> None:
        if opened is not None:
            self.draining.append((opened, time.monotonic() + ROTATE_WAIT))
            self._hold(opened)

    def _siblings(self) -> Iterator[tuple[str, os.stat_result]]:
        """The files beside the path (its rotated copies among them), with their status."""
        directory = os.path.dirname(self.path) or "."
        try:
            names = os.listdir(directory)
        except OSError:
            return
        for name in names:
            candidate = os.path.join(directory, name)
            try:
                st = os.stat(candidate)
            except OSError:
                continue
            if stat.S_ISREG(st.st_mode):
                yield candidate, st

    def _find_rotated(self, saved: Position) -> _OpenFile | None:
        """The file a saved position was in, if it was renamed within the same directory."""
        for candidate, st in self._siblings():
            if (st.st_dev, st.st_ino) != (saved.dev, saved.ino):
                continue
            try:
                fd = os.open(candidate, OPEN_FLAGS)
            except OSError:
                return None
            if saved.same_file(fd) and saved.offset <= st.st_size:
                splitter = self._splitter()
                if saved.skipping and saved.offset:
                    splitter.skip_first_line()
                return _OpenFile(fd, saved.offset, splitter)
            os.close(fd)
        return None

    def _find_generations_between(self, seen: float, current: tuple[int, int]) -> None:
        """Queue, oldest first, the rotated copies of the path written since ``seen``: whole files
        that were the path's for a while but never while it was looked at (two rotations between
        two reads, or while kvwatch was down)."""
        if not seen:
            return
        known = {(o.dev, o.ino) for o, _ in self.draining} | {current}
        base = os.path.basename(self.path)
        found = []
        for candidate, st in self._siblings():
            name = os.path.basename(candidate)
            if (st.st_dev, st.st_ino) in known or not _is_rotated_name(name, base) or st.st_mtime <= seen:
                continue
            try:
                fd = os.open(candidate, OPEN_FLAGS)
            except OSError:
                continue
            found.append((st.st_mtime_ns, candidate, _OpenFile(fd, 0, self._splitter())))
        for _mtime, candidate, opened in sorted(found, key=lambda item: item[0]):
            log.info("%s: reading %s, a rotated copy written since the last look", self.path, candidate)
            self.stats.rotations += 1
            self._drain_later(opened)

    def _report(self, exc: OSError) -> None:
        reason = "permission_denied" if isinstance(exc, PermissionError) else "read_error"
        self._note_error(str(exc.strerror or exc), reason)

    def _report_not_a_file(self, mode: int) -> None:
        """A directory, named pipe, socket or device where a log file was expected: a pipe has no
        size or position to follow (a server's output is followed as a file, or supervised)."""
        if stat.S_ISDIR(mode):
            text = f'a directory (follow the files in it with a glob, e.g. "{os.path.join(self.path, "*.log")}")'
            self._note_error(text, "not_a_file")
            return
        self._note_error(f"{special_file(mode)}, not a regular file", "not_a_file")

    def _note_error(self, text: str, reason: str) -> None:
        message = f"{self.path}: {text}"
        if self.error != message:  # once per new problem, not once per cycle
            log.warning("cannot read %s (will retry): %s", self.path, text)
        self.error = message
        self.error_reason = reason

    # -- reading ------------------------------------------------------------------

    def poll(self, hand_over: HandOver, now: float, wall: float) -> int:
        """Read what is new; follow rotation and truncation.  Returns the bytes read.

        ``now`` is the cycle's monotonic time, ``wall`` its unix time."""
        total = self._drain(hand_over, now) if self.draining else 0
        current = self.current
        if current is None:
            self.open(start_at_end=False)  # appeared (again) since: all of it is new
            if self.current is None:
                return total
        elif self.raw_log is None:
            # The common case, one system call less: the path still names the open file, so its
            # status is the file's.  (A raw log kvwatch rotates takes the long way: whether reading
            # has caught up is judged after the read.)
            try:
                st = os.stat(self.path)
            except OSError:
                st = None
            if st is not None and st.st_ino == current.ino and st.st_dev == current.dev:
                return total + self._read_on(current, st, hand_over, wall)
        return total + self._poll_moved(hand_over, now, wall)

    def _read_on(self, current: _OpenFile, st: os.stat_result, hand_over: HandOver, wall: float) -> int:
        """Read the open file, whose status the path has just given, up to its size."""
        if not self._restart_if_rewritten(current, st.st_size):
            return 0
        read = self._read(current, hand_over, st.st_size)
        self.seen_at = wall
        self._caught_up(st, read, hand_over)
        return read

    def _restart_if_rewritten(self, current: _OpenFile, size: int) -> bool:
        """Before reading on: start again from the top of a file truncated since it was read (a
        copytruncate may have been followed by enough new lines to pass our offset, so the size
        alone cannot tell).  False when the file cannot be looked at."""
        try:
            rewritten = current.rewritten(size)
        except OSError as exc:
            self._report(exc)
            return False
        if rewritten:
            self.stats.truncations += 1
            log.info("%s was truncated; reading it again from the start", self.path)
            current.restart(_data_start(current.fd))
        return True

    def _poll_moved(self, hand_over: HandOver, now: float, wall: float) -> int:
        """``poll`` when the path may name another file than the open one (or names none), and for raw logs."""
        assert self.current is not None
        total = 0
        try:
            size = os.fstat(self.current.fd).st_size
        except OSError as exc:
            self._report(exc)
            return total
        if not self._restart_if_rewritten(self.current, size):
            return total
        total += self._read(self.current, hand_over, size)  # what comes meanwhile is the next cycle's
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            if self.raw_log is None:
                self._retire(now)
                return total
            st = self._raw_log_deleted()
            if st is None:
                return total
        except OSError as exc:
            self._report(exc)
            return total
        if self.raw_log_deleted and (st.st_dev, st.st_ino) != (self.current.dev, self.current.ino):
            log.info("%s: a new file again (the server started again)", self.path)
            self.raw_log_deleted = False
        if (st.st_dev, st.st_ino) != (self.current.dev, self.current.ino):
            seen = self.seen_at
            self._retire(now)
            self._find_generations_between(seen, (st.st_dev, st.st_ino))
            total += self._drain(hand_over, now)  # the older files' lines before the new file's
            self.open(start_at_end=False)
            if self.current is not None:
                total += self._read(self.current, hand_over)
        else:
            self.seen_at = wall
        if self.current is not None:
            self._caught_up(st, total, hand_over)
        return total

    def _drain(self, hand_over: HandOver, now: float) -> int:
        """Read on in the files rotated away; close those whose time is up.  Returns the bytes read."""
        total = 0
        keep = []
        for opened, deadline in self.draining:
            total += self._read(opened, hand_over)
            if now >= deadline:
                self._finish(opened, hand_over)
            else:
                keep.append((opened, deadline))
        self.draining = keep
        return total

    def _caught_up(self, st: os.stat_result, read: int, hand_over: HandOver) -> None:
        """Note where reading stands in the current file; rotate a raw log that is due."""
        assert self.current is not None
        self.stats.offset = self.current.offset
        self.stats.size = max(st.st_size, self.current.offset)
        if read:
            self.stats.lag_seconds = max(0.0, time.time() - st.st_mtime)
        if self.raw_log is not None and self.raw_log.due(self.current.offset, st.st_size):
            self.rotate(hand_over)

    def _read(self, opened: _OpenFile, hand_over: HandOver, size: int | None = None) -> int:
        """Read on to ``size`` (the file's size just seen), or to the end of the file as it is; returns the bytes
        read.  Asking for the bytes known to be there keeps each read's buffer small: a buffer of READ_BLOCK
        for a line or two cost more than the line (the allocator maps and unmaps it every time)."""
        total = 0
        while total < MAX_READ_PER_CYCLE:
            want = READ_BLOCK if size is None else min(READ_BLOCK, size - opened.offset)
            if want <= 0:
                break
            try:
                chunk = os.pread(opened.fd, want, opened.offset)
            except OSError as exc:
                self._report(exc)
                break
            if not chunk:
                break
            opened.offset += len(chunk)
            total += len(chunk)
            if len(opened.head) < FINGERPRINT_BYTES:
                opened.note_head()
            lines = opened.splitter.feed(chunk)
            if lines:
                hand_over.add(self.source, self.path, lines, len(chunk))
            if len(chunk) < want:
                break  # the end of the file as it was: what comes next is the next cycle's
        return total

    def _raw_log_deleted(self) -> os.stat_result | None:
        """A supervised server's raw log deleted while the server writes to it (a clean-up of the log directory):
        the server writes on into the deleted file, which only this reader can still read and keep small, so it is
        read on (and rotated through the open descriptor) until the server's next start opens a new one."""
        assert self.current is not None
        if not self.raw_log_deleted:
            log.warning(
                "%s was deleted while its server writes to it: reading on from the deleted file, whose space is "
                "freed when the server starts again (and a new file is made)",
                self.path,
            )
            self.raw_log_deleted = True
        try:
            return os.fstat(self.current.fd)
        except OSError as exc:
            self._report(exc)
            return None

    def _retire(self, now: float) -> None:
        """The path no longer names the open file: finish it over the next few seconds."""
        if self.current is not None:
            self.stats.rotations += 1
            self.draining.append((self.current, now + ROTATE_WAIT))
            self.current = None

    def _finish(self, opened: _OpenFile, hand_over: HandOver) -> None:
        self._read(opened, hand_over)
        last = opened.splitter.finish()  # a line its writer never ended
        if last:
            hand_over.add(self.source, self.path, last, 0)
        self._release(opened)
        opened.close()

    def gone(self) -> bool:
        """True once the path names no file and nothing of it is left to read."""
        return self.current is None and not self.draining and not os.path.lexists(self.path)

    def close(self) -> None:
        for opened, _deadline in self.draining:
            self._release(opened)
            opened.close()
        self.draining = []
        if self.current is not None:
            self._release(self.current)
            self.current.close()
            self.current = None

    # -- positions ----------------------------------------------------------------

    def position(self) -> Position | None:
        """The saved form of where this path's reading stands: the current file, and those still being
        finished.  Raises ``OSError``."""
        older = tuple(opened.position() for opened, _deadline in self.draining)
        current = self.current
        if current is None:
            return None if not older else Position(*_identity(older[-1]), draining=older[:-1])
        alternatives = (self.after_rotation,) if self.after_rotation is not None else ()
        return current.position(self.seen_at, alternatives=alternatives, draining=older)

    # -- rotating a supervised server's raw log -----------------------------------

    def rotate(self, hand_over: HandOver) -> None:
        """Move what has been read of the raw log into its backups (see :mod:`agent.supervise.rawlog`).

        Everything written so far is read first, and the position the file will
        have after the cut is saved before the cut, so that neither a line nor a
        kill in the middle makes a line read twice or lost."""
        current, raw = self.current, self.raw_log
        if current is None or raw is None:
            return
        self._read(current, hand_over)  # everything up to now is read before anything moves
        try:
            moved = current.position()  # where reading stands, before any unfinished line
            cut = raw.cut(current.fd, moved.offset)  # (a line begun before a block's end and not ended stays whole)
            if cut == 0:
                return
            raw.archive(current.fd, cut)
            offset = moved.offset - cut
            fp_len, fp = fingerprint(current.fd, min(FINGERPRINT_BYTES, offset), cut)
            self.after_rotation = Position(current.dev, current.ino, offset, fp_len, fp, skipping=moved.skipping)
            if self.save_hook is not None:
                self.save_hook()
            if raw.collapse(current.fd, cut):
                current.restart(current.offset - cut, keep_partial=True)
            else:
                self._read(current, hand_over)  # the rest read since the cut goes to the backup too
                raw.truncate(current.fd, cut, current.offset)
                current.restart(keep_partial=True)
        except OSError as exc:
            raw.failed(exc)
            return
        finally:
            self.after_rotation = None
        raw.succeeded()
        self.stats.log_rotations += 1
        self.stats.offset = current.offset


# -- the tailer -------------------------------------------------------------------------


@dataclass
class Source:
    """A set of paths (or globs) read as one source, the ``server`` label of its lines."""

    name: str
    patterns: tuple[str, ...]
    skipped: dict[str, int]
    start_at_end: bool = True
    # A supervised server's raw logs, which kvwatch writes (through the server) and so rotates itself
    # at ``rotate_bytes``, keeping ``backups``; the source's other paths are others' to rotate.
    raw_logs: tuple[str, ...] = ()
    rotate_bytes: int | None = None
    backups: int = 0
    paths: dict[str, TailedPath] = field(default_factory=dict)
    # Every open file of the source's paths and the path that reads it (see TailedPath.held).
    held: dict[tuple[int, int], TailedPath] = field(default_factory=dict)
    # The numbers counted from the source's lines, saved with its positions and given back
    # when it is added again (see agent.sources.positions): what they are is their owner's.
    save_numbers: Callable[[], dict] | None = None
    restore_numbers: Callable[[dict], None] | None = None
    # Globs whose directory this user cannot list: they find nothing, whatever it holds.
    unlistable: set[str] = field(default_factory=set)
    # How many files each path or glob names now (for a glob, less the directories and copies it passes over).
    files: dict[str, int] = field(default_factory=dict)


class Tailer:
    """Reads every source's files in one thread and hands their lines to ``deliver``."""

    def __init__(
        self,
        deliver: Deliver,
        positions: PositionStore,
        poll_interval: float = 1.0,
        max_line: int = 4 * 1024 * 1024,
        use_inotify: bool = True,
        nice: int = 0,
    ) -> None:
        self.hand_over = HandOver(deliver)
        self.store = positions
        self.poll_interval = poll_interval
        self.nice = nice
        self.max_line = max_line
        self.use_inotify = use_inotify
        self._requests_lock = threading.Lock()
        self.sources: dict[str, Source] = {}
        self.wake = threading.Event()
        self.rescan = True
        self.cycles = 0
        self.last_cycle = time.monotonic()
        self.inotify_ok = False
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._watcher: DirectoryWatcher | None = None
        self._unsaved = False
        self._saved_at = 0.0
        self.pacer = FlowPacer()
        self.readings = DirectoryReadings()
        self._requests: list[Callable[[], None]] = []

    # -- configuration (any thread) -------------------------------------------------

    def add(self, source: Source) -> None:
        self._call(lambda: self._add(source))

    def remove(self, name: str) -> None:
        self._call(lambda: self._remove(name))

    def _call(self, request: Callable[[], None]) -> None:
        if self._thread is None or not self._thread.is_alive():
            request()
        else:
            with self._requests_lock:
                self._requests.append(request)
            self.wake.set()

    def _add(self, source: Source) -> None:
        self._remove(source.name)
        self.sources[source.name] = source
        # Numbers and positions from the same save, applied together: they agree.
        saved = self.store.counters.get(source.name)
        if saved is not None and source.restore_numbers is not None and isinstance(saved.get("numbers"), dict):
            source.restore_numbers(saved["numbers"])
        self._expand(source, first=True)
        self._watch_all()

    def _remove(self, name: str) -> None:
        source = self.sources.pop(name, None)
        if source is not None:
            self.readings.forget((*source.patterns, (REAL_DIRECTORIES, source.name)))
            for tailed in source.paths.values():
                tailed.close()

    # -- the loop -------------------------------------------------------------------

    def start(self) -> None:
        if self.use_inotify:
            self._start_watcher()
            self._watch_all()
        self.wake.set()  # a first cycle at once
        self._thread = threading.Thread(target=self._run, name="kvwatch-tail", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        if self._watcher is not None:
            self._watcher.stop()
        self.save_positions()
        for source in self.sources.values():
            for tailed in source.paths.values():
                tailed.close()

    def _run(self) -> None:
        lower_thread_priority(self.nice)
        next_scan = 0.0
        while not self._stop.is_set():
            self.wake.wait(self.poll_interval)
            self.wake.clear()
            now = time.monotonic()
            if now >= next_scan:
                self.rescan = True
                next_scan = now + self.poll_interval
            try:
                read = self.cycle()
            except Exception:  # a bug here must not stop the reading for good
                log.exception("tail cycle failed")
                read = 0
            self.last_cycle = time.monotonic()
            watcher = self._watcher
            if read:
                # Lines are flowing and the watcher has gone quiet (see agent.watch):
                # look again soon, after a pause that lets a few writes gather.
                if read < MAX_READ_PER_CYCLE:
                    self._stop.wait(self.pacer.pause_after(read))
                self.wake.set()
            elif watcher is not None and not watcher.armed:
                watcher.arm()
                self.wake.set()  # and one more look, for what came between the last read and the arming

    def cycle(self) -> int:
        """Read every source once; returns the bytes read."""
        with self._requests_lock:
            requests, self._requests = self._requests, []
        for request in requests:
            request()
        rescan, self.rescan = self.rescan, False
        now, wall = time.monotonic(), time.time()
        read = 0
        if rescan:
            for source in self.sources.values():
                self._expand(source, first=False)
            self._watch_all()
        try:
            for source in list(self.sources.values()):
                for path, tailed in list(source.paths.items()):
                    read += tailed.poll(self.hand_over, now, wall)
                    if tailed.gone() and path not in source.patterns:
                        # A file a glob found, deleted and read to its end: its series leave with it.
                        tailed.close()
                        del source.paths[path]
        finally:
            self.hand_over.flush()  # (what was read before a failure too: its files' offsets have moved past it)
        self.cycles += 1
        if read:
            self._unsaved = True
        # Positions are saved at most every SAVE_INTERVAL: a save writes every source's numbers too, and a
        # server writing a line every few milliseconds pauses after each one (a save per pause cost more
        # than the parsing).  After a SIGKILL the lines since the last save are read again, counted once.
        if self._unsaved and now - self._saved_at >= SAVE_INTERVAL:
            self.save_positions()
        return read

    def _expand(self, source: Source, first: bool) -> None:
        found: list[TailedPath] = []
        for pattern in source.patterns:
            magic = glob.has_magic(pattern)
            names = self.readings.picks(pattern) if magic else [pattern]  # (a directory named alone is reported)
            if magic:
                _note_listing(source, pattern, unlistable(pattern) if not names else None)
            for name in names:
                if name in source.paths:
                    continue
                rotated = source.rotate_bytes and name in source.raw_logs
                raw_log = RawLog(name, source.rotate_bytes, source.backups) if rotated else None
                tailed = TailedPath(source.name, name, self.max_line, source.skipped, raw_log)
                tailed.saved = self.store.get(source.name, name)
                tailed.stats.restore((self.store.counters.get(source.name) or {}).get("tail", {}).get(name))
                tailed.save_hook = self.save_positions
                tailed.held = source.held
                source.paths[name] = tailed
                found.append(tailed)
            followed = sum(1 for name in names if name in source.paths) if magic else int(os.path.isfile(pattern))
            # A path that is there but no file (a directory, a pipe) is said by its reader, with what it is.
            _note_files(source, pattern, followed, first and (magic or not os.path.lexists(pattern)))
        # Files present at the first look start at the end (their past is history) unless a position was
        # saved; files that appear later are new.  Those with a saved position first: of two names of one
        # file, the one it was read under goes on reading it.
        for tailed in sorted(found, key=lambda tailed: tailed.saved is None):
            tailed.open(start_at_end=first and source.start_at_end)

    def save_positions(self) -> None:
        """Save every path's position, and every source's numbers with them (one write).

        Called in the reading thread between deliveries (or once it has stopped),
        so the numbers count exactly the lines before the positions.  A save that fails is tried again
        at the next interval, lines or not: a freed disk then holds the positions read before it filled."""
        self.hand_over.flush()  # (a raw log's rotation saves in the middle of a cycle)
        self._saved_at = time.monotonic()
        positions: dict[str, dict[str, Position]] = {}
        counters: dict[str, dict] = {}
        for source in self.sources.values():
            entries = {}
            for path, tailed in source.paths.items():
                try:
                    position = tailed.position()
                except OSError:
                    position = None
                if position is not None:
                    entries[path] = position
                elif tailed.saved is not None:
                    entries[path] = tailed.saved
            if entries:
                positions[source.name] = entries
            numbers = source.save_numbers() if source.save_numbers is not None else None
            tail = {path: tailed.stats.counts() for path, tailed in source.paths.items()}
            counters[source.name] = {"numbers": numbers, "tail": tail}
        self._unsaved = not self.store.save(positions, counters)

    # -- inotify --------------------------------------------------------------------

    def _start_watcher(self) -> None:
        try:
            self._watcher = DirectoryWatcher(self._woken)
        except OSError as exc:  # no inotify here, or its instance limit reached
            log.warning("inotify is not available (%s); polling every %.1f s", exc, self.poll_interval)
            return
        self._watcher.start()
        self.inotify_ok = True

    def _woken(self, rescan: bool) -> None:
        if rescan:
            self.rescan = True
        self.wake.set()

    def _watch_all(self) -> None:
        """Watch every directory a followed path or glob can change in, including symlink targets'."""
        watcher = self._watcher
        if watcher is None:
            return
        watcher.forget_missing()
        for source in self.sources.values():
            directories = set()
            for pattern in source.patterns:
                directory = os.path.dirname(pattern) or "."
                if glob.has_magic(directory):
                    directories.add(fixed_prefix(directory))  # new subdirectories appear here
                    directories.update(d for d in glob.glob(directory) if os.path.isdir(d))
                else:
                    directories.add(directory)
            directories.update(self.readings.real_directories(source.name, source.paths))
            for directory in directories:
                watcher.watch(directory)

    # -- views ------------------------------------------------------------------------

    @property
    def dead(self) -> bool:
        """True when the reading thread has ended without being stopped (a bug): nothing is read any more."""
        thread = self._thread
        return thread is not None and not thread.is_alive() and not self._stop.is_set()

    def snapshot(self) -> dict[str, dict[str, TailStats]]:
        return {
            name: {path: tailed.stats for path, tailed in list(source.paths.items())}
            for name, source in list(self.sources.items())
        }

    def errors(self) -> dict[str, dict[str, str]]:
        out: dict[str, dict[str, str]] = {}
        for name, source in list(self.sources.items()):
            for path, tailed in list(source.paths.items()):
                if tailed.error:
                    out.setdefault(name, {})[path] = tailed.error_reason
            for pattern in list(source.unlistable):
                out.setdefault(name, {})[pattern] = "permission_denied"
        return out

    def families(self) -> Iterator[Metric]:
        sources = list(self.sources.items())
        paths = [([name, path], tailed) for name, source in sources for path, tailed in list(source.paths.items())]
        yield from families(PATH_SPECS, paths)
        yield from families(RAW_LOG_SPECS, (([name], source) for name, source in sources if source.rotate_bytes))
        yield from families(PATTERN_SPECS, [([name], source) for name, source in sources])


def glob_picks(pattern: str) -> list[str]:
    """The files a followed glob names now, in order: not a directory, a compressed copy (not readable as it
    grows) or a rotated copy (read as its file)."""
    return [
        name
        for name in sorted(glob.glob(pattern))
        if not (os.path.isdir(name) or name.endswith(COMPRESSED_SUFFIXES) or _is_rotated_copy(name))
    ]


# How much older than a reading its directories' last change must be for the reading to stand until one of them
# changes again: where a file system keeps coarse times, a change in the same tick as the reading leaves them as
# they were.
SETTLED_NS = 2_000_000_000
# A reading is made again after this long all the same: some network and FUSE file systems (object-store mounts)
# keep a directory's times as they were whatever its entries do.
KEPT_FOR = 10.0
T = TypeVar("T")
# The key of a source's real directories among the readings (a glob's listing is kept under the glob).
REAL_DIRECTORIES = "real directories"


class DirectoryReadings:
    """What is read from directories' entries (the files a glob names, where followed files really are), read
    again only when one of those directories changed.

    The files ``/var/log/vllm/*.log`` names change only with an entry of that directory (a file created, removed,
    renamed, a directory or a symlink made in its place), which moves the directory's modification time (its
    change time too, with its permissions; a directory whose path resolves elsewhere is another inode): one
    ``stat`` of each tells whether the last reading still holds, for ``KEPT_FOR`` at most.  A rescan reads them
    once a second; at 50 files a glob's listing (each name checked for a directory and a rotated copy) costs
    about 0.6 ms, the followed files' real directories (each checked for a symlink) 0.3 ms."""

    def __init__(self) -> None:
        # key -> (what the reading depended on, when it was made (monotonic), what it read)
        self._kept: dict[object, tuple[tuple, float, Any]] = {}

    def read(self, key: object, directories: Iterable[str], reading: Callable[[], T], also: Hashable = None) -> T:
        """``reading()``, or what it gave last for ``key`` while ``directories`` (and ``also``) are as they were."""
        try:
            found = [os.stat(directory) for directory in directories]
        except OSError:
            self._kept.pop(key, None)
            return reading()
        state = (also, *((st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns) for st in found))
        kept = self._kept.get(key)
        now = time.monotonic()
        if kept is not None and kept[0] == state and now - kept[1] < KEPT_FOR:
            return kept[2]
        read_at = time.time_ns()
        value = reading()
        if all(read_at - max(st.st_mtime_ns, st.st_ctime_ns) >= SETTLED_NS for st in found):
            self._kept[key] = (state, now, value)
        else:
            self._kept.pop(key, None)
        return value

    def picks(self, pattern: str) -> list[str]:
        """The files a glob names now (see :func:`glob_picks`); one with a wildcard among its directories is
        listed every time."""
        directory = os.path.dirname(pattern) or "."
        if glob.has_magic(directory):
            return glob_picks(pattern)
        return list(self.read(pattern, (directory,), lambda: tuple(glob_picks(pattern))))

    def real_directories(self, name: str, paths: Iterable[str]) -> frozenset[str]:
        """The directories a source's followed files really are in (see :func:`_real_directories`)."""
        followed = tuple(paths)
        directories = sorted({os.path.dirname(path) or "." for path in followed})
        return self.read(
            (REAL_DIRECTORIES, name), directories, lambda: frozenset(_real_directories(followed)), also=followed
        )

    def forget(self, keys: Iterable[object]) -> None:
        for key in keys:
            self._kept.pop(key, None)


def _note_files(source: Source, pattern: str, followed: int, first: bool) -> None:
    """Keep how many files a path or glob names now (said at the first look when none: a path that is
    not there yet is read once it is, and a typo never is)."""
    source.files[pattern] = followed
    if first and not followed:
        log.info("%s: %s names no file yet; it is read once one appears", source.name, pattern)


def _note_listing(source: Source, pattern: str, directory: str | None) -> None:
    """Keep (and say, once) whether a glob's directory can be listed (``directory``: the one that cannot)."""
    if directory is not None and pattern not in source.unlistable:
        log.warning("cannot list %s (will retry): permission denied: %s finds nothing there", directory, pattern)
        source.unlistable.add(pattern)
    elif directory is None and pattern in source.unlistable:
        log.info("%s: its directory can be listed again", pattern)
        source.unlistable.discard(pattern)


def _stat(attribute: str):
    """A number of the path's :class:`TailStats`."""

    def samples(tailed: TailedPath, labels: tuple[str, ...]) -> Iterable:
        value = getattr(tailed.stats, attribute)
        return [] if value is None else [((), value)]

    return samples


def _read_error(tailed: TailedPath, labels: tuple[str, ...]) -> Iterable:
    return [((tailed.error_reason,), 1)] if tailed.error else []


def _log_rotations(source: Source, labels: tuple[str, ...]) -> Iterable:
    return [((), sum(tailed.stats.log_rotations for tailed in list(source.paths.values())))]


# Series of each followed path (labels server and path).
PATH_SPECS = (
    gauge(
        "kvwatch_tail_offset_bytes",
        "Bytes of the followed file read so far.",
        _stat("offset"),
        labels="path",
        native="mtail's read position",
    ),
    gauge(
        "kvwatch_tail_size_bytes",
        "Size of the followed file.",
        _stat("size"),
        labels="path",
        doc="size of the followed file; size − offset is what is still unread",
    ),
    counter(
        "kvwatch_tail_rotations_total",
        "Times the path began naming another file (rename, delete, symlink switch).",
        _stat("rotations"),
        labels="path",
        doc="times the path began naming another file (rename rotation, delete and recreate, symlink switch)",
        native="mtail's `log_rotations_total`",
    ),
    counter(
        "kvwatch_tail_truncations_total",
        "Times the followed file was truncated.",
        _stat("truncations"),
        labels="path",
        doc="times the followed file was truncated (copytruncate)",
        native="mtail's `log_truncates_total`",
    ),
    gauge(
        "kvwatch_tail_lag_seconds",
        "Time from the file's last modification to kvwatch reading it, at the last read.",
        _stat("lag_seconds"),
        labels="path",
        doc="at the last read, time from the file's last modification to kvwatch having parsed it",
    ),
    gauge(
        "kvwatch_tail_read_error",
        "1 while a followed file cannot be read (permission_denied, not_a_file, read_error); retried.",
        _read_error,
        labels="path reason",
        doc="1 while a followed file cannot be read (`permission_denied`; `not_a_file`: a directory, a named "
        "pipe, socket or device, which has no position to follow, or a compressed file; `read_error`); retried "
        "every poll",
    ),
)


def _unlistable_globs(source: Source, labels: tuple[str, ...]) -> Iterable:
    return [((pattern,), 1) for pattern in list(source.unlistable)]


# Series of a source's paths and globs as configured.
PATTERN_SPECS = (
    gauge(
        "kvwatch_tail_files",
        "Files a followed path or glob names now (0: none yet, or a typo).",
        keyed("files"),
        labels="path",
        doc="files the followed path or glob (`path`, as configured) names now, looked at every poll: 1 or 0 "
        "for a path, the files a glob finds for a glob (rotated and compressed copies it passes over not "
        "counted); 0 for long is a path that is not there, or a typo",
    ),
    gauge(
        "kvwatch_tail_glob_unlistable",
        "1 while the directory a followed glob looks in cannot be listed (permission denied): it finds nothing.",
        _unlistable_globs,
        labels="path",
        doc="1 while the directory a followed glob (`path`) looks in -- its part before the first wildcard -- "
        "cannot be listed or reached by kvwatch's user (permission denied): the glob finds nothing there, "
        "whatever it holds; looked at again every poll",
    ),
)
# Series of a supervised server's raw log, which the reader rotates.
RAW_LOG_SPECS = (
    counter(
        "kvwatch_server_log_rotations_total",
        "Rotations of the server's raw log done by kvwatch.",
        _log_rotations,
    ),
)


def _real_directories(paths: Iterable[str]) -> set[str]:
    """The directories the files at ``paths`` really are in, symlinks resolved.

    ``realpath`` looks at every component of a path; for many files in one directory
    (this runs once a second) the directory is resolved once, and a file alone only
    when it is a symlink itself."""
    resolved: dict[str, str] = {}
    found = set()
    for path in paths:
        if os.path.islink(path):
            found.add(os.path.dirname(os.path.realpath(path)))
            continue
        directory = os.path.dirname(path)
        real = resolved.get(directory)
        if real is None:
            real = resolved[directory] = os.path.realpath(directory or ".")
        found.add(real)
    return found


def _identity(position: Position) -> tuple:
    """A position's own fields, without the files linked to it."""
    return (position.dev, position.ino, position.offset, position.fp_len, position.fp)


def _is_rotated_name(name: str, base: str) -> bool:
    """``app.log.1`` or ``app.log-20261202`` beside ``app.log``, not yet compressed."""
    after = name[len(base) : len(base) + 1]
    return after in (".", "-") and name.startswith(base) and not name.endswith(COMPRESSED_SUFFIXES)


def _is_rotated_copy(name: str) -> bool:
    """``app.log.1`` or ``app.log-20261202`` beside ``app.log`` -- or, where the rotation keeps the extension
    last (logrotate's ``extension .log``, loguru), ``app-20261202.log`` or ``app.1.log``: a copy rotated from
    that file, whose lines were read as ``app.log`` (a glob that matches both follows the file only)."""
    candidates = [(name, "")]  # (the name to look in, the extension the rotated-from file ends with)
    root, dot, extension = name.rpartition(".")
    if dot and extension.isalpha():
        candidates.append((root, dot + extension))
    for text, after in candidates:
        for i in range(len(text) - 1, 0, -1):
            separator = text[i]
            if separator not in ".-_":
                continue
            rest = text[i + 1 :]
            marked = ROTATION_DATE.fullmatch(rest) is not None or (
                separator == "." and ROTATION_COUNT.fullmatch(rest) is not None
            )
            if marked and os.path.isfile(text[:i] + after):
                return True
    return False
