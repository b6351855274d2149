"""The events format's JSON Schema, and a record checked against it as a reader of ``--format events`` would."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema

SCHEMA = json.loads((Path(__file__).parents[2] / "parsers" / "schema" / "events.schema.json").read_text())
_WHOLE = jsonschema.Draft202012Validator(SCHEMA)
# The schema is one branch per kind under ``oneOf``: the whole of it tries every kind's branch on a record (4 ms
# each here), the record's own kind's branch takes a thirtieth of that.
_BY_KIND = {
    branch["properties"]["kind"]["const"]: jsonschema.Draft202012Validator({"$defs": SCHEMA["$defs"], **branch})
    for branch in SCHEMA["oneOf"]
}
_CHECKED_WHOLE: set[object] = set()


def validate_record(record: dict) -> None:
    """Raise :class:`jsonschema.ValidationError` where the schema refuses ``record``: its kind's branch checks it,
    and the first record of each kind is checked against the whole schema too (which must take it under exactly
    one branch)."""
    kind = record.get("kind")
    if kind not in _CHECKED_WHOLE or kind not in _BY_KIND:
        _WHOLE.validate(record)
        _CHECKED_WHOLE.add(kind)
    _BY_KIND[kind].validate(record)
