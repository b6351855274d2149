"""Per-source parsing state: lines that other programs split in pieces.

Docker's json-file driver cuts a line longer than 16 KiB into records whose
``log`` text does not end in a newline; containerd/CRI-O mark such pieces with
``P``.  Parsed one by one, the first piece of a long ``Received request`` line
would lose its fields and a later piece could start with text that looks like
a result line.  :class:`LogStream` joins the pieces back into one line before
parsing.  It holds no I/O; one instance per source.

A paste, or a copy from a terminal, wraps a long record at the terminal's width
into lines that carry no mark of it; a writer that wraps at words (``textwrap``,
``fmt``, an editor's or a mail program's hard wrap) breaks it at the last blank
that fits and drops that blank.  A line that gives nothing, or only a
``suspicious_line`` (a record cut short), may be such a record's first piece: the
line after it is read with it when that line gives nothing alone (after a record
cut short: at most a message without its header), begins no record of its own and
fits the wrap: no longer than the first piece, or, wrapped at words, no longer than
some width at which no piece before it could have taken its first word.  Of the
ways to join them (as they are, or at a blank) the one that reads the record with
the most fields wins.  The record's events are given once a line does not continue
it (or by :meth:`LogStream.settle`, for a reader that has nothing more for now); a
``suspicious_line`` is given only if no piece completes it.  Once a record was read
so, the input is a wrapped paste, and any line may be a first piece: one read alone
is read again with its next pieces when that gives events of the same kinds (with
the fields its next pieces hold; joined at a blank, only with fields it lacked).

A stream may also be told whose log it is where that changes what a line means.
LMCache's multiprocess server serves HTTP through uvicorn as vLLM does, and its
uvicorn lines read alike; in its own log they are its HTTP server's (the health
checks of it, the scrapes of its ``/metrics``, its start and stop), none of vLLM's,
though that log is read as part of vLLM's server.  :meth:`LogStream.own_events`
takes them out of the events of a stream its reader knows to be such a log (a line
alone does not tell, so a stream is never taken for one by its lines; a log's first
lines may, :func:`lmcache_server_shown`, until vLLM's own output shows in it).  Once
vLLM's output shows in such a log (both servers write one file), only the access
lines to the LMCache server's own API, which vLLM does not serve, are taken out.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import fields

from parsers.dispatch import Events, parse_line, parse_nested, parse_record, parse_wrapped
from parsers.envelope import CRI_RECORD, begins_record, find_header, holds_record_mark, strip_ansi, unwrap_json
from parsers.events import (
    EVENT_TYPES,
    Event,
    HttpAccess,
    LmcacheEngineRegistration,
    LmcacheL1Usage,
    LmcacheLookupSummary,
    LmcacheMpLookup,
    LmcachePrefetch,
    LmcacheServerStarted,
    LogProblem,
    ServerError,
    ServerReady,
    ServerShutdown,
    SuspiciousLine,
)
from parsers.messages import begins_with_message

# A joined line longer than this is dropped (and counted by the caller through
# ``dropped``): nothing useful is that long, and memory stays bounded.
DEFAULT_MAX_JOINED = 4 * 1024 * 1024
# First characters of a Docker json-file record or a CRI record (and the empty line).
_MAYBE_SPLIT = frozenset("{0123456789") | {""}
# A wrapped record is pieced together from at most this many lines' worth (a stats line wrapped at 40 columns).
_MAX_WRAPPED = 10
# ``LogStream._room`` while the record kept is its first piece alone.
_FIRST_PIECE = -1
# Shorter or longer than these, a line is no terminal's width (pastes are wrapped at 60 to 250 columns);
# the bound also keeps what is held and read again small, whatever lines come.
_MIN_WIDTH = 40
_MAX_WIDTH = 4096
# What uvicorn's lines give: in an LMCache server's log, its HTTP server's (none of vLLM's).
_HTTP_SERVER_KINDS = frozenset((HttpAccess, ServerReady, ServerShutdown))
# What an LMCache server's own log gives besides its cache's events (``lmcache_*``): its HTTP server's, its
# problems, its crash.
_LMCACHE_SERVER_LOG_KINDS = _HTTP_SERVER_KINDS | {LogProblem, SuspiciousLine, ServerError}
# What only an LMCache server writes: its start, and the multiprocess server's prefetches, lookups' ends (DEBUG),
# hit-rate summaries, L1 usage and vLLM workers' registrations, which show its log where its start is gone (a copy
# another tool rotated).
_LMCACHE_SERVER_ONLY_KINDS = frozenset(
    (
        LmcacheServerStarted,
        LmcachePrefetch,
        LmcacheMpLookup,
        LmcacheLookupSummary,
        LmcacheL1Usage,
        LmcacheEngineRegistration,
    )
)
# Routes only an LMCache multiprocess server's HTTP API serves (LMCache 0.5.6's: vLLM's health check is ``/health``,
# and it has none of these; the ``/``, ``/version`` and ``/metrics`` both serve are left out): answered, they show
# its log where nothing else does -- an idle server's log rotated after its start holds its health checks alone --
# and, in a log both servers write, which access lines are that server's.  (LMCache's API server inside vLLM serves
# some of them too, but logs no access lines.)
_LMCACHE_SERVER_ROUTES = frozenset(
    (
        "/healthcheck",
        "/status",
        "/quota",
        "/config",
        "/lmc_version",
        "/commit_id",
        "/env",
        "/loglevel",
        "/threads",
        "/periodic-threads",
        "/periodic-threads-health",
        "/run_script",
        "/metrics/reset",
    )
)
_LMCACHE_SERVER_ROUTE_PREFIXES = ("/quota/", "/cache/", "/reconfigure/", "/config/", "/periodic-threads/")
# What only vLLM's own processes write (its engine's and API server's start, statistics and requests): none of
# LMCache's events, of what uvicorn's lines give, of a problem or crash any process may log, of systemd's or of
# ``vllm bench``'s.  In a log its first lines showed to be an LMCache server's, one shows vLLM's output begun since.
_VLLM_OUTPUT_KINDS = frozenset(
    cls
    for cls in EVENT_TYPES
    if cls not in _LMCACHE_SERVER_LOG_KINDS and not cls.kind.startswith(("lmcache_", "service_", "bench_"))
)


def lmcache_server_shown(events: Iterable[Event]) -> bool | None:
    """What the events of a log's first lines show of whose log it is: True for an LMCache multiprocess server's
    own (its start or a line only such a server writes among them, and nothing else than such a log gives), False
    for another's (a vLLM server's log, an LMCache server's with vLLM's output in it, give vLLM's events at once),
    None where they show neither (nothing only that server writes, nothing else: a log begun with the server's
    banner and settings, or no line yet).  A reader not told whose log it reads
    may take it for one so (a line alone does not tell)."""
    shown = False
    for event in events:
        kind = type(event)
        if kind in _LMCACHE_SERVER_ONLY_KINDS or (kind is HttpAccess and _lmcache_server_route(event)):
            shown = True
        elif kind not in _LMCACHE_SERVER_LOG_KINDS and not event.kind.startswith("lmcache_"):
            return False
    return True if shown else None


def _lmcache_server_route(access: HttpAccess) -> bool:
    """Whether an access line is an LMCache multiprocess server's answer to its own API."""
    if not 200 <= access.status < 300:
        return False  # (vLLM answers 404 to a probe of the wrong server's health check)
    route = access.path.partition("?")[0]
    return route in _LMCACHE_SERVER_ROUTES or route.startswith(_LMCACHE_SERVER_ROUTE_PREFIXES)


def _without_http_server(events: Sequence[Event]) -> tuple[Event, ...]:
    return tuple(event for event in events if type(event) not in _HTTP_SERVER_KINDS)


def _without_lmcache_server_api(events: Sequence[Event]) -> Sequence[Event]:
    """Of a log both servers write, the events but the LMCache server's answers to its own API."""
    for event in events:
        if type(event) is HttpAccess and _lmcache_server_route(event):
            break
    else:
        return events  # (nearly always: no copy)
    return tuple(event for event in events if not (type(event) is HttpAccess and _lmcache_server_route(event)))


def _read_whole(events: Events) -> bool:
    """Whether a line's events read its record (rather than only saying it did not parse: records glued
    together may each say so)."""
    return any(type(event) is not SuspiciousLine for event in events)


def _cut_short(events: Events) -> bool:
    """Whether a line's events say only that it is a record cut short."""
    return bool(events) and not _read_whole(events)


def _same_kinds(events: Events, held: Events) -> bool:
    """Whether a record read with the next line gives the kinds of events its first piece gave alone
    (their fields may differ: a store line's size and cost, a stats line's parts after a cut between two
    of them, a number's digits after a cut inside it)."""
    return len(events) == len(held) and all(type(a) is type(b) for a, b in zip(events, held, strict=True))


def _fields_read(events: Events) -> int:
    """How many fields of a line's events hold a value."""
    return sum(getattr(event, f.name) is not None for event in events for f in fields(event))


def _read_joins(joins: list[str], held: Events) -> tuple[dict[str, Events], list[str]]:
    """A record's pieces joined in each way a writer may have wrapped them: the joins that read the record whole
    (or, where its first piece read alone, as events of the same kinds), with their events, and those that read as
    a record cut short."""
    reads: dict[str, Events] = {}
    cut = []
    for joined in joins:
        try:
            events = parse_line(joined)
        except Exception:  # never counted: the line itself was read
            continue
        if _read_whole(events) and (not _read_whole(held) or _same_kinds(events, held)):
            reads[joined] = events
        elif events:
            cut.append(joined)
    return reads, cut


def _begins_a_record(line: str) -> bool:
    """Whether a line that gave nothing begins as a record or a message alone does, its header complete
    or not and behind a prefix or not: only such a line is read again with the lines after it (a flood of
    garbage lines of one length is read once)."""
    return holds_record_mark(line) or begins_with_message(line) or begins_record(line)


# The last characters of a header (before a colour's end): a call site's bracket, a level's colon, a separator.
_HEADER_ENDS = frozenset("]:-|>")
_COLOUR_END = "\x1b[0m"


def _header_alone(text: str) -> bool:
    """Whether a line is a record's header and nothing after it (a writer that wraps at words broke the record
    after its header, and dropped the blank there)."""
    end = text.rstrip()
    if end.endswith(_COLOUR_END):
        end = end[: -len(_COLOUR_END)]
    if end[-1:] not in _HEADER_ENDS:
        return False  # (told first: a line that gave nothing before a message alone is common)
    header = find_header(text + " ")
    return header is not None and not strip_ansi(text[header.end :]).strip()


# A piece wrapped at words begins with a word, never with a mark that closes or follows the word before it.
_NO_WORD_START = frozenset(" ])},.;:!?%")


def _room_after(line: str, last: int, room: int) -> int:
    """The widest column a writer that wraps at words may have wrapped at, if ``line`` is its next piece
    after one ``last`` long: that piece could not take ``line``'s first word (nor could the earlier ones
    theirs, which left ``room``).  0 for a line that begins with a blank (such a writer drops it) or with a
    mark that ends the word before it."""
    if line[:1] in _NO_WORD_START:
        return 0
    blank = line.find(" ")
    return min(room, last + (len(line) if blank == -1 else blank))


def _may_continue(line: str, alone: Events, text: str, held: Events, fits: bool) -> bool:
    """Whether ``line`` (read alone: ``alone``) may be the next piece of the record ``text`` begins:
    it ``fits`` the wrap (no longer than the first piece, one more for a copy that trimmed its last
    blank, or within the room wrapping at words leaves), is not begun as the record is (the same
    writer's next record) nor with a header of its own, and gives nothing alone -- or, after a record
    cut short or a header alone, only what a message without its header gives; a first piece that gave
    nothing must show signs of a record."""
    if not fits or line[:8] == text[:8]:
        return False
    if alone and (
        any(event.stamp is not None for event in alone) or (_read_whole(held) if held else not _header_alone(text))
    ):
        return False
    if not held and not _begins_a_record(text):
        return False  # a line that gave nothing and holds no sign of a record: not read again
    return not begins_record(line)


class LogStream:
    __slots__ = (
        "_held",
        "_last",
        "_pasted",
        "_pieces",
        "_room",
        "_size",
        "_skipping",
        "_spaced",
        "_stamp",
        "_until_vllm",
        "_width",
        "_words",
        "_wrapped",
        "dropped",
        "failed",
        "late",
        "lmcache_server",
        "lmcache_server_api",
        "max_joined",
    )

    def __init__(self, max_joined: int = DEFAULT_MAX_JOINED, lmcache_server: bool = False) -> None:
        self._pieces: list[str] = []
        self._size = 0
        self._stamp: str | None = None
        self._skipping = False  # inside an oversized split line, until its last piece
        self._wrapped = ""  # the lines of a record a terminal may have wrapped, joined
        self._width = 0  # the length of the longest of them (the first, wrapped at a terminal's width)
        self._last = 0  # the length of the last of them, once they are two or more
        # Joined as a writer that wraps at words wrote them (at the blanks it dropped), while their lengths allow it:
        # the widest column it may have wrapped them at leaves room for each one's first word on no piece before.
        # (A first piece alone is all of these at once, and is told by ``_room`` < 0: set once per line kept.)
        self._words = ""
        self._room = _FIRST_PIECE
        self._spaced = False  # no terminal wrapped them (``_wrapped`` is ``_words``)
        self._held: Events = ()  # what they gave so far, given when no line continues them
        # A record was read from wrapped lines: this input is a wrapped paste, where a first piece may read
        # as a whole message without the fields its next pieces hold.
        self._pasted = False
        self.max_joined = max_joined
        self.dropped = 0
        self.failed = 0  # lines a parser raised on (a bug): skipped, counted by the caller
        # After a feed made while ``holding``: how many of the events it gave end on the line before.
        self.late = 0
        # The reader knows this to be an LMCache server's own log (see :meth:`own_events`): named so, or shown so by
        # the log's first lines, and then only until vLLM's own output shows in it (``_until_vllm``).
        self.lmcache_server = lmcache_server
        self._until_vllm = False
        # A log shown so by its first lines in which vLLM's output has begun since (both servers write it): the
        # answers of the LMCache server's own API, which vLLM does not serve, are still taken out.
        self.lmcache_server_api = False

    def show_lmcache_server(self, shown: bool) -> None:
        """What the log's first lines showed of whether it is an LMCache server's own (:func:`lmcache_server_shown`):
        one is read so until vLLM's own output shows in it (both servers writing one file, vLLM's output begun after
        the lines that told), and from there on as any log but for the access lines to the LMCache server's own API
        (its other uvicorn lines may be vLLM's)."""
        self.lmcache_server = self._until_vllm = shown
        self.lmcache_server_api = False

    def show_vllm_begun(self) -> None:
        """Read on as a log shown to be an LMCache server's own in which vLLM's output has begun since (a reader that
        remembers the file it reads anew): only the answers of that server's own API are its."""
        self.lmcache_server = self._until_vllm = False
        self.lmcache_server_api = True

    def own_events(self, events: Sequence[Event]) -> Sequence[Event]:
        """Of some events this stream gave, in order, those of the server it is read for: all of them, but in an
        LMCache server's own log (``lmcache_server``) none of what its HTTP server's uvicorn lines give, and in one
        its first lines told to be such a log, once vLLM's output has begun in it, none of the access lines to the
        LMCache server's own API (its other uvicorn lines may be vLLM's)."""
        if not self.lmcache_server:
            return _without_lmcache_server_api(events) if self.lmcache_server_api else events
        if self._until_vllm:
            for index, event in enumerate(events):
                if type(event) in _VLLM_OUTPUT_KINDS:
                    self.show_vllm_begun()
                    return (*_without_http_server(events[:index]), *_without_lmcache_server_api(events[index:]))
        return _without_http_server(events)

    @property
    def holding(self) -> bool:
        """Whether a record a terminal may have wrapped is kept for the next line (see ``late``)."""
        return bool(self._wrapped)

    def feed(self, line: str) -> Events:
        """The events of one physical line (none while a split line is still incomplete, or while a
        record the line may continue is not yet given).

        A line a parser raises on gives none and is counted in ``failed``: one bad line never
        stops the reading of the ones after it."""
        first = line[:1]
        if first in _MAYBE_SPLIT or self._pieces or self._skipping:
            events = self._read(line, first)
            if self._pieces or self._skipping or first == "{":
                # A wrapper's record, whole or joined from its own pieces: no terminal's.
                return self._release() + events if self._wrapped else events
        else:
            try:
                events = parse_nested(line, 0, None)
            except Exception:
                self.failed += 1
                return self._release()
        # Read whole (``_read_whole``, spelt out on the hot path for a line's first event): the commonest case.
        if events and (type(events[0]) is not SuspiciousLine or (len(events) > 1 and _read_whole(events))):
            if not self._wrapped:
                return self._begin(line, events) if self._pasted else events
            if not self._held and (events[0].stamp is not None or not _header_alone(self._wrapped)):
                self._wrapped, self.late = "", 0  # no piece of a record that gave nothing
                return self._begin(line, events) if self._pasted else events
        elif not self._wrapped:
            return self._begin(line, events)
        return self._continued(line, events)

    def _read(self, line: str, first: str) -> Events:
        """A line that may be a wrapper's record, or a piece of a line a wrapper split."""
        try:
            if first == "{" and '"log"' in line:
                record = unwrap_json(line)
                if record is not None:
                    if record.logger is None and (record.partial or self._pieces or self._skipping):
                        return self._piece(record.text, record.stamp, not record.partial)
                    # Read once: a container's whole log is records like this one.
                    return self._flush() + parse_record(record) if self._pieces else parse_record(record)
            elif first.isdigit():
                # A containerd record, whole or a piece: its line read as any wrapped line is, at once.
                m = CRI_RECORD.match(line)
                if m is not None:
                    return self._piece(line[m.end() :], m.group(1), m.group(2) == "F")
            if self._pieces:
                # The rest of a split line never came: parse what there is, then this line.
                return self._flush() + parse_line(line)
            return parse_line(line)
        except Exception:
            self.failed += 1
            return ()

    def _begin(self, line: str, events: Events) -> Events:
        """A line that gave nothing, or only a ``suspicious_line`` (in a wrapped paste: any line): kept
        as a wrapped record's first piece (its events held back), or its events."""
        if not _MIN_WIDTH <= len(line) <= _MAX_WIDTH or line[0].isspace():
            return events  # no terminal is that narrow or wide; a line that begins with a blank begins no record
        self._wrapped, self._width, self._held, self._room = line, len(line), events, _FIRST_PIECE
        return ()

    def _alone(self, line: str, events: Events) -> Events:
        """A line that continues no record: its events, or none yet where it may begin one."""
        return self._begin(line, events) if self._pasted or not _read_whole(events) else events

    def _continued(self, line: str, alone: Events) -> Events:
        """``line`` (read alone: ``alone``) after a possible first piece: the next piece of its record,
        or a line of its own (which may itself be the first piece of another)."""
        text, held, width = self._wrapped, self._held, self._width
        if line[:8] == text[:8]:
            # Begun as the record is: the same writer's next record, no piece of it (``_may_continue``, told first:
            # most lines that give nothing come after another such line of their writer).
            self._wrapped, self._words, self._held, self.late = "", "", (), len(held)
            return held + self._alone(line, alone)
        if self._room == _FIRST_PIECE:
            words, last, room, spaced = text, width, _MAX_WIDTH, False
        else:
            words, last, room, spaced = self._words, self._last, self._room, self._spaced
        self._wrapped, self._words, self._held, self.late = "", "", (), len(held)
        room = _room_after(line, last, room)
        # A terminal's piece (a whole one or the last), or the next piece of a record wrapped at words.
        by_chars = not spaced and len(line) <= width + 1
        by_words = bool(words) and max(width, len(line)) <= room
        if not _may_continue(line, alone, text, held, by_chars or by_words):
            return held + self._alone(line, alone)
        # A terminal's piece ends inside a word, or, where a copy trimmed the last blank of the piece before
        # (shorter than a whole one), lost that blank; a writer that wraps at words dropped the blank between.
        by_terminal = text + line if by_chars else ""
        trimmed = f"{text} {line}" if by_chars and last < max(width, len(line)) else ""
        by_blank = f"{words} {line}" if by_words else ""
        reads, cut = _read_joins([j for j in dict.fromkeys((by_terminal, trimmed, by_blank)) if j], held)
        # The join with the most fields (the first of them: as they are, then at a blank).
        joined, events = max(reads.items(), key=lambda read: _fields_read(read[1]), default=("", ()))
        whole = by_chars and len(line) >= width - 1  # a piece of a terminal's width: more may follow
        at_blank = bool(events) and joined != by_terminal
        if at_blank and _read_whole(held) and _fields_read(events) <= _fields_read(held):
            joined, events = "", ()  # joined at a blank, a record read whole continues only with fields it lacked
        if events:
            self._pasted = True
            # Read as wrapped at words (or the same so), any piece may be followed.
            words = by_blank if by_blank and reads.get(by_blank) == events else ""
        else:
            # Wrapped at words, any piece may be a middle one: taken as such only while the record reads as cut short.
            if alone or not (whole or (by_words and (by_blank in cut or _cut_short(held)))):
                return held + self._alone(line, alone)  # the record ended before this line, or with it
            # Neither ends the record: a middle piece, of a terminal's width or of a record wrapped at words.
            events, joined, words = held, text + line if whole else by_blank, by_blank
        self.late = 0  # the record's events end on this line
        if (whole or words) and len(joined) < _MAX_WRAPPED * width:
            # More of the record may follow (optional last fields, the rest of a number).
            self._wrapped, self._words, self._held, self._spaced = joined, words, events, not whole
            self._width, self._last, self._room = max(width, len(line)), len(line), room
            return ()
        return events

    def _release(self) -> Events:
        """The record held back, given with a line that is no piece of it (it ends on the line before)."""
        held = self.settle()
        self.late = len(held)
        return held

    def settle(self) -> Events:
        """What a record a terminal may have wrapped gave so far, held back in case the next line
        continues it: for a reader that has no more lines for now (a live source at the end of what
        was written)."""
        held = self._held
        self._wrapped, self._held = "", ()
        return held

    def _piece(self, text: str, stamp: str | None, last: bool) -> Events:
        if self._skipping:
            self._skipping = not last
            return ()
        if last and not self._pieces and len(text) <= self.max_joined:
            return parse_wrapped(text, stamp)  # a whole line in one record: nothing to join
        if not self._pieces:
            self._stamp = stamp
        self._pieces.append(text)
        self._size += len(text)
        if self._size > self.max_joined:
            self._pieces.clear()
            self._size = 0
            self.dropped += 1
            self._skipping = not last
            return ()
        return self._flush() if last else ()

    def _flush(self) -> Events:
        if not self._pieces:
            return ()
        text = "".join(self._pieces)
        self._pieces.clear()
        self._size = 0
        return parse_wrapped(text, self._stamp)

    def close(self) -> Events:
        """End of input: whatever piece is still pending."""
        return self.settle() + self._flush()
