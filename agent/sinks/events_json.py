"""``kvwatch replay --format events``: one JSON object per event, one per line (JSON Lines).

Each record has the line number, the input's name, the event's kind, its time
(when the line's stamp resolves) and its payload fields; the JSON Schema of
every kind is ``parsers/schema/events.schema.json``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import TextIO

from parsers import Clock
from parsers.events import Event, payload_fields
from parsers.timestamps import isoformat

_FIELDS_CACHE: dict[type, tuple[str, ...]] = {}
# What json.dumps writes a string as (its default, ensure_ascii).
_text = json.encoder.encode_basestring_ascii


def event_record(event: Event, file: str, line: int, clock: Clock, server: str | None = None) -> dict:
    """The JSON object of one event in the ``events`` format (``server``: where it is not the input's own)."""
    record: dict[str, object] = {"line": line, "file": file}
    if server is not None:
        record["server"] = server
    record["kind"] = event.kind
    when = clock.resolve(event.stamp) if event.stamp else None
    if when is not None:
        record["time"] = isoformat(when)
    names = _FIELDS_CACHE.get(type(event))
    if names is None:
        names = _FIELDS_CACHE[type(event)] = payload_fields(type(event))
    for name in names:
        value = getattr(event, name)
        if value is None or not _finite(value):
            continue  # JSON has no infinity: a number the log gave as one is left out, as an absent one is
        record[name] = value
    return record


def _finite(value: object) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, list):
        return all(math.isfinite(v) for v in value if isinstance(v, float))
    return True


def event_writer(out: TextIO, file: str, server: str) -> Callable[[Event, int, Clock, str], None]:
    """Write each event as one line: ``json.dumps(event_record(...))``, the same text, built without the dict
    and the general encoder (half the cost of an event, which is most of what ``--format events`` costs).
    ``server`` is the input's own: an event that counts toward another (a writer of a multiplexed log)
    names it."""
    write = out.write
    head = ", " + _text("file") + ": " + _text(file)
    heads = {server: head}  # what follows the line number, by the server an event counts toward
    layouts: dict[type, tuple[str, tuple[tuple[str, str], ...]]] = {}
    # The last stamp and its "time" member: the events of a burst share a stamp.
    last_stamp: str | None = None
    last_time = ""

    def on_event(event: Event, line: int, clock: Clock, counted: str) -> None:
        nonlocal last_stamp, last_time
        start = heads.get(counted)
        if start is None:
            start = heads[counted] = head + ", " + _text("server") + ": " + _text(counted)
        layout = layouts.get(type(event))
        if layout is None:
            layout = layouts[type(event)] = _layout(type(event))
        stamp = event.stamp
        if stamp != last_stamp:
            resolved = clock.resolve(stamp) if stamp else None
            last_time = f', "time": {_text(isoformat(resolved))}' if resolved is not None else ""
            last_stamp = stamp
        parts = ['{"line": ', str(line), start, layout[0], last_time]
        for name, key in layout[1]:
            value = getattr(event, name)
            if value is not None:
                member = _member(value)
                if member is not None:
                    parts.append(key)
                    parts.append(member)
        parts.append("}\n")
        write("".join(parts))

    return on_event


def _layout(cls: type[Event]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """An event class's ``"kind"`` member and, for each payload field, its name and the text before its value."""
    return f", {_text('kind')}: {_text(cls.kind)}", tuple((name, f", {_text(name)}: ") for name in payload_fields(cls))


def _member(value: object) -> str | None:
    """A field's value as json.dumps writes it, or None where the record leaves it out (see ``event_record``)."""
    kind = type(value)
    if kind is str:
        return _text(value)
    if kind is int:
        return int.__repr__(value)
    if kind is float:
        return float.__repr__(value) if math.isfinite(value) else None
    return json.dumps(value) if _finite(value) else None
