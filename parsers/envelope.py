"""What surrounds a message: colour codes, wrappers, process tags and log headers.

A physical line may arrive as ``docker logs -t`` output, a journald line, a
Docker json-file record, a containerd (CRI) record, behind a docker-compose
service name, with vLLM's ``(APIServer pid=N)`` process tag, and coloured.
This module peels those layers; :mod:`parsers.dispatch` decides what the
message means.  Everything here is a pure function of its input.
"""

from __future__ import annotations

import json
import re

# --- colour ---------------------------------------------------------------------

# ESC [ params m, plus the residue tools leave when they drop or escape the ESC
# byte: caret notation (``^[[32m``), a literal ``ESC[`` or ``\x1b[``/``\033[``,
# rsyslog's ``#033[``, and a bare ``[32;20m`` whose ESC was removed.
_ANSI = re.compile(r"(?:\x1b|\^\[|ESC|#033|\\x1b|\\033|\\e|\\u001b)?\[[0-9;]*m")
_ANSI_ESC_ONLY = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
# Every coloured span ends with a reset; its presence is the cheap trigger for
# the residue forms.
_RESETS = ("[0m", "[0;0m", "[m", "[39m", "[22m", "[23m")


def strip_ansi(line: str) -> str:
    """Remove escape sequences; without any, the residue forms (where a reset shows they are there)."""
    if "\x1b" in line:
        return _ANSI_ESC_ONLY.sub("", line)
    if has_residue(line):
        return _ANSI.sub("", line)
    return line


def has_residue(line: str) -> bool:
    """Whether a line shows the leftovers of colour codes whose ESC byte was lost or escaped."""
    return any(reset in line for reset in _RESETS)


# --- process tags -------------------------------------------------------------------

# ``(APIServer pid=8076) ``, ``(EngineCore_DP0 pid=9)``, ``(VllmWorker rank=4 engine_index=0 pid=31778)``,
# ``(Worker_PP0_TP1 pid=7)``.  Ray actors that run vLLM workers print the same shape.
PROCESS_TAG = re.compile(r"\(([A-Za-z_][\w.:-]*(?: [\w.=:-]+)*) pid=(\d+)\) ?")
# Names vLLM gives its processes, and Ray actors that run vLLM (``_AsyncLLMEngine``,
# ``RayWorkerWrapper``); anything else, such as SGLang's ``SGLangEngine``, is
# another server whose look-alike lines are ignored.
_VLLM_PROCESS = re.compile(
    r"(?:_?(?:Async)?LLMEngine|MQLLMEngine|LLMRayActor|APIServer|ApiServer|EngineCore|VllmWorker|Worker"
    r"|RayWorker|MainProcess|DPCoordinator|ray::RayWorker)|.*[Vv][Ll][Ll][Mm]"
)
_RANK = re.compile(r"(?:TP|rank=)(\d+)")


def is_vllm_process(name: str) -> bool:
    return _VLLM_PROCESS.match(name) is not None


def rank_of(process_name: str) -> int | None:
    """The tensor-parallel rank a worker tag names (``Worker_TP1``, ``VllmWorker rank=1``)."""
    m = _RANK.search(process_name)
    return int(m.group(1)) if m else None


# --- headers --------------------------------------------------------------------------

# vLLM: ``INFO 12-14 16:18:29 [loggers.py:118] `` (>= 0.8.0) or ``INFO 05-10 02:37:55 scheduler.py:224] ``.
# Header patterns have exactly one group, the stamp (empty when the header has none).
# (Hot patterns avoid \s/\S classes and alternations: ``re`` runs them markedly slower.)
VLLM_HEADER = r"[A-Z]+ (\d\d-\d\d \d\d:\d\d:\d\d)(?:[.,]\d+)? \[?[^\] ]+:\d+\] "
# The same with a VLLM_LOGGING_PREFIX or a process tag of >= 0.31 in front of it.
VLLM_HEADER_ANYWHERE = re.compile(r"(?:\([A-Za-z][\w.:-]*(?: [\w.=:-]+)* pid=\d+\) )?" + VLLM_HEADER)
# Python's standard format used by programs that embed vLLM:
# ``2025-07-08 17:24:00 - vllm.engine.metrics - INFO - ``.
STDLIB_HEADER = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d{3})?) - ((?:vllm|lmcache|uvicorn)[\w.]*) - "
    r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) - "
)
# LMCache >= 0.3: ``[2025-12-14 16:18:24,320] LMCache INFO: `` (the space after the
# colon is lost when a copy drops the colour reset that stood there).
# LMCache colours this header even in files; the codes are allowed here so its
# lines need no stripping (a message parser never looks past its own fields).
LMCACHE_HEADER = r"(?:\x1b\[[0-9;]*m)?\[(\d\d\d\d-[^\]]{18})\] LMCache [A-Z]+:(?:\x1b\[0m)? ?"
# LMCache 0.1.x: ``INFO LMCache: message [2024-10-24 12:00:00,123.123]``.
LMCACHE_OLD_HEADER = re.compile(r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) LMCache: ")
LMCACHE_OLD_STAMP = re.compile(r" \[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})(?:\.\d+)?\](?: --.*)?$")
# uvicorn: ``INFO:     `` (the level name and colon padded to ten characters); no time.
UVICORN_HEADER = r"[A-Z]+(): +"

# --- wrappers (other programs' framing around the original line) ----------------------

# ``docker logs -t`` / ``kubectl logs --timestamps`` / journalctl -o short-iso(-precise).
ISO_PREFIX = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?) ")
# containerd / CRI-O log files: ``<RFC3339Nano> stdout F <line>`` (``P`` = partial).
CRI_RECORD = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (?:stdout|stderr) ([FP]) ")
# journalctl -o short-iso(-precise): ``2025-12-14T16:18:24+0800 host unit[123]: ``.
JOURNAL_ISO = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)) [^\s\[]+ [^\s\[:]+(?:\[\d+\])?: "
)
# journalctl -o short(-precise): ``Dec 14 16:18:24 host unit[123]: `` -- month names in
# any locale (``déc.``, ``Dez``, ``12月``), so any non-blank word.
JOURNAL_SHORT = re.compile(r"\S{1,12} {1,2}\d{1,2} \d\d:\d\d:\d\d(?:\.\d+)? \S+ [^\s\[:]+(?:\[\d+\])?: ")
# docker compose: ``vllm-1  | `` (v1: ``vllm_1  | ``).
COMPOSE_PREFIX = re.compile(r"[\w.-]+ +\| ")

# Keys under which JSON log records carry the original text.
_JSON_TEXT_KEYS = ("log", "MESSAGE", "message", "msg")


class JsonRecord:
    """A JSON-wrapped line: the text inside, its time, and whether it is only part of a line."""

    __slots__ = ("logger", "partial", "stamp", "text")

    def __init__(self, text: str, stamp: str | None, partial: bool, logger: str | None) -> None:
        self.text = text
        self.stamp = stamp
        self.partial = partial
        self.logger = logger


def unwrap_json(line: str) -> JsonRecord | None:
    """Docker json-file, ``journalctl -o json`` and vLLM's JSON logging records.

    ``logger`` is set for a logging library's record (vLLM's ``--logging-config
    formatter json`` / ``VLLM_LOGGING_CONFIG_PATH``): its text is a bare message
    without a header, and the logger name says whose it is.
    """
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    if not isinstance(record, dict):
        return None
    text = None
    key = None
    for key in _JSON_TEXT_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            text = value
            break
        if key == "MESSAGE" and isinstance(value, list):
            # journald gives a non-UTF-8 message as an array of byte values.
            try:
                text = bytes(value).decode("utf-8")
            except (ValueError, TypeError):
                return None
            break
    if text is None:
        return None
    partial = False
    if key == "log":
        # Docker ends each complete line with a newline; a record without one is
        # the first part of a line longer than its 16 KiB buffer.
        if text.endswith("\n"):
            text = text[:-1]
        else:
            partial = True
    text = text.rstrip("\r")
    stamp = None
    value = record.get("time") or record.get("timestamp")
    if isinstance(value, str) and value[:4].isdigit():
        stamp = value
    else:
        value = record.get("__REALTIME_TIMESTAMP")
        if isinstance(value, str) and value.isdigit():
            stamp = "@" + value
        else:
            value = record.get("asctime")
            if isinstance(value, str):
                stamp = value
    logger = record.get("name") if key in ("message", "msg") else None
    return JsonRecord(text, stamp, partial, logger if isinstance(logger, str) else None)
