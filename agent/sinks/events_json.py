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


def event_record(event: Event, file: str, line: int, clock: Clock) -> dict:
    """The JSON object of one event in the ``events`` format."""
    record: dict[str, object] = {"line": line, "file": file, "kind": event.kind}
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


def event_writer(out: TextIO, file: str) -> Callable[[Event, int, Clock], None]:
    write = out.write
    dumps = json.dumps

    def on_event(event: Event, line: int, clock: Clock) -> None:
        write(dumps(event_record(event, file, line, clock)))
        write("\n")

    return on_event
