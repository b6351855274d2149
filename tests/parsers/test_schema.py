"""The JSON Schema in parsers/schema describes exactly the event classes."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from parsers.events import EVENT_TYPES, payload_fields
from tests.support.harness import REPO
from tests.support.schema import SCHEMA

ENVELOPE = {"line", "file", "server", "kind", "time"}


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


def test_the_events_doc_names_every_kind_and_field() -> None:
    text = (Path(__file__).parents[2] / "docs" / "events.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| ((?:`[a-z0-9_]+`(?:, )?)+) \| (.*) \|$", text, re.M)
    documented: dict[str, str] = {}
    for kinds, fields in rows:
        for kind in re.findall(r"`([a-z0-9_]+)`", kinds):
            documented[kind] = fields
    assert set(documented) == {cls.kind for cls in EVENT_TYPES}
    for cls in EVENT_TYPES:
        for name in payload_fields(cls):
            assert f"`{name}`" in documented[cls.kind], (cls.kind, name)


def test_the_schema_and_the_docs_table_are_what_the_event_classes_say() -> None:
    result = subprocess.run([sys.executable, "-m", "parsers.schema_build", "--check"], cwd=REPO, capture_output=True)
    assert result.returncode == 0, result.stdout.decode() + result.stderr.decode()
