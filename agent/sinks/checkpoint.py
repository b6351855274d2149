"""A server's stats as JSON and back: the counters kvwatch saves with its read positions.

Saved in the same atomic write as the positions (:mod:`agent.sources.positions`),
the numbers always stand for exactly the lines before those positions.  A
restarted kvwatch restores both, so its counters go on from where they were
instead of starting again at zero -- a reset Prometheus could miss -- and the
lines after the checkpoint are read again and counted once.

The encoding is plain JSON with a tag where JSON has no type of its own
(tuples, dicts with tuple keys, times, the stats' own containers).  Only the
classes listed here are ever rebuilt from a file.  A field that is missing,
of another type, or a histogram with other buckets (an older kvwatch) keeps
its fresh value, and the restore says which.
"""

from __future__ import annotations

from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import Any

from agent.sinks.stats import (
    Engines,
    EngineStatsState,
    Histogram,
    KvTransferTotals,
    LmcacheServerStarts,
    LmcacheWorkers,
    ResumeLoads,
    RunningTotal,
    ServerStats,
)

FORMAT = 1
_NOT_SAVED = frozenset(("server", "clock", "now", "service_unit"))  # (the unit is configuration, not a number)
# Classes a record may rebuild, by name: their attributes are saved one by one.
_OBJECTS: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Histogram,
        KvTransferTotals,
        RunningTotal,
        LmcacheServerStarts,
        LmcacheWorkers,
        ResumeLoads,
        EngineStatsState,
    )
}


class _Unreadable(ValueError):
    """A value in a saved record that is not one this module writes."""


def stats_record(stats: ServerStats) -> dict[str, Any]:
    """Every number of ``stats`` as JSON-ready data."""
    values = {f.name: _encode(getattr(stats, f.name)) for f in fields(stats) if f.name not in _NOT_SAVED}
    return {"format": FORMAT, "created": stats.created, "fields": values}


def restore_stats(stats: ServerStats, record: object) -> list[str]:
    """Put the numbers of a saved record into fresh ``stats``; returns the fields left fresh."""
    if not isinstance(record, dict) or record.get("format") != FORMAT or not isinstance(record.get("fields"), dict):
        return ["(all: not a saved record of this format)"]
    created = record.get("created")
    if isinstance(created, int | float):
        stats.created = float(created)
    saved = record["fields"]
    left = []
    for f in fields(stats):
        if f.name in _NOT_SAVED:
            continue
        fresh = getattr(stats, f.name)
        try:
            value = _decode(saved[f.name])
        except (KeyError, _Unreadable, TypeError, ValueError):
            left.append(f.name)
            continue
        if isinstance(value, datetime):
            value = value.timestamp()  # the span of log time, saved as datetimes before it was seconds
        if not _fits(fresh, value):
            left.append(f.name)
            continue
        if isinstance(fresh, dict) and not isinstance(fresh, Engines):
            # The same dict object (the stats' counting closures hold it), its fresh keys kept: a key every
            # fresh stats has (an error kind a later release added, always exported) is there after a
            # record saved before it, at 0.
            fresh.update(value)
        else:
            setattr(stats, f.name, value)
    return left


def _fits(fresh: Any, value: Any) -> bool:
    """True when a saved value can stand where ``fresh`` is (same kind; same buckets)."""
    if fresh is None or value is None:
        return True
    if isinstance(fresh, int | float) and not isinstance(fresh, bool):
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(fresh, Histogram):
        return isinstance(value, Histogram) and value.bounds == fresh.bounds and len(value.counts) == len(fresh.counts)
    return type(value) is type(fresh)


def _encode(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, tuple):
        return {"tuple": [_encode(v) for v in value]}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, Engines):
        return {"engines": [[k, _encode(v)] for k, v in value.items()]}
    if isinstance(value, dict):
        return {"dict": [[_encode(k), _encode(v)] for k, v in value.items()]}
    name = type(value).__name__
    if _OBJECTS.get(name) is type(value):
        return {"object": name, "state": {n: _encode(getattr(value, n)) for n in _attributes(type(value))}}
    raise TypeError(f"cannot save a {name}")


def _decode(data: Any) -> Any:
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [_decode(v) for v in data]
    if not isinstance(data, dict) or len(data) not in (1, 2):
        raise _Unreadable(repr(data)[:40])
    if "tuple" in data:
        return tuple(_decode(v) for v in data["tuple"])
    if "dict" in data:
        return {_decode(k): _decode(v) for k, v in data["dict"]}
    if "engines" in data:
        return Engines((k, _decode(v)) for k, v in data["engines"])
    if "datetime" in data:  # written by kvwatch before the span of log time was kept in seconds
        return datetime.fromisoformat(data["datetime"])
    cls = _OBJECTS.get(data.get("object"))
    if cls is None or not isinstance(data.get("state"), dict):
        raise _Unreadable(repr(data)[:40])
    state = data["state"]
    if is_dataclass(cls):
        # A record of an older kvwatch: a field added since keeps its fresh value, the others come back.
        obj = cls()
        for attribute in _attributes(cls):
            if attribute in state:
                setattr(obj, attribute, _decode(state[attribute]))
        return obj
    obj = cls.__new__(cls)
    for attribute in _attributes(cls):
        if attribute not in state:
            raise _Unreadable(f"{cls.__name__} without {attribute}")
        setattr(obj, attribute, _decode(state[attribute]))
    return obj


def _attributes(cls: type) -> list[str]:
    slots = getattr(cls, "__slots__", None)
    return list(slots) if slots is not None else [f.name for f in fields(cls)]
