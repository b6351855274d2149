"""Lines kvwatch could not read, made safe to paste into a bug report.

``kvwatch replay --format unmatched`` collects the lines that carry a vLLM,
LMCache or uvicorn header (or look like they do) but gave no event.  Before
anything leaves the machine, what could be user data is masked: quoted text and
whatever follows a ``prompt:`` or ``output:`` field (prompts and completions),
request ids and other long hexadecimal runs, numbers.  Lines of the same shape
then collapse into one.
"""

from __future__ import annotations

import re

from parsers.envelope import LMCACHE_OLD_HEADER, WATCHED_LOGGERS, JsonRecord, find_header, json_records, strip_ansi

# Fields after which vLLM prints user text: everything from there on is dropped.
_USER_TEXT = re.compile(r"(?:prompt|output|outputs|text|content|messages): .*$", re.IGNORECASE | re.DOTALL)
_QUOTED = re.compile(r"'[^'\\]*(?:\\.[^'\\]*)*'?|\"[^\"\\]*(?:\\.[^\"\\]*)*\"?|“[^”]*”?")
# Ids: UUIDs, long hexadecimal runs, and the word-with-digits ids vLLM and LMCache print.
_IDS = re.compile(
    r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b"
    r"|\b(?=[a-z]*[0-9])[0-9a-f]{6,}\b"
    r"|\b(?:chatcmpl|cmpl|embd|req|request|resp)[-_][\w-]+",
    re.IGNORECASE,
)
_NUMBERS = re.compile(r"\d+(?:[.,]\d+)*")
_MAX_SHOWN = 400


def masked(line: str) -> str:
    """The line with user text, ids and quoted strings masked (numbers kept)."""
    text = strip_ansi(line)
    text = _USER_TEXT.sub(lambda m: m.group(0).split(":", 1)[0] + ": …", text)
    text = _QUOTED.sub("'…'", text)
    text = _IDS.sub("<id>", text)
    return text if len(text) <= _MAX_SHOWN else text[:_MAX_SHOWN] + " …"


def shape(line: str) -> str:
    """What lines of one kind have in common: the masked line with every number as N."""
    return _NUMBERS.sub("N", masked(line))


def looks_like_a_log_line(line: str) -> bool:
    """Whether a line carries a vLLM, LMCache or uvicorn header -- at its start, after a prefix,
    or inside a JSON record -- whether or not its message was understood."""
    text = strip_ansi(line)
    if text.startswith("{"):
        records = json_records(text)
        return records is not None and any(_record_looks_like_a_log_line(record) for record in records)
    return _has_a_header(text)


def _record_looks_like_a_log_line(record: JsonRecord) -> bool:
    if record.logger is not None:
        return record.logger.startswith(WATCHED_LOGGERS)
    return _has_a_header(strip_ansi(record.text))


def _has_a_header(text: str) -> bool:
    return find_header(text) is not None or LMCACHE_OLD_HEADER.search(text) is not None
