"""Whole known messages under the headers of logging formats no header pattern describes.

Programs that embed vLLM, and operators who give vLLM a logging configuration of
their own, print its records with their own header: the level after the logger's
name, the name in brackets with the line, tab-separated fields.  Each whole known
message (the message-only fixtures) gives the same events under each of these
headers as alone; another program's logger before it, prose or a quote does not.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from parsers import parse_line
from tests.support.lines import event_dict, line_cases

TIME = "2026-12-03 10:00:00,123"
# (header, what writes it)
HEADERS = [
    (f"INFO {TIME} vllm.v1.engine.async_llm ", "%(levelname)s %(asctime)s %(name)s"),
    (f"{TIME} vllm.v1.engine.async_llm INFO ", "%(asctime)s %(name)s %(levelname)s"),
    (f"{TIME} INFO     [vllm.v1.engine.async_llm] ", "%(asctime)s %(levelname)-8s [%(name)s]"),
    (f"{TIME} INFO [vllm.v1.engine.async_llm:578] ", "%(asctime)s %(levelname)s [%(name)s:%(lineno)d]"),
    (f"[INFO] {TIME} vllm.v1.engine.async_llm: ", "[%(levelname)s] %(asctime)s %(name)s:"),
    (f"{TIME}\tINFO\tvllm.v1.engine.async_llm\t", "tab-separated fields"),
    (f"[{TIME}][vllm.v1.engine.async_llm][INFO] - ", "[%(asctime)s][%(name)s][%(levelname)s] -"),
    (f"{TIME} INFO (async_llm.py:578) ", "%(asctime)s %(levelname)s (%(filename)s:%(lineno)d)"),
    (f"{TIME} INFO vllm.v1.engine.async_llm.add_request:578 - ", "%(name)s.%(funcName)s:%(lineno)d -"),
    (f"{TIME} - vllm.v1.engine.async_llm - INFO - async_llm.py:578 - ", "the standard format with the file"),
    (f"{TIME} INFO [MainThread] vllm.v1.engine.async_llm: ", "%(threadName)s before the name"),
    (f"{TIME} [INFO] [pid 42] vllm.v1.engine.async_llm ", "the process id in brackets"),
    (f"vllm-1  | {TIME} INFO     [vllm.v1.engine.async_llm] ", "such a header behind docker compose's prefix"),
    (f"{TIME} [info     ] ", "structlog's console renderer: the level in lower case, padded in brackets"),
    (f"{TIME} | INFO     | launcher:stream:42 - ", "loguru's default format: the module, function and line"),
    (f"{TIME}\tinfo\tvllm\t", "a Go logger's tab-separated fields, the level in lower case"),
]
# The messages alone (not those with a decoration, a header of their own or the GPU runtime's frame).
MESSAGES = [
    case
    for case in line_cases("message_only")
    if case["events"] and case["line"][:1].isalpha() and not case["line"].startswith("LMCache ")
]

# vLLM's own messages (LMCache's come under LMCache's header, uvicorn's under uvicorn's, the ROCm
# runtime's fault and GPU hang under none).
VLLM_MESSAGES = [
    case
    for case in MESSAGES
    if not any(e["kind"].startswith("lmcache") for e in case["events"])
    and not case["line"].startswith(("Memory access fault", "HW Exception by GPU", "Application startup complete"))
]


def without_stamps(events: list[dict]) -> list[dict]:
    return [{k: v for k, v in event.items() if k != "stamp"} for event in events]


def same_but_stamps(got: list[dict], want: list[dict]) -> bool:
    return without_stamps(got) == without_stamps(want)


def read_differently(
    cases: list[dict], make: Callable[[str], str], same: Callable[[list[dict], list[dict]], bool] = same_but_stamps
) -> list[tuple[str, list[dict]]]:
    """The cases whose line, made into ``make(line)``, gives events ``same`` does not take for theirs."""
    wrong = []
    for case in cases:
        got = [event_dict(e) for e in parse_line(make(case["line"]))]
        if not same(got, case["events"]):
            wrong.append((case["line"][:60], got))
    return wrong


@pytest.mark.parametrize(("header", "origin"), HEADERS, ids=[h[1] for h in HEADERS])
def test_a_whole_message_under_another_formats_header(header: str, origin: str) -> None:
    def stamped(got: list[dict], want: list[dict]) -> bool:
        return same_but_stamps(got, want) and all(e.get("stamp") == TIME for e in got)

    wrong = read_differently(MESSAGES, lambda line: header + line, stamped)
    assert not wrong, f"{len(wrong)} of {len(MESSAGES)} messages read differently under {origin}: {wrong[:3]}"


def test_a_whole_message_under_a_go_logger_s_fields_after_an_rfc_3339_time() -> None:
    # zap's console encoder with an ISO 8601 time: its fields, not a time column before a line of its own.
    time = "2026-12-03T10:00:00.123Z"

    def stamped(got: list[dict], want: list[dict]) -> bool:
        return same_but_stamps(got, want) and all(e.get("stamp") == time for e in got)

    wrong = read_differently(MESSAGES, lambda line: f"{time}\tinfo\tvllm\t{line}", stamped)
    assert not wrong, f"{len(wrong)} of {len(MESSAGES)} messages read differently: {wrong[:3]}"


@pytest.mark.parametrize(
    "header",
    [
        f"{TIME} INFO kserve.trace ",  # another program's copy of vLLM's line
        f"{TIME} INFO myapp.server ",
        f"{TIME} | INFO     | kserve.trace:log:12 - ",  # another program's module, with a function and a line
        "My INFO says ",  # prose
        "Note that the INFO ",
        f"{TIME} INFO said: '",  # a quote
        f"{TIME} INFO MainThread root worker ",  # three plain words
        "more info ",  # a level word in lower case without a time: prose
        "debug info: ",
    ],
)
def test_no_message_under_what_is_no_header_of_vllms(header: str) -> None:
    loud = [case["line"][:60] for case in MESSAGES if parse_line(header + case["line"])]
    assert not loud, loud


@pytest.mark.parametrize("blanks", ["  ", "   ", " \t"], ids=["two spaces", "three spaces", "a space and a tab"])
def test_a_message_after_more_blanks_than_vllms_header_leaves(blanks: str) -> None:
    # A logging format that pads the message, or a message that begins with a blank.
    header = "(APIServer pid=1) INFO 12-03 10:00:00 [async_llm.py:578]"
    wrong = read_differently(VLLM_MESSAGES, lambda line: header + blanks + line)
    assert not wrong, f"{len(wrong)} of {len(VLLM_MESSAGES)} messages read differently: {wrong[:3]}"


@pytest.mark.parametrize("blanks", ["  ", " \t"], ids=["two spaces", "a space and a tab"])
def test_an_lmcache_message_after_more_blanks_than_its_header_leaves(blanks: str) -> None:
    # LMCache's messages that begin with a blank (``LMCache INFO:  torch_dev=...``) show the shape.
    header = "[2026-12-03 10:00:00,123] LMCache INFO:"
    cases = [case for case in MESSAGES if all(e["kind"].startswith("lmcache") for e in case["events"])]
    wrong = read_differently(cases, lambda line: header + blanks + line)
    assert cases and not wrong, f"{len(wrong)} of {len(cases)} messages read differently: {wrong[:3]}"


@pytest.mark.parametrize(
    ("opening", "closing"),
    [("`", "`"), ("> ", ""), ("    ", ""), ("- ", ""), ("> `", "`")],
    ids=["inline code", "a markdown quote", "an indented block", "a list item", "inline code in a quote"],
)
def test_a_whole_message_inside_a_pastes_decoration(opening: str, closing: str) -> None:
    wrong = read_differently(MESSAGES, lambda line: opening + line + closing, lambda got, want: got == want)
    assert not wrong, f"{len(wrong)} of {len(MESSAGES)} messages read differently: {wrong[:3]}"


@pytest.mark.parametrize("header", ["INFO: ", "WARNING: "])
def test_a_whole_message_after_a_level_and_a_colon(header: str) -> None:
    # ``%(levelname)s: %(message)s`` writes uvicorn's header before any logger's message.
    wrong = read_differently(MESSAGES, lambda line: header + line)
    assert not wrong, f"{len(wrong)} of {len(MESSAGES)} messages read differently: {wrong[:3]}"


@pytest.mark.parametrize(
    "prefix",
    [
        "vllm-7d9f8b6c5-x2x7q vllm ",  # stern
        "vllm-1  | ",  # docker compose
        "Dec 14 16:18:29 gpu-node-1 vllm[4242]: ",  # journalctl -o short
        "[pod/vllm-0/vllm] ",  # kubectl logs --prefix
        "2025-12-14T08:18:29.123Z ",  # a collector's time
        "(task, pid=7431) ",  # SkyPilot
        "[vllm] ",  # npm's concurrently
    ],
)
def test_a_whole_message_behind_a_tools_prefix(prefix: str) -> None:
    # A ``%(message)s`` format's line as the tools that merge logs show it.
    wrong = read_differently(MESSAGES, lambda line: prefix + line)
    assert not wrong, f"{len(wrong)} of {len(MESSAGES)} messages read differently: {wrong[:3]}"


@pytest.mark.parametrize("prefix", ["Note: ", "The log says ", "see ", "debug info: ", "Step 2 of the fix: "])
def test_no_whole_message_behind_prose(prefix: str) -> None:
    loud = [case["line"][:60] for case in MESSAGES if parse_line(prefix + case["line"])]
    assert not loud, loud
