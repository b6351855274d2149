"""A supervised server's raw log: created ``0640``, rotated by size without the server noticing.

The server writes its stdout and stderr straight into the file (no pipe to
kvwatch that could fill up or break) and keeps its descriptor for its whole
life, so the file cannot be renamed away under it.  Instead the part already
read is copied out to ``path.1`` (older copies shift up) and then removed from
the front of the live file with ``fallocate(FALLOC_FL_COLLAPSE_RANGE)``, which
the kernel does atomically against the server's appends (ext4, xfs): no line
is lost and the server never notices.

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
from pathlib import Path

log = logging.getLogger("kvwatch.rawlog")

LOG_MODE = 0o640  # raw logs hold prompts whenever vLLM logs them
COPY_BLOCK = 1 << 20
# A raw log past its size limit is rotated once at most this much of it is unread ...
ROTATE_MAX_UNREAD = 4 << 20
# ... or, if the reader cannot catch up, once it is this many times its limit.
ROTATE_FORCE_FACTOR = 8


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

    def due(self, read: int, size: int) -> bool:
        """Past the size limit, once the reader (at ``read``) is close behind the writer (at ``size``)."""
        if read < self.max_bytes:
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

    def cut(self, read: int) -> int:
        """How much of the front to move out: what was read, in whole filesystem blocks (0: nothing yet)."""
        block = os.statvfs(self.path).f_bsize or 4096
        return (read // block) * block

    def archive(self, fd: int, cut: int) -> None:
        """Shift the older copies up and copy the first ``cut`` bytes of ``fd`` into ``path.1``."""
        if self.backups <= 0:
            return
        with contextlib.suppress(FileNotFoundError):
            os.unlink(f"{self.path}.{self.backups}")
        for number in range(self.backups - 1, 0, -1):
            with contextlib.suppress(FileNotFoundError):
                os.rename(f"{self.path}.{number}", f"{self.path}.{number + 1}")
        out = os.open(f"{self.path}.1", os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, LOG_MODE)
        try:
            offset = 0
            while offset < cut:
                chunk = os.pread(fd, min(COPY_BLOCK, cut - offset), offset)
                if not chunk:
                    break
                os.write(out, chunk)
                offset += len(chunk)
        finally:
            os.close(out)

    def collapse(self, cut: int) -> bool:
        """Remove the first ``cut`` bytes of the live file in place; False where the filesystem cannot."""
        writer = os.open(self.path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            return _collapse(writer, cut)
        finally:
            os.close(writer)

    def truncate(self, fd: int, cut: int, read: int) -> None:
        """The fallback to :meth:`collapse`: archive what was read since the cut, then empty the file."""
        if self.backups > 0 and read > cut:
            out = os.open(f"{self.path}.1", os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
            try:
                os.write(out, os.pread(fd, read - cut, cut))
            finally:
                os.close(out)
        os.truncate(self.path, 0)
        log.warning(
            "%s: this filesystem cannot collapse a file range; rotated by truncation, "
            "which can lose a line written during it",
            self.path,
        )


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
