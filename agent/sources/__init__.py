"""Where lines come from: files followed live, journald, replay inputs; bytes to lines.

Every live source hands its lines to one :data:`Deliver` function, decoded and
in order, ``None`` standing for a line it skipped (and counted), with the file
they were read from (each file's lines are parsed as a stream of their own); the
tailer hands over the lines of all the files one cycle read together.  Where they go
from there is the pipeline's business (:mod:`agent.pipeline`): a source never
takes a sink's lock, so a scrape never waits on a disk read.
"""

from __future__ import annotations

import glob
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from prometheus_client.core import Metric

log = logging.getLogger("kvwatch.sources")

# (source name, [(lines, the file's path or "" for a source of one stream), ...]): each file's lines in the order
# read, None standing for a skipped line
Deliver = Callable[[str, list[tuple[list, str]]], None]


class LineSource(Protocol):
    """A live source: started once, stopped once, its own series rendered when scraped."""

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def families(self) -> Iterable[Metric]: ...


def lower_thread_priority(nice: int) -> None:
    """Run the calling thread at ``nice``: reading logs must yield the CPU to the servers.

    Linux keeps a nice value per thread, so only this thread is lowered; the
    servers are started from the main thread and keep the priority kvwatch
    itself was given.
    """
    if nice <= 0:
        return
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), max(current, nice))
    except OSError as exc:
        log.debug("cannot lower the reading thread's priority: %s", exc)


def special_file(mode: int) -> str:
    """What a path that is no regular file nor directory names, from its ``st_mode``: it has no size or
    position to follow."""
    return "a named pipe" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode) else "a device"


def fixed_prefix(directory: str) -> str:
    """The part of a directory glob before its first wildcard: ``/a/*/b`` -> ``/a``."""
    fixed = []
    for part in directory.split(os.sep):
        if glob.has_magic(part):
            break
        fixed.append(part)
    return os.sep.join(fixed) or os.sep


def unlistable(pattern: str) -> str | None:
    """The directory before a glob's first wildcard when this user cannot list it (or reach it): the glob
    finds nothing there, whatever it holds.  None when it can, or when the directory is not there yet."""
    directory = fixed_prefix(os.path.dirname(pattern))
    try:
        if not stat.S_ISDIR(os.stat(directory).st_mode):
            return None
    except PermissionError:
        return directory
    except OSError:
        return None
    return None if os.access(directory, os.R_OK | os.X_OK) else directory


# Directories of a discovering table ([[pods]], [[containers]]) this user may not list, said once each (and
# once more when they can be).
_DENIED: set[str] = set()


def listed(directory: str, table: str, what: str) -> list[os.DirEntry]:
    """The subdirectories of ``directory`` by name, where a ``table`` (pods, containers) finds each ``what``;
    none when it cannot be listed (a permission refused is said in the log once, and once more when it is
    lifted)."""
    try:
        entries = sorted(os.scandir(directory), key=lambda e: e.name)
    except PermissionError:
        if directory not in _DENIED:
            log.warning("%s: cannot list %s (will retry): permission denied: no %s is found", table, directory, what)
            _DENIED.add(directory)
        return []
    except OSError:
        return []
    if directory in _DENIED:
        log.info("%s: %s can be listed again", table, directory)
        _DENIED.discard(directory)
    return [entry for entry in entries if entry.is_dir()]
