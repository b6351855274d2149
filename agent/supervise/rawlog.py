"""A supervised server's raw log: created ``0640``, rotated by size without the server noticing.

The server writes its stdout and stderr straight into the file (no pipe to
kvwatch that could fill up or break) and keeps its descriptor for its whole
life, so the file cannot be renamed away under it.  Instead the part already
read is copied out to ``path.1`` (older copies shift up) and then removed from
the front of the live file with ``fallocate(FALLOC_FL_COLLAPSE_RANGE)``, which
the kernel does atomically against the server's appends (ext4, xfs): no line
is lost and the server never notices.

Where the filesystem has no room for the copy (``ENOSPC``, a quota), the part already read is
removed from the live file all the same, without its copy: the server's next lines need the room
more than lines already read do.  A rotation that fails for another reason is tried again a minute
later, not at every read, and said once until one succeeds.  The live file is cut through the
reader's own descriptor, so a raw log deleted under its server (which writes on into the deleted
file) is kept small all the same.

Only the reader knows what has been read, so the reader decides when and calls
:class:`RawLog` (:meth:`agent.sources.tail.TailedPath.rotate`).  The kernel
first writes what follows the cut to disk, holding the file's lock -- the
server's next write waits for it -- so a rotation happens only once the reader
is close behind the writer (``ROTATE_MAX_UNREAD``), when that part is small;
during a flood the log grows past its limit instead, up to
``ROTATE_FORCE_FACTOR`` times it.  The range must be whole filesystem blocks,
so a line may be split between ``.1`` and the live file.  Where the filesystem
cannot collapse, the copy is followed by a truncation, and a line written in
the instant between the last read and the truncation is lost (the warning says
so).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import logging
import os
import time
from pathlib import Path

log = logging.getLogger("kvwatch.rawlog")

LOG_MODE = 0o640  # raw logs hold prompts whenever vLLM logs them
COPY_BLOCK = 1 << 20
# A raw log past its size limit is rotated once at most this much of it is unread ...
ROTATE_MAX_UNREAD = 4 << 20
# ... or, if the reader cannot catch up, once it is this many times its limit.
ROTATE_FORCE_FACTOR = 8
# A rotation that failed is tried again after this many seconds.
RETRY_SECONDS = 60.0
# A filesystem without room for the copy of what was read; said at most this often.
_NO_ROOM = (errno.ENOSPC, errno.EDQUOT)
NO_ROOM_REPORT_SECONDS = 600.0


def open_raw_log(path: Path) -> int:
    """The server's stdout/stderr: appended to, created ``0640`` (it may hold prompts)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, LOG_MODE)
    with contextlib.suppress(OSError):  # a file created before, under another umask
        os.fchmod(fd, LOG_MODE)
    return fd


class RawLog:
    """The rotation policy of one raw log and the file work of a rotation."""

    def __init__(self, path: str, max_bytes: int, backups: int) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.backups = backups
        self.forced_rotation_reported = False
        self.retry_at = 0.0  # (monotonic) no rotation before then: the last one failed
        self.failure_reported: str | None = None  # the failure said last, until a rotation succeeds
        self.no_room_reported_at: float | None = None  # (monotonic)
        self.truncation_reported = False

    def due(self, read: int, size: int) -> bool:
        """Past the size limit, once the reader (at ``read``) is close behind the writer (at ``size``)."""
        if read < self.max_bytes:
            return False
        if self.retry_at and time.monotonic() < self.retry_at:
            return False
        if size - read <= ROTATE_MAX_UNREAD:
            return True
        if size >= ROTATE_FORCE_FACTOR * self.max_bytes:
            if not self.forced_rotation_reported:
                log.warning(
                    "%s: %d bytes not read yet, the log is %d times its size limit: rotating anyway "
                    "(the server waits while the unread part is written to disk)",
                    self.path,
                    size - read,
                    ROTATE_FORCE_FACTOR,
                )
                self.forced_rotation_reported = True
            return True
        return False

    def failed(self, exc: OSError) -> None:
        """A rotation failed: said once (until one succeeds), tried again in :data:`RETRY_SECONDS`."""
        reason = exc.strerror or str(exc)
        if reason != self.failure_reported:
            log.warning("cannot rotate %s: %s (tried again every %.0f s)", self.path, reason, RETRY_SECONDS)
            self.failure_reported = reason
        self.retry_at = time.monotonic() + RETRY_SECONDS

    def succeeded(self) -> None:
        if self.failure_reported is not None:
            log.info("%s: rotated again", self.path)
        self.failure_reported = None
        self.retry_at = 0.0

    def cut(self, fd: int, read: int) -> int:
        """How much of the front of ``fd`` to move out: what was read, in whole filesystem blocks (0: nothing yet)."""
        block = os.fstatvfs(fd).f_bsize or 4096
        return (read // block) * block

    def archive(self, fd: int, cut: int) -> None:
        """Shift the older copies up and copy the first ``cut`` bytes of ``fd`` into ``path.1`` (no copy where
        its filesystem has no room for it)."""
        if self.backups <= 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.{self.backups}")
        for number in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}.{number}", f"{self.path}.{number + 1}")
        if not self._copy(fd, 0, cut, os.O_CREAT | os.O_TRUNC):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(f"{self.path}.1")  # (a part of a copy is no copy, and it holds room)

    def _copy(self, fd: int, start: int, end: int, flags: int) -> bool:
        """Bytes ``start`` to ``end`` of ``fd`` into ``path.1`` (opened with ``flags`` more); False where the
        filesystem had no room for them."""
        try:
            out = os.open(f"{self.path}.1", os.O_WRONLY | os.O_CLOEXEC | flags, LOG_MODE)
            try:
                offset = start
                while offset < end:
                    chunk = os.pread(fd, min(COPY_BLOCK, end - offset), offset)
                    if not chunk:
                        break
                    os.write(out, chunk)
                    offset += len(chunk)
            finally:
                os.close(out)
        except OSError as exc:
            if exc.errno not in _NO_ROOM:
                raise
            now = time.monotonic()
            if self.no_room_reported_at is None or now - self.no_room_reported_at >= NO_ROOM_REPORT_SECONDS:
                log.warning(
                    "%s: no room for a copy of the part already read (%s): that part is removed from the log "
                    "without one, so that the server can go on writing",
                    self.path,
                    exc.strerror,
                )
                self.no_room_reported_at = now
            return False
        return True

    def collapse(self, fd: int, cut: int) -> bool:
        """Remove the first ``cut`` bytes of the live file (the one ``fd`` reads) in place; False where the
        filesystem cannot."""
        writer = _writer_of(fd, self.path)
        try:
            return _collapse(writer, cut)
        finally:
            os.close(writer)

    def truncate(self, fd: int, cut: int, read: int) -> None:
        """The fallback to :meth:`collapse`: archive what was read since the cut, then empty the file."""
        if self.backups > 0 and read > cut and os.path.exists(f"{self.path}.1"):
            self._copy(fd, cut, read, os.O_APPEND)
        writer = _writer_of(fd, self.path)
        try:
            os.ftruncate(writer, 0)
        finally:
            os.close(writer)
        if not self.truncation_reported:
            log.warning(
                "%s: this filesystem cannot collapse a file range; rotated by truncation, "
                "which can lose a line written during it",
                self.path,
            )
            self.truncation_reported = True


def _writer_of(fd: int, path: str) -> int:
    """A descriptor that writes the file ``fd`` reads, opened through ``/proc``: also a file deleted since (the
    server writes on into it), which ``path`` no longer names.  Without ``/proc`` (a chroot), through ``path``."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_WRONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return os.open(path, os.O_WRONLY | os.O_CLOEXEC)


_FALLOC_FL_COLLAPSE_RANGE = 0x08
_libc = None


def _collapse(fd: int, length: int) -> bool:
    """Remove the first ``length`` bytes of a file in place; False where unsupported."""
    global _libc
    if _libc is None:
        _libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    result = _libc.fallocate(fd, _FALLOC_FL_COLLAPSE_RANGE, ctypes.c_long(0), ctypes.c_long(length))
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EOPNOTSUPP, errno.EINVAL, errno.ENOSYS, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code))
