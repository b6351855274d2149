"""The JSON Schema in parsers/schema describes exactly the event classes."""

from __future__ import annotations

import json
from pathlib import Path

from parsers.events import EVENT_TYPES, payload_fields

SCHEMA = json.loads((Path(__file__).parents[2] / "parsers" / "schema" / "events.schema.json").read_text())
ENVELOPE = {"line", "file", "kind", "time"}


def test_one_branch_per_kind_with_the_same_fields() -> None:
    branches = {b["properties"]["kind"]["const"]: b for b in SCHEMA["oneOf"]}
    assert set(branches) == {cls.kind for cls in EVENT_TYPES}
    for cls in EVENT_TYPES:
        branch = branches[cls.kind]
        assert set(branch["properties"]) == ENVELOPE | set(payload_fields(cls)), cls.kind
        assert branch["additionalProperties"] is False
        assert {"line", "file", "kind"} <= set(branch["required"])
        for name in payload_fields(cls):
            assert branch["properties"][name].get("description"), (cls.kind, name)
