"""Read positions: which file a path named, how far it was read, saved so a restart resumes there.

A file is known by its device and inode plus a fingerprint of its first bytes
(an inode number is reused once a file is deleted).  Every position of every
source is kept in one JSON file, replaced whole at each save.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass

from agent.statedir import StateFile

log = logging.getLogger("kvwatch.positions")

FINGERPRINT_BYTES = 256
FORMAT_VERSION = 2  # 2: with the sources' numbers (1: positions only, still read)


def fingerprint(fd: int, length: int = FINGERPRINT_BYTES, offset: int = 0) -> tuple[int, str]:
    """The length and digest of up to ``length`` bytes of ``fd`` from ``offset``."""
    head = os.pread(fd, length, offset)
    return len(head), hashlib.sha1(head).hexdigest()


@dataclass(frozen=True, slots=True)
class Position:
    """Where reading stopped in one file: the start of the first line not yet handed on.

    ``alternatives`` are where it stops if a rotation in flight completes;
    ``draining`` the files rotated away from the path and not yet read to
    their end; ``seen`` when the path was last seen naming this file (unix
    time: a rotated copy changed later was written after it); ``skipping``
    that the offset lies inside a line too long to keep, read past to its end.
    """

    dev: int
    ino: int
    offset: int
    fp_len: int
    fp: str
    alternatives: tuple[Position, ...] = ()
    draining: tuple[Position, ...] = ()
    seen: float = 0.0
    skipping: bool = False

    def same_file(self, fd: int) -> bool:
        """True when ``fd`` begins with the bytes this position's file began with."""
        return fingerprint(fd, self.fp_len) == (self.fp_len, self.fp)

    def candidates(self) -> tuple[Position, ...]:
        return (self, *self.alternatives)

    def to_json(self) -> dict:
        record: dict = {"dev": self.dev, "ino": self.ino, "offset": self.offset, "fp_len": self.fp_len, "fp": self.fp}
        if self.alternatives:
            record["alternatives"] = [alternative.to_json() for alternative in self.alternatives]
        if self.draining:
            record["draining"] = [older.to_json() for older in self.draining]
        if self.seen:
            record["seen"] = self.seen
        if self.skipping:
            record["skipping"] = True
        return record

    @classmethod
    def from_json(cls, record: object) -> Position | None:
        """The position a saved record holds; None for one that is not a position (a damaged file)."""
        if not isinstance(record, dict):
            return None
        try:
            numbers = [record[key] for key in ("dev", "ino", "offset", "fp_len")]
            fp = record["fp"]
        except KeyError:
            return None
        if not all(isinstance(n, int) and n >= 0 for n in numbers) or not isinstance(fp, str):
            return None
        alternatives = tuple(filter(None, (cls.from_json(a) for a in record.get("alternatives") or ())))
        draining = tuple(filter(None, (cls.from_json(a) for a in record.get("draining") or ())))
        seen = record.get("seen", 0.0)
        seen = float(seen) if isinstance(seen, int | float) and not isinstance(seen, bool) else 0.0
        return cls(*numbers, fp, alternatives, draining, seen, record.get("skipping") is True)


class PositionStore:
    """Read positions by source and path, and each source's numbers, in one JSON file replaced atomically.

    The numbers (``counters``: whatever the source's owner saves, see
    :mod:`agent.sinks.checkpoint`) are written in the same file as the
    positions, so after any kill the two agree: the numbers count exactly
    the lines before the positions.
    """

    def __init__(self, path: str | None) -> None:
        self.path = path
        self.positions: dict[str, dict[str, Position]] = {}
        self.counters: dict[str, dict] = {}
        self._last: str | None = None
        self._file = StateFile.at(path, "read positions") if path else None
        if path:
            self.positions, self.counters = _load(path)

    def get(self, source: str, path: str) -> Position | None:
        return self.positions.get(source, {}).get(path)

    def save(self, positions: dict[str, dict[str, Position]], counters: dict[str, dict] | None = None) -> bool:
        """Write the positions and numbers (unless they are what the file holds); False when the write
        failed (a full disk, a state directory gone): the caller tries again."""
        if self._file is None:
            return True
        counters = counters or {}
        records = {name: {path: p.to_json() for path, p in paths.items()} for name, paths in positions.items()}
        data = {"version": FORMAT_VERSION, "positions": records, "counters": counters}
        text = json.dumps(data, sort_keys=True)
        if text == self._last:
            return True
        if not self._file.save(text):
            return False
        self._last = text
        self.positions = positions
        self.counters = counters
        return True


def _load(path: str) -> tuple[dict[str, dict[str, Position]], dict[str, dict]]:
    try:
        with open(path, encoding="utf-8") as handle:
            data = json.load(handle)
    except FileNotFoundError:
        return {}, {}
    except (OSError, ValueError) as exc:
        log.warning("ignoring unreadable positions file %s: %s", path, exc)
        return {}, {}
    if not isinstance(data, dict):
        return {}, {}
    saved = data.get("positions")
    counters = data.get("counters")
    counters = {k: v for k, v in counters.items() if isinstance(v, dict)} if isinstance(counters, dict) else {}
    if not isinstance(saved, dict):
        return {}, {}
    positions: dict[str, dict[str, Position]] = {}
    for source, paths in saved.items():
        if not isinstance(paths, dict):
            continue
        for name, record in paths.items():
            position = Position.from_json(record)
            if position is None:
                # The source's numbers stand for all its positions: without one, they go too.
                log.warning("ignoring a damaged read position in %s: %s %s", path, source, name)
                counters.pop(source, None)
            else:
                positions.setdefault(source, {})[name] = position
    return positions, counters
