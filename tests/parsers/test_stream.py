"""Lines that Docker and containerd split into pieces, and records a terminal wrapped, are joined
before parsing."""

from __future__ import annotations

import json
import random
import textwrap
from collections import Counter
from pathlib import Path

import pytest

import parsers.stream
from parsers import LogStream, parse_line
from parsers.envelope import begins_record
from tests.benchmarks.gen_log import generate
from tests.support.lines import PASTED_RECORDS, WRAPPED_PASTE, all_fixture_lines, event_dict, line_cases

PROMPT = "x" * 40_000 + " max_tokens=5 Throughput: 9.00 requests/s, 1.00 tokens/s"
LONG = (
    "INFO 12-14 16:18:24 [logger.py:43] Received request chatcmpl-long: prompt: '" + PROMPT + "', params: "
    "SamplingParams(n=1, max_tokens=77), prompt_token_ids: [1, 2, 3, 4], lora_request: None."
)


def docker_records(line: str, piece: int = 16384) -> list[str]:
    """What Docker's json-file driver writes for one long line: 16 KiB pieces, the last with its newline."""
    parts = [line[i : i + piece] for i in range(0, len(line), piece)]
    parts[-1] += "\n"
    time = "2025-12-14T08:18:24.000000001Z"
    return [json.dumps({"log": p, "stream": "stdout", "time": time}, separators=(",", ":")) for p in parts]


def feed_all(stream: LogStream, lines: list[str]) -> list[dict]:
    events = []
    for line in lines:
        events.extend(stream.feed(line))
    events.extend(stream.close())
    return [event_dict(e) for e in events]


def test_docker_pieces_are_joined_into_one_request() -> None:
    records = docker_records(LONG)
    assert len(records) == 3
    assert feed_all(LogStream(), records) == [
        {
            "kind": "request_received",
            "stamp": "2025-12-14T08:18:24.000000001Z",
            "request_id": "chatcmpl-long",
            "max_tokens": 77,
            "prompt_tokens": 4,
        }
    ]


def test_a_piece_alone_would_have_misread_the_prompt() -> None:
    # Without joining, the second piece starts with prompt text; the stream never parses it alone.
    records = docker_records(LONG)
    stream = LogStream()
    assert [stream.feed(r) for r in records[:-1]] == [(), ()]


def test_cri_partial_records_are_joined() -> None:
    head = "2025-12-14T08:18:24.1Z stdout P INFO 12-14 16:18:24 [async_llm.py:270] Added "
    tail = "2025-12-14T08:18:24.2Z stdout F request chatcmpl-77."
    assert feed_all(LogStream(), [head, tail]) == [
        {"kind": "request_added", "stamp": "2025-12-14T08:18:24.1Z", "request_id": "chatcmpl-77"}
    ]


def test_a_log_shipper_s_records_are_whole_lines_though_they_end_without_a_newline() -> None:
    """Fluent Bit and Fluentd write the line a CRI parser took from a container log under ``log``, with
    no newline and with keys Docker's records do not have: each record is a line of its own (they were
    all joined into one, and nothing was counted)."""
    added = "INFO 12-14 16:18:24 [async_llm.py:270] Added request chatcmpl-{}."
    shapes = [
        {"date": 1765700304.5, "log": added},  # Fluent Bit's json_lines output, its default date key
        {"time": "2025-12-14T08:18:24.5Z", "stream": "stdout", "logtag": "F", "log": added},  # its cri parser
        {"time": "2025-12-14T08:18:24.5Z", "stream": "stdout", "_p": "F", "log": added},  # newer releases
        {"log": added, "stream": "stdout", "kubernetes": {"pod_name": "vllm-0"}},  # enriched by a filter
    ]
    for shape in shapes:
        records = [json.dumps({**shape, "log": shape["log"].format(n)}) for n in range(3)]
        stream = LogStream()
        per_line = [[e.request_id for e in stream.feed(r)] for r in records]
        assert per_line == [["chatcmpl-0"], ["chatcmpl-1"], ["chatcmpl-2"]], shape
        assert stream.close() == ()


def test_a_log_shipper_s_partial_records_are_joined() -> None:
    head = {"time": "2025-12-14T08:18:24.1Z", "stream": "stdout", "logtag": "P", "log": "INFO 12-14 16:18:24 "}
    tail = {"time": "2025-12-14T08:18:24.2Z", "stream": "stdout", "logtag": "F", "log": "[x.py:1] Added request r."}
    assert feed_all(LogStream(), [json.dumps(head), json.dumps(tail)]) == [
        {"kind": "request_added", "stamp": "2025-12-14T08:18:24.1Z", "request_id": "r"}
    ]


def test_a_split_line_that_never_ends_is_parsed_before_the_next_line() -> None:
    first = json.dumps(
        {"log": "INFO 12-14 16:18:24 [async_llm.py:270] Added request a.", "time": "2025-12-14T08:00:00Z"}
    )
    second = "INFO 12-14 16:18:25 [async_llm.py:270] Added request b."
    assert [e["request_id"] for e in feed_all(LogStream(), [first, second])] == ["a", "b"]


def test_an_oversized_split_line_is_dropped_and_counted_then_parsing_resumes() -> None:
    stream = LogStream(max_joined=30_000)
    after = "INFO 12-14 16:18:25 [async_llm.py:270] Added request after."
    events = feed_all(stream, [*docker_records(LONG), after])
    assert stream.dropped == 1
    assert [e["request_id"] for e in events] == ["after"]


def test_whole_json_records_pass_straight_through() -> None:
    record = json.dumps(
        {"log": "INFO 12-14 16:18:24 [async_llm.py:270] Added request c.\n", "time": "2025-12-14T08:00:00Z"}
    )
    assert [e["request_id"] for e in feed_all(LogStream(), [record, record])] == ["c", "c"]


def test_a_json_record_is_decoded_once_and_dockers_own_without_building_its_object(monkeypatch) -> None:
    """A container's whole log is such records: the stream decodes each one once, not once to see whether it
    is a piece and again to parse it; a record as Docker writes it is read without building its object."""
    line = "INFO 12-14 16:18:24 [async_llm.py:270] Added request r."
    spaced = json.dumps({"log": line + "\n", "stream": "stdout", "time": "2025-12-14T08:18:24.000000001Z"})
    real, calls = json.loads, []
    monkeypatch.setattr(json, "loads", lambda text, *a, **kw: calls.append(text) or real(text, *a, **kw))
    stream = LogStream()
    events = [e for record in [spaced] * 3 + docker_records(line) * 3 for e in stream.feed(record)]
    assert [(e.request_id, e.stamp) for e in events] == [("r", "2025-12-14T08:18:24.000000001Z")] * 6
    assert calls == [spaced] * 3


# -- records a terminal wrapped ----------------------------------------------------------------------


def wrap(lines: list[str], width: int) -> list[str]:
    return [line[i : i + width] for line in lines for i in range(0, max(len(line), 1), width)]


def test_a_paste_wrapped_at_a_terminal_s_width_gives_each_record_s_events() -> None:
    got = feed_all(LogStream(), WRAPPED_PASTE.splitlines())
    assert got == feed_all(LogStream(), PASTED_RECORDS)
    assert [e["kind"] for e in got] == [
        "server_ready",
        "lmcache_lookup",
        "lmcache_store_start",
        "lmcache_store",
        "http_access",
        "engine_stats",
    ]
    assert got[1] == {
        "kind": "lmcache_lookup",
        "stamp": "2025-11-22 11:29:58,730",
        "request_id": "cmpl-2dba466675be4983b71641cb7c06e0e1-0",
        "total_tokens": 14,
        "hit_tokens": 0,
        "need_to_load": 0,
    }
    assert got[3]["put_ms"] == 39.5222 and got[5]["prefix_cache_hit_rate"] == 0.0 and got[5]["running"] == 0


@pytest.mark.parametrize("width", range(60, 150, 10))
def test_the_same_records_wrapped_at_another_width_give_the_same_events(width: int) -> None:
    """Where the first wrapped record's first piece is cut short, the paste is known to be wrapped, and
    a record whose first piece reads alone (the store line without its offload and put times) is read
    with its next pieces too.  (Wider, the first records' first pieces read whole: a record read before
    the paste shows it is wrapped keeps only the fields its first piece holds.)"""
    assert feed_all(LogStream(), wrap(PASTED_RECORDS, width)) == feed_all(LogStream(), PASTED_RECORDS)


@pytest.mark.parametrize("style", ["classic", "current"])
def test_a_log_wrapped_at_any_width_gives_the_events_of_its_whole_lines(tmp_path: Path, style: str) -> None:
    """The generator's log (interleaved requests, noise, tracebacks, prompts quoting log lines) wrapped
    at each width: every family counts as often as in the whole lines.  Where a piece of an echoed
    prompt begins with a quoted access line, that piece reads as one: a message read alone continues
    only a record cut short, and a ``Received request`` line's first piece reads whole (its id is)."""
    log = tmp_path / "vllm.log"
    generate(log, 1500, seed=7, style=style)
    lines = log.read_text(encoding="utf-8").splitlines()
    want = Counter(e["kind"] for e in feed_all(LogStream(), lines))
    for width in (60, 80, 100, 120, 132, 160, 200):
        got = Counter(e["kind"] for e in feed_all(LogStream(), wrap(lines, width)))
        assert got.pop("http_access", 0) >= want["http_access"], width
        assert got == {kind: n for kind, n in want.items() if kind != "http_access"}, width


def test_lines_that_are_whole_are_never_read_together() -> None:
    """Every fixture line (but those cut short on purpose) and every line of the kept logs, in their
    order and shuffled: a stream gives exactly what each line gives alone.  (A record whose message is
    empty, as the blank lines around vLLM's logo are, ends where a terminal may cut one after its header:
    a message that a shuffle puts after it may be that record's next piece, and is left out of the
    shuffles.)"""
    cut_short = {c["line"] for c in line_cases("suspicious") if "cut short" in c["source"]}
    lines = [line for line in all_fixture_lines() if line not in cut_short]
    lines += [c["line"] for c in line_cases("negatives")]
    header_only = {line for line in lines if line.endswith("] ")}
    for seed in range(4):
        order = lines[:]
        if seed:
            order = [line for line in order if line not in header_only]
            random.Random(seed).shuffle(order)
        want = [event_dict(e) for line in order for e in parse_line(line)]
        assert feed_all(LogStream(), order) == want, seed


def test_an_exception_line_a_writer_wrapped_is_read_with_its_next_pieces() -> None:
    """A traceback's last line hard-wrapped in a paste (vLLM's refusal to start with too small a KV cache): its
    first piece names no error yet, so it is kept and read with the pieces after it, once."""
    pieces = [
        "ValueError: To serve at least one request with the models's max seq len",
        "(32768), (5.0 GiB KV cache is needed, which is larger than the available",
        "KV cache memory (0.53 GiB).",
        "INFO 12-14 16:18:29 [async_llm.py:270] Added request r.",
    ]
    assert [(e["kind"], e.get("error")) for e in feed_all(LogStream(), pieces)] == [
        ("server_error", "kv_cache_too_small"),
        ("request_added", None),
    ]


def wrap_at_words(lines: list[str], width: int) -> list[str]:
    """What ``textwrap`` (as ``fmt``, an editor's or a mail program's hard wrap) makes of each line: broken at the
    last blank that fits, the blank dropped."""
    return [piece for line in lines for piece in (textwrap.wrap(line, width, break_on_hyphens=False) or [""])]


WRAPPED_AT_WORDS = [
    # The second piece is longer than the first: "tokens/s," did not fit after it.
    "(APIServer pid=3646) INFO 05-19 10:13:11 [loggers.py:271] Engine 000: Avg prompt throughput: 0.0 tokens/s, "
    "Avg generation throughput: 1055.3 tokens/s, Running: 18 reqs, Waiting: 43 reqs, GPU KV cache usage: 95.9%, "
    "Prefix cache hit rate: 0.0%",
    "[2025-06-21 20:59:57,672] LMCache INFO: Reqid: chatcmpl-ec5a3a80c13548ca89dd8e6241abc343, Total tokens 263, "
    "LMCache hit tokens: 256, need to load: 256 (vllm_v1_adapter.py:812:lmcache.integration.vllm.vllm_v1_adapter)",
    "(APIServer pid=1) INFO 05-07 04:56:17 [metrics.py:101] SpecDecoding metrics: Mean acceptance length: 2.63, "
    "Accepted throughput: 76.80 tokens/s, Drafted throughput: 235.49 tokens/s, Accepted: 768 tokens, Drafted: 2355 "
    "tokens, Per-position acceptance rate: 0.726, 0.467, 0.240, 0.134, 0.064, Avg Draft acceptance rate: 32.6%",
    # Wrapped right after its header (LMCache 0.5.6 colours it), then inside its optional last fields.
    "\x1b[32;20m[2025-12-14 16:00:00,069] LMCache INFO:\x1b[0m [req_id=chatcmpl-ae2eb1547f150524-881ed162] Stored 96 "
    "out of total 96 tokens. size: 0.0117 GB, cost 0.7027 ms, throughput: 16.6667 GB/s; offload_time: 0.5856 ms, "
    "put_time: 0.1171 ms \x1b[3m(cache_engine.py:588:lmcache.v1.cache_engine)\x1b[0m",
    "INFO 12-14 16:18:29 [async_llm.py:270] Added request chatcmpl-17b89d98.",
]


@pytest.mark.parametrize("width", [60, 72, 80, 100])
def test_records_wrapped_at_words_give_the_events_of_their_whole_lines(width: int) -> None:
    """Pieces of a record a writer wrapped at words are joined at the blanks it dropped, whatever their lengths
    (each no longer than some width at which no piece before it could have taken its first word), every field
    read as in the whole line."""
    assert feed_all(LogStream(), wrap_at_words(WRAPPED_AT_WORDS, width)) == feed_all(LogStream(), WRAPPED_AT_WORDS)


@pytest.mark.parametrize("style", ["classic", "current"])
def test_a_log_wrapped_at_words_at_any_width_gives_the_events_of_its_whole_lines(tmp_path: Path, style: str) -> None:
    """The generator's log wrapped at words at each width: every family counts as often as in the whole lines.  A
    piece of an echoed prompt that begins with a quoted store or access line reads as one (as where a terminal
    wrapped the log)."""
    log = tmp_path / "vllm.log"
    generate(log, 1500, seed=7, style=style)
    lines = log.read_text(encoding="utf-8").splitlines()
    want = Counter(e["kind"] for e in feed_all(LogStream(), lines))
    for width in (60, 72, 80, 100, 120, 132, 160, 200):
        got = Counter(e["kind"] for e in feed_all(LogStream(), wrap_at_words(lines, width)))
        for quoted in ("http_access", "lmcache_store"):
            assert got.pop(quoted, 0) >= want[quoted], (width, quoted)
        assert got == {kind: n for kind, n in want.items() if kind not in ("http_access", "lmcache_store")}, width


def test_a_record_read_whole_is_continued_at_a_blank_only_by_fields_it_lacked() -> None:
    """In a wrapped paste, a line that reads whole alone may be a first piece; the line after it, joined at a blank,
    continues it only where that adds fields (an exception's message reads whole with anything after it)."""
    stream = LogStream()
    for line in WRAPPED_PASTE.splitlines():  # shows the input to be a wrapped paste
        stream.feed(line)
    stream.close()
    exported = '"2025-12-14T16:00:00.123Z","gpu-1","INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-14."'
    events = feed_all(stream, ["OSError: [Errno 98] Address already in use", exported[:60], exported[60:]])
    assert [e["kind"] for e in events] == ["server_error", "request_added"]


def test_a_piece_that_begins_with_a_closing_mark_is_no_piece_wrapped_at_words() -> None:
    """A writer that wraps at words begins each piece with a word: a piece that begins with ``]`` is a terminal's,
    joined as it is (vLLM 0.24.0's EngineDeadError wrapped at 60 columns, in a paste known to be wrapped)."""
    stream = LogStream()
    for line in WRAPPED_PASTE.splitlines():
        stream.feed(line)
    stream.close()
    dead = (
        "(APIServer pid=11327) ERROR 12-02 14:34:50 [async_llm.py:704] vllm.v1.engine.exceptions.EngineDeadError: "
        "EngineCore encountered an issue. See stack trace (above) for the root cause."
    )
    events = feed_all(stream, [dead[i : i + 60] for i in range(0, len(dead), 60)])
    assert [(e["kind"], e.get("error")) for e in events] == [("server_error", "engine_dead")]


def test_a_record_behind_a_coloured_process_tag_is_no_piece_of_the_line_before() -> None:
    """vLLM colours its process tag on a terminal: a line that begins so begins a record, never the next piece of
    a line before it (vLLM 0.11.0's start, wrapped at 80 columns)."""
    tagged = "\x1b[1;36m(APIServer pid=1014)\x1b[0;0m INFO 12-02 09:28:34 [api_server.py:1839] vLLM API server "
    tagged += "version 0.11.0"
    assert begins_record(tagged[:80]) and begins_record(tagged.replace("\x1b[1;36m", "").replace("\x1b[0;0m", ""))
    assert not begins_record("\x1b[1;36mversion 0.11.0")
    lines = ["INFO 12-02 09:28:32 [__init__.py:216] Automatically detected platform cpu.", tagged[:80], tagged[80:]]
    assert feed_all(LogStream(), lines) == [{"kind": "server_starting", "stamp": "12-02 09:28:34", "version": "0.11.0"}]


def test_a_piece_that_begins_as_its_record_did_is_its_piece_unless_eight_characters_agree() -> None:
    """The same writer's next record begins with the same characters (its header, its process tag); a piece of a
    wrapped record may begin with the same first one ((from ...) after a tagged LMCache line) and is still read
    with it.  Lines that give nothing, one after another, are told apart by those eight characters first."""
    retrieve = (
        "(EngineCore_DP0 pid=494270) [2025-09-30 01:12:36,502] LMCache INFO: Retrieved 8 out of 24 required tokens "
        "(from 32 total tokens). size: 0.0011 gb, cost 0.55 ms, throughput: 1.98 GB/s;"
    )
    cut = retrieve.index("(from")
    events = feed_all(LogStream(), [retrieve[:cut], retrieve[cut:]])
    assert [(e["kind"], e.get("total_tokens")) for e in events] == [("lmcache_retrieve", 32)]
    quiet = "(EngineCore_DP0 pid=2947) DEBUG 12-14 16:49:59 [core.py:690] EngineCore loop active, 27 requests."
    stream = LogStream()
    assert [stream.feed(quiet) for _ in range(3)] == [(), (), ()] and stream.holding
    assert [e.kind for e in stream.feed(retrieve)] == ["lmcache_retrieve"] and not stream.holding
    assert stream.close() == ()


def test_a_record_cut_short_is_given_once_a_line_does_not_continue_it() -> None:
    cut = "INFO 10-02 10:00:00 async_llm_engine.py:120] Finished request cmpl-1a2b"  # its period lost
    added = "INFO 10-02 10:00:01 [async_llm.py:578] Added request cmpl-9."
    stream = LogStream()
    assert stream.feed(cut) == ()
    assert [e.kind for e in stream.feed(added)] == ["suspicious_line", "request_added"]
    # Held until the end of the input, or until its reader has nothing more for now.
    assert stream.feed(cut) == ()
    assert [e.kind for e in stream.settle()] == ["suspicious_line"]
    assert stream.settle() == ()
    assert stream.feed(cut) == ()
    assert [e.kind for e in stream.close()] == ["suspicious_line"]
    # The rest of it on the next line (shorter: the record's last piece): read whole at once.
    assert stream.feed(cut) == ()
    assert [event_dict(e) for e in stream.feed("c3d.")] == [
        {"kind": "request_finished", "stamp": "10-02 10:00:00", "request_id": "cmpl-1a2bc3d"}
    ]
    assert stream.close() == ()


def test_a_line_wider_than_any_terminal_is_never_kept_as_a_first_piece() -> None:
    """A record a terminal wrapped begins with a line of the terminal's width; a longer line that gives
    nothing (garbage, a stray JSON document) is read once, never again with the lines after it."""
    stream = LogStream()
    wide = "x" + "0123456789 abcdefghij " * 200  # 4,401 characters
    assert stream.feed(wide) == () and not stream.holding
    assert stream.feed(wide[:4000]) == () and stream.holding  # the width of a (very wide) terminal
    cut = "INFO 10-02 10:00:00 async_llm_engine.py:120] Finished request " + "a" * 5000
    assert [e.kind for e in stream.feed(cut[:-1] + " ")] == ["suspicious_line"] and not stream.holding


def test_lines_that_show_no_sign_of_a_record_are_never_read_again_together(monkeypatch) -> None:
    """Garbage lines of one length (a flood of random hex) each give nothing; none is read a second time
    joined with the next, which would multiply what such a flood costs."""
    read = []
    real = parsers.stream.parse_line
    monkeypatch.setattr(parsers.stream, "parse_line", lambda text: read.append(len(text)) or real(text))
    rnd = random.Random(5)
    garbage = ["".join(rnd.choice("0123456789abcdef") for _ in range(100)) for _ in range(50)]
    stream = LogStream()
    assert [stream.feed(line) for line in garbage] == [()] * 50
    assert [n for n in read if n > 100] == []
    # A first piece with the signs of a record is read again with the next line.
    stream.feed("(APIServer pid=1) INFO 11-22 11:30:04 [loggers.py:127] Engine 000: Avg prompt throu")
    stream.feed("ghput: 1.3 tokens/s, Running: 0 reqs, Waiting: 0 reqs, GPU KV cache usage: 0.0%")
    assert [n for n in read if n > 100] != []


def test_in_a_wrapped_paste_a_whole_message_after_a_record_read_whole_is_a_record_of_its_own() -> None:
    stream = LogStream()
    for line in WRAPPED_PASTE.splitlines():  # shows the input to be a wrapped paste
        stream.feed(line)
    lookup = (
        "[2025-11-22 11:30:05,000] LMCache INFO: Reqid: chatcmpl-abc, Total tokens 40, LMCache hit tokens: 16, "
        "need to load: 16"
    )
    store = "Stored 24 out of total 24 tokens. size: 0.0026 gb, cost 1.5 ms, throughput: 1.7 GB/s"  # %(message)s
    events = [*stream.feed(lookup), *stream.feed(store), *stream.close()]
    assert [e.kind for e in events][-2:] == ["lmcache_lookup", "lmcache_store"]


def test_a_record_glued_to_one_cut_short_is_read_with_the_rest_a_terminal_wrapped() -> None:
    # tenstorrent/tt-inference-server#246: a stats record cut short, the next glued to it, and that one
    # wrapped at the terminal's width.  The first stays a suspicious line; the second is read whole.
    stats = (
        "INFO 07-03 23:23:{} [metrics.py:536] Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: "
        "616.1 tokens/s, Running: 32 r"
    )
    rest = "eqs, Swapped: 0 reqs, Pending: 0 reqs, GPU KV cache usage: 17.6%, CPU KV cache usage: 0.0%."
    lines = [stats.format("42"), rest, stats.format("53")[:-2] + "$" + stats.format("58"), rest]
    got = feed_all(LogStream(), lines)
    assert [(e["kind"], e["stamp"]) for e in got] == [
        ("engine_stats", "07-03 23:23:42"),
        ("suspicious_line", "07-03 23:23:53"),
        ("engine_stats", "07-03 23:23:58"),
    ]
    assert got[2]["running"] == 32 and got[2]["kv_cache_usage"] == 0.176


def test_a_log_whose_first_lines_show_an_lmcache_server_s_start_and_nothing_of_vllm_s_is_its_own() -> None:
    samples = Path(__file__).resolve().parents[1] / "fixtures" / "samples"

    def head(name: str, lines: int = 1000) -> list:
        stream = LogStream()
        text = (samples / name).read_text(encoding="utf-8").splitlines()[:lines]
        return [event for line in text for event in stream.feed(line)]

    shown = parsers.stream.lmcache_server_shown
    server = head("lmcache-0.5.6-mp-server.log")
    assert shown(server) is True
    assert shown(head("lmcache-0.5.6-mp-server.log", 60)) is None  # its banner and settings: before its start
    rotated = (samples / "lmcache-0.5.6-mp-server.log").read_text(encoding="utf-8").splitlines()[62:]
    assert shown(LogStream().feed(rotated[0]) + LogStream().feed(rotated[2])) is None  # its HTTP server's alone
    stream = LogStream()
    assert shown([event for line in rotated for event in stream.feed(line)]) is True  # its start gone: its prefetches
    for name in ("vllm-0.32.0-cpu-lmcache-0.5.6-mp.log", "vllm-0.32.0-cpu-lmcache-0.5.6.log", "vllm-0.32.0-cpu.log"):
        assert shown(head(name)) is False, name
        assert shown(server + head(name)) is False, name  # both servers' output

    # An idle server's log rotated after its start: the answers of its own API (vLLM's health check is /health,
    # and vLLM answers 404 to a probe of LMCache's).
    def access(path: str, status: str = "200 OK") -> list:
        return list(LogStream().feed(f'INFO:     127.0.0.1:40312 - "GET {path} HTTP/1.1" {status}'))

    assert shown(access("/healthcheck") + access("/metrics")) is True
    assert shown(access("/quota/tenant-a") + access("/cache/prefetches/chatcmpl-1")) is True
    assert shown(access("/status")) is True and shown(access("/config/adapters")) is True  # LMCache 0.5.6's API
    for other in (
        access("/health"),
        access("/metrics"),
        access("/version"),  # (both serve it)
        access("/healthcheck", "404 Not Found"),
        access("/status", "404 Not Found"),
    ):
        assert shown(other) is None
    assert shown(access("/healthcheck") + head("vllm-0.32.0-cpu.log")) is False  # vLLM's output: another's
    # The remote cache server several vLLM servers share: its start alone.
    started = parse_line("[2026-12-02 06:47:56,192] LMCache INFO: Server started at 0.0.0.0:65432 (server.py:1:x)")
    assert [event.kind for event in started] == ["lmcache_server_started"]
    assert shown(started) is True and shown([]) is None
    # A copy rotated while vLLM's workers registered with it: their registrations (which only that server logs).
    registered = parse_line(
        "[2026-09-01 09:47:54,797] LMCache INFO: Registered KV cache for GPU ID 48213 with 64 layers (server.py:1:x)"
    )
    assert [event.kind for event in registered] == ["lmcache_engine_registration"]
    assert shown([*registered, *access("/metrics")]) is True


def test_an_lmcache_servers_log_shown_so_by_its_first_lines_is_so_until_vllms_output_shows_in_it() -> None:
    """Both servers writing one file, vLLM's output begun after the lines that told: from vLLM's first event on, its
    uvicorn lines are no longer taken out (they may be vLLM's), but for the answers of the LMCache server's own API,
    which vLLM does not serve.  A log named an LMCache server's stays one."""
    samples = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
    server = (samples / "lmcache-0.5.6-mp-server.log").read_text(encoding="utf-8").splitlines()
    vllm = (samples / "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log").read_text(encoding="utf-8").splitlines()

    def own_kinds(stream: LogStream, lines: list[str]) -> Counter:
        return Counter(event.kind for line in lines for event in stream.own_events(stream.feed(line)))

    alone = Counter(event.kind for line in vllm for event in LogStream().feed(line))
    shown = LogStream()
    shown.show_lmcache_server(True)
    assert own_kinds(shown, server)["http_access"] == 0 and shown.lmcache_server
    assert own_kinds(shown, vllm) == alone and not shown.lmcache_server
    named = LogStream(lmcache_server=True)
    assert own_kinds(named, server)["http_access"] == 0
    assert own_kinds(named, vllm)["http_access"] == 0 < alone["http_access"] and named.lmcache_server

    def access(path: str, status: str = "200 OK", method: str = "GET") -> str:
        return f'INFO:     127.0.0.1:40312 - "{method} {path} HTTP/1.1" {status}'

    theirs = [
        access("/healthcheck"),
        access("/cache/objects"),
        access("/quota/tenant-a", method="PUT"),
        access("/status"),
        access("/metrics/reset", method="POST"),
    ]
    either = [access("/metrics"), access("/health"), access("/v1/chat/completions", method="POST")]
    vllms = [access("/healthcheck", "404 Not Found"), access("/status", "404 Not Found")]  # (a misdirected probe)

    def paths(stream: LogStream, lines: list[str]) -> list[str]:
        return [event.path for line in lines for event in stream.own_events(stream.feed(line))]

    everything = [*theirs, *either, *vllms]
    assert paths(shown, everything) == ["/metrics", "/health", "/v1/chat/completions", "/healthcheck", "/status"]
    assert paths(named, everything) == []
    assert paths(LogStream(), theirs) == [
        "/healthcheck",
        "/cache/objects",
        "/quota/tenant-a",
        "/status",
        "/metrics/reset",
    ]  # never told
    # vLLM's first event among the events of one delivery: the server's uvicorn lines before it are its own, and of
    # those after it, the answers of its API.
    both = LogStream()
    both.show_lmcache_server(True)
    events = [event for line in [either[0], *vllm, *theirs, *either[1:]] for event in both.feed(line)]
    assert events[0].kind == "http_access" and events[1].kind != "http_access"  # (/metrics, then vLLM's first)
    api = {"/healthcheck", "/cache/objects", "/quota/tenant-a", "/status", "/metrics/reset"}
    own = list(both.own_events(events))
    assert own == [event for event in events[1:] if getattr(event, "path", "") not in api]
    assert [event.path for event in own[-2:]] == ["/health", "/v1/chat/completions"]
    # Told again (the file read anew), it is the server's until vLLM's output shows again.
    both.show_lmcache_server(True)
    assert paths(both, either) == []
