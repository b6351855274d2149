"""One line in, its events out: find the header, then the family, then parse.

The hot path is a few string tests: the first character says which header a
line can have, one anchored regex confirms it, and the first word of the
message picks at most one family parser from a table.  Most lines match
nothing and cost little.  A family parser returns a tuple of events, an empty
tuple for a message it knows and ignores, or None when the message starts
like the family but does not parse -- that becomes a ``suspicious_line``
event, the sign that a release changed a format.

Messages are only read where a header shows who wrote them (vLLM, LMCache,
uvicorn, or a JSON record naming its logger); text quoted inside a message
(a prompt, an exception) never starts a message, so it is never parsed.
Without a header at the start, a line is read if it is one whole known message
(:mod:`parsers.messages`), or if a header stands after a prefix that does not
show the header to be quoted text (:func:`parsers.envelope.find_header`).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import replace
from itertools import islice

from parsers import lifecycle, lmcache, requests, vllm_stats
from parsers.envelope import (
    ANY_LEVELS,
    CAPITAL_LEVEL_WORDS,
    CLOSING_ENDS,
    CONTEXT_FIELDS,
    FLUENTD_STDOUT,
    FULL_TIME,
    GLUED_RECORD,
    LEVEL_WORD,
    LMCACHE_HEADER,
    LMCACHE_OLD_HEADER,
    LMCACHE_OLD_STAMP,
    LMCACHE_PROBLEM,
    PROBLEM_LEVEL_NAMES,
    PROCESS_TAG,
    RAY_SERVE_OLD_RECORD,
    RAY_SERVE_RECORD,
    STDLIB_HEADER,
    SYSLOG_RECORD,
    TIMED_WRAPPER,
    UVICORN_HEADER,
    VLLM_HEADER,
    VLLM_PROBLEM,
    WATCHED_LOGGERS,
    Header,
    JsonRecord,
    any_record_header,
    begins_record,
    call_site,
    context_fields,
    context_fields_end,
    csv_fields,
    engine_core_in,
    engine_of_process,
    find_header,
    fluentd_stamp,
    framing_end,
    framing_stamp,
    is_foreign_process,
    is_log_column,
    is_record_header,
    is_tool_prefix,
    json_records,
    label_set_end,
    lmcache_call_site,
    prefix_time,
    prefix_verdict,
    rank_of,
    record_around,
    strip_ansi,
    torch_problem,
    trace_context,
    trailing_fields,
    trim_closing,
    unlink_markdown,
    unwrap_fluent_bit,
    unwrap_quoted,
)
from parsers.envelope import (
    has_residue as _has_residue,
)
from parsers.events import (
    EngineIteration,
    EnginePause,
    EngineSleep,
    EngineStall,
    LmcacheParser,
    LogProblem,
    ShutdownAborted,
    SleepMemory,
    SuspiciousLine,
    VllmParser,
)
from parsers.messages import EXCEPTION_WORD_ENDS, MESSAGE_START, Events, exception_events, message_only
from parsers.shapes import NOT_A_NUMBER, LineMatcher

NOTHING: Events = ()
# A reader of one producer's message that begins at a place in a line: (line, start, stamp, rank) -> events.
MessageReader = Callable[[str, int, "str | None", "int | None"], Events]
# The first letters of the level words vLLM's, LMCache's and uvicorn's headers begin with.
_LEVEL_INITIALS = frozenset("IDWECT")
# Wrappers inside wrappers (a JSON record in a compose stream ...) are peeled at most this deep.
_MAX_DEPTH = 5
# Last characters that are blanks: CR (a CRLF file), spaces and tabs, a no-break or ideographic space.
_BLANK_ENDS = frozenset("\r \t\x0b\x0c\xa0\u3000")
# Escaped line ends and blanks at the end of a line.
_ESCAPED_ENDS = re.compile(r"(?:\\[rn]|[ \t])+\Z")
# How a line that is a quoted string ends (a JSON array's or object's member with its comma).
_QUOTES_AND_COMMA = frozenset("\"',")


# First word of a vLLM message -> (parser, family named when it fails): each family module declares its own.
_VLLM_FAMILIES: dict[str, tuple[VllmParser, str]] = {}
for _module in (vllm_stats, requests, lifecycle):
    _taken = _VLLM_FAMILIES.keys() & _module.FIRST_WORDS.keys()
    if _taken:  # one word, one family: a second claim would silently shadow the first
        raise ImportError(f"{_module.__name__} claims first words another family has: {sorted(_taken)}")
    _VLLM_FAMILIES.update(_module.FIRST_WORDS)
# The first words of the vLLM messages some family reads (a release's changed formats are reviewed by them).
VLLM_FIRST_WORDS = frozenset(_VLLM_FAMILIES)
# Fields before a vLLM message: a family's own tag (``[shutdown] ...``) is the message's first word, no field.
_VLLM_FIELDS = context_fields(word for word in _VLLM_FAMILIES if word.startswith("["))


def vllm_message(line: str, start: int, stamp: str | None, rank: int | None = None) -> Events:
    """A vLLM logger message beginning at ``start``."""
    space = line.find(" ", start)
    word = line[start:space] if space != -1 else line[start:]
    entry = _VLLM_FAMILIES.get(word)
    if entry is None or not word:
        if not word or word[0] == "\t":
            # More blanks after the header than one space: the logo's line begins so, and a logging
            # format may pad or tab; any other message is read after them.
            events = lifecycle.parse_logo(line, start, stamp)
            after = _after_blanks(line, start)
            return events or (vllm_message(line, after, stamp, rank) if after is not None else NOTHING)
        if word[0] == "[" and not word.startswith("[req_id="):
            # Fields a logging format puts before the message, a component's tag (see ``context_fields_end``).
            return _after_fields(vllm_message, line, start, stamp, rank, _VLLM_FIELDS)
        if word.endswith(EXCEPTION_WORD_ENDS):
            return exception_events(line, start, stamp)
        if word.isdigit():
            entry = (vllm_stats.parse_aggregated, "engine_stats")
        elif word.startswith("Iteration("):  # a first word with the step's number in it
            entry = (vllm_stats.parse_iteration, "engine_iteration")
        else:
            return _shared_format_message(line, start, word, stamp)
    try:
        result = entry[0](line, start, stamp)
    except NOT_A_NUMBER:
        result = None
    if result is None:
        return (SuspiciousLine(stamp, entry[1]),)
    return result


_LMCACHE_FAMILIES: dict[str, tuple[LmcacheParser, str]] = lmcache.FIRST_WORDS


def _after_blanks(line: str, start: int) -> int | None:
    """Where the text after the spaces and tabs at ``start`` begins; None when nothing follows them."""
    after = len(line) - len(line[start:].lstrip(" \t"))
    return after if after < len(line) else None


def lmcache_message(line: str, start: int, stamp: str | None, rank: int | None) -> Events:
    """An LMCache logger message beginning at ``start``."""
    space = line.find(" ", start)
    word = line[start:space] if space != -1 else line[start:]
    entry = _LMCACHE_FAMILIES.get(word)
    if entry is None and word.startswith(lmcache.PREFETCH_TAG):  # a first word with the prefetch's number in it
        entry = (lmcache.parse_prefetch_out_of_memory, "lmcache_keys_failed")
    if entry is None:
        if not word or word[0] == "\t":
            # A message that begins with a blank (LMCache's ``INFO:  torch_dev=...``) or after a tab.
            after = _after_blanks(line, start)
            return lmcache_message(line, after, stamp, rank) if after is not None else NOTHING
        if word.startswith("[req_id="):
            try:
                result = lmcache.parse_request_tagged(line, start, stamp, rank)
            except NOT_A_NUMBER:
                result = None
            if result is None:
                family = "lmcache_retrieve" if "] Retrieved " in line[start : start + 200] else "lmcache_store"
                return (SuspiciousLine(stamp, family),)
            return result
        if word[0] == "[":
            return _after_fields(lmcache_message, line, start, stamp, rank)
        return NOTHING
    try:
        result = entry[0](line, start, stamp, rank)
    except NOT_A_NUMBER:
        result = None
    if result is None:
        return (SuspiciousLine(stamp, entry[1]),)
    return result


def uvicorn_message(line: str, start: int, stamp: str | None, rank: int | None = None) -> Events:
    try:
        result = requests.parse_uvicorn(line, start, stamp)
    except NOT_A_NUMBER:
        result = None
    if not result and line.startswith("[", start):
        # Fields a logging format puts before the message (uvicorn's own may begin so: ``[Errno 98] ...``).
        fielded = _after_fields(uvicorn_message, line, start, stamp, rank)
        if fielded:
            return fielded
    if result is None:
        return (SuspiciousLine(stamp, "http_access"),)
    return result


def _after_fields(
    read: MessageReader,
    line: str,
    start: int,
    stamp: str | None,
    rank: int | None,
    fields: re.Pattern[str] = CONTEXT_FIELDS,
) -> Events:
    """``read``'s events of the message after the ``fields`` at ``start``, in the trace those fields name."""
    after = context_fields_end(line, start, fields)
    if after == start or after >= len(line):
        return NOTHING
    events = read(line, after, stamp, rank)
    return _in_trace(events, *trace_context(line[start:after])) if events else events


def _in_trace(events: Events, trace_id: str | None, span_id: str | None) -> Events:
    """The events, those of a request in the trace its log record names (when it names one)."""
    if trace_id is not None:
        for event in events:
            if hasattr(event, "trace_id"):
                event.trace_id = trace_id
                event.span_id = span_id
    return events


def _shared_format_message(line: str, start: int, word: str, stamp: str | None) -> Events:
    """Another logger's message under vLLM's header, where a logging configuration gives every logger the format
    it gives vLLM's (``%(levelname)s %(asctime)s [%(filename)s:%(lineno)d] %(message)s``): uvicorn's access line,
    or one whole known message of LMCache's (``word`` is the message's first)."""
    if word in _LMCACHE_FAMILIES or word.startswith(("[req_id=", lmcache.PREFETCH_TAG)):
        return _restamp(message_only(line, start), stamp)
    if not requests.is_access_like(line):
        return NOTHING
    access = requests.parse_access(line, start, stamp)
    return NOTHING if access is None else (access,)


def _level_colon_message(line: str, start: int, stamp: str | None, rank: int | None = None) -> Events:
    """The message after uvicorn's ``INFO:     `` -- the header a ``%(levelname)s: %(message)s`` format
    also writes, before any logger's message: a whole known one is read."""
    return uvicorn_message(line, start, stamp, rank) or message_only(line, start)


def _restamp(events: Events, stamp: str | None) -> Events:
    """A wrapper's full timestamp (year, time zone, sub-seconds) beats the inner line's."""
    if stamp:
        for event in events:
            event.stamp = stamp
    return events


# --- warnings and errors: a line no parser reads, under a header whose level is a problem ---------

# First letters of the levels that are no problem (INFO, DEBUG, TRACE): most lines stop at this test.
_QUIET_INITIALS = frozenset("IDT")
# A call site or logger name longer than this is no name (a hostile or broken line): left out.
_MAX_SOURCE = 200
# Whose a header found after a prefix is (a standard-format header's logger name says it better).
_PRODUCERS = {"vllm": "vllm", "lmcache": "lmcache", "lmcache_old": "lmcache", "stdlib": "vllm", "uvicorn": "uvicorn"}


def _problem(level_word: str, producer: str, source: str | None, stamp: str | None) -> Events:
    level = PROBLEM_LEVEL_NAMES.get(level_word)
    if level is None:
        return NOTHING
    if source is not None and len(source) > _MAX_SOURCE:
        source = None
    return (LogProblem(stamp, producer, level, source),)  # type: ignore[arg-type]


def _producer(logger: str) -> str:
    """Whose a logger name is (vLLM's own are ``vllm.*``; an embedding program's count as vLLM's)."""
    return "lmcache" if logger.startswith("lmcache") else "uvicorn" if logger.startswith("uvicorn") else "vllm"


def _vllm_problem(line: str, pos: int) -> Events:
    """vLLM's header at ``pos`` before a message that gave no event."""
    m = VLLM_PROBLEM.match(line, pos)
    if m is None:
        return NOTHING
    site = m.group(3)  # the file without its directories (a DEBUG level's header shows vLLM's path)
    return _problem(m.group(1), "vllm", site[site.rfind("/") + 1 :], m.group(2))


def _lmcache_problem(line: str, pos: int) -> Events:
    """LMCache's header at ``pos`` (colour codes and all) before a message that gave no event."""
    level_at = line.find("] LMCache ", pos, pos + 64) + 10
    if level_at == 9 or line[level_at : level_at + 1] in _QUIET_INITIALS:
        return NOTHING
    m = LMCACHE_PROBLEM.search(line, pos, level_at + 10)
    if m is None:
        return NOTHING
    return _problem(m.group(2), "lmcache", lmcache_call_site(line), m.group(1))


def _uvicorn_problem(line: str, pos: int) -> Events:
    """uvicorn's ``WARNING:  `` at ``pos`` before a message that gave no event."""
    return _problem(line[pos : line.find(":", pos)], "uvicorn", None, None)


def _problem_after_prefix(text: str, found: Header) -> Events:
    """A header found after a prefix, before a message that gave no event."""
    if found.kind == "torch":
        level_word, site, stamp = torch_problem(text, found.start)
        return NOTHING if level_word is None else _problem(level_word, "torch", site, stamp)
    level = LEVEL_WORD.search(text, found.start, found.end)
    if level is None or found.kind not in _PRODUCERS:
        return NOTHING
    producer = _PRODUCERS[found.kind]
    source = None
    if found.kind == "vllm":
        source = call_site(text, found.start, found.end)
    elif producer == "lmcache":
        source = lmcache_call_site(text)
    elif found.kind == "stdlib" and found.logger:
        producer, source = _producer(found.logger), found.logger
    return _problem(level.group(1), producer, source, found.stamp)


def parse_line(line: str) -> Events:
    """Every event one physical log line holds (usually none or one)."""
    return parse_nested(line, 0, None)


def parse_wrapped(text: str, stamp: str | None) -> Events:
    """The events of a line taken out of a wrapper that gave it ``stamp``."""
    return _restamp(parse_nested(text, 1, None), stamp)


# One regex per header type: the header, then the commonest messages, else the first word.
_lmcache_line = LineMatcher(LMCACHE_HEADER, (lmcache.LOOKUP, lmcache.STORED, lmcache.RETRIEVED), lmcache_message).parse
_vllm_line = LineMatcher(VLLM_HEADER, (requests.ADDED,), vllm_message).parse
_uvicorn_line = LineMatcher(UVICORN_HEADER, (requests.ACCESS,), _level_colon_message).parse

# Ray's ``... [repeated 2x across cluster]`` after a line it printed once for several processes.
_RAY_REPEATED = re.compile(r" \[repeated \d+x across cluster\]$")


def _without_ray_note(line: str) -> str:
    if line[-1] == "]" and line.endswith(" across cluster]"):
        return _RAY_REPEATED.sub("", line)
    return line


# Process tags seen so far -> (another server's?, tensor-parallel rank, the engine of an engine core), or
# (None, None, None) for text that is no process tag.  Tags repeat on every line of a process, so each is
# parsed once.
_TAGS: dict[str, tuple[bool | None, int | None, int | None]] = {}
_TAGS_MAX = 4096


def _tag(tag: str) -> tuple[bool | None, int | None, int | None]:
    known = _TAGS.get(tag)
    if known is None:
        m = PROCESS_TAG.fullmatch(tag)
        if m is None:
            known = (None, None, None)
        else:
            name = m.group(1)
            known = (is_foreign_process(name), rank_of(name), engine_of_process(name))
        if len(_TAGS) >= _TAGS_MAX:
            _TAGS.clear()
        _TAGS[tag] = known
    return known


# Events whose line does not say which engine core or worker logged it: the process tag does.
# (an engine core's step, sleep, pause and shutdown lines)
_ENGINE_FROM_TAG = (EngineIteration, EngineSleep, EnginePause, EngineStall, ShutdownAborted)
_RANK_FROM_TAG = (SleepMemory,)  # a worker's sleep line


def _named_by_tag(events: Events) -> bool:
    """Whether the first event is one whose engine or worker the line leaves to its process tag."""
    first = events[0]
    kind = type(first)
    if kind in _ENGINE_FROM_TAG:
        return first.engine is None
    return kind in _RANK_FROM_TAG and first.rank is None


def _of_process(events: Events, engine: int | None, rank: int | None) -> Events:
    """The events of such a line given the engine (data-parallel rank) or worker rank of the process that logged it."""
    named = []
    for event in events:
        kind = type(event)
        if engine is not None and kind in _ENGINE_FROM_TAG and event.engine is None:
            event = replace(event, engine=engine)
        elif rank is not None and kind in _RANK_FROM_TAG and event.rank is None:
            event = replace(event, rank=rank)
        named.append(event)
    return tuple(named)


def parse_nested(line: str, depth: int, rank: int | None) -> Events:
    """``parse_line`` for a line found ``depth`` wrappers deep, behind a process tag of ``rank``."""
    if not line:
        return NOTHING
    if line[-1] in _BLANK_ENDS or line[-1] == "n":
        line = _without_blank_end(line)
        if not line:
            return NOTHING
    if line[-1] == "]" or line[-1] in CLOSING_ENDS:
        line, events = _bracketed_end(line, depth, rank)
        if events is not None:
            return events
    if "\x1b" in line:
        events = _read_coloured(line, depth, rank)
        if events is not None:
            return events
        line = _without_blank_end(strip_ansi(line))
        if line:
            # A colour's reset after the note, the fields or blanks hid them.
            line, events = _bracketed_end(line, depth, rank)
            if events is not None:
                return events
        if not line:
            return NOTHING
    events = _dispatch(line, 0, depth, rank)
    if events:
        if type(events[0]) not in _UNREAD or len(events) > 1:
            return events  # read; or a line already split (inside a wrapper), or a wrapper's many records
    elif len(line) < _TWO_RECORDS and "](" not in line and line.isascii():
        return events
    return _second_look(line, events, depth, rank)


def _bracketed_end(line: str, depth: int, rank: int | None) -> tuple[str, Events | None]:
    """A line that ends with a bracket (or a paste's closing mark): the line to read on, Ray's note after it taken
    off (nothing where the note is all it holds); or the events of its message, read without the fields a logging
    format puts after it (OpenTelemetry's ids) -- a level deeper, as a wrapper's line is: a line of fields and
    closing marks in turn is not taken apart without end."""
    if line.endswith(" across cluster]"):
        line = _without_ray_note(line)
        return line, None if line else NOTHING
    if "=" in line and depth < _MAX_DEPTH:
        fields = trailing_fields(line)
        if fields is not None:
            start, end = fields
            events = parse_nested(line[:start] + line[end:], depth + 1, rank)  # (a paste's closing marks kept)
            return line, _in_trace(events, *trace_context(line[start:end]))
    return line, None


# What a publishing tool makes of a line's ASCII: a web page's ``&nbsp;``, a blog's typographic quotes, dashes
# and ellipsis.  Where they stand for it, no header or message matches.
_TYPOGRAPHY = str.maketrans(
    {"\xa0": " ", "\u201c": '"', "\u201d": '"', "\u2018": "'", "\u2019": "'"}
    | {"\u2013": "-", "\u2014": "--", "\u2026": "..."}
)


def _second_look(line: str, events: Events, depth: int, rank: int | None) -> Events:
    """A line nothing read, or only as a problem or a suspicious line: what a page's typography or a paste's links
    hid, or the records glued together in it."""
    if not line.isascii() and depth < _MAX_DEPTH:
        typed = line.translate(_TYPOGRAPHY)
        if typed != line:  # a copy from a rendered page (no-break spaces, a blog's quotes): read as it was written
            return parse_nested(typed, depth + 1, rank) or events
    if "](" in line:
        unlinked = _read_unlinked(line, depth, rank)
        if unlinked is not None:
            return unlinked or events
    if not events and len(line) < _TWO_RECORDS:
        return events
    # One record at most: a vLLM and an LMCache header each hold ``] `` (as does a prefix in brackets, which
    # was read past: looked for only where the line holds two).
    if line.count("] ") < 2 or (line[0] == "[" and line.count("] ", framing_end(line)) < 2):
        return events
    glued = _unglued(line, depth, rank)
    return events if glued is None else glued


def _read_unlinked(line: str, depth: int, rank: int | None) -> Events | None:
    """The events of a paste whose editor made links of what looks like a domain, the header's call site among
    them (``[[loggers.py:259](http://loggers.py:259/)]``), read as the links' text; None for a line without."""
    unlinked = unlink_markdown(line) if depth < _MAX_DEPTH else None
    return None if unlinked is None else parse_nested(unlinked, depth + 1, rank)


def _without_blank_end(line: str) -> str:
    """A line without what ends no message: a paste's or a terminal's trailing blanks (and CRLF's CR), and
    the escaped newline a JSON string's text copied as it is written ends with."""
    line = line.rstrip()
    return _ESCAPED_ENDS.sub("", line) if line.endswith("\\n") else line


def _read_coloured(line: str, depth: int, rank: int | None) -> Events | None:
    """A coloured line read with its colours: LMCache's coloured header (its matcher takes the codes as they
    are), or a wrapper's full time before a coloured line (a Kubernetes node's CRI record: the line is read
    as it would be alone, not stripped of its colours as a whole record; a syslog relay's record too); None for
    the others."""
    if line[0] == "\x1b":
        events = _lmcache_line(line, rank)
        if events is not None:
            return events or _lmcache_problem(line, 0)
    elif depth < _MAX_DEPTH and (line[0].isdigit() or line[0] == "<"):
        return _unwrap(line, depth, rank)
    return None


# What a line gives when its message was not read.
_UNREAD = frozenset((SuspiciousLine, LogProblem))
# Shorter than this, a line nothing read holds no record after another that gives an event (two headers
# take 60 characters; the shortest messages that count, 30).
_TWO_RECORDS = 90
# Characters that show a header is quoted or escaped text rather than a record glued on, and the quotes
# of an HTML page's source.
_QUOTING = frozenset("'\"`\\")
_QUOTE_REFERENCES = ("&quot;", "&#34;", "&#39;", "&#x27;", "&apos;")


def _unglued(line: str, depth: int, rank: int | None) -> Events | None:
    """The events of each record in a line that holds several, their newlines lost (processes that
    write one file unbuffered, a paste): ``... Prefix cache hit rate: 0.0%INFO 07-28 06:41:19 [...``;
    None where no second record is glued on."""
    starts = [
        m.start()
        for m in GLUED_RECORD.finditer(line, line.find("] ") + 2)  # after the first record's header
        if not line[m.start() - 1].isspace()
        and line[m.start() - 1] not in _QUOTING
        and not line.endswith(_QUOTE_REFERENCES, 0, m.start())
    ]
    if not starts:
        return None
    pieces = [line[begin:end] for begin, end in zip([0, *starts], [*starts, len(line)], strict=True)]
    # The marks that close a paste's prefix (a backtick, a table's bar) end the last record.
    found = find_header(pieces[0])
    if found is not None and found.start:
        pieces[-1] = trim_closing(pieces[-1], pieces[0][: found.start])
    return tuple(event for piece in pieces if piece for event in _dispatch(piece, 0, depth, rank))


# One branch per way a line can begin, kept in one function: a split would add a call to every line.
def _dispatch(line: str, pos: int, depth: int, rank: int | None) -> Events:  # noqa: C901
    """The line from ``pos`` on (after a process tag, ``pos`` > 0: no copy is made)."""
    first = line[pos]
    engine = None
    # Process tags, read past in a loop: processes that interleave their writes stack them.
    while first == "(":
        close = line.find(") ", pos)
        if close == -1:
            break
        foreign, tag_rank, tag_engine = _tag(line[pos : close + 1])
        if foreign:
            return NOTHING  # another server's process (SGLang, ...) logs look-alikes
        if foreign is None:
            break  # not a tag
        if tag_rank is not None:
            rank = tag_rank
        if tag_engine is not None:
            engine = tag_engine
        pos = close + 2
        if pos >= len(line):
            return NOTHING
        first = line[pos]
    if first == "[":
        events = _lmcache_line(line, rank, pos)
        if events is not None:
            return events or _lmcache_problem(line, pos)
    elif first in _LEVEL_INITIALS:
        events = _vllm_line(line, rank, pos)
        if events is not None:
            if (engine is not None or rank is not None) and events and _named_by_tag(events):
                return _of_process(events, engine, rank)
            return events if events or first in _QUIET_INITIALS else _vllm_problem(line, pos)
        events = _uvicorn_line(line, rank, pos)
        if events is not None:
            return events if events or first in _QUIET_INITIALS else _uvicorn_problem(line, pos)
    # The rarer shapes below work on their own copy of the rest of the line.
    if pos:
        line = line[pos:]
    if engine is not None:
        # An engine core's line whose header a prefix follows (``VLLM_LOGGING_PREFIX``): its process tag
        # still names the engine.
        events = _rarer_shapes(line, first, depth, rank)
        return _of_process(events, engine, rank) if events and _named_by_tag(events) else events
    return _rarer_shapes(line, first, depth, rank)


def _rarer_shapes(line: str, first: str, depth: int, rank: int | None) -> Events:
    """``_dispatch`` for a line (or the rest of one after its process tags) that begins with no vLLM, LMCache
    or uvicorn header."""
    if first in _LEVEL_INITIALS:
        header = line + " " if line[-1] == "]" else ""
        if header and VLLM_PROBLEM.fullmatch(header) is not None:
            # vLLM's header and nothing after it (its blank dropped): a blank line of a message printed over several
            # lines, each under the header (a traceback's before a chained exception, the start's banner).
            return _vllm_problem(header, 0)
        m = LMCACHE_OLD_HEADER.match(line)
        if m is not None:
            return _old_lmcache(line, m.end(), rank)
        # Ray Serve's own record (Ray 2.40's, or the one before it): its access line is read (behind a prefix the
        # header search finds it), and its message as :func:`_ray_serve_message` says.
        ray = RAY_SERVE_RECORD.match(line) if " -- " in line else None
        if ray is not None:
            return requests.parse_ray_serve_access(line) or _ray_serve_message(line, ray, depth, rank)
        ray = RAY_SERVE_OLD_RECORD.match(line) if " - " in line else None
        if ray is not None:
            return _ray_serve_message(line, ray, depth, rank)
    elif first == "{":
        events = _json(line, depth, rank)
        if events is not None:
            return events
        # Not a JSON record: a stream's label set before the line (Loki's ``logcli``: ``{app="vllm"} INFO ...``).
        end = label_set_end(line) if depth < _MAX_DEPTH else 0
        if end:
            return parse_nested(line[end:], depth + 1, rank)
    elif first.isdigit() and line[10:11] == " ":
        m = STDLIB_HEADER.match(line)
        if m is not None:
            events = _by_logger(m.group(2), line, m.end(), m.group(1), rank) or _rest_of_header(line, m.end())
            if not events:
                # A launcher that logs the server's output through Python's logging under the server's name.
                events = _carried_record(line, m.end(), depth, rank)
                if events is not None:
                    return events
            return events or _problem(m.group(3), _producer(m.group(2)), m.group(2), m.group(1))
    return _headerless(line, depth, rank)


# A call's outcome Ray Serve logs for each request in a replica (``CALL value OK 1.1ms``, before Ray 2.40 ``__CALL__
# OK 60.4ms``) and its proxy's HTTP outcome (``POST /v1/chat/completions 200 56.0ms``, ``POST 200 65.6ms``): Ray's.
_RAY_OUTCOME = re.compile(
    r"(?:CALL \S{1,256}+|__CALL__|[A-Z]{3,7}(?: /\S{0,4096}+)?) \S{1,32}+ \d{1,12}+(?:\.\d+)?ms$", re.ASCII
)


def _ray_serve_message(line: str, record: re.Match[str], depth: int, rank: int | None) -> Events:
    """The message of Ray Serve's own record: a whole record of vLLM's, LMCache's or uvicorn's (a replica's output
    that Ray's logger carries, ``RAY_SERVE_LOG_TO_STDERR=0``), a known message alone (its time the record's), or
    what the line after any other prefix gives (a crash report, a traceback's last line); a request's outcome in
    Ray's words gives nothing at once."""
    start = record.end()
    if _RAY_OUTCOME.match(line, start):
        return NOTHING
    events = _carried_record(line, start, depth, rank)
    if events is not None:
        return events
    events = message_only(line, start)
    if events:
        return _restamp(events, record.group(1))
    return _headerless(line, depth, rank)


def _carried_record(line: str, start: int, depth: int, rank: int | None) -> Events | None:
    """The events of a whole record another logger's record carries as its message from ``start`` on (its own
    time kept); None where the message begins no record."""
    message = line[start:]
    if not begins_record(message):
        return None
    return parse_nested(message, depth + 1, rank) if depth < _MAX_DEPTH else NOTHING


# The lines Python's traceback module writes around an exception's frames, which hold no record: its first line,
# each frame's place, the marks under a frame's code (3.11 on), the words between chained exceptions.  (The frame's
# code and the exception's last line are read as any line is: the last may name a fatal error.)  A traceback is
# common and long, and these lines would otherwise be searched for every prefix and message they could hide.
# (A file's name is taken without brackets, quotes or commas: a record or a known message cannot hide in it.)
_TRACEBACK_SCAFFOLDING = re.compile(
    r'[ \t]*+(?:File "[\w./\\:<>@+~ -]*+", line \d++(?:, in [\w<>.]++)?'
    r"|Traceback \(most recent call last\):"
    r"|[~^]++"
    r"|During handling of the above exception, another exception occurred:"
    r"|The above exception was the direct cause of the following exception:)[ \t]*+",
    re.ASCII,
)


def _headerless(line: str, depth: int, rank: int | None) -> Events:
    """No header at the start: a traceback's scaffolding, or what :func:`_read_headerless` reads."""
    if _TRACEBACK_SCAFFOLDING.fullmatch(line) is not None:
        return NOTHING
    return _read_headerless(line, depth, rank)


def _read_headerless(line: str, depth: int, rank: int | None) -> Events:
    """A wrapper, colour residue, a whole message alone, or a header after a prefix."""
    if line[0] == "\ufeff":
        # A byte order mark: the first line of a file a Windows tool wrote, or of each file joined with cat.
        line = line.lstrip("\ufeff")
        return parse_nested(line, depth, rank) if line else NOTHING
    if depth < _MAX_DEPTH and (line[0].isdigit() or line[0] == "<"):
        # A wrapper's full time (CRI, journald, docker -t) or a syslog record's priority first: no message starts so.
        events = _unwrap(line, depth, rank)
        if events is not None:
            return events
    if "](" in line:
        events = _read_unlinked(line, depth, rank)
        if events is not None:
            return events
    if depth < _MAX_DEPTH:
        # A record around a line that begins with no prefix the rules below read past (its end holds more).
        record = record_around(line)
        if record is not None:
            return _restamp(parse_nested(record[0], depth + 1, rank), record[1])
        # A merged stream's writer (kubectl logs --prefix, compose, stern) or journald's short framing
        # before the line: read past, without a search for a header.
        end = framing_end(line)
        if end:
            return _behind_framing(line, end, depth, rank)
    if depth < _MAX_DEPTH and _has_residue(line):
        cleaned = strip_ansi(line)
        if cleaned != line:
            return parse_nested(cleaned, depth + 1, rank)
    if line[0] != "[" or line.startswith("[req_id="):  # (LMCache's request tag begins a message)
        start = _message_start(line)
        # (A decoration before the message may close after it: inline code's backtick.)
        result = message_only(trim_closing(line, line[:start]) if start else line, start)
        if result:
            return result
    record = _quoted_line(line) if depth < _MAX_DEPTH else None
    if record is not None:
        return _restamp(parse_nested(record[0], depth + 1, rank), record[1])
    events = _after_prefix(line, rank)
    if not events and depth < _MAX_DEPTH and (line[0] == '"' or (',"' in line and line[0] != "{")):
        # A quoted field: the line's own, or a column's after it (a row's columns come in any order);
        # a JSON object no record key matched is no row.
        return _csv_row(line, depth, rank)
    return events


def _behind_framing(line: str, end: int, depth: int, rank: int | None) -> Events:
    """The events of the line behind a framing that ends at ``end``: a record's own time stays, a message alone
    (systemd's about a unit, say) takes the framing's."""
    framing = line[:end]
    # (A paste's marks before a record close after it: inline code's backtick, HTML's tags, a table's bar.)
    events = parse_nested(trim_closing(line, framing)[end:], depth + 1, rank)
    return _restamp(events, framing_stamp(framing)) if events and events[0].stamp is None else events


def _quoted_line(line: str) -> tuple[str, str | None] | None:
    """The line a record quotes whole -- Fluent Bit's stdout output, a JSON or YAML string -- and the record's
    time; None for other text."""
    if line[0] == "[" and '"=>"' in line:
        record = unwrap_fluent_bit(line)
        if record is not None:
            return record
    if line[-1] in _QUOTES_AND_COMMA:
        text = unwrap_quoted(line)
        if text is not None:
            return text, None
    return None


def _csv_row(line: str, depth: int, rank: int | None) -> Events:
    """The events of the one field of a CSV row that holds a log line (a spreadsheet export)."""
    fields = csv_fields(line)
    if fields is None:
        return NOTHING
    dated = False
    for i, field in enumerate(fields):
        if i:
            column = fields[i - 1]
            if not is_log_column(column):
                return NOTHING  # the columns before a line's field are a log export's, or this is no row
            dated = dated or any(map(str.isdigit, column))
            if not dated:
                continue
        if field and field != line:
            events = parse_nested(field, depth + 1, rank)
            if events:
                return events
    return NOTHING


def _message_start(line: str) -> int:
    """Where a line's text begins after a paste's decoration (``> ``, ``▎ ``, a backtick, indentation)."""
    start = 0
    while start < len(line) and not line[start].isalnum():
        if line[start] in "[({\"'":
            return 0  # brackets and quotes open text that is not a bare message
        start += 1
    return start if start < len(line) else 0


def _after_prefix(line: str, rank: int | None) -> Events:
    """A header behind a prefix nobody told kvwatch about (a log tailer's, a collector's, a paste's)."""
    found = find_header(line)
    if found is None:
        return _message_after_record_header(line) or _message_after_any_header(line)
    prefix = line[: found.start]
    accepted, tag_rank = prefix_verdict(prefix, found.kind)
    if not accepted:
        return NOTHING
    if tag_rank is not None:
        rank = tag_rank
    text = _without_ray_note(trim_closing(line, prefix))
    if found.end >= len(text):
        return NOTHING
    events = _after_header(text, found, rank) or _rest_of_header(text, found.end)
    if not events:
        events = _problem_after_prefix(text, found)
    elif _named_by_tag(events):  # (the prefix is read for it alone)
        engine = engine_core_in(prefix)
        if engine is not None or rank is not None:
            events = _of_process(events, engine, rank)
    # A tool's full time in the prefix beats the header's, as a wrapper's at the start of a line does.
    return _restamp(events, prefix_time(prefix)) if events else events


def _message_after_record_header(line: str) -> Events:
    """A whole known message after a log record's header that does not say who wrote it (a time, a
    level, another logger's or a module's name), at the start or behind a prefix."""
    if not any(level in line for level in ANY_LEVELS):
        return NOTHING  # (the header's level word: a cheap test before the search of every place)
    record = any_record_header(line)
    if record is None:
        return NOTHING
    prefix = line[: record[0]]
    if not prefix_verdict(prefix, "record")[0]:
        return NOTHING
    start = record[1]
    if line.startswith("[", start):
        # A component's tag before the message (NVIDIA Dynamo's ``[VllmWorker:1] ``).
        close = line.find("] ", start, start + 80)
        if close != -1:
            start = close + 2
    return _restamp(message_only(trim_closing(line, prefix), start), record[2])


# Places a known message may begin that are looked at in a line (its header is before the first).
_MESSAGE_CANDIDATES = 3
# Level words in upper case, and their endings (the word capitalised or in lower case): a cheap test.
_LEVEL_WORDS = (*CAPITAL_LEVEL_WORDS, "nfo", "ebug", "arn", "rror", "ritical")


def _message_after_any_header(line: str) -> Events:
    """A whole known message after the header of a logging format no pattern above describes
    (``%(asctime)s %(levelname)-8s [%(name)s:%(lineno)d] %(message)s``, tab-separated fields, the level
    after the logger's name ...) -- what stands before it reads as a header, level word included -- or
    after a tool's prefix alone (a ``%(message)s`` format's line in ``docker compose logs``, stern,
    journald): what stands before it holds only what prefixes hold, a time, a pid or a name among it."""
    levelled = any(word in line for word in _LEVEL_WORDS)
    for index, m in enumerate(islice(MESSAGE_START.finditer(line), _MESSAGE_CANDIDATES)):
        head = line[: m.start()]
        # (A prefix's length is bounded before its tokens are read; a tool's prefix ends at the first
        # known word: a later one has part of a message before it.)
        if prefix_verdict(head, "record")[0] and (
            (levelled and is_record_header(head)) or (index == 0 and is_tool_prefix(head))
        ):
            events = message_only(trim_closing(line, head), m.start())
            if events:
                # The time nearest the message is the record's own (a tool's bracketed time may come before it).
                times = FULL_TIME.findall(head)
                return _restamp(events, times[-1] if times else None)
    return NOTHING


# What a message begins with where a header's pattern ended inside a longer header: a line number, a
# separator or a bracket, a file and its line (``[vllm.x:578] ``, ``- INFO - async_llm.py:578 - ``).
_HEADER_LEFT = re.compile(r"[\d:\]|)-]|[\w.-]+\.(?:py|rs):\d", re.ASCII)


def _rest_of_header(line: str, start: int) -> Events:
    """A whole known message further on where the message after a header begins with more header."""
    if _HEADER_LEFT.match(line, start) is None:
        return NOTHING
    return _message_after_any_header(line)


def _after_header(text: str, found: Header, rank: int | None) -> Events:
    """The message after a header found behind a prefix."""
    start = found.end
    if found.kind == "vllm":
        return vllm_message(text, start, found.stamp)
    if found.kind == "stdlib":
        return _by_logger(found.logger or "", text, start, found.stamp, rank)
    if found.kind == "lmcache":
        return lmcache_message(text, start, found.stamp, rank)
    if found.kind == "lmcache_old":
        return _old_lmcache(text, start, rank)
    if found.kind == "access":
        access = requests.parse_access(text, start, None)
        return (access,) if access is not None else NOTHING
    if found.kind == "exception":
        return exception_events(text, start, None)
    if found.kind == "crash":
        return message_only(text, start)
    if found.kind == "torch":
        # PyTorch's own messages give only their level; a program relaying the server's output through glog or
        # klog puts its header before a message read alone too (a traceback's last line, a crash report).
        events = message_only(text, start) or exception_events(text, start, None)
        return _restamp(events, torch_problem(text, found.start)[2]) if events else NOTHING
    if found.kind == "ray_access":
        return requests.parse_ray_serve_access(text, start) or NOTHING
    return uvicorn_message(text, start, found.stamp)


def _by_logger(logger: str, line: str, start: int, stamp: str | None, rank: int | None) -> Events:
    if logger.startswith("lmcache"):
        return lmcache_message(line, start, stamp, rank)
    if logger.startswith("uvicorn"):
        return uvicorn_message(line, start, stamp)
    return vllm_message(line, start, stamp)


def _json(line: str, depth: int, rank: int | None) -> Events | None:
    """The events of a JSON record's text; None when the line is no JSON record with a text."""
    if depth >= _MAX_DEPTH:
        return NOTHING
    records = json_records(line)
    if records is None:
        return None
    if len(records) == 1:
        return parse_record(records[0], depth, rank)
    # An OTLP/JSON export: many records in one line.
    return tuple(event for record in records for event in parse_record(record, depth, rank))


def parse_record(record: JsonRecord, depth: int = 0, rank: int | None = None) -> Events:
    """The events of a JSON record's text (a record read ``depth`` wrappers deep)."""
    engine = None
    if record.process is not None:
        # The process the record names, as a process tag names it in text.
        named_rank, engine = rank_of(record.process), engine_of_process(record.process)
        rank = named_rank if named_rank is not None else rank
    events = _record_events(record, depth, rank)
    if events and (engine is not None or rank is not None) and _named_by_tag(events):
        events = _of_process(events, engine, rank)
    return events


def _record_events(record: JsonRecord, depth: int, rank: int | None) -> Events:
    """The events of the text a record holds: a whole line, or a bare message its logger names."""
    text = record.text.rstrip()
    if record.logger is not None:
        # A logging library's record: a bare message; the logger name says whose.
        if not record.logger.startswith(WATCHED_LOGGERS):
            return NOTHING
        if "\x1b" in text:
            text = strip_ansi(text)
        events = _by_logger(record.logger, text, 0, record.stamp, rank) if text else NOTHING
        if not events and text:
            # A whole line, header and all, under a service's name (a collector's file receiver's record).
            events = _restamp(parse_nested(text, depth + 1, rank), record.stamp)
        if not events and record.level:
            events = _problem(record.level.upper(), _producer(record.logger), record.logger, record.stamp)
    else:
        events = _restamp(parse_nested(text, depth + 1, rank), record.stamp)
    return _in_trace(events, record.trace_id, record.span_id)


def _unwrap(line: str, depth: int, rank: int | None) -> Events | None:
    """Lines framed by a program whose time beats the line's own, or by a syslog relay; None when no such frame."""
    if line[0] == "<":
        m = SYSLOG_RECORD.match(line)  # a record's priority, and RFC 5424's header after it (its time, if any)
        return None if m is None else _restamp(parse_nested(line[m.end() :], depth + 1, rank), m.group(1))
    m = TIMED_WRAPPER.match(line)
    if m is not None:
        return _restamp(parse_nested(line[m.end() :], depth + 1, rank), m.group(1))
    m = FLUENTD_STDOUT.match(line)
    if m is not None:
        return _restamp(parse_nested(line[m.end() :], depth + 1, rank), fluentd_stamp(m))
    return None


def _old_lmcache(line: str, start: int, rank: int | None) -> Events:
    """LMCache 0.1.x: ``INFO LMCache: <message> [2024-10-24 12:00:00,123.123]``."""
    m = LMCACHE_OLD_STAMP.search(line, start)
    stamp = None if m is None else f"{m.group(1)},{m.group(2)}"
    events = lmcache_message(line if m is None else line[: m.start()], start, stamp, rank)
    if events:
        return events
    level = line[:start].split()[-2]  # the word before ``LMCache: ``
    return _problem(level, "lmcache", lmcache_call_site(line if m is None else line[: m.start()]), stamp)
