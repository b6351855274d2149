"""Request lifecycle lines of vLLM's front end and engine, and uvicorn's access lines.

``Received request`` lines may carry the whole prompt (request logging was on
by default up to v0.10.0).  Only the request id, ``max_tokens`` and the number
of prompt token ids are read; the prompt text is skipped without being
looked at, so nothing quoted inside it can be mistaken for a field.
"""

from __future__ import annotations

import re

from parsers.envelope import ACCESS_CLOSING_QUOTES, ACCESS_OPENING_QUOTES, RAY_SERVE_HEAD
from parsers.events import (
    Event,
    HttpAccess,
    KvLoadFailure,
    RequestAborted,
    RequestAdded,
    RequestCancelled,
    RequestFailed,
    RequestFinished,
    RequestPreempted,
    RequestReceived,
    ResponseGenerated,
    ServerError,
    ServerReady,
    ServerShutdown,
    VllmParser,
)
from parsers.shapes import INTEGER, Shape, one_of, opens_with, set_members

_RECEIVED = re.compile(r"Received request (\S+?): ")
_MAX_TOKENS = re.compile(rf"\bmax_tokens=({INTEGER})")
_TOKEN_IDS = re.compile(r"prompt[_ ]token[_ ]ids: (?:\[([^\]]*)\]|None)")


def _build_added(stamp: str | None, rank: int | None, g: tuple) -> RequestAdded:
    return RequestAdded(stamp, g[0])


ADDED = Shape(r"Added request ([^ ]+)\.$", _build_added)
FINISHED = re.compile(r"Finished request (\S+)\.$")
# ``Aborted request X.``, ``Aborted request(s) X,Y.`` and vllm-omni's ``Aborted request(s) ['X', 'Y']``.
ABORTED = re.compile(r"Aborted request(?:\(s\))? (?:(\S+)\.|\[([^\]]*)\])$")
# Aborted, or failed: for a reason in parentheses, or for an unexpected exception (``failed due to
# <exception>.`` from vLLM 0.20; ``failed.`` before 0.20, and still from the pooling requests' handler).
_REQUEST_OUTCOME = re.compile(
    r"Request (\S+) (?:(aborted)\.$|failed(?: \((engine dead|bad request|input error)\)| due to |\.$))"
)
_FAIL_REASONS = {
    "engine dead": "engine_dead",
    "bad request": "bad_request",
    "input error": "input_error",
    None: "error",  # an unexpected exception
}


# The prompt and the parameters are user text of any length (a long context is a line of megabytes): the
# ends of their quoted strings are found by searching for quotes, not character by character by a pattern.


def _literal_end(line: str, start: int) -> int:
    """Just after the end of the Python string literal whose opening quote is at ``start`` (a quote after an
    odd run of backslashes is escaped); -1 for one a cut left open."""
    quote = line[start]
    at = start + 1
    while True:
        at = line.find(quote, at)
        if at == -1:
            return -1
        escapes = at
        while escapes - 1 > start and line[escapes - 1] == "\\":
            escapes -= 1
        if (at - escapes) % 2 == 0:
            return at + 1
        at += 1


def _prompt_end(line: str, start: int) -> int:
    """Just after the prompt vLLM printed at ``start``: a string literal, None or a list of token ids; -1 for
    one cut short."""
    first = line[start : start + 1]
    if first in ("'", '"'):
        return _literal_end(line, start)
    if first == "[":
        close = line.find("]", start)
        return close + 1 if close != -1 else -1
    return start + 4 if line.startswith("None", start) else -1


def _unquoted(line: str, start: int) -> str:
    """The line from ``start`` with each quoted string made ``_`` (parameters quote user text too: stop strings,
    schemas), and without what follows a quote a cut left open."""
    pieces = []
    at = start
    single, double = line.find("'", at), line.find('"', at)
    while True:
        # (Each kind of quote is looked for again only once passed: a line is searched once for each.)
        if -1 < single < at:
            single = line.find("'", at)
        if -1 < double < at:
            double = line.find('"', at)
        quote = min(single, double) if single != -1 and double != -1 else max(single, double)
        if quote == -1:
            pieces.append(line[at:])
            break
        pieces.append(line[at:quote])
        end = _literal_end(line, quote)
        if end == -1:
            break
        pieces.append("_")
        at = end
    return "".join(pieces)


def parse_received(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if not line.startswith("Received request ", start):
        # "Received KeyboardInterrupt" is another message; "Received req" a cut one
        return None if opens_with(line, start, ("Received request ",)) else ()
    m = _RECEIVED.match(line, start)
    if m is None:
        return None
    request_id = m.group(1)
    pos = m.end()
    if line.startswith("prompt: ", pos):
        end = _prompt_end(line, pos + len("prompt: "))
        if end == -1 or not line.startswith(", ", end):  # cut short (split or truncated): only the id is certain
            return (RequestReceived(stamp, request_id),)
        pos = end + 2
    rest = _unquoted(line, pos)
    max_tokens = _MAX_TOKENS.search(rest)
    ids = _TOKEN_IDS.search(rest)
    prompt_tokens = None
    if ids is not None and ids.group(1) is not None:
        listed = ids.group(1).strip()
        prompt_tokens = listed.count(",") + 1 if listed else 0
    return (
        RequestReceived(
            stamp,
            request_id,
            int(max_tokens.group(1)) if max_tokens else None,
            prompt_tokens,
        ),
    )


def parse_added(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    event = ADDED.parse(line, start, stamp)
    if event is None:
        return None if opens_with(line, start, ("Added request ",)) else ()
    return (event,)


def parse_finished(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = FINISHED.match(line, start)
    if m is None:
        return None if opens_with(line, start, ("Finished request ",)) else ()
    return (RequestFinished(stamp, m.group(1)),)


_FINISH = ", finish_reason: "
_OUTPUT_IDS = ", output_token_ids: "


def parse_generated(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """The front end's output line.  Only the id, the finish reason and the count of token ids are
    read, the last two from the line's end, so nothing in the quoted output can pose as a field.

    vLLM's Rust front end logs the same line without the id (``Generated response: output: ...``,
    ``Generated response (streaming delta): output: ...``): a known line with nothing to join it to."""
    if not line.startswith("Generated response ", start) or line.startswith("(streaming ", start + 19):
        return ()
    begin = end = start + 19
    while end < len(line) and line[end] not in " :":
        end += 1
    request_id, stream = line[begin:end], None
    if line.startswith(" (streaming delta)", end):
        stream, end = "delta", end + 18
    elif line.startswith(" (streaming complete)", end):
        stream, end = "complete", end + 21
    if line.startswith(" details: ", end):
        return ()  # the DEBUG companion line: token ids only
    if not request_id or not line.startswith(": output: ", end):
        return None
    finish = line.rfind(_FINISH)
    reason = None
    if finish != -1 and line[finish + len(_FINISH) :].replace("_", "").isalnum():
        reason = line[finish + len(_FINISH) :]
        if reason in ("None", "streaming_complete"):
            reason = None
    else:
        finish = len(line)  # cut short: the fields at its end are lost
    tokens = None
    ids = line.rfind(_OUTPUT_IDS, 0, finish)
    if ids != -1:
        listed = line[ids + len(_OUTPUT_IDS) : finish]
        if listed.startswith("[") and listed.endswith("]"):
            inner = listed[1:-1].strip()
            tokens = inner.count(",") + 1 if inner else 0
    return (ResponseGenerated(stamp, request_id, stream, reason, tokens),)


def parse_aborted(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = ABORTED.match(line, start)
    if m is None:
        return None if opens_with(line, start, ("Aborted request",)) else ()
    if m.group(1) is not None:
        ids = m.group(1).split(",")
    else:
        ids = [rid.strip().strip("'\"") for rid in m.group(2).split(",")]
    return tuple(RequestAborted(stamp, rid) for rid in ids if rid)


def parse_request_outcome(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    """``Request X aborted.`` / ``Request X failed (engine dead|bad request|input error)...`` / ``Request X
    failed due to ...`` / ``Request X failed.``."""
    m = _REQUEST_OUTCOME.match(line, start)
    if m is None:
        return ()  # "Request X details: ...", "Request X failed validation: ..." (then failed as a bad request)
    if m.group(2) is not None:
        return (RequestCancelled(stamp, m.group(1)),)
    return (RequestFailed(stamp, m.group(1), _FAIL_REASONS[m.group(3)]),)


# V0's scheduler, at every 50th preemption (0.4.3 to 0.10).
PREEMPTED = re.compile(
    r"Sequence group (\S+) is preempted by PreemptionMode\.(RECOMPUTE|SWAP) mode because there is not enough KV "
    rf"cache space\.(?: [^=]{{0,300}}total_num_cumulative_preemption=({INTEGER}))?"
)


def parse_preempted(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = PREEMPTED.match(line, start)
    if m is None:
        return None if opens_with(line, start, ("Sequence group ",)) and " is preempted" in line else ()
    cumulative = int(m.group(3)) if m.group(3) is not None else None
    return (RequestPreempted(stamp, m.group(1), "recompute" if m.group(2) == "RECOMPUTE" else "swap", cumulative),)


# The scheduler's KV load failure lines (vLLM from autumn 2025; the failing form from December 2025).  The ids
# of the failed requests are printed as a Python set: only a bounded number of them is kept.
KV_LOAD_RECOVERED = re.compile(
    rf"Recovered from KV load failure: ({INTEGER}) request\(s\) rescheduled \(({INTEGER}) tokens affected\)"
)
KV_LOAD_FAILING = re.compile(
    rf"Failing ({INTEGER}) request\(s\) due to KV load failure"
    rf"(?: \(failure_policy=\w+, ({INTEGER}) tokens affected\))?\.?(?: Request IDs: )?"
)


def parse_kv_load_recovered(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = KV_LOAD_RECOVERED.match(line, start)
    if m is None:
        return None if opens_with(line, start, ("Recovered from KV load failure: ",)) else ()
    return (KvLoadFailure(stamp, int(m.group(1)), int(m.group(2)), "recompute"),)


def parse_kv_load_failing(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    m = KV_LOAD_FAILING.match(line, start)
    if m is None:
        return None if "KV load failure" in line else ()
    ids = set_members(line, m.end())
    tokens = int(m.group(2)) if m.group(2) is not None else None
    return (KvLoadFailure(stamp, int(m.group(1)), tokens, "fail", ids or None),)


# --- uvicorn --------------------------------------------------------------------------


def _without_query(path: str) -> str:
    query = path.find("?")
    return path[:query] if query != -1 else path  # a query string can carry keys or user data


def _build_access(stamp: str | None, rank: int | None, g: tuple) -> HttpAccess:
    return HttpAccess(stamp, g[0], g[1], _without_query(g[2]), int(g[3]))


# The client (an address and port as uvicorn writes it: at most an IPv6 address's length and some; longer is no
# client, and would carry its length into a trace's attributes), and the fields a platform may put after it.
_CLIENT_AND_FIELDS = r'([^ ]{1,256}+) (?:[^ "]{1,256}+ )?- (?:[^ "]{1,256}+ - )?'
# uvicorn's ``client - "METHOD path HTTP/x" status``; a platform's extra field (a pid) may
# stand between the client and the request, and a paste may change the quotes (see
# ``ACCESS_OPENING_QUOTES``).
ACCESS = Shape(
    _CLIENT_AND_FIELDS
    + one_of(ACCESS_OPENING_QUOTES)
    + r"([A-Z]+) ([^ ]+) HTTP/[\d.]+"
    + one_of(ACCESS_CLOSING_QUOTES)
    + r" (\d\d\d)(?: |$)",
    _build_access,
)


def _build_websocket(stamp: str | None, rank: int | None, g: tuple) -> HttpAccess:
    return HttpAccess(stamp, g[0], "GET", _without_query(g[1]), int(g[2]) if g[2] is not None else 101)


# uvicorn's line for a WebSocket's opening handshake (a GET): ``client - "WebSocket path" [accepted]`` (answered
# 101, Switching Protocols), or the status it was refused with (403, or the one the application answered).  vLLM
# serves its realtime API so (``/v1/realtime``, 0.16 on).
WEBSOCKET = Shape(
    _CLIENT_AND_FIELDS
    + one_of(ACCESS_OPENING_QUOTES)
    + r"WebSocket ([^ ]+)"
    + one_of(ACCESS_CLOSING_QUOTES)
    + r" (?:\[accepted\]|(\d\d\d))(?: |$)",
    _build_websocket,
)


def parse_access(line: str, start: int, stamp: str | None) -> HttpAccess | None:
    """uvicorn's access line at ``start``, or its line for a WebSocket's handshake; None for neither."""
    return ACCESS.parse(line, start, stamp) or WEBSOCKET.parse(line, start, stamp)


def parse_uvicorn(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """A uvicorn message (after ``INFO:     ``): an access line (a WebSocket's handshake too) or server lifecycle."""
    event = parse_access(line, start, stamp)
    if event is not None:
        return (event,)
    return None if is_access_like(line) else _uvicorn_lifecycle(line, start, stamp)


def is_access_like(text: str) -> bool:
    """Whether ``text`` holds `` - `` and an opening quote, as an access line does before its request."""
    return " - " in text and any(" - " + quote in text for quote in ACCESS_OPENING_QUOTES)


def _uvicorn_lifecycle(line: str, start: int, stamp: str | None) -> tuple[Event, ...]:
    if line.startswith(("Application startup complete.", "Uvicorn running on "), start):
        return (ServerReady(stamp),)
    if line.startswith("Shutting down", start):
        return (ServerShutdown(stamp),)
    if line.startswith("[Errno ", start) and "error while attempting to bind" in line:
        return (ServerError(stamp, "other", "OSError"),)
    return ()


# vLLM's Rust front end (vllm-rs, ``VLLM_USE_RUST_FRONTEND=1``, from 0.30) logs each response as a
# structured event under vLLM's header, without the client's address:
# ``http request method=POST path=/v1/chat/completions version=HTTP/1.1 status=200``.
_RUST_ACCESS = "http request "
_RUST_ACCESS_FIELD = re.compile(r' (method|path|status)="?([^\s"]+)')


def parse_rust_access(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if not line.startswith(_RUST_ACCESS, start):
        return ()
    fields = dict(_RUST_ACCESS_FIELD.findall(line, start + len(_RUST_ACCESS) - 1))
    method, path, status = fields.get("method"), fields.get("path"), fields.get("status")
    if method is None or path is None or status is None or len(status) != 3 or not status.isdigit():
        return None
    return (HttpAccess(stamp, "", method, _without_query(path), int(status)),)


# The Rust front end aborts the request of a client that went away (Python's ``Request X aborted.``):
# ``auto-aborting request due to dropped stream request_id=chatcmpl-...``.  Its other auto-abort, for a
# matched stop string, ends a request normally (and is logged at DEBUG).
_RUST_DROPPED = "auto-aborting request due to dropped stream"
_RUST_REQUEST_ID = re.compile(r' request_id="?([^\s"]+)')


def parse_rust_auto_abort(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    if not line.startswith(_RUST_DROPPED, start):
        return ()
    m = _RUST_REQUEST_ID.search(line, start + len(_RUST_DROPPED))
    return (RequestCancelled(stamp, m.group(1)),) if m is not None else None


# Ray Serve's access line (Ray 2.40 and later), where vLLM runs under Ray Serve LLM and Ray's HTTP
# proxy answers in uvicorn's place: ``INFO 2025-09-23 05:15:27,567 default_OpenAiIngress r9k0uop3
# 57087c4e-... -- POST /v1/chat/completions 200 54.7ms`` -- Ray Serve's header, then the method,
# route, status and latency.  A call between deployments says ``CALL method OK`` instead (no HTTP
# outcome).  The proxy logs every request once more (to its own file, as component ``proxy``):
# only the replica's line is counted, so a request counts once when both files are followed.
RAY_SERVE_ACCESS = re.compile(RAY_SERVE_HEAD + r"(/\S{0,4096}+) (\d{3}) \d{1,12}+(?:\.\d{1,6})?ms$", re.ASCII)


def parse_ray_serve_access(line: str, start: int = 0) -> tuple[Event, ...] | None:
    """Ray Serve's access line of an HTTP request at ``start``; None when the line is none."""
    m = RAY_SERVE_ACCESS.match(line, start)
    if m is None:
        return None
    return (HttpAccess(m.group(1), "", m.group(2), _without_query(m.group(3)), int(m.group(4))),)


# First word of a vLLM message -> (parser, the family a line that does not parse is suspected of).
FIRST_WORDS: dict[str, tuple[VllmParser, str]] = {
    "http": (parse_rust_access, "http_access"),
    "auto-aborting": (parse_rust_auto_abort, "request_cancelled"),
    "Received": (parse_received, "request_received"),
    "Added": (parse_added, "request_added"),
    "Finished": (parse_finished, "request_finished"),
    "Generated": (parse_generated, "response_generated"),
    "Aborted": (parse_aborted, "request_aborted"),
    "Request": (parse_request_outcome, "request_failed"),
    "Recovered": (parse_kv_load_recovered, "kv_load_failure"),
    "Sequence": (parse_preempted, "request_preempted"),
    "Failing": (parse_kv_load_failing, "kv_load_failure"),
}
