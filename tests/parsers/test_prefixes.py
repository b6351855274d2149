"""Every fixture line gives the same events behind the prefixes and wrappers real log pipelines add,
and every near-miss stays silent behind them.

The prefixes are the shapes their tools print (each names where it comes from).
The parser reads past the commonest where a line begins (kubectl's, compose's and
stern's names, journald's framing, a name in brackets before a whole record,
torchrun's prefix, a few words or a line-stamping tool's time before a record) and
looks for the header wherever it stands behind the others; where it reads past,
it gives what the search behind any prefix gives.  Wrappers that carry
a full time of their own (docker logs -t, CRI, OpenTelemetry records) replace
the line's stamp, so stamps are compared only where the wrapper has none; a line
without a time of its own may take the time a prefix shows just before its header
(``[time] INFO:vllm.x:``).
"""

from __future__ import annotations

import dataclasses
import json
import re
from contextlib import AbstractContextManager
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from parsers import LogStream, dispatch, envelope, parse_line
from parsers.envelope import PROCESS_TAG, framing_end
from tests.support.lines import FIXTURES, event_dict, line_cases

# (prefix, closing text, what prints it)
PREFIXES = [
    ("vllm-7d9f8b6c5-x2x7q vllm ", "", "stern's default template: pod and container names"),
    ("vllm-0 vllm-server ", "", "stern on a StatefulSet pod"),
    ("\x1b[33mvllm-0\x1b[0m \x1b[34mvllm\x1b[0m ", "", "stern on a terminal: the names in their pod's colours"),
    ("[vllm-7d9f8b6c5-x2x7q] ", "", "kubetail: the pod in brackets"),
    ("[pod/vllm-0/vllm] ", "", "kubectl logs --prefix"),
    ("vllm-1  | ", "", "docker compose"),
    ("vllm.1.p0k3x2z9a8b7c6d5e4f3g2h1@gpu-node-1    | ", "", "docker service logs: a Swarm task on its node"),
    ("Dec 14 16:18:29 gpu-node-1 vllm[4242]: ", "", "journalctl -o short"),
    ("<14>Dec 14 16:18:29 gpu-node-1 vllm[4242]: ", "", "a syslog record (RFC 3164) with its priority"),
    ("Dec  4 16:18:29.123456 gpu-node-1 python3: ", "", "journalctl -o short-precise, no pid, a day before the 10th"),
    ("авг 18 14:15:04 llm python3[28059]: ", "", "journalctl -o short in a Russian locale"),
    ("Sat 2025-12-14 16:18:29 CET gpu-node-1 vllm[4242]: ", "", "journalctl -o short-full"),
    ("Dec 14 16:18:29 vllm[4242]: ", "", "journalctl --no-hostname"),
    ("[ 1234.567890] gpu-node-1 vllm[4242]: ", "", "journalctl -o short-monotonic"),
    ("[  301.123456] vllm[4242]: ", "", "a console's journal lines, seconds since boot and no host"),
    ("1765700309.123456 gpu-node-1 vllm[4242]: ", "", "journalctl -o short-unix"),
    ("    MESSAGE=", "", "journalctl -o verbose: the record's message field"),
    ("12月 14 16:18:29 gpu-node-1 vllm[4242]: ", "", "journalctl -o short in a Chinese locale"),
    ("[2025-12-13T19:54:35Z] ", "", "Buildkite's bracketed time"),
    ("2025-12-14 16:18:29.123 UTC ", "", "a log collector's time with a zone name"),
    ("2025-12-14 16:18:29,123 INFO [worker] ", "", "a log aggregator's stamp, level and process kind"),
    ("[16:18:29] [INFO] [serve-qwen3] ", "", "a job runner's time, level and job name"),
    ("INFO     run_server.py:88 ", "", "a Python logging wrapper's level and caller path"),
    ("INFO:root:", "", "Python's logging.basicConfig format around a re-logged line"),
    ("(task, pid=7431) ", "", "SkyPilot's task tag"),
    ("(ServeReplica:default:VLLMDeployment pid=4242) ", "", "a Ray Serve replica"),
    (
        "(ServeReplica:default:meta-llama/Llama-3.1-8B-Instruct:meta-llama--Llama-3_1-8B-Instruct pid=4242) ",
        "",
        "a Ray Serve LLM replica: its deployment named after its model, slash included",
    ),
    ("(RayWorkerWrapper pid=4242, ip=10.0.0.2) ", "", "a Ray actor on another node"),
    ("[vllm] ", "", "npm's concurrently: the command's name in brackets"),
    ("[0] ", "", "npm's concurrently without names: the command's index"),
    ("[node-3] ", "", "VLLM_LOGGING_PREFIX set to a node's name in brackets"),
    ("[vllm]", "", "VLLM_LOGGING_PREFIX set to a name in brackets without a blank after it"),
    ("[vllm-0] [node-3] ", "", "kubetail before a VLLM_LOGGING_PREFIX"),
    ("rank0: ", "", "VLLM_LOGGING_PREFIX of one word and a colon"),
    ("gpu-node-1: ", "", "pdsh and clush: the host before each line"),
    ("10.0.0.7: ", "", "pdsh and clush: the host's address before each line"),
    ("gpu node-3: ", "", "a label of a few words"),
    ("gpu-node-1\t", "", "GNU parallel --tag: the argument and a tab"),
    ("00:00:05.123456 ", "", "ts -s with %.S: the time since the start"),
    ("16:18:29 E: ", "", "devscripts' annotate-output: the time and the stream"),
    ("[default0]:", "", "torchrun --tee: the worker's role and local rank"),
    ("0: ", "", "Slurm's srun --label: the task's number"),
    (" 7: ", "", "srun --label in a step of ten tasks or more: the number padded"),
    ("[3]:", "", "torchrun with TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE='[${rank}]:'"),
    ("vllm    | ", "", "docker compose with a container_name: the name padded, no replica number"),
    ("16:18:29 web.1  | ", "", "Foreman and honcho: the time and the Procfile process's name"),
    ("\x1b[36m16:18:29 vllm.1 | \x1b[0m", "", "Foreman on a terminal: the time and the name coloured"),
    ("2025-12-14-16:18:29 0|vllm     | ", "", "pm2 logs --timestamp: its default time before the process"),
    ("app=vllm id=0 type=out message=", "", "pm2 logs --format: its fields, the line unquoted after message="),
    ("> ", "", "a markdown quote"),
    ("| 2025-12-14 16:18:29 | ", " |", "a markdown table of times and lines"),
    ("\u2502 ", " \u2502", "a terminal panel's line (box drawing)"),
    ("logs/vllm.log:", "", "grep -H over several log files: the file's name"),
    ("<pre>", "</pre>", "an HTML page's preformatted text"),
    ("\x1b(B\x1b[m", "", "tput sgr0's reset with its character set's choice, left by a script's colours"),
    ("`", "`", "inline code in markdown"),
    ('<font color="#00cdcd"><b>', "</b></font>", "an HTML paste"),
]
# What a terminal, an editor or a paste leaves after a line: (the text, where it comes from).
ENDINGS = [
    ("    ", "spaces a terminal pads a line with (a paste from its window)"),
    ("\t", "a tab"),
    ("\xa0", "a no-break space of a web page's copy"),
    (" \x1b[0m", "a colour's reset after the text"),
    ("\r", "a CRLF file's carriage return"),
]
# Wrappers whose own full time replaces the line's: (make the physical line, what writes it).
STAMPING_WRAPPERS = [
    (lambda line: "2025-12-14T08:18:29.123456789Z " + line, "docker logs -t / kubectl logs --timestamps"),
    (lambda line: "2025-12-14T08:18:29.123Z\t" + line, "an export's time column, a tab after it"),
    (lambda line: "2025-12-14 16:18:29.123\t" + line, "Grafana's download of a logs panel as text: its time, a tab"),
    (lambda line: "2025-12-14T16:18:29: " + line, "pm2's --time: its log_date_format and a colon"),
    (lambda line: "0|vllm     | 2025-12-14T16:18:29: " + line, "pm2 logs of a --time log: the process, then its time"),
    (
        lambda line: "timestamp=2025-12-14-16:18:29 app=vllm id=0 type=out message=" + line,
        "pm2 logs --format --timestamp: its default time, the record's",
    ),
    (
        lambda line: "timestamp=2025-12-14 16:18:29 app=vllm id=0 type=error message=" + line,
        "pm2 logs --format --timestamp=FORMAT: a date and a time",
    ),
    (lambda line: "2025-12-14T08:18:29.123456789Z stdout F " + line, "a containerd (CRI) record"),
    (lambda line: "[pod/vllm-0/vllm] 2025-12-14T08:18:29.123456789Z " + line, "kubectl logs --prefix --timestamps"),
    (lambda line: "vllm-0 vllm 2025-12-14T08:18:29.123456789Z " + line, "stern --timestamps"),
    (
        lambda line: "<14>1 2025-12-14T08:18:29.123456+00:00 gpu-node-1 vllm 4242 - - " + line,
        "a syslog record (RFC 5424) as rsyslog's RSYSLOG_SyslogProtocol23Format writes it",
    ),
    (
        lambda line: (
            '<134>1 2025-12-14T08:18:29.123Z gpu-node-1.example.com python3 - vllm [meta sequenceId="7"] ' + line
        ),
        "a syslog record (RFC 5424) with structured data, no process id, a message id",
    ),
    (
        lambda line: "<30>2025-12-14T08:18:29.123456+00:00 gpu-node-1 vllm[4242]: " + line,
        "rsyslog's RSYSLOG_ForwardFormat: a priority, an RFC 3339 time, the host and the tag",
    ),
    (
        lambda line: json.dumps(
            {"log": line + "\n", "stream": "stdout", "time": "2025-12-14T08:18:29.123456789Z"}, separators=(",", ":")
        ),
        "Docker's json-file record, as Docker writes it",
    ),
    (
        lambda line: json.dumps({"log": line + "\r\n", "stream": "stderr", "time": "2025-12-14T08:18:29.123456789Z"}),
        "Docker's json-file keys in a JSON record with blanks, of a CRLF line",
    ),
    (
        lambda line: json.dumps(
            {"timestamp": "1765700309123456789", "severity_text": "INFO", "severity_number": 9, "body": line}
        ),
        "an OpenTelemetry Logs Data Model record of a collector that wrapped the text line",
    ),
]

# Lines that start with a header (or a process tag before one): what a pipeline puts a prefix in front of.
HEADER_FAMILIES = ("vllm_stats", "lmcache", "requests", "lifecycle", "prefixes")
CASES = [case for family in HEADER_FAMILIES for case in line_cases(family) if case["events"]]
NEAR_MISSES = line_cases("negatives")


# A pattern that matches nothing: a rule that reads a prefix past, mocked with it, leaves the line to the search.
NO_WORD = re.compile(r"(?!)")


def rules_off(*patterns: str) -> AbstractContextManager:
    """The rules whose patterns are named turned off, and the rule for another program's header (which would
    read most of what they read): what is left is the general path, the search for a header behind any prefix."""
    return mock.patch.multiple(envelope, _RECORD_AFTER=NO_WORD, **dict.fromkeys(patterns, NO_WORD))


def without_stamps(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in event.items() if k != "stamp"} for event in events]


def parse(line: str) -> list[dict]:
    stream = LogStream()
    return [event_dict(e) for e in list(stream.feed(line)) + list(stream.close())]


@pytest.mark.parametrize(("prefix", "closing", "origin"), PREFIXES, ids=[p[2] for p in PREFIXES])
def test_the_same_events_behind_a_prefix(prefix: str, closing: str, origin: str) -> None:
    wrong = []
    for case in CASES:
        got = [event_dict(e) for e in parse_line(prefix + case["line"] + closing)]
        stampless = not any("stamp" in e for e in case["events"])
        if got != case["events"] and not (stampless and without_stamps(got) == case["events"]):
            wrong.append((case["source"], case["line"][:80], got))
    assert not wrong, f"{len(wrong)} of {len(CASES)} lines read differently behind {origin}: {wrong[:3]}"


def test_the_same_events_behind_stern_s_namespace_pod_and_container() -> None:
    # stern across namespaces: a line whose message begins with a word in lower case is left to the search
    # for a header (its first word could be one more name), which a third name before it fails.
    cases = [case for case in CASES if not case["line"][:1].islower()]
    wrong = [
        (case["source"], case["line"][:80], got)
        for case in cases
        if (got := [event_dict(e) for e in parse_line("inference vllm-0 vllm " + case["line"])]) != case["events"]
    ]
    assert not wrong, f"{len(wrong)} of {len(cases)} lines read differently: {wrong[:3]}"


@pytest.mark.parametrize(("ending", "origin"), ENDINGS, ids=[e[1] for e in ENDINGS])
def test_the_same_events_with_blanks_after_the_line(ending: str, origin: str) -> None:
    cases = CASES + [case for family in ("message_only", "wrappers") for case in line_cases(family)]
    wrong = [
        (case["source"], case["line"][:80], got)
        for case in cases
        if (got := parse(case["line"] + ending)) != case["events"]
    ]
    assert not wrong, f"{len(wrong)} of {len(cases)} lines read differently followed by {origin}: {wrong[:3]}"


@pytest.mark.parametrize(("ending", "origin"), ENDINGS, ids=[e[1] for e in ENDINGS])
def test_near_misses_stay_silent_with_blanks_after_them(ending: str, origin: str) -> None:
    loud = [case["line"][:80] for case in NEAR_MISSES if case["line"] and parse(case["line"] + ending)]
    assert not loud, f"near-misses read followed by {origin}: {loud}"


@pytest.mark.parametrize(("wrap", "origin"), STAMPING_WRAPPERS, ids=[w[1] for w in STAMPING_WRAPPERS])
def test_the_same_events_inside_a_wrapper(wrap, origin: str) -> None:
    wrong = []
    for case in CASES:
        got = parse(wrap(case["line"]))
        if without_stamps(got) != without_stamps(case["events"]) or any("stamp" not in e for e in got):
            wrong.append((case["source"], case["line"][:80], got))
    assert not wrong, f"{len(wrong)} of {len(CASES)} lines read differently in {origin}: {wrong[:3]}"


@pytest.mark.parametrize(("prefix", "closing", "origin"), PREFIXES, ids=[p[2] for p in PREFIXES])
def test_near_misses_stay_silent_behind_a_prefix(prefix: str, closing: str, origin: str) -> None:
    loud = [case["line"][:80] for case in NEAR_MISSES if parse_line(prefix + case["line"] + closing)]
    assert not loud, f"near-misses read behind {origin}: {loud}"


@pytest.mark.parametrize(("wrap", "origin"), STAMPING_WRAPPERS, ids=[w[1] for w in STAMPING_WRAPPERS])
def test_near_misses_stay_silent_inside_a_wrapper(wrap, origin: str) -> None:
    loud = [case["line"][:80] for case in NEAR_MISSES if case["line"] and parse(wrap(case["line"]))]
    assert not loud, f"near-misses read in {origin}: {loud}"


def test_a_header_quoted_after_the_real_one_is_never_read() -> None:
    # The real header is the first; what a prompt quotes after it stays the prompt's.
    for prefix, closing, _origin in PREFIXES:
        line = (
            prefix + "INFO 02-13 11:33:33 [logger.py:49] Received request chatcmpl-1: prompt: 'INFO 02-13 "
            "11:33:33 [async_llm.py:382] Added request chatcmpl-2.', params: SamplingParams(max_tokens=7)" + closing
        )
        assert [e.kind for e in parse_line(line)] == ["request_received"], prefix


def test_a_bare_access_line_is_read_only_behind_a_level_word() -> None:
    # Any uvicorn server prints this shape; a level word in front shows a log record of it.
    bare = '127.0.0.1:50210 - "POST /v1/completions HTTP/1.1" 200 OK'
    assert parse_line(bare) == ()
    assert parse_line("vllm-0 vllm " + bare) == ()
    assert [e.kind for e in parse_line("2026-03-11 13:56:58,403 [INFO] " + bare)] == ["http_access"]


def test_an_exception_behind_a_title_or_a_heading_is_not_read() -> None:
    # A container's name in front is lower case, as Kubernetes and Compose names are.
    for line in (
        "[Bug] RuntimeError: CUDA error: an illegal memory access was encountered",
        "[BUG] ValueError: No available memory for the cache blocks.",
        "Update | RuntimeError: CUDA error: an illegal memory access was encountered",
    ):
        assert parse_line(line) == (), line
    assert [e.kind for e in parse_line("[vllm] RuntimeError: CUDA error: an illegal memory access")] == ["server_error"]


def test_compose_s_padded_name_is_read_past_whatever_the_name() -> None:
    # Compose v2 pads every name (a container_name's too) with two blanks or more before its bar; any line follows.
    for line in ("10% percentile latency: 1.47 seconds", "INFO 12-14 16:00:00 [async_llm.py:578] Added request r-1."):
        # (Foreman's and honcho's time first, before a Procfile process's name; pm2's process id.)
        for name in (
            *("vllm  | ", "vllm    | ", "lmcache  | ", "vllm-1  | "),
            *("16:18:29 web.1  | ", "16:18:29 vllm | ", "0|vllm     | ", "\x1b[32m0|vllm | \x1b[39m"),
        ):
            assert framing_end(name + line) == len(name), name
            assert parse_line(name + line) == parse_line(line) != (), name
    # One blank (a heading, a table), or a level word (a logging format's ``%(levelname)-5s | ``): no name.
    for line in ("Update | RuntimeError: CUDA error", "INFO  | Added request r-1.", "Note | Added request r-1."):
        assert framing_end(line) == 0, line


def test_a_name_in_brackets_is_read_past_only_before_a_whole_record() -> None:
    record = "(APIServer pid=2) INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1."
    assert framing_end("[node-3] " + record) == len("[node-3] ")
    assert framing_end("[0] " + record) == len("[0] ")
    assert framing_end("[vLLM]" + record) == len("[vLLM]")
    # No name before a whole record (a level in brackets is another program's header, read past by its own rule):
    # the line is read the same.
    for line in (
        "[node-3] Added request chatcmpl-1.",  # a message alone: no record begins
        "[INFO] " + record,  # a level, not a name
        "[vllm] lmcache INFO: Reqid: r-1, Total tokens 1, LMCache hit tokens: 0, need to load: 0",  # a logger's
    ):
        assert envelope._bracketed_name_end(line) == 0, line
        assert parse_line(line) != (), line
    # uvicorn's header before any message (its level and colon padded to ten characters) begins a record too.
    for line in ("ERROR:    Exception in ASGI application", "WARNING:  Invalid HTTP request received."):
        assert [e.kind for e in parse_line("[vllm-0] " + line)] == [e.kind for e in parse_line(line)] == ["log_problem"]
    assert framing_end("[note] ERROR: Exception in ASGI application") == 0
    # Another server's name: nothing, as behind any prefix.
    assert framing_end("[sglang-0] " + record) == 0
    assert parse_line("[sglang-0] " + record) == ()
    # Two names (kubetail's pod before a VLLM_LOGGING_PREFIX in brackets); three are left to the search, as are
    # two before no record, or before another server's name.
    assert framing_end("[vllm-0] [node-3] " + record) == len("[vllm-0] [node-3] ")
    assert framing_end("[node-3] " + record) == len("[node-3] ")
    for line in ("[a] [b] [c] " + record, "[a] [b] Added request chatcmpl-1.", "[a] [sglang-0] " + record):
        assert framing_end(line) == 0, line


def test_two_names_in_brackets_before_a_line_give_the_events_they_must() -> None:
    # What the search behind any prefix gives, or what the line gives alone (as behind one name).
    cases = [(names + line, line) for line in EVERY_LINE for names in ("[vllm-0] [node-3] ", "[a] [b]")]
    with rules_off("_BRACKETED_NAME"):
        general = [parse_line(named) for named, _line in cases]
    differing = [
        named
        for (named, line), found in zip(cases, general, strict=True)
        if parse_line(named) not in (found, parse_line(line))
    ]
    assert differing == []


def test_a_ray_actor_s_tag_on_another_node_is_read_as_a_process_tag() -> None:
    for tag in ("(RayWorkerWrapper pid=4242, ip=10.0.0.2)", "(raylet, ip=10.0.0.2)", "(RayWorkerWrapper pid=4242)"):
        assert PROCESS_TAG.fullmatch(tag), tag
    # Read past where the line begins, as a local actor's tag is: no search for a header behind it.
    line = "(RayWorkerWrapper pid=4242, ip=10.0.0.2) INFO 12-14 16:00:00 [async_llm.py:578] Added request r-1."
    with mock.patch.object(dispatch, "_headerless", side_effect=AssertionError("searched")):
        assert [e.kind for e in parse_line(line)] == ["request_added"]


# Ray Serve's record headers: Ray 2.40's (`` -- ``) with and without a request's id and route, and the one before it
# (the file and its line, then `` - ``), alone and behind a replica's tag (its deployment named after its model: a
# slash in the tag).
RAY_SERVE_HEADERS = [
    "INFO 2025-08-29 18:02:41,815 default_LLMServer aw9v81k4 -- ",
    "ERROR 2025-08-29 18:02:41,815 default_LLMServer aw9v81k4 3d79a85d-ac51 /v1/chat/completions -- ",
    "INFO 2024-11-18 01:46:34,210 default_VLLMDeployment ujj4diu5 replica.py:893 - ",
    "(ServeReplica:default:meta-llama/Llama-2-7b-hf pid=5) INFO 2023-12-18 10:24:37,018 default_Translator XmWEsH "
    "92a2f0d6-1a2b /v1/chat/completions default replica.py:750 - ",
]


def test_ray_serve_s_per_request_records_are_read_without_a_search() -> None:
    # Ray Serve logs a record for each request in each replica it passes (a call between deployments, the ingress'
    # access line) and in its proxy: the access line is read, the rest are Ray's; no search for a header behind
    # them is made (it cost 24 to 40 µs a line).
    records = {
        "INFO 2025-09-23 05:15:27,528 default_Child s5pl5nb1 57087c4e-c973-4811-97a6-4883fb4af2a6 -- CALL value OK "
        "1.1ms": [],
        "ERROR 2026-08-14 12:00:01,002 default_OpenAiIngress kqnimn62 -- POST /v1/chat/completions 500 12.3ms": [
            "http_access"
        ],
        "INFO 2025-09-23 05:15:27,570 proxy 10.0.0.1 57087c4e-c973-4811-97a6-4883fb4af2a6 -- POST /v1/chat/completions "
        "200 56.0ms": [],  # the proxy's line of the replica's request: counted there
        # Before Ray 2.40 (a call's outcome carries no HTTP status; the proxy's is not counted either).
        "INFO 2023-12-18 10:24:37,018 default_Translator XmWEsH 92a2f0d6-1a2b /v1/chat/completions default "
        "replica.py:750 - __CALL__ OK 60.4ms": [],
        "INFO 2023-12-18 10:24:37,084 http_proxy 10.0.0.1 92a2f0d6-1a2b /v1/chat/completions default proxy.py:1072 - "
        "POST 200 65.6ms": [],
        # A line of the server's that Ray's logger carries (a replica's output redirected to it, or a print), and
        # a known message alone: read as they would be alone.
        "INFO 2025-08-29 18:02:41,815 default_LLMServer aw9v81k4 -- INFO 08-29 18:02:41 [loggers.py:123] Engine 000: "
        "Avg prompt throughput: 0.0 tokens/s, Avg generation throughput: 34.3 tokens/s, Running: 1 reqs, Waiting: 0 "
        "reqs, GPU KV cache usage: 1.6%, Prefix cache hit rate: 0.0%": ["engine_stats"],
        "INFO 2025-08-29 18:02:41,815 default_LLMServer aw9v81k4 3d79a85d-ac51 -- [2025-08-11 09:41:13,200] LMCache "
        "INFO: Reqid: chatcmpl-1, Total tokens 32, LMCache hit tokens: 24, need to load: 8 (vllm_v1_adapter.py:1:"
        "lmcache.integration.vllm.vllm_v1_adapter)": ["lmcache_lookup"],
        "INFO 2025-08-29 18:02:41,815 default_LLMServer aw9v81k4 -- Added request chatcmpl-1.": ["request_added"],
        "INFO 2024-11-18 01:46:34,210 default_VLLMDeployment ujj4diu5 logging_utils.py:123 - INFO 11-18 01:46:34 "
        "[async_llm.py:578] Added request chatcmpl-2.": ["request_added"],
    }
    tags = ["", "(ServeReplica:default:LLMServer pid=2211) ", "(ServeReplica:default:meta-llama/Llama-2-7b-hf pid=5) "]
    with mock.patch.object(dispatch, "_headerless", side_effect=AssertionError("searched")):
        for line, kinds in records.items():
            for tag in tags:
                assert [event.kind for event in parse_line(tag + line)] == kinds, tag + line


def test_a_line_in_ray_serve_s_record_gives_what_the_general_path_gives() -> None:
    # Ray Serve's records are known for speed only: any line in one (a replica's output its logger carries, a crash
    # report, a traceback's last line, Ray's own notices) gives what the search for a header behind a prefix gives,
    # or more (a request's id LMCache's tag names, the record's time for a message alone).
    def general(line: str) -> list[dict]:
        with mock.patch.multiple(dispatch, RAY_SERVE_RECORD=NO_WORD, RAY_SERVE_OLD_RECORD=NO_WORD):
            return [event_dict(e) for e in parse_line(line)]

    def kinds(events: list[dict]) -> list[tuple]:
        return [(e["kind"], e.get("error"), e.get("exception")) for e in events]

    lost = [
        (headed, expected, got)
        for header in RAY_SERVE_HEADERS
        for line in EVERY_LINE
        if (expected := general(headed := header + line))
        and kinds(got := [event_dict(e) for e in parse_line(headed)]) != kinds(expected)
    ]
    assert lost == []
    # Ray's own notices give nothing.
    notices = [
        "WARNING 2026-08-14 11:59:22,925 controller 42382 -- Deployment 'LLMServer' in application 'default' has 1 "
        "replicas that have taken more than 30s to initialize.",
        "INFO 2024-11-18 01:46:34,210 default_VLLMDeployment ujj4diu5 replica.py:893 - Started initializing replica.",
        "WARNING 2023-03-10 09:14:57,187 controller 979 deployment_state.py:1506 - Replica D#DYFbUC of deployment D "
        "failed health check, stopping it.",
    ]
    assert [parse_line(line) for line in notices] == [()] * len(notices)


# Every family of lines, as a worker torchrun started writes them: whole records, messages alone, wrapped
# records, a benchmark's results.
ALL_FAMILIES = sorted(path.stem for path in (FIXTURES / "lines").glob("*.json") if path.stem != "negatives")
# Every fixture line, the near-misses among them.
EVERY_LINE = [case["line"] for family in [*ALL_FAMILIES, "negatives"] for case in line_cases(family)]


# Prefixes put before every line a process writes, whatever it is: torchrun's worker (--tee, or what
# TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE makes), PyTorch's rank, Slurm's task (``srun --label``), and SkyPilot's node
# or task (on one node, across several, on a terminal).
PREFIXES_BEFORE_ANY_LINE = ["[default0]:", "[trainer1]:", "[12]:", "[rank0]:", "[0]:[default1]:", "0: ", " 7: ", "12: "]
PREFIXES_BEFORE_ANY_LINE += [
    "(task, pid=7431) ",
    "(head, rank=0, pid=18260) ",
    "(worker1, rank=1, pid=13566, ip=10.146.0.26) ",
    "(worker1, rank=1, ip=10.0.0.3, pid=13566) ",
    "(setup pid=7, ip=1.2.3.4) ",
    "\x1b[36m(head, rank=0, pid=18260)\x1b[0m ",
]


@pytest.mark.parametrize("prefix", PREFIXES_BEFORE_ANY_LINE)
def test_a_prefix_before_any_line_is_read_past(prefix: str) -> None:
    wrong = [
        (family, case["line"][:80])
        for family in ALL_FAMILIES
        for case in line_cases(family)
        if [event_dict(e) for e in parse_line(prefix + case["line"])] != case["events"]
    ]
    assert not wrong, f"{len(wrong)} lines read differently behind {prefix}: {wrong[:3]}"
    noisy = [case["line"][:80] for case in NEAR_MISSES if parse_line(prefix + case["line"])]
    assert not noisy, noisy


def test_skypilot_s_node_is_no_worker_s_process_tag() -> None:
    # Its rank is the node's: an LMCache line behind it names no worker's rank.
    line = (
        "[2025-11-02 08:00:00,100] LMCache INFO: [req_id=cmpl-77-0] Retrieved 512 out of 512 required tokens "
        "(from 700 total tokens). size: 0.0625 gb, cost 3.1000 ms, throughput: 20.1600 GB/s;"
    )
    assert framing_end("(worker1, rank=1, pid=13566) " + line) == len("(worker1, rank=1, pid=13566) ")
    assert [e.rank for e in parse_line("(worker1, rank=1, pid=13566) " + line)] == [None]
    assert [e.rank for e in parse_line("(VllmWorker rank=1 pid=13566) " + line)] == [1]


def test_torchrun_s_prefix_is_a_bracketed_name_with_a_number_and_a_colon() -> None:
    line = "INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1."
    for prefix in ("[default0]:", "[rank7]:", "[trainer_a12]:", "[0]:", "[123456]:"):
        assert framing_end(prefix + line) == len(prefix), prefix
    # Not the shape: no number before the bracket closes, no colon after it, a number too long for a rank.
    for prefix in ("[Bug]:", "[default]:", "[default0] :", "[1234567]:", "[-1]:", "[ default0]:"):
        m = envelope._TORCH_ELASTIC_PREFIX.match(prefix + line)
        assert m is None or m.end() != len(prefix), prefix


# One-word VLLM_LOGGING_PREFIX values published setups use, pdsh's hosts, and words that only look like one.
PREFIX_WORDS = ["DECODER", "PREFILLER", "rank0:", "node-3:", "gpu-7.example.com", "a/b@c", "Warn:", "vllm-0", "x"]
PREFIX_WORDS += [
    "gpu-node-1:",
    "localhost:",
    "10.0.0.7:",
    "Traceback",
    "RuntimeError:",
    "Reqid:",
    "Engine",
    "sglang-0:",
]
# Prefixes of a few words (a label, a host and a unit), and sentences that only begin like one.
PREFIX_PHRASES = ["gpu node-3:", "prefill node-3", "DECODER rank0:", "a b c d", "a b c d e", "The engine said:"]
PREFIX_PHRASES += ["see the log of", "gpu-node-1: vllm", "node-3: sglang", "Warn: x", "x INFO", "rank 0:"]
PROCESS_TAGS = re.compile(r"(?:\([^()]*\) )*")


def without_the_word_rule(line: str) -> tuple:
    """The events of the general path: the header looked for behind the word as behind any prefix."""
    with rules_off("_WORDS_BEFORE_LEVEL", "_WORDS_BEFORE_MARK"):
        return parse_line(line)


def with_a_word(line: str, word: str) -> list[str]:
    """The line with the word at its start, and after its process tags, where vLLM's format puts it."""
    tags = PROCESS_TAGS.match(line)
    lines = [f"{word} {line}"]
    if tags is not None and tags.end():
        lines.append(f"{line[: tags.end()]}{word} {line[tags.end() :]}")
    return lines


def agrees(prefixed: str, line: str) -> bool:
    """Whether a line with a word put in it gives what the general path gives (the header looked for behind
    the word as behind any prefix) or what the line gives without the word, as behind any merging tool's
    prefix: the two differ where the general path reads less (a JSON record or a message alone behind a
    process tag, a header a paste damaged)."""
    got = parse_line(prefixed)
    return got == without_the_word_rule(prefixed) or got == parse_line(line)


def test_the_word_rule_is_really_another_path() -> None:
    line = "(EngineCore_DP1 pid=7) DECODER INFO 12-04 04:05:15 [abstract.py:390] It took 2.7 seconds to fall asleep."
    assert framing_end(line[len("(EngineCore_DP1 pid=7) ") :]) == len("DECODER ")
    pdsh = "gpu-node-1: " + line.replace("DECODER ", "")
    assert framing_end(pdsh) == len("gpu-node-1: ")
    with rules_off("_WORDS_BEFORE_LEVEL", "_WORDS_BEFORE_MARK"):
        assert framing_end(line[len("(EngineCore_DP1 pid=7) ") :]) == 0
        assert framing_end(pdsh) == 0
    assert parse_line(line) == without_the_word_rule(line) != ()
    assert parse_line(pdsh) == without_the_word_rule(pdsh) != ()
    # Behind pdsh's host, a JSON record behind a process tag is read as alone (the search finds no header in it).
    record = (
        '(APIServer pid=7) {"asctime": "2026-01-20 09:15:00,123", "levelname": "INFO", '
        '"name": "vllm.v1.engine.async_llm", "message": "Added request chatcmpl-1."}'
    )
    assert (
        [e.kind for e in parse_line("gpu-node-1: " + record)]
        == ["request_added"]
        != [e.kind for e in without_the_word_rule("gpu-node-1: " + record)]
    )


def test_a_word_before_a_record_is_read_past_with_the_events_the_line_gives() -> None:
    differing = [
        (prefixed, parse_line(prefixed), without_the_word_rule(prefixed))
        for line in EVERY_LINE
        for word in [*PREFIX_WORDS, *PREFIX_PHRASES]
        for prefixed in with_a_word(line, word)
        if not agrees(prefixed, line)
    ]
    assert differing == []


def test_parallel_s_tag_before_a_record_is_read_past_with_the_events_the_line_gives() -> None:
    tags = ("gpu-node-1\t", "10.0.0.7\t", "node-3 gpu0\t", "x\t")
    assert [(tag + line) for line in EVERY_LINE for tag in tags if not agrees(tag + line, line)] == []


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([case["line"] for family in ALL_FAMILIES for case in line_cases(family)]),
    st.from_regex(r"[A-Za-z][\w.@/:-]{0,70}", fullmatch=True),
)
def test_random_words_before_a_line_give_the_events_they_must(line: str, word: str) -> None:
    for prefixed in with_a_word(line, word):
        assert agrees(prefixed, line), prefixed


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from([case["line"] for family in ALL_FAMILIES for case in line_cases(family)]),
    st.lists(st.from_regex(r"[A-Za-z][\w.@/:-]{0,20}", fullmatch=True), min_size=2, max_size=6),
)
def test_a_few_random_words_before_a_line_give_the_events_they_must(line: str, words: list[str]) -> None:
    for prefixed in with_a_word(line, " ".join(words)):
        assert agrees(prefixed, line), prefixed


def test_what_is_read_past_as_words_before_a_record() -> None:
    header = "INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1."
    for word in ("DECODER ", "PREFILLER ", "rank0: ", "node-3: ", "host.example.com "):
        assert framing_end(word + header) == len(word), word
    # pdsh's and clush's host before a process tag or LMCache's header.
    assert framing_end("gpu-node-1: (APIServer pid=2) " + header) == len("gpu-node-1: ")
    lmcache = "[2025-12-14 16:00:00,006] LMCache INFO: Reqid: r-1, Total tokens 9, LMCache hit tokens: 0"
    assert framing_end("gpu-node-1: " + lmcache) == len("gpu-node-1: ")
    assert framing_end("gpu-node-1: [see below] " + header) == 0  # a bracket that begins no record
    assert framing_end("10.0.0.7: (APIServer pid=2) " + header) == len("10.0.0.7: ")  # pdsh -w 10.0.0.[1-8]
    assert envelope._words_end("1.2.3: (APIServer pid=2) " + header) == 0  # no address
    # A label of a few words, before any of those records and before uvicorn's header.
    for words in ("gpu node-3: ", "prefill node-3 ", "DECODER rank0: ", "a b c d "):
        assert framing_end(words + header) == len(words), words
        assert framing_end(words + lmcache) == len(words), words
    access = 'INFO:     127.0.0.1:39042 - "POST /v1/completions HTTP/1.1" 200 OK'
    for words in ("gpu-node-1: ", "gpu node-3: ", "10.0.0.7: "):
        assert framing_end(words + access) == len(words), words
    # GNU parallel's --tag: the arguments and a tab.
    for words in ("gpu-node-1\t", "10.0.0.7\t", "node-3 gpu0\t"):
        for record in (header, lmcache, access):
            assert framing_end(words + record) == len(words), words
    # Five words (left to the header search); a sentence, which the header search refuses too.
    assert envelope._words_end("a b c d e " + header) == 0
    for words in ("My log says ", "see the log of "):
        assert framing_end(words + header) == 0, words
        assert parse_line(words + header) == without_the_word_rule(words + header) == (), words
    # A level word (another program's header, read past by its own rule), a logger's name, another server's name,
    # a lower-case level after the word, no blank.
    for line in (
        "INFO " + header,
        "Warning " + header,
        "vllm.engine " + header,
        "sglang-0 " + header,
        "DECODER " + header.replace("INFO", "info", 1),
        "DECODER" + header,
        "node:3: " + header,
    ):
        assert envelope._words_end(line) == 0, line


# What line-stamping tools put before each line: moreutils' ts (its default, with %.S, -s), annotate-output.
TOOL_TIMES = ["Dec 14 16:18:29 ", "Dec  4 16:18:29.123456 ", "00:00:05 ", "16:18:29 O: ", "16:18:29 E: "]


def without_the_time_rule(line: str) -> tuple:
    with rules_off("_STAMPING_TOOL_TIME"):
        return parse_line(line)


def timed_by(events: tuple, stamp: str | None) -> tuple:
    """``events`` with ``stamp`` where they have no time of their own: a message alone behind a tool's time."""
    return tuple(event if event.stamp is not None else dataclasses.replace(event, stamp=stamp) for event in events)


def test_a_stamping_tool_s_time_before_a_record_is_read_past_with_the_events_the_line_gives() -> None:
    differing = [
        (timed, got, without_the_time_rule(timed))
        for line in EVERY_LINE
        for stamp in TOOL_TIMES
        if (got := parse_line(timed := stamp + line)) != without_the_time_rule(timed)
        and got not in (parse_line(line), timed_by(parse_line(line), envelope.framing_stamp(stamp)))
    ]
    assert differing == []


def test_what_is_read_past_as_a_stamping_tool_s_time() -> None:
    header = "INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1."
    lmcache = "[2025-12-14 16:00:00,006] LMCache INFO: Reqid: r-1, Total tokens 9, LMCache hit tokens: 0"
    access = 'INFO:     127.0.0.1:39042 - "POST /v1/completions HTTP/1.1" 200 OK'
    for stamp in TOOL_TIMES:
        for record in (header, "(APIServer pid=2) " + header, lmcache, access):
            assert framing_end(stamp + record) == len(stamp), stamp + record
        with rules_off("_STAMPING_TOOL_TIME"):
            assert framing_end(stamp + header) == 0
    # Not before a logging format's level and name (the time is the record's), a message alone, or a bracket
    # that begins no record; not a date and a time in brackets (SGLang's header before a uvicorn line).
    for line in (
        "16:18:29 INFO vllm.entrypoints: Added request chatcmpl-1.",
        "Dec 14 16:18:29 Added request chatcmpl-1.",
        "16:18:29 [see below] " + header,
        "[2026-08-23 09:08:08] " + access,
        "2025-12-14 16:18:29 " + header,
    ):
        assert envelope._stamping_tool_end(line) == 0, line
    assert framing_end("[2026-08-23 09:08:08] " + access) == 0
    assert parse_line("[2026-08-23 09:08:08] " + access) == ()


def test_a_record_behind_ts_s_time_is_no_journal_s_host_and_unit() -> None:
    # moreutils' ts writes the time journald's framing begins with: what follows is no host where a host's
    # name cannot stand (a level word, a tag, a word with a colon), nor a unit where a level word stands.
    for line, kinds in (
        ("Dec 14 16:18:29 DEBUG LMCache: Store skips 0 tokens and then stores 74 tokens [2024-11-19 20:08:12,011]", 1),
        ('Dec 14 16:18:29 (APIServer) INFO:     10.0.0.1:5140 - "POST /v1/completions HTTP/1.1" 200 OK', 1),
        ("Dec 14 16:18:29 api_server.py: error: unrecognized arguments: --bogus-flag", 1),
        ("Dec 14 16:18:29 LMCache INFO: Store 1792 tokens takes: 2.2906 ms, throughput: 98.1230 GB/s", 1),
        ("Dec 14 16:18:29 gpu-node-1 vllm[4242]: INFO 12-14 16:18:29 [async_llm.py:578] Added request r-1.", 1),
    ):
        assert len(parse_line(line)) == kinds, line


def test_the_hip_runtime_s_abort_is_read_behind_a_prefix_that_tools_put_before_any_line() -> None:
    # ROCm's HIP runtime writes its own line, no header, from any process: behind stern's, kubetail's, pdsh's,
    # GNU parallel's, ts's prefix, a process tag or a paste's quote it is the GPU fault it is alone.
    line = ":0:rocdevice.cpp            :2303: 768423197593 us: Device::callbackQueue aborting with status: 0x100f"
    assert [e.kind for e in parse_line(line)] == ["server_error"]
    prefixes = ["vllm-0 vllm ", "[vllm-0] ", "gpu-node-1: ", "10.0.0.7: ", "gpu-node-1\t", "Dec 14 16:18:29 ", "> "]
    for prefix in [*prefixes, "(EngineCore_DP0 pid=300) ", "16:18:29 E: "]:
        assert [e.kind for e in parse_line(prefix + line)] == ["server_error"], prefix
    # Not behind words that may be a sentence's.
    for prefix in ("I saw ", "gpu node-3: ", "x "):
        assert parse_line(prefix + line) == (), prefix


def test_a_benchmark_s_percentiles_are_read_behind_a_host_s_or_a_pod_s_name() -> None:
    # `vllm bench latency` and `vllm bench serve` run over pdsh, in a pod kubetail follows, under ts.
    for line in ("10% percentile latency: 1.4704144389019347 seconds", "P99 TTFT (ms):        18164.16"):
        for prefix in ("gpu-node-1: ", "gpu node-3: ", "[vllm-0] ", "00:00:05 ", "gpu-node-1\t"):
            assert parse_line(prefix + line) == parse_line(line) != (), prefix + line


def test_journald_s_framing_names_the_month_in_any_language() -> None:
    line = "Reqid: r-1, Total tokens 32, LMCache hit tokens: 24, need to load: 8"
    for framing in (
        "Dec 14 16:18:29 gpu-node-1 vllm[4242]: ",
        "dic 14 16:18:29 gpu-node-1 vllm[4242]: ",  # Spanish, Italian
        "déc. 14 16:18:29 gpu-node-1 vllm[4242]: ",
        "авг 18 14:15:04 llm python3[28059]: ",
        "12月 14 16:18:29 gpu-node-1 vllm[4242]: ",
        " 8月 14 16:18:29 gpu-node-1 vllm[4242]: ",  # Japanese pads the month
        "12월 14 16:18:29.123456 gpu-node-1 vllm: ",
        "Sat 2025-12-14 16:18:29 CET gpu-node-1 vllm[4242]: ",  # short-full
        "Sa 2025-12-14 16:18:29.123456 MEZ gpu-node-1 vllm[4242]: ",
    ):
        assert framing_end(framing + line) == len(framing), framing
        assert [e.kind for e in parse_line(framing + line)] == ["lmcache_lookup"], framing
    # ``-o verbose`` and ``-o export``: the message a field of the record, alone on its line.
    for field in ("    MESSAGE=", "MESSAGE="):
        assert framing_end(field + line) == len(field), field
    # A word of prose where the month would stand is no journal's.
    for framing in ("The 14 16:18:29 gpu-node-1 vllm[4242]: ", "at 14 16:18:29 gpu-node-1 vllm[4242]: "):
        assert framing_end(framing + line) == 0, framing


def test_journald_s_other_framings_are_read_past_before_a_message_alone() -> None:
    line = "vllm.service: Main process exited, code=killed, status=9/KILL"
    for framing in (
        "Dec 14 16:18:29 systemd[1]: ",  # --no-hostname: the identifier keeps its process id
        "[ 1234.567890] gpu-node-1 systemd[1]: ",  # short-monotonic
        "[    5.123456] systemd[1]: ",  # a console's lines: seconds since boot, no host
        "1765700309.123456 gpu-node-1 systemd[1]: ",  # short-unix
    ):
        assert framing_end(framing + line) == len(framing), framing
        assert [e.kind for e in parse_line(framing + line)] == ["service_exited"], framing
    # Without its process id a word after the time is a host's or a tool's, not an identifier alone.
    assert framing_end("Dec 14 16:18:29 systemd: " + line) == 0


def test_journald_s_framing_behind_a_log_stream_s_name_is_read_past() -> None:
    # A syslog file shipped to CloudWatch Logs, read back with ``aws logs tail``: its time (a wrapper's, read past
    # first) and the log stream's name before each line.
    message = "vllm.service: Main process exited, code=killed, status=9/KILL"
    framing = "Dec 14 16:18:29 gpu-node-1 systemd[1]: "
    for stream in ("i-0a1b2c3d4e5f67890 ", "AllTraffic/i-0a1b2c3d4e5f67890 ", "ecs/vllm/0123abcd "):
        assert framing_end(stream + framing + message) == len(stream + framing), stream
        assert [(e.kind, e.stamp) for e in parse_line(stream + framing + message)] == [
            ("service_exited", "12-14 16:18:29")
        ]
        tailed = "2025-12-14T16:18:29.053000+00:00 " + stream + framing + message
        assert [(e.kind, e.stamp) for e in parse_line(tailed)] == [
            ("service_exited", "2025-12-14T16:18:29.053000+00:00")
        ]
    # Two words, or prose, before the framing are no log stream's name.
    for words in ("my log ", "see: "):
        assert framing_end(words + framing + message) == 0, words
    # A journal shipped without its framing (``journalctl -o cat``): systemd's message alone behind the name.
    for stream in ("i-0a1b2c3d4e5f67890 ", "ecs/vllm/0123abcd "):
        assert framing_end(stream + message) == len(stream), stream
        tailed = "2025-12-14T16:18:29.053000+00:00 " + stream + message
        assert [(e.kind, e.stamp) for e in parse_line(tailed)] == [
            ("service_exited", "2025-12-14T16:18:29.053000+00:00")
        ]
    for words in ("i-0a1b2c3d4e5f67890 the ", "my "):  # prose before it, not a machine's name
        assert framing_end(words + message) == 0, words
    # A JSON logging configuration's record behind the stream's name.
    record = '{"asctime": "2025-12-14 16:18:29,053", "levelname": "ERROR", "name": "vllm.entrypoints", "message": "x"}'
    assert framing_end("ecs/vllm/0a1b2c " + record) == len("ecs/vllm/0a1b2c ")
    assert [e.kind for e in parse_line("2025-12-14T16:18:29.053000+00:00 ecs/vllm/0a1b2c " + record)] == ["log_problem"]
    assert framing_end("ecs/vllm/0a1b2c " + record[:-1]) == 0  # no whole record
    assert framing_end("my log " + record) == 0
    # A stream's name with a slash before any record, also one that begins as vLLM's logger's name would.
    header = "(APIServer pid=1) INFO 12-14 16:18:29 [async_llm.py:578] Added request chatcmpl-1."
    for stream in ("vllm/vllm/0a1b2c ", "AllTraffic/i-0a1b2c3d4e5f67890 "):
        assert framing_end(stream + header) == len(stream), stream
    assert framing_end("vllm/vllm/0a1b2c Added request chatcmpl-1.") == 0  # a message alone: no record begins


def test_a_message_alone_behind_journald_s_framing_takes_its_time_and_a_record_keeps_its_own() -> None:
    message = "vllm.service: Main process exited, code=killed, status=9/KILL"
    for framing, stamp in (
        ("Dec 14 16:18:29 gpu-node-1 systemd[1]: ", "12-14 16:18:29"),  # the clock finds its year as for vLLM's
        ("Dec  4 16:18:29.123456 gpu-node-1 systemd[1]: ", "12-04 16:18:29.123456"),
        ("1765700309.123456 gpu-node-1 systemd[1]: ", "@1765700309123456"),
        ("[ 1234.567890] gpu-node-1 systemd[1]: ", None),  # seconds since boot: no time of day
        ("déc. 14 16:18:29 gpu-node-1 systemd[1]: ", None),  # the month's name in another language
    ):
        assert [e.stamp for e in parse_line(framing + message)] == [stamp], framing
    record = "Dec 14 16:18:29 gpu-node-1 vllm[4242]: INFO 12-14 16:18:27 [async_llm.py:578] Added request chatcmpl-1."
    assert [e.stamp for e in parse_line(record)] == ["12-14 16:18:27"]


CALL_SITE = re.compile(r"\[([\w.]+\.py:\d+)\]")


def test_a_call_site_a_paste_made_a_link_of_gives_the_line_s_events() -> None:
    # A rich editor makes a link of what looks like a domain name, a Python file's among them (its ending
    # is Paraguay's domain): ``[[loggers.py:259](http://loggers.py:259/)]``.
    cases = [case for family in ALL_FAMILIES for case in line_cases(family) if CALL_SITE.search(case["line"])]
    wrong = []
    for case in cases:
        linked = CALL_SITE.sub(lambda m: f"[[{m.group(1)}](http://{m.group(1)}/)]", case["line"], count=1)
        got = [event_dict(e) for e in parse_line(linked)]
        if got != case["events"]:
            wrong.append((linked[:100], got))
    assert len(cases) > 200 and not wrong, wrong[:3]
    # LMCache's call site after the message, its file made a link of.
    line = (
        "[2025-12-14 16:18:24,320] LMCache WARNING: Retrieval timed out "
        "([cache_engine.py](http://cache_engine.py):1010:lmcache.v1.cache_engine)"
    )
    assert [(e.kind, e.source) for e in parse_line(line)] == [("log_problem", "cache_engine.py:1010")]


# Other programs' headers before the lines they re-log, and tools' times and names alone: a collector's or an
# aggregator's time, level and process kind, a job runner's, Python logging wrappers', CI systems' times; a paste's
# quote marks or indentation.
LOGGED_HEADERS = [
    "2025-12-14 16:18:29,123 INFO [worker] ",
    "2026-03-11 13:56:58,403 [INFO] ",
    "2025-12-14 16:18:29,123 - INFO - ",
    "[16:18:29] [INFO] [serve-qwen3] ",
    "INFO     run_server.py:88 ",
    "2025-12-14 16:18:29.123 | INFO     | launcher:stream:42 - ",
    "INFO:root:",
    "WARNING:root:",
    "INFO  [main] ",
    "2025-12-14 16:18:29.123 UTC ",
    "[2025-12-13T19:54:35Z] ",
    "2025/12/14 16:18:29 ",
    "logs/vllm.log:",
    "2025-12-14 16:18:29 INFO vllm ",
    "> ",
    "    ",
]
# Pastes' marks before a record, closed after it (trimmed as behind any prefix) or not: (prefix, closing).
PASTES = [
    ("| 2025-12-14 16:18:29 | ", " |"),
    ("<pre>", "</pre>"),
    ('<font color="#00cdcd"><b>', "</b></font>"),
    ("<td>", "</td>"),
    ("\u2502 ", " \u2502"),
    ("`", "`"),
    ("* ", ""),
]
# Headers that name a watched logger (read past, or a header of their own the search finds).
NAMED_HEADERS = ["2025-12-14 16:18:29 vllm ", "INFO vllm.x: ", "2025-12-14 16:18:29 vllm.engine DEBUG: "]


def without_the_header_rule(line: str) -> tuple:
    with rules_off():
        return parse_line(line)


def test_another_program_s_header_before_a_record_is_read_past_with_the_events_the_line_gives() -> None:
    differing = [
        (headed, got, without_the_header_rule(headed))
        for line in EVERY_LINE
        for header, closing in [*((header, "") for header in [*LOGGED_HEADERS, *NAMED_HEADERS]), *PASTES]
        if (got := parse_line(headed := header + line + closing)) != without_the_header_rule(headed)
        and got != parse_line(line)
    ]
    assert differing == []


# Pieces of the prefixes tools and logging formats write, and of the text that only looks like one.
HEADER_PIECES = [
    *("2025-12-14", "16:18:29", "16:18:29,123", "[16:18:29]", "[2025-12-14 16:18:29]", "UTC", "12345", "gpu-node-1"),
    *("INFO", "info", "WARNING", "ERROR", "DEBUG", "W", "E", "[INFO]", "[worker]", "[job-1]", "[x y]", "root:"),
    *("run_server.py:88", "vllm", "lmcache", "vllm.engine", "uvicorn.error", "sglang", "[sglang-0]", "level=info"),
    *("-", "|", "`", "<b>", '"', "'", "(pid 5)", "(APIServer pid=1)", "the", "My", "says", "note:", "Engine"),
    *(">", ">>", "...", "*", "{", "=>"),
]


# (Not the damaged pastes that begin with a blank: after a level word and a colon, that blank would pad them into
# uvicorn's header, a record of its own at a line's start, which the search behind a prefix reads otherwise.)
UNPADDED_LINES = [line for line in EVERY_LINE if line[:1] != " "]


@settings(max_examples=600, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.sampled_from(UNPADDED_LINES),
    st.lists(
        st.tuples(st.sampled_from(HEADER_PIECES), st.sampled_from([" ", " ", ":", "  ", "\t", ": ", " - "])),
        min_size=1,
        max_size=5,
    ),
)
def test_random_headers_before_a_line_give_the_events_they_must(line: str, pieces: list[tuple[str, str]]) -> None:
    headed = "".join(piece + separator for piece, separator in pieces) + line
    assert parse_line(headed) in (without_the_header_rule(headed), parse_line(line)), headed


def test_a_file_s_name_as_grep_prints_it_is_read_past_before_any_line() -> None:
    added = "INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1."
    lookup = "Reqid: r-1, Total tokens 9, LMCache hit tokens: 0, need to load: 0"
    lines = (
        added,
        lookup,
        "vllm-0 vllm " + lookup,  # stern's names
        "2025-12-14T08:18:29.123456789Z stdout F " + lookup,  # a CRI record
        '{"log":"' + added + '\\n","stream":"stderr","time":"2025-12-14T08:18:29.1Z"}',  # Docker's json-file
        "Dec 14 16:00:00 gpu-1 vllm[42]: " + lookup,  # journald's framing
    )
    names = ("vllm.log:", "logs/vllm.log.1:", "/var/log/pods/ns_vllm-0_u/vllm/0.log:", "a-json.log:", "x.log.2.gz:")
    numbered = ("vllm.log:1203:", "vllm.log-1203-", "/var/log/syslog:", "logs/current:", "/var/log/syslog:12:")
    for name in names + numbered:
        for line in lines:
            assert framing_end(name + line) == len(name), name + line
            assert parse_line(name + line) == parse_line(line), name + line
    # Not a log file's name: a source file's place (a warning's), a downloaded file's progress, a program's own
    # line after its path, a word; and a name with no line after it.
    for line in (
        "/opt/venv/lib/python3.11/site-packages/torch/cuda/__init__.py:654: UserWarning: " + lookup,
        "config.json: 100%|##########| 1.2k/1.2k [00:00<00:00, 4.1MB/s]",
        "/usr/bin/vllm: " + lookup,
        "server:" + lookup,
    ):
        assert envelope._GREP_FILE.match(line) is None, line
    assert framing_end("vllm.log:") == 0


def test_what_is_read_past_as_another_program_s_header() -> None:
    header = "INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1."
    lmcache = "[2025-12-14 16:00:00,006] LMCache INFO: Reqid: r-1, Total tokens 9, LMCache hit tokens: 0"
    coloured = "\x1b[32;20m[2025-12-14 16:00:00,006] LMCache INFO:\x1b[0m Reqid: r-1, Total tokens 9"
    access = 'INFO:     127.0.0.1:39042 - "POST /v1/completions HTTP/1.1" 200 OK'
    for prefix in LOGGED_HEADERS:
        for record in (header, "(APIServer pid=2) " + header, lmcache, coloured, access):
            assert framing_end(prefix + record) == len(prefix), prefix + record
        with rules_off("_GREP_FILE"):
            assert framing_end(prefix + header) == 0, prefix
    for prefix, closing in PASTES:
        assert framing_end(prefix + header + closing) == len(prefix), prefix
        assert parse_line(prefix + header + closing) == parse_line(header), prefix
    # Left to the search: a sentence, an open quote, SGLang's header before a uvicorn line, a tool's RFC 3339 time
    # (the line's stamp), a watched logger's header of its own with its time (``vllm INFO:     `` is no uvicorn
    # line), a process tag before no header, a level and a colon unpadded (no uvicorn header).
    for line in (
        "I think the log said " + header,
        'msg="' + header,
        "[2026-08-23 09:08:08] " + access,
        "[pod/vllm-0/vllm] 2025-12-14T08:18:29.123456789Z x " + header,
        "2025-12-14 16:18:29 vllm " + access,
        "INFO (APIServer pid=2) Added request chatcmpl-1.",
        "INFO INFO: Added request chatcmpl-1.",
    ):
        assert envelope._logged_header_end(line) == 0, line
    # A date and a time in brackets (``ts '[%F %T]'``, SGLang's header) before any other record: read past.
    for stamp in ("[2026-08-23 09:08:08] ", "[2026-08-23 09:08:08 TP0] "):
        for record in (header, "(APIServer pid=2) " + header, lmcache, coloured):
            assert envelope._logged_header_end(stamp + record) == len(stamp), stamp + record
        assert envelope._logged_header_end(stamp + access) == 0
        assert parse_line(stamp + access) == ()
    # The first place a record begins decides: text before it that no header is leaves the line to the search.
    assert envelope._logged_header_end("2025-12-14 some words here (APIServer pid=2) " + header) == 0


def _curly_quotes(line: str) -> str:
    """The line's double quotes as a blog's typography sets them: opening and closing in turn."""
    pieces = line.split('"')
    return "".join(piece + ("\u201c" if i % 2 == 0 else "\u201d") for i, piece in enumerate(pieces[:-1])) + pieces[-1]


# What a publishing tool makes of a line's ASCII: (the copy, where it comes from).
TYPOGRAPHY = [
    (lambda line: line.replace(" ", "\xa0"), "a web page's &nbsp; for every space"),
    (lambda line: line.replace(" - ", " \u2013 "), "a blog's en dash for a hyphen between spaces"),
    (lambda line: line.replace(" -- ", " \u2014 "), "a blog's em dash for two hyphens between spaces"),
    (lambda line: line.replace("...", "\u2026"), "a blog's ellipsis for three dots"),
    (_curly_quotes, "a blog's curly double quotes"),
]


@pytest.mark.parametrize(("copy", "origin"), TYPOGRAPHY, ids=[t[1] for t in TYPOGRAPHY])
def test_the_same_events_in_a_rendered_page(copy, origin: str) -> None:
    """A copy from a rendered web page reads as the line.  (A wrapper's own syntax -- a label set's quotes -- is
    shown in a page's code, where no typography is applied: only the lines behind headers and messages alone.)"""
    cases = CASES + line_cases("message_only") + (line_cases("wrappers") if copy is not _curly_quotes else [])
    changed = [case for case in cases if copy(case["line"]) != case["line"]]
    wrong = [
        (case["source"], copy(case["line"])[:80], got)
        for case in changed
        if (got := parse(copy(case["line"]))) != case["events"]
    ]
    assert changed
    assert not wrong, f"{len(wrong)} of {len(changed)} lines read differently as {origin}: {wrong[:3]}"


def test_the_same_events_with_a_run_of_blanks_kept_by_no_break_spaces() -> None:
    """A page that keeps a run of blanks from collapsing makes every other blank of it a no-break space: the
    same events, but for a wrapper's time before such a run (not known as the wrapper's then: the line's own,
    if any, is kept)."""
    cases = CASES + [case for family in ("message_only", "wrappers") for case in line_cases(family)]
    changed = [case for case in cases if "  " in case["line"]]
    wrong = [
        (case["source"], case["line"][:80], got)
        for case in changed
        if without_stamps(got := parse(case["line"].replace("  ", "\xa0 "))) != without_stamps(case["events"])
    ]
    assert changed
    assert not wrong, f"{len(wrong)} of {len(changed)} lines read differently: {wrong[:3]}"


@pytest.mark.parametrize(("copy", "origin"), TYPOGRAPHY, ids=[t[1] for t in TYPOGRAPHY])
def test_near_misses_stay_silent_in_a_rendered_page(copy, origin: str) -> None:
    loud = [case["line"][:80] for case in NEAR_MISSES if case["line"] and parse(copy(case["line"]))]
    assert not loud, f"near-misses read as {origin}: {loud}"


def test_a_known_message_under_another_logger_s_name_in_opentelemetry_s_format_keeps_its_record_s_time() -> None:
    """OpenTelemetry's logging instrumentation's default format under a logger that is not vLLM's (a program that
    runs vLLM with ``VLLM_CONFIGURE_LOGGING=0`` and logs through the root logger): a whole known message after its
    fields is read, its time the record's own, also where a tool put its bracketed time before the record."""
    record = (
        "2026-12-07 10:00:10,123 INFO [root] [loggers.py:259] [trace_id=0 span_id=0 resource.service.name= "
        "trace_sampled=False] - Engine 000: Avg prompt throughput: 81.2 tokens/s, Avg generation throughput: 12.4 "
        "tokens/s, Running: 2 reqs, Waiting: 0 reqs, GPU KV cache usage: 1.3%, Prefix cache hit rate: 46.2%"
    )
    for line in (record, "[2025-12-13T19:54:35Z] " + record):
        (stats,) = parse_line(line)
        assert (stats.kind, stats.stamp, stats.running, stats.prefix_cache_hit_rate) == (
            "engine_stats",
            "2026-12-07 10:00:10,123",
            2,
            0.462,
        ), line
