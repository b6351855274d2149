"""The events contract, written out from :mod:`parsers.events`: the JSON Schema and the docs' table.

    python -m parsers.schema_build            # rewrite parsers/schema/events.schema.json and docs/events.md's table
    python -m parsers.schema_build --check    # exit 1 if either is not what the event classes say

An event class is the one place a kind is declared: its docstring describes
the kind, each field's type says its JSON type (``| None``: optional;
``Literal``: one of these values; ``NonNegativeInt``: at least 0), and the
``#:`` comment on or above the field describes it.
"""

from __future__ import annotations

import argparse
import ast
import inspect
import json
import sys
import types
import typing
from pathlib import Path

from parsers import events
from parsers.events import EVENT_TYPES, Event, NonNegativeInt, payload_fields

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_PATH = ROOT / "parsers" / "schema" / "events.schema.json"
DOC_PATH = ROOT / "docs" / "events.md"
DOC_BEGIN = "<!-- The table below is written by `python -m parsers.schema_build`; edit parsers/events.py instead. -->"
DOC_END = "<!-- end of the generated table -->"

ENVELOPE = {
    "line": {
        "type": "integer",
        "minimum": 1,
        "description": "1-based number of the newline-terminated line in its input (a bare carriage return does not "
        "end a line)",
    },
    "file": {"type": "string", "description": "the input's name as given, - for stdin"},
    "server": {
        "type": "string",
        "description": "the server the event counts toward, where it is not the input's own: a writer of a log "
        "several pods or services wrote (kubectl logs --prefix, docker compose logs, a collector's export)",
    },
    "time": {
        "type": "string",
        "format": "date-time",
        "description": "ISO 8601 time the line carries, resolved to a year and offset (see docs/events.md, Timestamps)",
    },
}
_SIMPLE = {int: {"type": "integer"}, float: {"type": "number"}, str: {"type": "string"}, bool: {"type": "boolean"}}


def field_docs(cls: type[Event]) -> dict[str, str]:
    """Each field's ``#:`` comment: on its line, or the lines just above it."""
    source = inspect.getsource(cls)
    lines = source.splitlines()
    docs: dict[str, str] = {}
    for node in ast.parse(source).body[0].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            line = lines[node.lineno - 1]
            text = line.split("#:", 1)[1].strip() if "#:" in line else ""
            above = node.lineno - 2
            while not text and above >= 0 and lines[above].strip().startswith("#:"):
                above -= 1
            if not text:
                text = " ".join(comment.strip()[2:].strip() for comment in lines[above + 1 : node.lineno - 1])
            docs[node.target.id] = text
    return docs


def json_type(annotation: object) -> tuple[dict, bool]:
    """The JSON Schema of a field's type, and whether it may be absent."""
    optional = False
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        optional = len(members) < len(typing.get_args(annotation))
        (annotation,) = members
    if annotation is NonNegativeInt:
        return {"type": "integer", "minimum": 0}, optional
    if annotation in _SIMPLE:
        return dict(_SIMPLE[annotation]), optional
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Literal:
        return {"enum": list(args)}, optional
    if origin is dict:
        return {"type": "object", "additionalProperties": json_type(args[1])[0]}, optional
    if origin in (list, tuple):
        return {"type": "array", "items": json_type(args[0])[0]}, optional
    raise TypeError(f"no JSON type for {annotation!r}")


def branch(cls: type[Event]) -> dict:
    hints = typing.get_type_hints(cls, vars(events))
    docs = field_docs(cls)
    properties: dict = {"kind": {"const": cls.kind}, **{name: {"$ref": f"#/$defs/{name}"} for name in ENVELOPE}}
    required = ["line", "file", "kind"]
    for name in payload_fields(cls):
        schema, optional = json_type(hints[name])
        if not docs.get(name):
            raise ValueError(f"{cls.__name__}.{name} has no #: description")
        properties[name] = {**schema, "description": docs[name]}
        if not optional:
            required.append(name)
    out = {"title": cls.kind, "type": "object", "properties": properties, "required": required}
    out["additionalProperties"] = False
    out["description"] = description(cls)
    return out


def description(cls: type[Event]) -> str:
    """The class's docstring on one line (every event class has one: the schema and the docs show it)."""
    doc = cls.__dict__.get("__doc__") or ""
    if not doc or doc.startswith(f"{cls.__name__}("):  # the signature dataclasses put in a missing docstring
        raise ValueError(f"{cls.__name__} has no docstring")
    return " ".join(doc.split())


def schema() -> dict:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://github.com/kvwatch/kvwatch/parsers/schema/events.schema.json",
        "title": "kvwatch event",
        "description": events.CONTRACT,
        "$defs": ENVELOPE,
        "oneOf": [branch(cls) for cls in EVENT_TYPES],
    }


def doc_table() -> str:
    rows = ["| kind | what it is | fields |", "|---|---|---|"]
    for cls in EVENT_TYPES:
        docs = field_docs(cls)
        fields = "; ".join(f"`{name}`: {docs[name]}" for name in payload_fields(cls)) or "—"
        rows.append(f"| `{cls.kind}` | {description(cls)} | {fields} |")
    return "\n".join(rows)


def with_table(text: str) -> str:
    head, rest = text.split(DOC_BEGIN, 1)
    _old, tail = rest.split(DOC_END, 1)
    return f"{head}{DOC_BEGIN}\n\n{doc_table()}\n\n{DOC_END}{tail}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the files are not what the classes say")
    args = parser.parse_args(argv)
    wanted = {
        SCHEMA_PATH: json.dumps(schema(), indent=2, ensure_ascii=False) + "\n",
        DOC_PATH: with_table(DOC_PATH.read_text(encoding="utf-8")),
    }
    stale = [path for path, text in wanted.items() if path.read_text(encoding="utf-8") != text]
    if args.check:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is not what parsers/events.py says; run python -m parsers.schema_build")
        return 1 if stale else 0
    for path in stale:
        path.write_text(wanted[path], encoding="utf-8")
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
