"""What surrounds a message: colour codes, wrappers, process tags and log headers.

A physical line may arrive as ``docker logs -t`` output, a journald line, a
Docker json-file record, a containerd (CRI) record, behind a docker-compose
service name, with vLLM's ``(APIServer pid=N)`` process tag, and coloured.
This module peels those layers; :mod:`parsers.dispatch` decides what the
message means.  Everything here is a pure function of its input.
"""

from __future__ import annotations

import calendar
import csv
import functools
import json
import re
from collections.abc import Iterable
from json.decoder import scanstring

from parsers.lifecycle import CRASH_START, USAGE_ERROR
from parsers.service import UNIT_ENDS, UNIT_NAME_MAX
from parsers.shapes import INTEGER, one_of

# --- colour ---------------------------------------------------------------------

# ESC [ params m, plus the residue tools leave when they drop or escape the ESC
# byte: caret notation (``^[[32m``), a literal ``ESC[`` or ``\x1b[``/``\033[``,
# rsyslog's ``#033[``, and a bare ``[32;20m`` whose ESC was removed.
# A bare ``[m`` (reset) counts only when no name goes on after it: ``[model.py:555]`` is a file name.
_ANSI = re.compile(r"(?:\x1b|\^\[|ESC|#033|\\x1b|\\033|\\e|\\u001b)\[[0-9;]*m|\[(?:[0-9;]+m|m(?![\w.]))")
# With the ESC byte: a CSI sequence (colour, cursor, erase), or a character set's choice (``tput sgr0``
# writes ``ESC(B`` before its reset).
_ANSI_ESC_ONLY = re.compile(r"\x1b(?:\[[0-9;?]*[A-Za-z]|[()][A-Z0-9])")
# Every coloured span ends with a reset; its presence is the cheap trigger for
# the residue forms.
_RESETS = ("[0m", "[0;0m", "[m", "[39m", "[22m", "[23m")
_ANY_RESET = re.compile("|".join(re.escape(reset) for reset in _RESETS))


def strip_ansi(line: str) -> str:
    """Remove escape sequences; without any, the residue forms (where a reset shows they are there)."""
    if "\x1b" in line:
        return _ANSI_ESC_ONLY.sub("", line)
    if has_residue(line):
        return _ANSI.sub("", line)
    return line


def has_residue(line: str) -> bool:
    """Whether a line shows the leftovers of colour codes whose ESC byte was lost or escaped."""
    return _ANY_RESET.search(line) is not None


# --- process tags -------------------------------------------------------------------

# ``(APIServer pid=8076) ``, ``(EngineCore_DP0 pid=9)``, ``(VllmWorker rank=4 engine_index=0 pid=31778)``,
# ``(Worker_PP0_TP1 pid=7)``, and the pid-less ``(EngineCore) `` some releases print.  Ray actors
# and Ray Serve replicas (``(ServeReplica:app:Deployment pid=5)``) use the same shape, with the node's address
# after the pid for an actor on another node (``(RayWorkerWrapper pid=4242, ip=10.0.0.2)``, ``(raylet, ip=...)``).
# A Ray Serve LLM replica's deployment is named after its model (``(ServeReplica:default:meta-llama/Llama-3.1-8B:...
# pid=5)``): a name may hold slashes.
_TAG_NAME = r"[A-Za-z_][\w.:/-]*(?: [\w.=:-]+)*?"
PROCESS_TAG = re.compile(rf"\(({_TAG_NAME})(?: pid=(\d+))?(?:, ip=[\w.:]+)?\) ?")
# Other inference servers whose processes print look-alike lines (SGLang under Ray logs
# vLLM-shaped stats lines; several servers share uvicorn's access line).
_FOREIGN = re.compile(r"sglang|tensorrt|trt-?llm|text[-_]generation|llama[._-]?cpp|llama-server|ollama|\[GIN\]", re.I)
_RANK = re.compile(rf"(?:TP|rank=)({INTEGER})")


@functools.lru_cache(maxsize=256)  # (the names before a log's lines repeat)
def is_foreign_process(name: str) -> bool:
    """Whether a process tag or prefix names another inference server."""
    return _FOREIGN.search(name) is not None


def rank_of(process_name: str) -> int | None:
    """The tensor-parallel rank a worker tag names (``Worker_TP1``, ``VllmWorker rank=1``)."""
    m = _RANK.search(process_name)
    return int(m.group(1)) if m else None


# The engine core of a data-parallel rank: ``EngineCore_DP1`` (``EngineCore_1`` in 2025's releases).
_ENGINE_CORE = re.compile(rf"EngineCore_(?:DP)?({INTEGER})\b")


def engine_of_process(process_name: str) -> int | None:
    """The engine (data-parallel rank) whose engine core a tag names: vLLM's ``Engine NNN`` of that rank."""
    m = _ENGINE_CORE.match(process_name)
    return int(m.group(1)) if m else None


# --- headers --------------------------------------------------------------------------

# vLLM: ``INFO 12-14 16:18:29 [loggers.py:118] `` (>= 0.8.0) or ``INFO 05-10 02:37:55 scheduler.py:224] ``;
# a logging configuration that adds ``%(msecs)03d`` gives ``12-14 16:18:29.123``, kept in the stamp.
# Header patterns have exactly one group, the stamp (empty when the header has none).
# (Hot patterns avoid \s/\S classes and alternations: ``re`` runs them markedly slower.)
VLLM_STAMP = r"\d\d-\d\d \d\d:\d\d:\d\d(?:[.,]\d+)?"
VLLM_HEADER = rf"[A-Z]+ ({VLLM_STAMP}) \[?[^\] ]+:\d+\] "
# Python's standard format used by programs that embed vLLM:
# ``2025-07-08 17:24:00 - vllm.engine.metrics - INFO - ``.
STDLIB_HEADER = re.compile(
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:,\d{3})?) - ((?:vllm|lmcache|uvicorn)[\w.]*) - "
    r"(DEBUG|INFO|WARNING|ERROR|CRITICAL) - "
)
# LMCache >= 0.3: ``[2025-12-14 16:18:24,320] LMCache INFO: `` (the space after the
# colon is lost when a copy drops the colour reset that stood there).
# LMCache colours this header even in files; the codes are allowed here so its
# lines need no stripping (a message parser never looks past its own fields).
LMCACHE_HEADER = r"(?:\x1b\[[0-9;]*m)?\[(\d\d\d\d-[^\]]{18})\] LMCache [A-Z]+:(?:\x1b\[0m)? ?"
# LMCache 0.1.x: ``INFO LMCache: message [2024-10-24 12:00:00,123.123]``, perhaps `` -- <path>`` after it (a
# blog's typography makes its dashes one em dash).
LMCACHE_OLD_HEADER = re.compile(r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) LMCache: ")
LMCACHE_OLD_STAMP = re.compile(r" \[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3})(?:\.\d+)?\](?: (?:--|\u2014).*)?$")
# uvicorn: ``INFO:     `` (the level name and colon padded to ten characters); no time.
UVICORN_HEADER = r"[A-Z]+(): +"

# --- a header after an unknown prefix -----------------------------------------------------
#
# Log pipelines put all kinds of text before a line: a Kubernetes tailer's pod and
# container names, a collector's own time and level, a CI system's bracketed time,
# a job runner's job name, a markdown quote or an HTML tag around a paste.  Rather
# than knowing each, the header is looked for wherever it stands, and what comes
# before it is accepted as a prefix unless it shows that the header is quoted
# text (an open quote, or prose) or that another server wrote the line.

_LEVEL = r"(?:DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL)"
# Every level word a logging format's header may hold, and how a record's time begins.
ANY_LEVELS = ("TRACE", "DEBUG", "INFO", "WARNING", "WARN", "ERROR", "CRITICAL", "FATAL")
_ANY_LEVEL = "(?:" + "|".join(ANY_LEVELS) + ")"
_DATE_TIME = r"\d{4}-\d\d-\d\d[ T]\d"
# The loggers whose records kvwatch reads (a name that starts so: ``vllm.v1.metrics.loggers``).
WATCHED_LOGGERS = ("vllm", "lmcache", "uvicorn")
# A full time as log pipelines and logging formats write it: a date, sub-seconds, a zone.
_FULL_TIME = r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?"
# vLLM's header with the formats users configure: any level word (or a damaged or
# missing one, before or after the time, bracketed or not), a year-less or full date,
# sub-seconds, a zone, the file in brackets or not, the function name a logging
# configuration may add (``- log() -``); or the level and the file without any time.
# (``.rs``: vLLM's Rust front end writes the same header with its source files.)  A Rust
# program that relays vLLM's output through its own tracing log puts its time, level
# (padded to five letters) and module path before the file (NVIDIA Dynamo's
# ``2025-05-07T23:02:56.237Z DEBUG dynamo_run::subprocess: [metrics.py:489] ``); the
# module path is bounded and possessive, so a long run of ``a::a::`` is read once.
_FILE = r"\[?[\w./-]+\.(?:py|rs):\d+\]?(?: -(?: [\w<>.]+\(\) -)?)? "
_RUST_TARGET = r"(?:[A-Za-z_]\w{0,63}+(?:::\w{1,64}+){1,8}+: )?"
_TIMED_VLLM = (
    r"(?:[A-Z]{1,8} )?((?:\d{4}-)?\d\d-\d\d(?:-\d{4})?[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)?)  ?"
    rf"(?:\[?{_LEVEL}\]?:? {_RUST_TARGET})?{_FILE}"
)
_UNTIMED_VLLM = rf"()\[?\b{_LEVEL}\]?:? {_RUST_TARGET}{_FILE}"
_VLLM_ANY = re.compile(_TIMED_VLLM + "|" + _UNTIMED_VLLM, re.ASCII)
# The date and time the timed header holds: a cheap search, where no level word is, before the costly one.
_VLLM_TIME = re.compile(r"\d\d-\d\d(?:-\d{4})?[ T]\d\d:\d\d:\d\d", re.ASCII)
# A record glued to the end of another, its newline lost (processes that write one file unbuffered, a
# paste): a vLLM or LMCache header with its time, behind a process tag or not, right after a character
# that ends text -- no blank, and no quote or backslash (a prompt quotes headers, escaped or not).
GLUED_RECORD = re.compile(
    r"(?<=[^\s'\"`\\])(?:\([^()\s]{1,64}(?: [\w=.,:-]{1,64}){0,4}\) )?"
    r"(?:" + _LEVEL + " " + VLLM_STAMP + r" \[?[\w.-]{1,128}\.(?:py|rs):\d{1,7}\] "
    r"|\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}\] LMCache " + _LEVEL + r":)",
    re.ASCII,
)
# LMCache's header, its stamp possibly lost; LMCache 0.1.x's ``INFO LMCache: ``.
_LMCACHE_ANY = re.compile(
    r"(?:\[(\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d(?:[.,]\d+)?)\] )?LMCache " + _LEVEL + r": ?"
    r"|()" + _LEVEL + r" LMCache: ",
    re.ASCII,
)
# uvicorn's ``INFO:     `` only where what follows is one of its own messages: the
# level word alone is too common to stand for a header.
_UVICORN_ANY = re.compile(
    r"()\b" + _LEVEL + r":  *(?=\S+ (?:\S+ )?- |Application startup complete|Uvicorn running on |Shutting down"
    r"|\[Errno \d+\] )",
    re.ASCII,
)
# What uvicorn's header starts with (a cheap search that bounds where it may start).
_LEVEL_COLON = re.compile(_LEVEL + ": ")

# uvicorn's access line itself, where a logging configuration replaced uvicorn's header
# (``2026-03-11 13:56:58,403 [INFO] 172.18.0.16:57368 - "GET /health HTTP/1.1" 200``):
# accepted only when a level word in the prefix shows a log record.
# The quotes around an access line's request: as uvicorn writes them, typographic ones of a word
# processor's paste, an HTML page's character references, a JSON string's escapes (a record's text
# copied without its own quotes).
ACCESS_OPENING_QUOTES = ('"', "\u201c", "&quot;", "&#34;", '\\"')
ACCESS_CLOSING_QUOTES = ('"', "\u201d", "&quot;", "&#34;", '\\"')


_ACCESS_ANY = re.compile(
    r'(?:^|(?<=[\s|]))()(?=[\w.:\[\]%-]*:\d+ (?:[^\s"]+ )?- ' + one_of(ACCESS_OPENING_QUOTES) + "[A-Z]{3,7} /)"
)
# A process's crash report behind a prefix (see :data:`parsers.lifecycle.CRASH`), up to its first word.
_CRASH_ANY = re.compile(r"(?:^|(?<=[\s|>\]\):`]))(?:\*\*\* |!{1,10} )?(?=" + CRASH_START + ")")
# Its command line refused (argparse's usage error) behind a prefix, up to the program's name; the room
# the program's name and argparse's words take after the prefix.
_USAGE_ERROR_ANY = re.compile(r"(?:^|(?<=[\s|>\]\):`]))(?=" + USAGE_ERROR.pattern + ")")
_USAGE_ERROR_ROOM = 512
# A traceback's final line (``torch.OutOfMemoryError: ...``) behind a prefix.
_EXCEPTION_ANY = re.compile(r"(?:^|(?<=[\s|>\]\):`]))()(?=(?:[A-Za-z_]\w*\.)*[A-Za-z_]\w*(?:Error|Exception): )")
_LEVEL_IN_PREFIX = re.compile(r"\b(?:" + _LEVEL + r"|info|warning|error)\b")
# Ray Serve's header of an access line (Ray 2.40 and later) up to the request's path: level, time,
# deployment, replica, the request's id if any, ``-- `` and the method (the message is parsed by
# :data:`parsers.requests.RAY_SERVE_ACCESS`).  Its proxy's header (component ``proxy``) is left out.
_RAY_SERVE_LEVEL, _RAY_SERVE_TIME = r"(?:DEBUG|INFO|WARNING|ERROR|CRITICAL) ", r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}"
RAY_SERVE_HEAD = (
    rf"{_RAY_SERVE_LEVEL}({_RAY_SERVE_TIME}) (?!proxy )\S{{1,256}}+ \S{{1,256}}+ (?:\S{{1,256}}+ )?"
    r"-- ([A-Z]{3,7}) (?=/)"
)
_RAY_ACCESS_ANY = re.compile(r"\b" + RAY_SERVE_HEAD, re.ASCII)
# Ray Serve's own record (its ``ray.serve`` logger, Ray 2.40 and later): level, time (group 1), component and its id,
# the request's id and route if any, then ``-- `` and the message.
RAY_SERVE_RECORD = re.compile(rf"{_RAY_SERVE_LEVEL}({_RAY_SERVE_TIME}) (?:\S{{1,256}}+ ){{2,4}}?-- ", re.ASCII)
# Its record before Ray 2.40: the same level, time, component and id, then the request's id, route and application
# where a request is served, the file and its line, `` - `` and the message.  A replica's line of a request is its
# call's outcome (``replica.py:750 - __CALL__ OK 60.4ms``), no HTTP status; the proxy's (``proxy.py:1072 - POST 200
# 65.6ms``) is not read, as Ray 2.40's is not.  A word that names a watched logger is no component of Ray's (a
# logging format of vLLM's own with its name and file).
RAY_SERVE_OLD_RECORD = re.compile(
    rf"{_RAY_SERVE_LEVEL}({_RAY_SERVE_TIME}) (?:(?!vllm|lmcache|uvicorn)\S{{1,256}}+ ){{2,5}}?"
    r"[\w.-]{1,256}?\.py:\d+ - ",
    re.ASCII,
)
# PyTorch's C++ runtime (NCCL and Gloo process groups, the CUDA allocator, the TCP store) writes
# into the server's output with its own header: its severity letter (Fatal, Error, Warning, Info,
# Verbose), a time without a year (month not padded) and the file: ``[W227 10:54:51.986111855
# ProcessGroupNCCL.cpp:1374] `` since torch 2.3, often behind the rank (``[rank0]:``);
# ``[W socket.cpp:663] `` before; glog's ``W0227 10:54:51.986111 4242 socket.cpp:663] `` in
# builds that log through glog, and torch's Python side in that format (``W0714 23:06:54.603780
# 140446678845248 torch/distributed/run.py:757] ``: the path's directories are dropped).
_TORCH_ANY = re.compile(
    r"\[([FEWIV])(\d{3,4} \d\d:\d\d:\d\d\.\d{1,9})? ([\w.+-]{1,120}+:\d{1,7})\] "
    r"|([FEWIV])(\d{4} \d\d:\d\d:\d\d\.\d{6}) +\d{1,20} ([\w./+-]{1,160}+:\d{1,7})\] ",
    re.ASCII,
)


# A header that names the logger, written by Python's logging under a format its user set
# (programs that embed vLLM): ``logging.basicConfig``'s default ``LEVEL:name:``, the
# ``asctime - name - LEVEL - `` of ``STDLIB_HEADER``, and the usual arrangements of an optional
# time, the level and the name (either order, bracketed or not, between spaces, `` - `` or
# `` | ``, the level padded), the name followed by ``:``, `` - ``, `` | `` or its closing bracket.  Only vLLM's,
# LMCache's and uvicorn's loggers count: the name says whose the message is.
# (A bounded, possessive name: a long run of dotted words must not cost its square.)
_NAMED_LOGGER = r"((?:vllm|lmcache|uvicorn)(?:\.\w{1,64}+){0,16}+)"
_NAMED_LEVEL = "(" + _LEVEL + ")"
_NAMED_SEP = r"\]?(?: - | {1,8}+\| |: | |:)\[?"
# loguru's default format writes the function and the line after the name, where a program sends
# the standard library's records through it: ``2025-12-14 16:00:00.123 | INFO     |
# vllm.v1.engine.async_llm:add_request:578 - ``.
_LOGURU_SITE = r"(?::[\w<>]{1,64}+:\d{1,7}+)?"
# The level and the name, without the brackets before them: a search for this scans a line as
# fast as its first letters can be told apart (no optional part before them).
_NAMED_PAIR = (
    "(?:"
    + _NAMED_LEVEL
    + _NAMED_SEP
    + _NAMED_LOGGER
    + _LOGURU_SITE
    + "|"
    + _NAMED_LOGGER
    + _NAMED_SEP
    + _NAMED_LEVEL
    + ")"
    r"\]?(?: - | \| |:|(?<=\]) ) *"  # uvicorn pads its level to ten characters
)
_NAMED_CORE = re.compile(_NAMED_PAIR, re.ASCII)
_STDLIB_ANY = re.compile(
    r"(?:\[?(" + _FULL_TIME + r")\]?(?: - | \| |,? ))?"
    r"\[?" + _NAMED_PAIR,
    re.ASCII,
)
# How far before the level and the name a header's time and brackets can begin.
_NAMED_STAMP_ROOM = 48
# How far before a logger's name its level and their separator can begin (``CRITICAL        | vllm``).
_LEVEL_BEFORE_NAME = len("CRITICAL") + len("]" + " " * 8 + "| " + "[")
# Places a level and a name meet that are looked at (a pod or container name may be the first).
_NAMED_CANDIDATES = 4


class Header:
    """A header found after a prefix: whose (``vllm``, ``lmcache``, ``lmcache_old``, ``uvicorn``,
    ``stdlib`` with the logger it names, ``torch`` for PyTorch's C++ runtime, ``ray_access`` for
    Ray Serve's access line (the whole line is the message);
    ``access`` for a bare access line, ``exception`` for a traceback's last line, ``crash`` for a
    process's crash report or its command line refused), where it
    starts, where the message starts, its stamp."""

    __slots__ = ("end", "kind", "level_after_name", "logger", "stamp", "start")

    def __init__(self, kind: str, start: int, end: int, stamp: str | None, logger: str | None = None) -> None:
        self.kind = kind
        self.start = start
        self.end = end
        self.stamp = stamp
        self.logger = logger  # the logger a standard-format header names
        # Where the level stands in a header with a name before it (``vllm | INFO:``), else 0.
        self.level_after_name = 0


def _named_header(m: re.Match[str], start: int) -> Header | None:
    """A ``stdlib`` header from a match of ``_STDLIB_ANY`` (time, then level and name either way round).

    A name before the level, with no time before it, counts only at the start of the line: behind
    a prefix it is a pod's or a container's name (``vllm-0 vllm INFO:     ...`` is uvicorn's line)."""
    stamp, _level, logger, logger_first, _level_last = m.groups()
    if logger_first is not None and stamp is None and start > 0:
        return None
    header = Header("stdlib", start, m.end(), stamp, logger or logger_first)
    if logger_first is not None:
        header.level_after_name = m.start(5)
    return header


def _search_named(line: str, pos: int, before: int | None = None) -> Header | None:
    """The leftmost header that names its logger, among the first few places a level and a name meet
    (with ``before``: None where none of them starts before it)."""
    names = [at for at in (line.find(name, pos) for name in WATCHED_LOGGERS) if at != -1]
    if not names:
        return None
    # Levels and names meet no sooner than the first name allows, and the header's time and brackets
    # stand at most _NAMED_STAMP_ROOM before them.
    scan = max(pos, min(names) - _LEVEL_BEFORE_NAME)
    last = None if before is None else before - 1 + _NAMED_STAMP_ROOM
    for _ in range(_NAMED_CANDIDATES):
        core = _first(_NAMED_CORE, line, scan, last)
        if core is None:
            return None
        # The whole header (its time, its brackets) ends with this level and name.
        m = _STDLIB_ANY.search(line, max(pos, core.start() - _NAMED_STAMP_ROOM))
        named = _named_header(m, m.start()) if m is not None else None
        if named is not None:
            return named
        pos = scan = core.start() + 1
    return None


def _search_hosts(line: str, pos: int, best: Header | None) -> Header | None:
    """``best``, or the leftmost header of what hosts vLLM if one starts before it: PyTorch's runtime,
    Ray Serve's access line.  PyTorch's header counts only where no other header follows it: a glog
    header before a whole vLLM line is a Go or C++ program's wrapper around the server's output."""
    if best is None and "] " in line:
        m = _TORCH_ANY.search(line, pos)
        if m is not None:
            best = Header("torch", m.start(), m.end(), None)
    if " -- " in line:
        m = _RAY_ACCESS_ANY.search(line, pos)
        if m is not None and (best is None or m.start() < best.start):
            best = Header("ray_access", m.start(), m.start(), None)
    return best


# The headers' level words in capitals (WARN within WARNING), for a few substring tests.
CAPITAL_LEVEL_WORDS = ("INFO", "DEBUG", "WARN", "ERROR", "CRITICAL")


def _holds_capital_level(text: str) -> bool:
    """Whether ``text`` holds a level word in capitals."""
    for word in CAPITAL_LEVEL_WORDS:  # noqa: SIM110 - a loop, at half the cost of any() over a generator
        if word in text:
            return True
    return False


def _search(line: str, pos: int) -> Header | None:
    """The leftmost header at or after ``pos``; where two start at one place, the first kind looked
    for below (cheap substring tests first: most lines have none)."""
    # LMCache's header is looked for first, cheaply (it holds a literal word), to bound where the others
    # may start: each search that finds nothing would cost the whole rest of the line.
    lmcache = _LMCACHE_ANY.search(line, pos) if "LMCache" in line else None
    best: Header | None = None
    # Every other header holds a level word in capitals, or (vLLM's) a date and a time: a line without either, as
    # most lines without a header are, is spared those searches of its whole length.
    levelled = _holds_capital_level(line)
    if (".py:" in line or ".rs:" in line) and (levelled or _VLLM_TIME.search(line, pos) is not None):
        m = _first(_VLLM_ANY, line, pos, None if lmcache is None else lmcache.start())
        if m is not None:
            best = Header("vllm", m.start(), m.end(), m.group(1) or m.group(2) or None)
    before = best.start if best is not None else None if lmcache is None else lmcache.start()
    if levelled and ("vllm" in line or "lmcache" in line or "uvicorn" in line):
        named = _search_named(line, pos, before)
        if named is not None and (best is None or named.start < best.start):
            best = named
            before = best.start
    if lmcache is not None and (best is None or lmcache.start() < best.start):
        kind = "lmcache" if lmcache.group(2) is None else "lmcache_old"
        best = Header(kind, lmcache.start(), lmcache.end(), lmcache.group(1) or None)
        before = best.start
    level = _LEVEL_COLON.search(line, pos) if levelled and ": " in line else None
    if level is not None:
        # (uvicorn's header starts with a level and its colon: no sooner than the first of them.)
        m = _first(_UVICORN_ANY, line, level.start(), None if before is None else before - 1)
        if m is not None and (best is None or m.start() < best.start):
            best = Header("uvicorn", m.start(), m.end(), None)
    best = _search_hosts(line, pos, best)
    return best if best is not None else _search_headerless(line, pos)


# The most places a bounded search tries in one call (each number of places up to it in powers of two
# is a pattern of its own, made when first needed).
_MOST_PLACES = 128
_spanned: dict[tuple[re.Pattern[str], int], re.Pattern[str]] = {}


def _first(pattern: re.Pattern[str], line: str, pos: int, last: int | None) -> re.Match[str] | None:
    """``pattern.search(line, pos)``, or with ``last``: None where that match would start after ``last``.

    Only the places up to ``last`` are tried: a search that finds nothing tries every place to the end of
    the line, costly for a long line behind a prefix where an earlier header was already found.  (A
    match that starts by ``last`` is the search's own: same place, same alternative, same groups.)"""
    if last is None:
        return pattern.search(line, pos)
    while pos <= last:
        places = min(_MOST_PLACES, 1 << ((last - pos + 1).bit_length() - 1))  # a power of two
        ahead = _spanned.get((pattern, places))
        if ahead is None:
            # Up to places - 1 characters skipped lazily, then where the pattern matches: the leftmost.
            ahead = re.compile(f"(?s:.{{0,{places - 1}}}?)(?={pattern.pattern})", pattern.flags)
            _spanned[(pattern, places)] = ahead
        m = ahead.match(line, pos)
        if m is not None:
            return pattern.match(line, m.end())
        pos += places
    return None


def _search_headerless(line: str, pos: int) -> Header | None:
    """Where no header follows a prefix: a bare access line, a traceback's last line, a process's crash
    report, or its command line refused (in that order)."""
    if " HTTP/" in line:
        m = _ACCESS_ANY.search(line, pos)
        if m is not None and m.start() > 0:
            return Header("access", m.start(), m.end(), None)
    if "Error: " in line or "Exception: " in line:
        m = _EXCEPTION_ANY.search(line, pos)
        if m is not None and m.start() > 0:
            return Header("exception", m.start(), m.end(), None)
    if "fault" in line or "terminate called" in line or "received at time=" in line:
        m = _CRASH_ANY.search(line, pos)
        if m is not None and m.start() > 0:
            return Header("crash", m.start(), m.end(), None)
    if ": error: " in line:
        # Looked for no further than a prefix may reach (a long line costs no scan of its whole length).
        m = _USAGE_ERROR_ANY.search(line[: pos + MAX_PREFIX + _USAGE_ERROR_ROOM], pos)
        if m is not None and m.start() > 0:
            return Header("crash", m.start(), m.end(), None)
    return None


def _header_at(line: str, pos: int) -> Header | None:
    """The header :func:`_search` would find at ``pos`` if one starts exactly there (same order)."""
    m = _VLLM_ANY.match(line, pos)
    if m is not None:
        return Header("vllm", pos, m.end(), m.group(1) or m.group(2) or None)
    m = _STDLIB_ANY.match(line, pos)
    named = _named_header(m, pos) if m is not None else None
    if named is not None:
        return named
    m = _LMCACHE_ANY.match(line, pos)
    if m is not None:
        return Header("lmcache" if m.group(2) is None else "lmcache_old", pos, m.end(), m.group(1) or None)
    m = _UVICORN_ANY.match(line, pos)
    if m is not None:
        return Header("uvicorn", pos, m.end(), None)
    if _ACCESS_ANY.match(line, pos) or _EXCEPTION_ANY.match(line, pos):
        # Those count only where no other header follows at all (they end where they start, so a
        # chain stops at them: this whole-line search runs once at most).
        return _search(line, pos)
    return None


# How a record's first line begins, its header complete or not: a time, a level and a date, uvicorn's level
# and colon padded to ten characters before any message (``ERROR:    Exception in ASGI application``), or the
# source file ROCm's HIP runtime begins its own lines with (``:0:rocdevice.cpp``).
_UVICORN_LEVEL = "(?:INFO: {5}|DEBUG: {4}|ERROR: {4}|WARNING: {2}|CRITICAL: )"
_RECORD_START = re.compile(
    r"(?:\x1b\[[0-9;]*m)?(?:\[?" + _DATE_TIME + "|" + _ANY_LEVEL + r" +\d"
    r"|" + _UVICORN_LEVEL + r"\S|:\d{1,3}:rocdevice\.cpp )"
)
# What follows a process tag at a record's start besides a blank (a tail in parentheses,
# ``(file.py:1:logger)``, ends a line; ``(from 9 total tokens).`` goes on with a dot).
_AFTER_TAG = frozenset("[\x1b0123456789")
_LEADING_COLOUR = re.compile(r"(?:\x1b\[[0-9;]*m)*")


# What a record's first characters hold wherever a prefix put them, its header complete or not: a time,
# a level with a date or a colon, a process tag with its pid (each looked for only where its text is).
_DATE_MARK = re.compile(_DATE_TIME)
_LEVEL_MARK = re.compile(r"\b" + _ANY_LEVEL + r"(?: +\d|: )")
_TAG_MARK = re.compile(r"\([^()]{1,64} pid=\d+\)")


def holds_record_mark(line: str) -> bool:
    """Whether a line's first 160 characters hold a record's time, level or process tag (after any prefix)."""
    head = line[:160]
    return (
        ("-" in head and _DATE_MARK.search(head) is not None)
        or ("pid=" in head and _TAG_MARK.search(head) is not None)
        or (any(level in head for level in ANY_LEVELS) and _LEVEL_MARK.search(head) is not None)
    )


def begins_record(line: str, named_first: bool = True) -> bool:
    """Whether a line begins as a record does -- behind a process tag, with a time, a level and a date,
    or a header of its own (unless not ``named_first``, one that begins with its logger's name): never
    the rest of another record that a terminal wrapped."""
    line = line[:512]  # a record's tags and header are all within its first characters
    # (vLLM colours its process tag on a terminal.)
    tag = _LEADING_COLOUR.match(line).end() if line.startswith("\x1b[") else 0
    m = PROCESS_TAG.match(line, tag) if line.startswith("(", tag) else None
    if m is not None and m.end() < len(line) and (line[m.end() - 1] == " " or line[m.end()] in _AFTER_TAG):
        return True
    if _RECORD_START.match(line) is not None:
        return True
    header = _header_at(line, 0)
    return header is not None and (named_first or not header.level_after_name)


def find_header(line: str) -> Header | None:
    """The header closest to the message: a wrapper's own header may stand before the real one
    (``INFO wrapper.py:12 INFO 12-14 ... [loggers.py:118] ...``), so headers that directly
    follow one another are skipped to the last (each looked for only where the last one ends:
    a line of thousands of them costs what its length does)."""
    found = _search(line, 0)
    if found is not None and found.level_after_name and not found.logger.startswith("uvicorn"):
        # A name and a level that begin a header of their own (``[vllm] INFO:vllm.x:``, ``vllm |
        # INFO:     Application startup complete.``): the name is a container's or a service's.
        own = _header_at(line, found.level_after_name)
        if own is not None and own.start == found.level_after_name:
            own.stamp = own.stamp or found.stamp
            found = own
    while found is not None:
        at = found.end
        if line.startswith("(", at):
            # A process tag between a wrapper's header and the record's (a launcher logging a server's
            # output through Python's logging: ``... - vllm - INFO - (APIServer pid=1) INFO 12-14 ...``).
            tag = PROCESS_TAG.match(line, at)
            at = at if tag is None else tag.end()
        following = _header_at(line, at)
        if following is None or following.start != at or following.end <= at:
            return found
        found = following
    return None


# Words that prefixes hold besides names and numbers: levels, streams, months, days.
_LEVEL_WORDS = frozenset(
    ("debug", "info", "notice", "warn", "warning", "error", "err", "crit", "critical", "alert", "emerg", "fatal")
)
_CALENDAR_WORDS = frozenset(
    ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec", "mon", "tue", "wed")
)
_PREFIX_WORDS = _LEVEL_WORDS | _CALENDAR_WORDS | {"thu", "fri", "sat", "sun", "trace", "stdout", "stderr"}
# Words that mark a sentence (a prefix made of names, times and levels has none of them).
_FUNCTION_WORDS = frozenset(
    ("a", "an", "the", "this", "that", "these", "my", "our", "your", "is", "are", "was", "were", "it", "i", "we")
) | frozenset(("you", "says", "said", "of", "to", "in", "on", "for", "with", "what", "why", "how", "and", "or", "but"))
_WORD_TAIL = re.compile(r"[A-Za-z]+$")


def _is_prose(prefix: str) -> bool:
    """Three words in a row, one of them a function word, or five words in a row: a sentence."""
    run, function = 0, False
    for token in prefix.split():
        m = _WORD_TAIL.search(token.rstrip(":,.;!?"))
        word = m.group(0) if m is not None else ""
        if len(word) > 1 and not word.isupper() and word.lower() not in _PREFIX_WORDS:
            run += 1
            function = function or word.lower() in _FUNCTION_WORDS
            if run >= 5 or (run >= 3 and function):
                return True
        elif word.lower() in _FUNCTION_WORDS:
            run, function = run + 1, True
        else:
            run, function = 0, False
    return False


# SGLang's own header (``[2026-08-23 09:08:08 TP0] ``) right before a shared uvicorn line.
_SGLANG_STAMP = re.compile(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?: [A-Z]{2}\d+)*\] $", re.ASCII)
_TAG_IN_PREFIX = re.compile(rf"\(({_TAG_NAME})(?: pid=\d+)?\)")
MAX_PREFIX = 320


# Where a line came from as the tools that merge logs print it: a container's or a command's name,
# ``[vllm] `` (npm's concurrently), ``vllm  | `` (docker compose with a container name), lower case as
# Kubernetes and Compose names are (``[Bug] `` is an issue's title); a log file's name (``grep -H``'s
# ``vllm.log:``); or only HTML tags (``<pre>``, ``<td>``).
_SOURCE_NAME = re.compile(
    r"\s*(?:\[[a-z0-9][a-z0-9._/-]*\]|[a-z0-9][a-z0-9._-]* +\||[\w./~-]*\.(?:log|txt|out|err)(?:\.\d+)?:"
    r"|(?:<[^<>]*>\s*)+)\s*",
    re.ASCII,
)


def _looks_logged(prefix: str, by_level: bool = True) -> bool:
    """A log prefix carries a time, a pid, a pod's hash, a level word (unless not ``by_level``) or a
    container's name -- or is only decoration (a quote mark, a backtick); a title or a sentence carries
    none of these."""
    return (
        any(map(str.isdigit, prefix))
        or (by_level and _LEVEL_IN_PREFIX.search(prefix) is not None)
        or not any(map(str.isalnum, prefix))
        or _SOURCE_NAME.fullmatch(prefix) is not None
    )


# (Bytes translate at a tenth of what a string's translation costs.)
_DIGITS_AS_ZERO = bytes.maketrans(b"123456789", b"000000000")


def _shape_of(text: str) -> bytes:
    """``text`` in UTF-8 with its digits 0: what a verdict on a prefix or a header depends on (its digits change
    line after line -- a time, a line number --, and are read by their class only), the key it is kept under."""
    return text.encode("utf-8", "surrogatepass").translate(_DIGITS_AS_ZERO)


# The prefixes of one log repeat line after line (a pod's name, a process tag): their verdicts are kept.
@functools.lru_cache(maxsize=256)
def prefix_verdict(prefix: str, kind: str) -> tuple[bool, int | None]:
    """Whether text before a header is a prefix (and the rank a process tag in it names).

    Refused: an open quote (the header is quoted text), three words of prose in a row
    ("My log says INFO: ..."), another server's name or process tag, SGLang's header
    before a uvicorn line, or a prefix too long to be one."""
    if not prefix:
        return True, None
    if len(prefix) > MAX_PREFIX or not _prefix_shape_accepted(_shape_of(prefix), kind):
        return False, None
    rank = None
    for m in _TAG_IN_PREFIX.finditer(prefix):
        found = rank_of(m.group(1))
        if found is not None:
            rank = found
    return True, rank


# (A prefix with a time is a new one on each line; its shape is not.)
@functools.lru_cache(maxsize=256)
def _prefix_shape_accepted(shape: bytes, kind: str) -> bool:
    """:func:`prefix_verdict`'s verdict on a prefix of this shape (see :func:`_shape_of`), the rank aside."""
    prefix = shape.decode("utf-8", "surrogatepass")
    if prefix.count('"') % 2 or prefix.count("'") % 2 or prefix.count("“") != prefix.count("”"):
        return False
    if is_foreign_process(prefix):
        return False
    if kind in ("uvicorn", "access") and _SGLANG_STAMP.search(prefix):
        return False
    if kind == "access" and _LEVEL_IN_PREFIX.search(prefix) is None:
        return False
    if kind in ("exception", "crash") and not _looks_logged(prefix):
        return False
    # (A process tag is no word of a sentence: ``INFO in launcher: (APIServer pid=1) `` is Flask's header and a tag.)
    return not _is_prose(_TAG_IN_PREFIX.sub(" ", prefix))


# A tool's own RFC 3339 time in a prefix (``kubectl logs --prefix --timestamps``, stern's ``--timestamps``
# after the pod's and container's names): the time the line was written, with its date and zone.
_PREFIX_TIME = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:[.,]\d+)?(?:Z|[+-]\d\d:?\d\d)) ", re.ASCII)


@functools.lru_cache(maxsize=256)
def prefix_time(prefix: str) -> str | None:
    """The full time a tool put in a prefix before a header, if it put one."""
    m = _PREFIX_TIME.search(prefix)
    return None if m is None else m.group(1)


@functools.lru_cache(maxsize=256)
def engine_core_in(prefix: str) -> int | None:
    """The data-parallel rank of the engine core whose process tag a prefix ends with, if it holds one."""
    engine = None
    for m in _TAG_IN_PREFIX.finditer(prefix):
        found = engine_of_process(m.group(1))
        if found is not None:
            engine = found
    return engine


# Closing marks a paste leaves after the message when its prefix opened them: backticks, HTML tags, the
# bar that ends a markdown table's row or a terminal panel's line (box drawing's light vertical).
_CLOSING_TAG = re.compile(r"</[A-Za-z]+>|<br ?/?>")
_BARS = ("|", "\u2502")
_CLOSING_MARKS = "`|\u2502"
# The last character of a line that closes such marks.
CLOSING_ENDS = frozenset(">" + _CLOSING_MARKS)


def trim_closing(line: str, prefix: str) -> str:
    """The line without closing backticks, HTML tags or a table's bar that mirror the prefix's opening ones.

    Read from the end, one mark at a time: a regex anchored at the end would try again from every
    earlier mark on a line of thousands of them."""
    # (Most lines end with no mark: that is told first.)
    if line[-1:] not in CLOSING_ENDS or not ("`" in prefix or "<" in prefix or prefix.lstrip().startswith(_BARS)):
        return line
    end = trimmed = len(line)
    while end:
        while end and line[end - 1].isspace():
            end -= 1
        if end and line[end - 1] in _CLOSING_MARKS:
            end = trimmed = end - 1
            continue
        if end and line[end - 1] == ">":
            start = line.rfind("<", 0, end)
            if start != -1 and _CLOSING_TAG.fullmatch(line, start, end):
                end = trimmed = start
                continue
        break
    return line[:trimmed].rstrip()


# --- fields between a header and its message ----------------------------------------------
#
# A logging format may put more fields in brackets after the header it shares with others: the call site
# after the logger's name, OpenTelemetry's log correlation (its logging instrumentation's default format,
# ``%(asctime)s %(levelname)s [%(name)s] [%(filename)s:%(lineno)d] [trace_id=%(otelTraceID)s span_id=...
# resource.service.name=... trace_sampled=...] - %(message)s``, or vLLM's own format with ``[trace_id=...
# span_id=...]`` added), a component's tag (vllm-omni's ``[AsyncOmni]``).  They are read past, and a
# separator after them.  A field holds no bracket or quote (a message that quotes a list is no field), and
# LMCache's request tag (``[req_id=...]``) begins a message: it is none, nor is any tag a known message begins with.


def context_fields(message_tags: Iterable[str] = ()) -> re.Pattern[str]:
    """The pattern of such fields, none of which begins as one of ``message_tags`` (``[shutdown]``) does."""
    openings = "|".join(re.escape(opening) for opening in ("req_id=", *(tag[1:] for tag in message_tags)))
    return re.compile(r"(?:\[(?!" + openings + r")[^\[\]\"'\n]{0,256}+\]:? ++)++(?:[-|] ++)?")


CONTEXT_FIELDS = context_fields()
_TRACE_FIELD = re.compile(r"\btrace_id=(\w{1,64}+)")
_SPAN_FIELD = re.compile(r"\bspan_id=(\w{1,64}+)")


def context_fields_end(line: str, start: int, fields: re.Pattern[str] = CONTEXT_FIELDS) -> int:
    """Where the message begins after the bracketed ``fields`` at ``start``; ``start`` where none stands there."""
    m = fields.match(line, start)
    return start if m is None else m.end()


# The same kind of fields after the message, ``key=value`` pairs in brackets at the end of the line: formats that
# print OpenTelemetry's ids last (``%(message)s [trace_id=%(otelTraceID)s span_id=%(otelSpanID)s]``, as public
# examples of its log correlation do).  Only such pairs: a message's own ending in brackets is no field, nor is
# LMCache's request tag (a line a writer wrapped right after it ends so).
_TRAILING_FIELDS = re.compile(
    r" \[(?!req_id=)[\w.]{1,64}+=[^\s\[\]\"']{0,128}+(?: ++[\w.]{1,64}+=[^\s\[\]\"']{0,128}+)*+\] *+"
)


# What may follow them: the closing marks of a paste (see ``trim_closing``), read once the fields are out.
_PASTE_CLOSING = re.compile(r"(?:\s|[" + _CLOSING_MARKS + "]|" + _CLOSING_TAG.pattern + ")*+")


def trailing_fields(line: str) -> tuple[int, int] | None:
    """Where the ``key=value`` fields in brackets after the message of ``line`` begin (at the blank before their
    first bracket; more blanks before it are left to the message, whose reader drops them) and end (before a paste's
    closing marks); None where the message is followed by none, or where nothing else is in the line."""
    close = line.rfind("]")
    if close == -1 or _PASTE_CLOSING.fullmatch(line, close + 1) is None:
        return None
    start = end = close + 1
    while True:
        at = line.rfind(" [", 0, start)
        if at == -1 or _TRAILING_FIELDS.fullmatch(line, at, start) is None:
            break
        start = at
    return (start, end) if 0 < start < end else None


def trace_context(fields: str) -> tuple[str | None, str | None]:
    """The W3C trace and span ids that context fields name (None where they name none, or OpenTelemetry's ``0``
    for a record logged outside a span)."""
    if "trace_id=" not in fields:
        return None, None
    m = _TRACE_FIELD.search(fields)
    trace_id = _hex_id(m.group(1), 32) if m is not None else None
    if trace_id is None:
        return None, None
    m = _SPAN_FIELD.search(fields)
    return trace_id, _hex_id(m.group(1), 16) if m is not None else None


# --- wrappers (other programs' framing around the original line) ----------------------

# containerd / CRI-O log files: ``<RFC3339Nano> stdout F <line>`` (``P`` = partial).
CRI_RECORD = re.compile(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?(?:Z|[+-]\d\d:\d\d)) (?:stdout|stderr) ([FP]) ")
# Wrappers whose time is complete (year, offset, sub-seconds) and beats the line's own, in one pass:
# a CRI record; journalctl -o short-iso(-precise) (``<time> host unit[123]: ``; the pid tells it
# from a message-only line's ``Engine 000: ``); Fluentd's file output (``<time>\t<tag>\t`` before
# its JSON record); ``docker logs -t`` / ``kubectl logs --timestamps`` (``<time> ``), or an export's time column
# (``<time>\t``, also with a blank between the date and the time, as Grafana's download of a logs panel as text
# writes it, but for a word and a tab after it; after either, a level in lower case and a tab are a Go logger's
# fields, ``<time>\tinfo\tvllm\t``: another program's header, whose message is read as one);
# pm2's ``--time`` (``<time>: ``, its log_date_format, before each piece of output it writes).
TIMED_WRAPPER = re.compile(
    r"(\d{4}-\d\d-\d\d(?:T| (?=\d\d:\d\d:\d\d(?:[.,]\d+)?\t(?![A-Za-z]++\t)))\d\d:\d\d:\d\d(?:[.,]\d+)?"
    r"(?:Z|[+-]\d\d:?\d\d)?)"
    r"(?: (?:stdout|stderr) [FP] | [^\s\[(]+ [^\s\[:]+\[\d+\]: |\t[^\t]+\t(?=\{)|:? |\t(?![a-z]++\t))"
)

# A syslog record as a relay writes it, its priority first.  RFC 5424's (rsyslog's RSYSLOG_SyslogProtocol23Format,
# syslog-ng's ``syslog-protocol``): ``<14>1 <RFC 3339 time> <host> <app> <process id> <message id> <structured
# data> ``, each a ``-`` when it has none, the structured data any number of ``[id name="value" ...]``: its time
# (group 1, None for ``-``) beats the line's own.  Or RFC 3164's (rsyslog's forwarding formats): a time and a
# host follow the priority as they follow nothing in a syslog file or journalctl's output.
SYSLOG_RECORD = re.compile(
    r"<\d{1,3}>(?:1 (?:(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:\d\d))|-)"
    r" [!-~]{1,255} [!-~]{1,48} [!-~]{1,128} [!-~]{1,32}"
    r' (?:-|(?:\[(?:[^\]"\\]++|"(?:[^"\\]++|\\.)*+")*+\])++) '
    r"|(?=[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d |\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d))",
    re.ASCII,
)

# Fluentd's stdout output (its own log, where a pipeline is debugged): ``<date> <time> <offset> <tag>:
# <the record as JSON>``, the time as Fluentd's default ``%Y-%m-%d %H:%M:%S.%N %z`` prints it.
FLUENTD_STDOUT = re.compile(
    r"(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d(?:\.\d{1,9})?) ([+-]\d\d)(\d\d) [^\s:{}]{1,256}: (?=\{)", re.ASCII
)


def fluentd_stamp(m: re.Match[str]) -> str:
    """The time of a Fluentd stdout record as ISO 8601 (an offset with its colon)."""
    return f"{m.group(1)}T{m.group(2)}{m.group(3)}:{m.group(4)}"


# A log record's header whose logger name says nothing of who wrote it: an optional time, the level
# (padded to five letters as Rust's tracing pads it), a logger or module name and a colon -- Python's
# ``%(asctime)s %(levelname)s %(name)s: `` under another logger than vLLM's, NVIDIA Dynamo's formatter
# for vLLM's main process (``2026-02-25T12:00:00.123456Z  INFO loggers.log: ``).  Only a whole known
# message after it is read (see :mod:`parsers.messages`), wherever the header stands.
# (The level and the name are looked for first, and the time then where it would end: one search of a line over
# plain characters, where a time tried at every place cost four times as much.)
_LEVEL_AND_NAME = re.compile(
    r"\b(?:TRACE|DEBUG|INFO|WARNING|WARN|ERROR|CRITICAL) +[A-Za-z_][\w.:<>-]{0,127}: ", re.ASCII
)
_TIME_AT_END = re.compile(r"(" + _FULL_TIME + r")\Z", re.ASCII)


def any_record_header(line: str) -> tuple[int, int, str | None] | None:
    """The first such header in ``line``: where it begins and ends, and its time if it has one."""
    m = _LEVEL_AND_NAME.search(line)
    if m is None:
        return None
    start = blanks = m.start()
    while blanks and line[blanks - 1] == " ":
        blanks -= 1
    if blanks < start:
        time = _TIME_AT_END.search(line, 0, blanks)
        if time is not None:
            return time.start(), m.end(), time.group(1)
    return start, m.end(), None


# Any logging format's header, as a list of what it may hold (``%(levelname)-8s [%(name)s:%(lineno)d]``,
# ``[%(levelname)s] %(asctime)s %(name)s:``, tab-separated fields ...): dates and times, a level word,
# vLLM's, LMCache's or uvicorn's logger name (with a function and a line), a file and its line,
# ``key=value`` pairs (``pid=42``), names with a digit, a hyphen or an underscore (a host, a pod, a
# thread), numbers; brackets, parentheses and separators between them -- and one plain word at most
# (``root``, ``MainThread``).  Another program's dotted logger name (``kserve.trace``) is none of these:
# a known message under it is that program's copy of vLLM's line.
# (A caller, ``module:function:line`` as loguru's default format and ``%(name)s:%(funcName)s:%(lineno)d`` write
# it, is one token: its function is no word of prose, its module is read as any name.)
_CALLER = r"[A-Za-z_][\w.]*:[A-Za-z_<][\w<>]*:\d+(?![\w.])"
_HEADER_TOKEN = re.compile(_CALLER + r"|[^\s\[\](){}|<>,;:\-]+(?:-[^\s\[\](){}|<>,;:\-]+)*")
_HTML_TAG = re.compile(r"<[^<>]{0,200}>")
_HEADER_PIECE = re.compile(
    r"[:.,TZ+/-]*+\d[\d:.,TZ+/-]*+"  # a date, a time, a number
    r"|(?:vllm|lmcache|uvicorn)(?:[.:][\w<>]+)*"  # a watched logger's name, its function and line
    r"|[\w.-]+\.(?:py|rs)(?::[\w<>]+)*"  # a file, its line
    r"|\w[\w.]*=\S*"  # key=value (OpenTelemetry's ``resource.service.name=``, its value empty when unset)
    r"|[A-Za-z]*+[\d_/-][\w/-]*+"  # a host's, a pod's or a thread's name, ``pod/vllm-0/vllm``
    r"|@[0-9a-f]{24}",  # a TAI64N label (daemontools' and runit's ``multilog t``, s6-log's ``t``)
    re.ASCII,
)
_TIME_OR_DATE = re.compile(r"\d[:/-]\d")
_HEADER_LEVELS = frozenset(ANY_LEVELS)
# The full time a header holds, if any (the record's stamp).
FULL_TIME = re.compile(_FULL_TIME, re.ASCII)


def is_record_header(text: str, with_level: bool = True) -> bool:
    """Whether ``text`` reads as a log record's header in some logging format: it holds a level word, and
    besides it only what headers hold (see ``_HEADER_PIECE``) and one plain word at most.  A level in
    lower case (structlog's ``[info     ]``, a Go logger's ``info``) counts beside a time or a date
    only: in prose "more info" is no header.  With ``with_level=False``, whether it holds only such
    pieces (a tool's prefix: a pod's and a container's names, a journal's time, host and unit)."""
    if len(text) > MAX_PREFIX:
        return _is_record_header(text, with_level)
    return _record_header_shape(_shape_of(text), with_level)


@functools.lru_cache(maxsize=256)
def _record_header_shape(shape: bytes, with_level: bool) -> bool:
    return _is_record_header(shape.decode("utf-8", "surrogatepass"), with_level)


def _is_record_header(text: str, with_level: bool) -> bool:
    level = capital = timed = False  # a level word; one not in lower case; a time or a date
    words = 0
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)  # an HTML paste's tags are no part of the header
    for token in _HEADER_TOKEN.findall(text):
        token = token.strip("`").rstrip(":.")  # (a paste's inline code opens before the header)
        if not token:
            continue
        if ":" in token:
            token = token.partition(":")[0]  # a caller's module
        if not any(map(str.isalnum, token)):
            continue  # decoration between the pieces (a quote's bar, an arrow, a bullet): no word
        if token.upper() in _HEADER_LEVELS and (token.isupper() or token.istitle() or token.islower()):
            level = True
            capital = capital or not token.islower()
        elif _HEADER_PIECE.fullmatch(token) is not None:
            timed = timed or _TIME_OR_DATE.search(token) is not None
        else:
            words += 1
            if words > 1 or not token.isalpha() or token.lower() in _FUNCTION_WORDS:
                return False
    return not with_level or (level and (capital or timed))


def is_tool_prefix(text: str) -> bool:
    """Whether ``text`` reads as what a tool that merges logs puts before a line (stern's pod and container,
    journald's time, host and unit, docker compose's service, ``grep -H``'s file): a digit (a time, a pid, a
    pod's hash), a container's name or only decoration shows it, and it holds only what headers hold -- or it
    is one source's name alone (a file's path ``grep -H`` prints, which no header holds)."""
    if _SOURCE_NAME.fullmatch(text) is not None:
        return True
    return _looks_logged(text, by_level=False) and is_record_header(text, with_level=False)


# Multiplexing tools' prefixes, the names of the line's writer before each line of a merged stream.
# kubectl's ``[pod/POD/CONTAINER] `` (``logs --prefix``: DNS names, the pod's may hold dots).
# Compose's ``NAME  | `` (``docker compose logs``: the name padded to the longest, coloured on a terminal;
# ``vllm_1`` before Compose v2; ``docker service logs``' ``NAME.1.TASK@NODE``), a name with a digit, a
# hyphen or an underscore as the names Compose gives its containers have (``Update | RuntimeError: ...`` is
# a heading), or any name with two blanks or more before the bar, as Compose v2 pads every name, one a
# ``container_name`` gave too (``vllm    | ``); and any name a Procfile runner's time comes before (Foreman's and
# honcho's ``16:18:29 web.1  | ``, padded to the longest name, the time and name coloured on a terminal), or pm2's
# process id (``pm2 logs``: ``0|vllm     | ``, the id part of the writer's name: one per instance; with
# ``--timestamp``, its default time before it, ``2025-12-14-16:18:29 0|vllm     | ``).
# stern's ``POD CONTAINER `` and ``NAMESPACE POD CONTAINER `` (each name coloured on a terminal): names
# that begin with a letter, as workloads' do (``12345 vllm INFO`` is a logging format's process id and
# logger), a pod's name with a digit or a hyphen, as a controller's pods' names have (``more info Reqid:
# ...`` is prose), and a message that begins as a log line does (a capital, a digit, a bracket, a blank, a
# colour): a message's first word in lower case could be one more name.
# (A name ends where a blank, a slash or a bracket follows, none of its characters: possessive, it is never tried
# again shorter, which halves the cost of a stern line.)
_KUBECTL_PREFIX = re.compile(r"\[pod/([a-z0-9][a-z0-9.-]{0,252}+)/([a-z0-9][a-z0-9-]{0,62}+)\] ", re.ASCII)
_COMPOSE_PREFIX = re.compile(
    r"(?:\x1b\[[\d;]*m)?(?:(?:\d{4}-\d\d-\d\d-)?\d\d:\d\d:\d\d |(?=\d{1,6}\|)|(?=[A-Za-z.]*+[\d_-])"
    r"|(?=[A-Za-z0-9][\w.@-]{0,127}+  ))"
    r"((?:\d{1,6}\|)?[A-Za-z0-9][\w.@-]{0,127}+) +\| (?:\x1b\[[\d;]*m)?",
    re.ASCII,
)
_NAME = r"(?:\x1b\[[\d;]*m)?({})(?:\x1b\[0m)? "
_LABEL, _POD_NAME = r"[a-z][a-z0-9-]{0,62}+", r"(?=[a-z.]*+[0-9-])[a-z][a-z0-9.-]{0,252}+"
_MESSAGE_START = r"(?=[A-Z0-9\[({<\s\x1b]|:\d|$)"
_STERN_PREFIX = re.compile(_NAME.format(_POD_NAME) + _NAME.format(_LABEL) + _MESSAGE_START, re.ASCII)
_STERN_NAMESPACED_PREFIX = re.compile(
    _NAME.format(_LABEL) + _NAME.format(_POD_NAME) + _NAME.format(_LABEL) + _MESSAGE_START, re.ASCII
)


def tool_prefix(line: str) -> tuple[int, tuple[str, ...]] | None:
    """A multiplexing tool's prefix at the start of ``line``: where the writer's own line begins, and the
    writer's names (kubectl's pod and container, compose's name, stern's namespace, pod and container as
    far as it prints them); None for a line without one."""
    first = line[:1]
    if first == "[":
        m = _KUBECTL_PREFIX.match(line) if line[:5] == "[pod/" else None
        return None if m is None else (m.end(), m.groups())
    if not (first.isalnum() or first == "\x1b"):
        return None
    if "| " in line[:160]:
        m = _COMPOSE_PREFIX.match(line)
        # (A level word before `` | ``, ``%(levelname)s | %(message)s``, is a logging format's, no writer's name.)
        if m is not None and m.group(1).upper() not in _HEADER_LEVELS:
            return m.end(), m.groups()
    m = _STERN_NAMESPACED_PREFIX.match(line) or _STERN_PREFIX.match(line)
    return None if m is None else (m.end(), m.groups())


# journalctl's default ``short`` output and a syslog file's lines (RFC 3164): ``Dec 14 16:18:29 host
# ident[pid]: `` (``short-precise``: with microseconds); no year and no zone, so the line's own time stays.
# The host is a host's name or address (``(APIServer)``, ``api_server.py:`` begin a record behind moreutils' ts).
# journalctl names the month in its user's language (``dic 18``, ``авг 18``, ``déc. 18``, ``12月 18``);
# a word of prose is no month (``The 12 10:00:00 ...``).  ``--no-hostname`` leaves the host out (the identifier
# then has its process id: ``Dec 14 16:18:29 systemd[1]: ``).  ``short-full`` puts the weekday, the date and a
# zone's abbreviation there (``Sat 2025-12-14 16:18:29 CET``): the abbreviation names no zone for sure,
# so there too the line's own time stays.
_JOURNAL_SOURCE = (
    r" (?:(?P<host>[\w.:-]{0,254}[\w.-]) (?P<ident>[^\s\[:]{1,255})(?:\[[0-9]+\])?"
    r"|(?P<ident_alone>[^\s\[:]{1,255})\[[0-9]+\]): "
)
_JOURNAL_SHORT = re.compile(
    r"(?:(?:([^\W\d_]{2,5})\.?|[ 1]?[0-9][月월]) [ 0-9][0-9] [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
    r"|[^\W\d_]{2,4}\.? [0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})? [^\s]{1,8})"
    + _JOURNAL_SOURCE
)
# ``short-monotonic``'s seconds since boot in brackets (``[ 1234.567890] host ident[pid]: ``, a console's lines
# without the host) and ``short-unix``'s seconds since the epoch (``1765700309.123456 host ident[pid]: ``).
_JOURNAL_NUMBERED = re.compile(r"(?:\[ {0,12}[0-9]{1,12}\.[0-9]{6}\]|[0-9]{10}\.[0-9]{6})" + _JOURNAL_SOURCE)

# ``journalctl -o verbose`` and ``-o export`` print a record's fields one a line, the text as ``MESSAGE=``.
_JOURNAL_MESSAGE_FIELD = re.compile(r"[ \t]{0,8}MESSAGE=")


def _journal_framing_end(line: str) -> int:
    """Where the line behind journald's short framing (or its record's message field) begins; 0 for a line
    without it."""
    if "MESSAGE=" in line[:16]:
        m = _JOURNAL_MESSAGE_FIELD.match(line)
        if m is not None:
            return m.end()
    if line[:1] == "[" or line[10:11] == ".":
        m = _JOURNAL_NUMBERED.match(line)
        return 0 if m is None else _journal_source_end(m)
    # (The time's first colon stands 8 to 19 characters in, a blank three before it and a colon three after.)
    colon = line.find(":", 8, 20)
    if colon == -1 or line[colon - 3] != " " or line[colon + 3 : colon + 4] != ":":
        return 0
    m = _JOURNAL_SHORT.match(line)
    if m is None:
        return 0
    month = m.group(1)
    if month is not None and month.isascii() and (len(month) < 3 or month.lower() in _FUNCTION_WORDS):
        return 0
    return _journal_source_end(m)


# The longest name read before journald's framing or a JSON record (a log stream's: CloudWatch allows 512 characters).
_FRAMED_NAME_MAX = 512


def _named_framing_end(line: str) -> int:
    """Where the line behind one name begins, before journald's framing or a JSON record (``aws logs tail``'s log
    stream: ``i-0abc123 Dec 14 16:18:29 host vllm[4242]: `` from a syslog file, ``ecs/vllm/0a1b2c {"asctime": ...``
    from a JSON logging configuration), or a stream's name with a slash before any record; 0 for a line without
    them."""
    if line[0] == " ":
        return 0
    space = line.find(" ", 1, _FRAMED_NAME_MAX + 1)
    if space == -1 or ":" in line[:space] or "*" in line[:space]:  # (a log stream's name has neither)
        return 0
    if line.startswith("{", space + 1):
        return space + 1 if line.endswith("}") else 0
    rest = line[space + 1 :]
    end = _journal_framing_end(rest)
    if end:
        return space + 1 + end
    # systemd's line about a unit without journald's framing (a journal shipped as ``journalctl -o cat`` writes it)
    # behind a name a machine gave (an instance's id, a host's, a task's path: a digit or a slash), not a word.
    unit_end = rest.find(": ", 0, UNIT_NAME_MAX)
    if unit_end != -1 and rest.endswith(UNIT_ENDS, 0, unit_end + 1) and " " not in rest[:unit_end]:
        name = line[:space]
        return space + 1 if "/" in name or any(map(str.isdigit, name)) else 0
    # A stream's name with a slash (ECS's ``prefix/container/task``, SageMaker's ``AllTraffic/i-0abc``), which no
    # logger's name has, before any record: also one whose name begins as a logger's would (``vllm/vllm/0a1b``).
    return space + 1 if "/" in line[:space] and begins_record(rest) else 0


# The time journald's short framing (and syslog's, and moreutils' ts) shows, the month named in English: ``Dec 14
# 16:18:29`` (``short-precise``: with microseconds); and short-unix's seconds since the epoch.
_FRAMING_TIME = re.compile(
    r"([A-Z][a-z]{2}) ([ 0-9][0-9]) ([0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?) |([0-9]{10})\.([0-9]{6}) "
)
_MONTHS = {name: f"{number:02}" for number, name in enumerate(calendar.month_abbr) if name}


def framing_stamp(framing: str) -> str | None:
    """The time a line's framing shows as a stamp the clock reads -- journald's (syslog's, ts') month and day as
    vLLM's ``MM-DD HH:MM:SS``, short-unix's seconds as journald's microseconds (``@…``) -- for a message alone
    behind it, which has no time of its own; None where it shows none the clock can place (seconds since boot, a
    month in another language)."""
    m = _FRAMING_TIME.match(framing)
    if m is None:
        # (Behind a name: a log stream's before a syslog file's line.)
        space = framing.find(" ")
        m = _FRAMING_TIME.match(framing, space + 1) if space != -1 else None
        if m is None:
            return None
    if m.group(4) is not None:
        return f"@{m.group(4)}{m.group(5)}"
    month = _MONTHS.get(m.group(1))
    return None if month is None else f"{month}-{m.group(2).replace(' ', '0')} {m.group(3)}"


def _journal_source_end(m: re.Match[str]) -> int:
    """The end of journald's framing a pattern matched, 0 where a level word stands for the host or the identifier:
    that begins a record behind another tool's time, moreutils' ts (``Dec 14 16:18:29 DEBUG LMCache: ...``,
    ``Dec 14 16:18:29 LMCache INFO: ...``)."""
    return 0 if not _HEADER_LEVELS.isdisjoint(m.group("host", "ident", "ident_alone")) else m.end()


# A name in brackets before a whole record: kubetail's pod, npm concurrently's command (``[vllm] ``,
# ``[0] ``), a ``VLLM_LOGGING_PREFIX`` such as ``[node-3] `` (or ``[vLLM]``, without a blank: the variable's
# text stands right before the level).  Not a level word (``[INFO] ``), nor another server's name.
_BRACKETED_NAME = re.compile(r"\[([A-Za-z0-9][\w.@/-]{0,252})\] ?", re.ASCII)
# torchrun's writer before each line of a worker's output (``--tee``, ``--redirects``): its role and local
# rank, ``[default0]:``, or what ``TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE`` makes of it from the role, the
# local and the global rank (``[0]:``, ``[trainer1]:``); PyTorch's own rank tag (``[rank0]:``) has the same
# shape.  The worker's line follows as it wrote it, any line: read past as a merging tool's name is.
_TORCH_ELASTIC_PREFIX = re.compile(r"\[[A-Za-z_][\w-]{0,63}?\d{1,6}\]:|\[\d{1,6}\]:", re.ASCII)
# Slurm's task number before each line of a job step's output (``srun --label``: ``0: ``, padded to the widest
# number, `` 7: `` beside ``12: ``), any line after it.
_SLURM_LABEL = re.compile(r" {0,6}\d{1,7}: ", re.ASCII)


# Words before a record: a ``VLLM_LOGGING_PREFIX``, which vLLM's format puts right before the level of its
# header (after a process tag): ``DECODER `` and ``PREFILLER `` of LMCache's disaggregated prefill example,
# ``rank0: ``, ``prefill node-3 ``; a host's name before a line, as ``pdsh`` and ``clush`` print each line of
# many hosts (``gpu-node-1: ``, ``10.0.0.7: ``); GNU parallel's ``--tag`` (its arguments and a tab); a label of
# a few words (``gpu node-3: ``).  Words that begin with a letter, without a colon but at their end, each
# followed by a blank or a tab (or an IPv4 address with a colon, or a tab, after it): no level word, no logger's
# name, no time; a few of them, as a prefix has (a sentence that quotes a record after more is read by the
# header search, which refuses it).  The record behind them begins with vLLM's or uvicorn's header, a process
# tag or LMCache's header (or, behind a host's name alone, with the HIP runtime's ``:0:rocdevice.cpp``).
_WORD = rf"(?!(?i:{_ANY_LEVEL}\b|vllm|lmcache|uvicorn))[A-Za-z][\w.@/-]{{0,63}}+:?[ \t]"
_MAX_WORDS = 4
_WORDS = rf"(?:(?:{_WORD}){{1,{_MAX_WORDS}}}|(?:\d{{1,3}}\.){{3}}\d{{1,3}}(?::[ \t]|\t))"
# How the records behind a prefix begin: vLLM's header (its level and date) or uvicorn's (its level and colon);
# or a mark another record begins with (a tag's or LMCache's header's bracket, the HIP runtime's ``:0:``).
_VLLM_LEVEL_DATE = rf"{_LEVEL} \d\d-\d\d \d\d:"
_LEVEL_HEADER = rf"(?:{_VLLM_LEVEL_DATE}|{_LEVEL}: )"
_MARK = r"[(\[]|:\d"
_WORDS_BEFORE_LEVEL = re.compile(rf"{_WORDS}(?={_LEVEL_HEADER})", re.ASCII)
_WORDS_BEFORE_MARK = re.compile(rf"{_WORDS}(?={_MARK})", re.ASCII)
# Where the words' blanks are looked for: as far as the last word's may stand.
_WORDS_SPAN = _MAX_WORDS * 66
# What follows a word's blank where such a record may begin: a level word or a mark; after a blank, or with a
# tab in the line, a blank or a tab (a pattern that begins with a literal blank is searched faster).
_FOLLOWERS = {
    separator: (
        re.compile(rf"{separator}(?:({_LEVEL})|{_MARK})"),
        re.compile(rf"{separator}(?:{_MARK})"),
    )
    for separator in (" ", "[ \t]")
}


# The time a line-stamping tool puts before each line it passes on: moreutils' ``ts`` (``Dec 14 16:18:29 ``, with
# ``%.S`` microseconds; ``-s`` and ``-i``, the time since the start or the last line, ``00:00:05 ``) and devscripts'
# ``annotate-output`` (``16:18:29 O: ``, ``E: `` for standard error).  Read past only before a record that carries
# its own time, or none: vLLM's header, uvicorn's, a process tag, LMCache's header, the HIP runtime's line (a
# logging format's time before a level and a name is the record's own, its stamp).  Not a date and a time in
# brackets: SGLang's own header before the uvicorn lines it shares.
_STAMPING_TOOL_TIME = re.compile(
    r"(?:[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d(?:\.\d{1,6})?|\d\d:\d\d:\d\d(?:\.\d{1,6})?(?: [OEI]:)?) "
    rf"(?={_LEVEL_HEADER}|\(|\[\d|:\d)",
    re.ASCII,
)


def _stamping_tool_end(line: str) -> int:
    """Where the record behind a line-stamping tool's time begins; 0 for a line without one."""
    # (The time's first colon stands 2 to 9 characters in, its second three after it.)
    colon = line.find(":", 2, 10)
    if colon == -1 or line[colon + 3 : colon + 4] != ":":
        return 0
    m = _STAMPING_TOOL_TIME.match(line)
    return 0 if m is None or not begins_record(line[m.end() :]) else m.end()


# SkyPilot's node before each line of a job's output (any line: a server's, a benchmark's): ``(task, pid=7431) ``
# on one node (the task's name), ``(head, rank=0, pid=18260) ``, ``(worker1, rank=1, pid=13566, ip=10.0.0.3) ``
# across nodes.  Its rank is the node's, not a worker's: no process tag.  (A name with no comma after it, as in
# ``(setup pid=7, ip=...)``, begins a process tag.)
_SKYPILOT_PREFIX = re.compile(r"\([A-Za-z_][\w.-]{0,63}(?:, (?:rank|pid|ip)=[\w.:]{1,64}){1,3}\) ", re.ASCII)


def _bracketed_name_end(line: str, second: bool = True) -> int:
    """Where the record behind a name in brackets begins (and with ``second``, behind two: kubetail's pod before
    a ``VLLM_LOGGING_PREFIX`` in brackets, ``[vllm-0] [node-3] ``, both read past at once); 0 for a line without."""
    m = _BRACKETED_NAME.match(line)
    if m is None or m.group(1).upper() in _HEADER_LEVELS or is_foreign_process(m.group(1)):
        return 0
    rest = line[m.end() :]
    # (A logger's name and a level right after it are a name with a level: read as a prefix is.)
    if begins_record(rest, named_first=False):
        return m.end()
    after_second = _bracketed_name_end(rest, False) if second and rest[:1] == "[" else 0
    return m.end() + after_second if after_second else 0


# Another program's log record header before a whole record it re-logs: a collector's or an aggregator's time,
# level and process kind (``2025-12-14 16:18:29,123 INFO [worker] ``), a job runner's (``[16:18:29] [INFO]
# [serve-qwen3] ``), a Python logging wrapper's level and caller (``INFO     run_server.py:88 ``, ``INFO:root:``);
# or a tool's times and names alone (a collector's time with a zone's name, ``2025-12-14 16:18:29.123 UTC ``,
# Buildkite's ``[2025-12-13T19:54:35Z] ``, ``ts '[%F %T]'``'s ``[2025-12-14 16:18:29] `` unless a uvicorn line follows
# it, which makes it SGLang's header, ``grep -H``'s file name), or a paste's marks alone (a quote's ``> ``,
# indentation, a list's bullet, HTML's tags, a markdown table's cells, inline code's backtick, a terminal panel's
# bar: what they open closes after the record, and is trimmed as behind any prefix).  The record begins with
# vLLM's or uvicorn's header, a process tag or LMCache's header (its time in brackets, or its colour) after a blank,
# a colon, a closing bracket, a tag's end or a backtick, at the first of a few such places where a record begins
# at all.
_WHOLE_RECORD = re.compile(rf"{_VLLM_LEVEL_DATE}|{_UVICORN_LEVEL}\S|{LMCACHE_HEADER}", re.ASCII)
_UVICORN_RECORD = re.compile(_UVICORN_LEVEL)
_RECORD_AFTER = re.compile(
    rf"[ \t:\]>`](?=(\()[A-Za-z_][^()]{{0,127}}\) (?:\(|{_WHOLE_RECORD.pattern})|{_WHOLE_RECORD.pattern})", re.ASCII
)
# How far in the record may begin, and how many places it may begin at are tried.
_LOGGED_HEADER_SPAN = 160
_LOGGED_HEADER_PLACES = 4


def _logged_header_end(line: str) -> int:
    """Where the record behind another program's header or a tool's times and names begins; 0 for a line
    without."""
    # Each such record holds a level word or LMCache's name after its time near its start: a line without is passed
    # over at the cost of a few substring tests (most lines no rule reads past, messages alone among them, have none).
    head = line[: _LOGGED_HEADER_SPAN + 64]
    if not (_holds_capital_level(head) or "] LMCache " in head):
        return 0
    for place, m in enumerate(_RECORD_AFTER.finditer(line, 0, _LOGGED_HEADER_SPAN)):
        end = m.end()
        # (Where no process tag opens, the pattern matched the record's header already.)
        if m.group(1) is None or _begins_whole_record(line, end):
            # (A prefix's digits change line after line, its verdict does not: it is kept by its shape.)
            verdict = _logged_header_verdict(_shape_of(line[:end]))
            if verdict is None:
                # A watched logger's name beside a level is a header of its own (its time the stamp).
                named = _search_named(line, 0, end)
                verdict = named is None or named.start > end
            if verdict and _UVICORN_RECORD.match(line, end) and _SGLANG_STAMP.search(line, 0, end):
                return 0  # SGLang's own header before a uvicorn line it shares: not vLLM's
            return end if verdict else 0
        if place + 1 == _LOGGED_HEADER_PLACES:
            break
    return 0


def _begins_whole_record(line: str, start: int) -> bool:
    """Whether a record begins at ``start`` whose header follows its process tags (text after a tag is read by the
    header search as behind any prefix)."""
    while line.startswith("(", start):
        m = PROCESS_TAG.match(line, start)
        if m is None or line[m.end() - 1] != " ":
            return False
        start = m.end()
    return _WHOLE_RECORD.match(line, start) is not None


@functools.lru_cache(maxsize=256)
def _logged_header_verdict(shape: bytes) -> bool | None:
    """Whether text before a record is what the header search reads past as a prefix: a header in some logging
    format or a tool's prefix (what :func:`is_record_header` and :func:`is_tool_prefix` accept, or a source's
    name), no process tag, no sentence nor quote (:func:`prefix_verdict`), no RFC 3339 time that would be the
    line's stamp (:func:`prefix_time`).  None where it is, unless a watched logger's header
    begins in it: it names one of them, with a level word or a full time.  (``shape``: the text in UTF-8, its
    digits 0.)"""
    prefix = shape.decode("utf-8", "surrogatepass")
    # (A process tag in it the header search reads for its rank and engine, not only for where the record begins.)
    if "(" in prefix or prefix_time(prefix) is not None:
        return False
    if not (
        is_record_header(prefix)
        or is_tool_prefix(prefix)
        or _SOURCE_NAME.fullmatch(prefix) is not None
        or not any(map(str.isalnum, prefix))  # a paste's decoration alone
    ):
        return False
    if not prefix_verdict(prefix, "vllm")[0]:
        return False
    if any(name in prefix for name in WATCHED_LOGGERS) and (
        _LEVEL_IN_PREFIX.search(prefix) is not None or FULL_TIME.search(prefix) is not None
    ):
        return None
    return True


# A file's name before each line, as ``grep -H`` (and ``rg``, ``zgrep``, ``grep -r``) prints its matches over many
# files: ``vllm.log:``, ``/var/log/pods/ns_vllm-0_uid/vllm/0.log:`` before a CRI record, a Docker container's
# ``<id>-json.log:`` before its JSON record, ``/var/log/syslog:`` before journald's framing; with ``-n`` the line's
# number after it (``vllm.log:42:``, a context line's ``vllm.log-42-``).  A log file's name ends in a log's
# extension (a rotation's number, a compression's after it); a name without one counts in a path (``/var/log/syslog``,
# ``logs/current``) before a line that does not begin with a blank (``/usr/bin/vllm: error: ...`` is the
# program's own line).  Source files (``x.py:12:``, a warning's place) have neither.
_GREP_FILE = re.compile(
    r"(?:[\w.@~+-]*/)*+(?:[\w.@~+-]*\.(?:log|txt|out|err|jsonl|ndjson)(?:\.\d{1,4})?(?:\.gz)?(?::\d{1,12}:|-\d{1,12}-|:)"
    r"|(?<=/)[\w@~+-]++(?::\d{1,12}:|-\d{1,12}-|:)(?! ))",
    re.ASCII,
)
# The longest path read so (Linux's PATH_MAX, and the line number after it): a long line is not scanned further.
_GREP_FILE_MAX = 4096 + 16


def framing_end(line: str) -> int:
    """Where the line behind a file's name as grep prints it, a merging tool's prefix (:func:`tool_prefix`),
    journald's framing (also behind a log stream's name, as a JSON record is), a line-stamping tool's time,
    torchrun's, Slurm's or SkyPilot's prefix, a bracketed name before a whole record, a few words before a record
    (vLLM's or uvicorn's header, a process tag, LMCache's header) or another program's header before one begins; 0
    for a line without any."""
    first = line[:1]
    if first.isalnum() or first in "/.~":
        m = _GREP_FILE.match(line, 0, _GREP_FILE_MAX)
        if m is not None and m.end() < len(line):
            return m.end()
    if first == "(":
        m = _SKYPILOT_PREFIX.match(line)
        return 0 if m is None else m.end()
    if first == "[" and line[1:5] != "pod/":
        m = _TORCH_ELASTIC_PREFIX.match(line)
        if m is not None:
            return m.end()
        return _bracketed_name_end(line) or _journal_framing_end(line) or _logged_header_end(line)
    if first.isdigit() or first == " ":
        m = _SLURM_LABEL.match(line)
        if m is not None:
            return m.end()
    if first.isalnum() or first == " ":
        end = _journal_framing_end(line) or _stamping_tool_end(line) or _named_framing_end(line)
        if end:
            return end
    found = tool_prefix(line)
    if found is not None:
        return found[0]
    # (Words begin with a letter, an address with a number and its dot: a line that begins with a date has neither.)
    words = first.isalpha() or (first.isdigit() and "." in line[1:4])
    return (_words_end(line) if words else 0) or _logged_header_end(line)


def _words_end(line: str) -> int:
    """Where the record behind a few words begins; 0 for a line without."""
    # (A pattern is tried only where a blank is followed by what begins its record, a level word or a mark: most
    # lines without such words are passed over by one search.)
    record, mark = _FOLLOWERS["[ \t]" if line.find("\t", 1, _WORDS_SPAN) != -1 else " "]
    found = record.search(line, 1, _WORDS_SPAN)
    if found is None:
        return 0
    m = _WORDS_BEFORE_LEVEL.match(line) if found.group(1) is not None else None
    if m is None:
        if found.group(1) is not None and mark.search(line, found.end(), _WORDS_SPAN) is None:
            return 0
        m = _WORDS_BEFORE_MARK.match(line)
        if m is None or not begins_record(line[m.end() :]):
            return 0
    words = m.group()
    # (A sentence before a record is refused as the header search refuses it: the record is quoted.)
    if is_foreign_process(words) or (len(words.split()) > 2 and _is_prose(words)):
        return 0
    if line[m.end()] == ":" and (" " in words[:-1] or not words.endswith((": ", "\t"))):
        return 0  # the HIP runtime's line begins with no header: only behind a host as pdsh and GNU parallel print it
    return m.end()


# A Go program's record around a line it captured (logrus, slog's text handler, logfmt):
# ``time="2026-12-03T05:00:00Z" level=info msg="<the line, quoted>"``; and Vector's logfmt encoding of an event it
# read, its keys in order, ``file=/var/log/vllm.log host=gpu-1 message="<the line>" source_type=file
# timestamp=2026-12-03T05:00:00.123456789Z`` (only its quotes and backslashes escaped).  Only ``key=value`` pairs
# may come before ``msg`` or ``message``: text that merely holds ``msg="`` is no such record.
# (Each quoted value is read in runs of plain characters, possessively: a long line is not walked one character at
# a time through an alternation.  The same for every double-quoted string with backslash escapes below.)
_QUOTED_BODY = r'[^"\\]*+(?:\\.[^"\\]*+)*+'
# (The keys before the text's are any but the text's own: a quoted text is scanned once, not taken as one more
# key's value and given back.)
_LOGFMT_RECORD = re.compile(
    rf'(?:(?!(?:msg|message)=")[\w.-]++=(?:"{_QUOTED_BODY}"|[^\s"]*+)\s++)*(?:msg|message)="({_QUOTED_BODY})"'
)
_LOGFMT_TIME = re.compile(r'(?:^|\s)(?:time|ts|timestamp)="?(\d{4}-\d\d-\d\dT[^"\s]+)"?')


# Go's quoting (``strconv.Quote``: logrus, slog) escapes as JSON's does but for what is not printable: a colour's
# escape is ``\x1b``, a vertical tab ``\v``, a character beyond the BMP ``\U0001f600``.
_GO_ESCAPE = re.compile(r"\\(?:x([0-9a-fA-F]{2})|u([0-9a-fA-F]{4})|U([0-9a-fA-F]{8})|([0-7]{3})|(.))", re.DOTALL)
_GO_ESCAPED = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
    '"': '"',
    "'": "'",
}


def _go_escape(m: re.Match[str]) -> str:
    """The character one escape of Go's quoting stands for."""
    code = m.group(1) or m.group(2) or m.group(3)
    if code is not None:
        return chr(int(code, 16))  # (ValueError beyond Unicode)
    if m.group(4) is not None:
        return chr(int(m.group(4), 8))
    return _GO_ESCAPED[m.group(5)]  # (KeyError for what Go never escapes)


def _unquoted_go(body: str) -> str | None:
    """The text a Go quoted string's body (between its quotes) stands for; None where it is none."""
    if "\\" not in body:
        return body  # nothing escaped
    if "\\x" not in body:  # (a colour's escape is no JSON: a coloured line is not tried as one)
        try:
            return json.loads(f'"{body}"')  # (the commonest case, at a C decoder's speed)
        except ValueError:
            pass
    try:
        return _GO_ESCAPE.sub(_go_escape, body)
    except (KeyError, ValueError):
        return None


# A log stream's label set before each of its lines, as Grafana Loki's ``logcli query`` prints it after the
# entry's time (``--output default``): ``{app="vllm", pod="vllm-0"} ``, the values quoted as Go quotes them, the
# set padded with blanks to the longest of the query's (``{} `` where every label is common to all streams).
_LABEL_SET = re.compile(rf'\{{(?:[A-Za-z_]\w*+="{_QUOTED_BODY}"(?:, (?=[A-Za-z_]))?+)*+\}} ++', re.ASCII)


def label_set_end(line: str) -> int:
    """Where the line behind a stream's label set begins; 0 for a line without one."""
    m = _LABEL_SET.match(line)
    return 0 if m is None or m.end() == len(line) else m.end()


def unwrap_logfmt(line: str) -> tuple[str, str | None] | None:
    """The line a logfmt record quotes under ``msg`` or ``message``, and the record's time; None for other text."""
    m = _LOGFMT_RECORD.match(line)
    if m is None:
        return None
    text = _unquoted_go(m.group(1))
    if text is None:
        return None
    found = _LOGFMT_TIME.search(line, 0, m.start(1)) or _LOGFMT_TIME.search(line, m.end())
    return text, found.group(1) if found is not None else None


# The OpenTelemetry Collector's debug exporter at its ``detailed`` verbosity: each log record's body on a line of its
# own, ``Body: Str(<the line>)``, the text as it is.
_DEBUG_BODY = "Body: Str("


# ``pm2 logs --format``: ``[timestamp=<time> ]app=<name> id=<id> type=out|error message=<the line>`` (``app=pm2``, no
# id, for pm2's own lines), the line as it is after ``message=``, unquoted.  The time is in ``--timestamp``'s format
# (its default ``2025-12-14-16:18:29``): the record's when it gives the date and the time in that order.
_PM2_FORMAT = re.compile(
    r"(?:timestamp=(?:(\d{4}-\d\d-\d\d[-T ]\d\d:\d\d:\d\d(?:[.,]\d+)?) |[^=]{1,64}? ))?"
    r"app=[^\s=]++ (?:id=\d++ )?(?:type=(?:out|error) )?message="
)


def record_around(line: str) -> tuple[str, str | None] | None:
    """The line a record holds whole and ends after -- a logfmt record's ``msg`` or ``message``, pm2's formatted
    output, the OpenTelemetry Collector's debug exporter's body -- and the record's time; None for other text."""
    if line.startswith(("app=", "timestamp=")):
        m = _PM2_FORMAT.match(line)
        if m is not None:
            return line[m.end() :], m.group(1)
    if 'msg="' in line or 'message="' in line:
        return unwrap_logfmt(line)
    if line.startswith(_DEBUG_BODY) and line[-1] == ")":
        return line[len(_DEBUG_BODY) : -1], None
    return None


# A line as a quoted string, alone or as the value of a record's text key on a line of its own: ``jq
# .log`` without ``-r`` prints ``"INFO 12-14 ...\n"``; pretty-printed JSON (CloudWatch's ``aws logs
# get-log-events``, ``gcloud logging read --format=json``, a search engine's hits) puts ``"message":
# "INFO 12-14 ...",`` on a line; YAML (gcloud's default output) ``textPayload: 'INFO 12-14 ...'``.
_JSON_STRING_LINE = re.compile(rf'[ \t]*+(?:"(\w{{1,64}}+)" ?: ?)?("{_QUOTED_BODY}") ?,?')
_YAML_STRING_LINE = re.compile(rf"""[ \t]*+(?:- )?(\w{{1,64}}+): (?:'([^']*+(?:''[^']*+)*+)'|("{_QUOTED_BODY}"))""")


def unwrap_quoted(line: str) -> str | None:
    """The line a JSON or YAML string holds, where the whole line is that string or a text key's value
    (:data:`_JSON_TEXT_KEYS`); None for other text."""
    m = _JSON_STRING_LINE.fullmatch(line)
    if m is not None:
        key, quoted = m.group(1), m.group(2)
    else:
        m = _YAML_STRING_LINE.fullmatch(line)
        if m is None:
            return None
        key, quoted = m.group(1), m.group(3)
        if quoted is None:
            return None if key not in _JSON_TEXT_KEYS else m.group(2).replace("''", "'")
    if key is not None and key not in _JSON_TEXT_KEYS:
        return None
    try:
        return json.loads(quoted)
    except ValueError:  # an escape JSON does not have (YAML's ``\e``, a lone surrogate's half)
        return None


# A markdown link where a paste's editor made one of text that looks like a domain name (a Python file's name
# ends as Paraguay's domain does): ``[[loggers.py:259](http://loggers.py:259/)]``; the link's text stays.
_MARKDOWN_LINK = re.compile(r"\[([^\[\]\n]{1,256})\]\((?:https?|mailto):[^()\s]{0,2048}\)")


def unlink_markdown(line: str) -> str | None:
    """The line with its markdown links replaced by their text; None for a line without one."""
    unlinked = _MARKDOWN_LINK.sub(r"\1", line)
    return unlinked if unlinked != line else None


# Fluent Bit's stdout output (its default ``msgpack`` format, where a pipeline is debugged): ``[0] <tag>:
# [<seconds>.<nanoseconds>, {<record>}]``, from 2.1 ``[0] <tag>: [[<seconds>.<nanoseconds>, {<metadata>}],
# {<record>}]``.  The record is printed as ``{"key"=>"value", ...}`` with its strings as they are,
# unescaped: a value's newline (Docker's, at the end of each line it kept) ends the physical line there.
_FLUENT_BIT_RECORD = re.compile(r"\[\d{1,10}\] [^\s\[\]]{1,256}: \[\[?(\d{1,12})\.(\d{9}), ", re.ASCII)
_FLUENT_BIT_TEXT = re.compile(r'[{ ]"(?:log|message|MESSAGE|msg)"=>"')
# Where the value ends: the next key, or the end of the record (and of the line).
_FLUENT_BIT_VALUE_END = re.compile(r'"(?:, "[^"]{1,128}"=>|\}\]$)')


def unwrap_fluent_bit(line: str) -> tuple[str, str] | None:
    """The line a Fluent Bit stdout record holds, and the record's time; None for other text."""
    m = _FLUENT_BIT_RECORD.match(line)
    if m is None:
        return None
    key = _FLUENT_BIT_TEXT.search(line, m.end() - 1)
    if key is None:
        return None
    end = _FLUENT_BIT_VALUE_END.search(line, key.end())
    text = line[key.end() : end.start() if end is not None else len(line)]
    return text, f"@{int(m.group(1)) * 1_000_000 + int(m.group(2)) // 1000}"


# A row of a spreadsheet export (CloudWatch Logs Insights', Datadog's, Azure Log Analytics' "download as
# CSV"): a time and other columns, the line itself a field quoted where it holds a comma or a quote
# (``2025-12-14 16:00:00.123,"INFO 12-14 ... Running: 1 reqs, Waiting: 0 reqs, ..."``, inner quotes
# doubled).  A field counts only after columns a log export has -- single tokens (a host, a level, an
# ISO time) or a time with its date, one of them with a digit --, or as the row's first field;
# prose that quotes a line after a comma is no row.  A web page's US-locale time puts a comma after
# the date (``"12/14/2025, 4:00:00.123 PM"``, what JavaScript's ``toLocaleString`` writes).
_CSV_MAX_FIELDS = 32
_DATE_TIME_COLUMN = re.compile(
    r"[\d/.-]{6,10},? \d{1,2}:\d\d:\d\d(?:[.,]\d{1,9})?(?: ?[AP]M)?(?: ?(?:Z|UTC|GMT|[+-]\d\d:?\d\d))?", re.ASCII
)


def csv_fields(line: str) -> list[str] | None:
    """The fields of a CSV row; None when the line is none (or has too many fields to be one)."""
    try:
        fields = next(csv.reader((line,)))
    except csv.Error:
        return None
    return fields if 2 <= len(fields) <= _CSV_MAX_FIELDS else None


def is_log_column(column: str) -> bool:
    """Whether a CSV column before a line's field is one a log export has: a token or a time."""
    column = column.strip()
    return (" " not in column and "\t" not in column) or _DATE_TIME_COLUMN.fullmatch(column) is not None


# Keys under which JSON log records carry the original text (``body``: the
# OpenTelemetry Logs Data Model, which vLLM and llm-d write as JSON lines;
# ``textPayload``: Google Cloud Logging's entries, as its exports write them;
# ``line``: Grafana Loki's ``logcli --output jsonl``; ``short_message``: GELF,
# Graylog's format and a Docker log driver's; ``_raw``: Splunk's events; ``Log``: Azure
# Container Apps' ``az containerapp logs show``; ``LogMessage`` and ``LogEntry``: Azure Monitor's
# ``ContainerLogV2`` and ``ContainerLog`` rows, as a workspace's data export writes them).
# (``Body``: the OpenTelemetry Collector's ClickHouse table, exported; ``original``: Elastic's ``event.original``.)
_JSON_TEXT_KEYS = (
    "log",
    "MESSAGE",
    "message",
    "msg",
    "body",
    "Body",
    "textPayload",
    "line",
    "short_message",
    "_raw",
    "Log",
    "LogMessage",
    "LogEntry",
    "original",
)
_HEX_DIGITS = frozenset("0123456789abcdef")


class JsonRecord:
    """A JSON-wrapped line: the text inside, its time, whether it is only part of a line,
    the logger that wrote it, the trace context an OpenTelemetry-shaped record carries, and the vLLM
    process that logged it."""

    __slots__ = ("level", "logger", "partial", "process", "span_id", "stamp", "text", "trace_id")

    def __init__(
        self,
        text: str,
        stamp: str | None,
        partial: bool,
        logger: str | None,
        trace_id: str | None = None,
        span_id: str | None = None,
        level: str | None = None,
        process: str | None = None,
    ) -> None:
        self.text = text
        self.stamp = stamp
        self.partial = partial
        self.logger = logger
        self.trace_id = trace_id
        self.span_id = span_id
        self.level = level  # a logging library's record: its level name as written
        self.process = process  # vLLM's name of the process (``EngineCore_DP1``): its process tag in text


# No epoch time is this large, even in nanoseconds (the year 2286 is under 1e19).
_EPOCH_LIMIT = 10**20
# Fluent Bit's JSON outputs name the record's time ``date`` (``json_date_key``): epoch seconds as a double by
# default, or whole seconds or milliseconds, or ISO 8601 with its zone.  The name is common, so another record's
# ``date`` counts only if it is such a time: a number from 2001 on (a day's digits, 20251214, are no time), or
# an ISO time with a zone (Fluent Bit's ``java_sql_timestamp`` has none, and a time without one would be read in
# the server's zone, not UTC).
_EPOCH_FROM = 10**9
_ZONED_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d{1,9})?(?:Z|[+-]\d\d:?\d\d)", re.ASCII)


def _epoch_stamp(value: object) -> str | None:
    """``@<microseconds>`` for an epoch time given in seconds, ms, µs or ns (by its size)."""
    if isinstance(value, str):
        if not value.isdigit() or len(value) > 20:  # int() would not even read thousands of digits
            return None
        value = int(value)
    # Written so that NaN fails too; an infinite time would make no integer.
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value < _EPOCH_LIMIT:
        return None
    for limit, to_micro in ((1e17, 1e-3), (1e14, 1.0), (1e11, 1e3)):
        if value >= limit:
            return f"@{int(value * to_micro)}"
    return f"@{int(value * 1e6)}"


# Where a JSON record keeps the W3C trace and span ids of the call that logged it: OpenTelemetry's log data model
# (``trace_id``), its Python logging instrumentation's record attributes as a JSON formatter writes them
# (``otelTraceID``), camel case (``traceId``), Elastic's ECS (``trace.id``, or ``{"trace": {"id": ...}}``), Google Cloud
# Logging (``logging.googleapis.com/trace``: ``projects/<project>/traces/<id>``).
_TRACE_KEYS = (
    ("trace_id", "span_id"),
    ("otelTraceID", "otelSpanID"),
    ("traceId", "spanId"),
    ("trace.id", "span.id"),
    ("trace", "span"),
    ("logging.googleapis.com/trace", "logging.googleapis.com/spanId"),
)


def _record_trace(record: dict) -> tuple[str | None, str | None]:
    """The trace and span ids a JSON record names (None, None where it names no trace)."""
    for trace_key, span_key in _TRACE_KEYS:
        trace_id = _hex_id(_trace_value(record.get(trace_key)), 32)
        if trace_id is not None:
            return trace_id, _hex_id(_trace_value(record.get(span_key)), 16)
    return None, None


def _trace_value(value: object) -> object:
    """An id as a record's key holds it: itself, ECS's object's ``id``, or the last part of Cloud Logging's path."""
    if isinstance(value, dict):
        return value.get("id")
    if isinstance(value, str) and "/" in value:
        return value.rpartition("/")[2]
    return value


def _hex_id(value: object, length: int) -> str | None:
    if isinstance(value, str) and len(value) == length:
        value = value.lower()
        if _HEX_DIGITS.issuperset(value) and value.strip("0"):
            return value
    return None


def _record_stamp(record: dict) -> str | None:
    value = (
        record.get("time")
        or record.get("timestamp")
        or record.get("@timestamp")
        or record.get("_time")
        or record.get("ts")  # zap's and klog's JSON (epoch seconds or milliseconds), JSON-lines logfmt
        or record.get("TimeStamp")
        or record.get("Timestamp")
        or record.get("TimeGenerated")  # Azure Monitor's rows (UTC)
    )
    if isinstance(value, str) and value[:4].isdigit():
        return value if not value.isdigit() else _epoch_stamp(value)
    if isinstance(value, int | float):
        return _epoch_stamp(value)
    value = record.get("date")
    if isinstance(value, str) and _ZONED_TIME.fullmatch(value):
        return value
    # Python logging's LogRecord.created (epoch seconds), as a formatter that dumps the record writes it: a
    # name as common as ``date``, taken on the same terms.
    for epoch in (value, record.get("created")):
        if isinstance(epoch, int | float) and not isinstance(epoch, bool) and epoch >= _EPOCH_FROM:
            stamp = _epoch_stamp(epoch)
            if stamp is not None:
                return stamp
    value = record.get("__REALTIME_TIMESTAMP")
    if isinstance(value, str) and value.isdigit():
        return "@" + value
    value = record.get("asctime")
    return value if isinstance(value, str) else None


def _record_logger(record: dict, key: str) -> str | None:
    """The logger of a logging library's record; None for a wrapper around a whole line."""
    if key in ("message", "msg"):
        name = record.get("name")  # Python logging's own attribute
        if name is not None:
            return name if isinstance(name, str) else None
        # A formatter that names it otherwise (zap's and structlog's ``logger``, a python-json-logger format
        # renaming ``name``, Logstash's ``logger_name``): a name kvwatch watches, or none.
        return _watched(record.get("logger") or record.get("logger_name"))
    if key in ("body", "Body"):
        # Another service's record, or a name that says nothing: the body is read as a line.
        return _watched(
            record.get("logger") or record.get("name") or record.get("service.name") or record.get("ServiceName")
        )
    return None


def _watched(logger: object) -> str | None:
    """``logger`` where it names vLLM's, LMCache's or uvicorn's logger; None otherwise."""
    return logger if isinstance(logger, str) and logger.startswith(WATCHED_LOGGERS) else None


_DOCKER_KEYS = frozenset(("log", "stream", "time", "attrs"))


def _partial_log(record: dict, text: str) -> bool:
    """Whether a ``log`` record holds only part of a line.

    Docker's json-file ends each complete line with a newline: a record of its
    keys without one is the first part of a line longer than its 16 KiB buffer.
    A log shipper's record (Fluent Bit, Fluentd: the CRI parser's line, enriched
    with other keys) has no newline; its ``logtag`` or ``_p`` says ``P`` for a part."""
    tag = record.get("logtag", record.get("_p"))
    if tag is not None:
        return tag == "P"
    return not text.endswith("\n") and _DOCKER_KEYS.issuperset(record)


# Docker's json-file record of a whole line, as Docker writes every one (compact, its keys in this order): the
# record a host's containers give most, read without building its object, into what reading it as any record
# gives.  Any other record (more keys, a part of a long line, another order) is read as every JSON record is.
_DOCKER_LINE_START = '{"log":"'
_DOCKER_LINE_END = re.compile(r'"stream":"(?:stdout|stderr)","time":"(\d{4}-\d\d-\d\dT[^"\\]*)"\}')


def _docker_line(line: str) -> JsonRecord | None:
    """The record of Docker's json-file line of a whole line, as Docker writes it; None for any other text."""
    if not line.startswith(_DOCKER_LINE_START):
        return None
    try:
        text, end = scanstring(line, len(_DOCKER_LINE_START))
    except ValueError:
        return None
    if not text.endswith("\n") or not line.startswith(",", end):
        return None
    m = _DOCKER_LINE_END.fullmatch(line, end + 1)
    return None if m is None else JsonRecord(text[:-1].rstrip("\r"), m.group(1), False, None)


def unwrap_json(line: str) -> JsonRecord | None:
    """Docker json-file, ``journalctl -o json``, vLLM's JSON logging and OpenTelemetry-shaped records.

    ``logger`` is set for a logging library's record (vLLM's ``--logging-config
    formatter json`` / ``VLLM_LOGGING_CONFIG_PATH``, or an OpenTelemetry record naming
    its logger or service): its text is a bare message without a header, and the
    logger name says whose it is.
    """
    docker = _docker_line(line)
    if docker is not None:
        return docker
    record = _json_object(line)
    return None if record is None else _one_record(record)


def json_records(line: str) -> list[JsonRecord] | None:
    """Every record a JSON line holds: the one of :func:`unwrap_json`, or each log record of an
    OTLP/JSON export; None for a line that holds none."""
    docker = _docker_line(line)
    if docker is not None:
        return [docker]
    record = _json_object(line)
    if record is None:
        return None
    if "resourceLogs" in record:
        return _otlp_records(record) or None
    one = _one_record(record)
    return None if one is None else [one]


def _json_object(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except (ValueError, RecursionError):
        return None
    return record if isinstance(record, dict) else None


# The longest process name taken from a record (vLLM's are short: ``Worker_DP0_TP1_EP1``).
_MAX_PROCESS_NAME = 64


def _one_record(record: dict) -> JsonRecord | None:
    key, text = _record_text(record)
    outer_stamp = None
    if text is None:
        # An export that nests the record one level down (Google Cloud Logging's ``jsonPayload``,
        # Elasticsearch's ``_source``): the inner record's text, the outer record's time.
        for inner in record.values():
            if isinstance(inner, dict):
                key, text = _record_text(inner)
                if text is not None:
                    outer_stamp = _record_stamp(record)
                    record = inner
                    break
        if text is None:
            return None
    partial = False
    if key == "log":
        partial = _partial_log(record, text)
        if text.endswith("\n"):
            text = text[:-1]
    text = text.rstrip("\r")
    trace_id, span_id = _record_trace(record)
    logger = _record_logger(record, key)
    level = None
    if logger is not None:
        value = record.get("levelname") or record.get("level") or record.get("severity_text") or record.get("severity")
        level = value if isinstance(value, str) else None
    process = record.get("vllm_process_name")  # vLLM's own JSON formatter (``--logging-config.formatter json``)
    if not isinstance(process, str) or len(process) > _MAX_PROCESS_NAME:
        process = None
    stamp = outer_stamp or _record_stamp(record)
    return JsonRecord(text, stamp, partial, logger, trace_id, span_id, level, process)


def _otlp_records(export: dict) -> list[JsonRecord]:
    """The log records of an OTLP/JSON export request (``resourceLogs`` -> ``scopeLogs`` ->
    ``logRecords``): what the OpenTelemetry Collector's file exporter writes, one request a line.

    A record's ``body.stringValue`` is the text.  Where the instrumentation scope names vLLM's,
    LMCache's or uvicorn's logger (Python's OpenTelemetry logging handler names the scope after the
    logger) the body is a bare message; otherwise (the collector's filelog receiver) a whole line."""
    records: list[JsonRecord] = []
    for resource in _objects(export.get("resourceLogs")):
        # ``instrumentationLibraryLogs``: the name before OTLP 0.19 (collectors of 2022 and earlier).
        for scope_logs in _objects(resource.get("scopeLogs", resource.get("instrumentationLibraryLogs"))):
            scope = scope_logs.get("scope", scope_logs.get("instrumentationLibrary"))
            name = scope.get("name") if isinstance(scope, dict) else None
            logger = name if isinstance(name, str) and name.startswith(WATCHED_LOGGERS) else None
            for log in _objects(scope_logs.get("logRecords")):
                text = _otlp_text(log.get("body"))
                if text is None:
                    continue
                if text.endswith("\n"):
                    text = text[:-1]
                trace_id = _hex_id(log.get("traceId"), 32)
                level = log.get("severityText") if logger is not None else None
                records.append(
                    JsonRecord(
                        text.rstrip("\r"),
                        _epoch_stamp(log.get("timeUnixNano")) or _epoch_stamp(log.get("observedTimeUnixNano")),
                        False,
                        logger,
                        trace_id,
                        _hex_id(log.get("spanId"), 16) if trace_id else None,
                        level if isinstance(level, str) else None,
                    )
                )
    return records


def _otlp_text(body: object) -> str | None:
    """A log record's text: its ``stringValue``, or the text key of a map a parser made of the line
    (a filelog receiver's ``json_parser`` turns a Docker record into ``{"log": ..., "stream": ...}``)."""
    if not isinstance(body, dict):
        return None
    text = body.get("stringValue")
    if isinstance(text, str):
        return text
    pairs = body.get("kvlistValue")
    values = {
        pair["key"]: pair.get("value")
        for pair in _objects(pairs.get("values") if isinstance(pairs, dict) else None)
        if isinstance(pair.get("key"), str)
    }
    for key in _JSON_TEXT_KEYS:
        value = values.get(key)
        if isinstance(value, dict) and isinstance(value.get("stringValue"), str):
            return value["stringValue"]
    return None


def _objects(value: object) -> list[dict]:
    """The objects of a JSON array (nothing for anything else)."""
    return [item for item in value if isinstance(item, dict)] if isinstance(value, list) else []


def _record_text(record: dict) -> tuple[str | None, str | None]:
    """The key that holds a record's text, and the text (None, None without one)."""
    for key in _JSON_TEXT_KEYS:
        value = record.get(key)
        if isinstance(value, str):
            return key, value
        if key == "MESSAGE" and isinstance(value, list):
            # journald gives a non-UTF-8 message as an array of byte values.
            try:
                return key, bytes(value).decode("utf-8")
            except (ValueError, TypeError):
                return None, None
    return None, None


# --- warnings and errors -------------------------------------------------------------

# A level word as a header prints it -> the level of a ``log_problem`` (INFO, DEBUG: None).
PROBLEM_LEVEL_NAMES = {
    "WARNING": "warning",
    "WARN": "warning",
    "ERROR": "error",
    "CRITICAL": "critical",
    "FATAL": "critical",
}
# vLLM's header at the start: the level, the stamp, the file and line.
VLLM_PROBLEM = re.compile(rf"([A-Z]+) ({VLLM_STAMP}) \[?([^\] ]+:\d+)\] ")
# LMCache's header (its colour codes before it); its line ends with ``(file.py:N:logger)``, in italics
# where LMCache colours its lines (0.5 and later, even in files).
LMCACHE_PROBLEM = re.compile(r"\[(\d\d\d\d-[^\]]{18})\] LMCache ([A-Z]+):")
_LMCACHE_SOURCE = re.compile(r" (?:\x1b\[[0-9;]*m)?\(([\w.-]+\.py:\d+):[\w.<>]*\)(?:\x1b\[[0-9;]*m)?$")

# PyTorch's severity letters that are a problem (Info and Verbose are not).
_TORCH_LEVEL_WORDS = {"W": "WARNING", "E": "ERROR", "F": "FATAL"}


def torch_problem(text: str, start: int) -> tuple[str | None, str | None, str | None]:
    """(level word, ``file:line``, stamp) of PyTorch's C++ header at ``start``; no level for Info and Verbose.
    The stamp is the header's month and day (``1125``, or ``227`` unpadded) and time."""
    m = _TORCH_ANY.match(text, start)
    if m is None:
        return None, None, None
    letter, stamp, source = m.group(1, 2, 3) if m.group(1) else m.group(4, 5, 6)
    return _TORCH_LEVEL_WORDS.get(letter), source.rpartition("/")[2], stamp


# A level word inside a header found after a prefix.
LEVEL_WORD = re.compile(r"\b(WARNING|WARN|ERROR|CRITICAL|FATAL)\b")
_PY_LINE = re.compile(r"\.(?:py|rs):\d+")
_FILE_NAME_END = re.compile(r"[\w.-]{1,120}$")


def call_site(text: str, start: int, end: int) -> str | None:
    """``file.py:line`` in ``text[start:end]`` (a header), the file without its directories.

    The ``.py:`` is looked for first and the name read backwards from it, a bounded
    stretch: a name pattern tried at every letter of a long path would cost its square."""
    m = _PY_LINE.search(text, start, end)
    if m is None:
        return None
    name = _FILE_NAME_END.search(text, max(start, m.start() - 120), m.start())
    return None if name is None else name.group() + m.group()


def lmcache_call_site(text: str) -> str | None:
    """``file.py:line`` of the ``(file.py:N:logger)`` an LMCache line ends with."""
    m = _LMCACHE_SOURCE.search(text)
    return None if m is None else m.group(1)
