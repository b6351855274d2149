"""Warning and error lines: what a ``log_problem`` holds, and what never becomes one."""

from __future__ import annotations

import json

from parsers import parse_line
from parsers.envelope import call_site
from parsers.events import LogProblem


def problems(line: str) -> list[tuple[str, str, str | None]]:
    return [(e.producer, e.level, e.source) for e in parse_line(line) if isinstance(e, LogProblem)]


def test_a_level_word_in_a_prefix_is_the_prefix_s_not_the_line_s() -> None:
    # A collector's own level before vLLM's INFO header says nothing about vLLM's line.
    assert parse_line("2026-12-03T07:10:00Z ERROR shipper INFO 12-03 07:10:00 [x.py:1] All good") == ()
    assert problems("2026-12-03T07:10:00Z INFO shipper WARNING 12-03 07:10:00 [x.py:1] Odd") == [
        ("vllm", "warning", "x.py:1")
    ]


def test_the_call_site_is_the_file_without_its_directories() -> None:
    line = "vllm-0 vllm WARNING 12-03 07:10:00 [vllm/v1/engine/core.py:712] Odd"
    assert problems(line) == [("vllm", "warning", "core.py:712")]
    assert problems(line.removeprefix("vllm-0 vllm ")) == [("vllm", "warning", "core.py:712")]  # at the start too
    assert call_site("[/opt/venv/lib/vllm/x-y.z.py:9]", 0, 31) == "x-y.z.py:9"
    assert call_site("[no file here]", 0, 14) is None


def test_a_name_too_long_to_be_one_is_left_out() -> None:
    assert problems("2025-07-08 17:24:00 - vllm." + "a" * 5000 + " - ERROR - x") == [("vllm", "error", None)]
    long_path = "pod-0 ERROR 12-03 07:10:00 [" + "a" * 5000 + "/x.py:1] boom"
    assert problems(long_path) == [("vllm", "error", "x.py:1")]


def test_a_json_logging_record_gives_its_level_in_any_case() -> None:
    record = {"name": "lmcache.v1.cache_engine", "levelname": "warning", "message": "Remote backend unavailable"}
    assert problems(json.dumps(record)) == [("lmcache", "warning", "lmcache.v1.cache_engine")]
    record["levelname"] = "INFO"
    assert parse_line(json.dumps(record)) == ()


def test_a_line_another_parser_reads_is_no_problem() -> None:
    fatal = "(EngineCore_DP0 pid=5) ERROR 12-03 07:10:00 [core.py:1] torch.OutOfMemoryError: CUDA out of memory."
    assert [e.kind for e in parse_line(fatal)] == ["server_error"]
    lookup = (
        "[2025-06-13 09:16:51,821] LMCache WARNING: Reqid: r-1, Total tokens 265, LMCache hit tokens: 0, "
        "need to load: 0 (vllm_v1_adapter.py:773:lmcache.integration.vllm.vllm_v1_adapter)"
    )
    assert [e.kind for e in parse_line(lookup)] == ["lmcache_lookup"]


def test_other_level_words_are_no_problem() -> None:
    for level in ("INFO", "DEBUG", "TRACE", "NOTICE"):
        assert parse_line(f"{level} 12-03 07:10:00 [x.py:1] Something") == (), level
        assert parse_line(f"[2025-06-21 20:59:57,675] LMCache {level}: Something (x.py:1:lmcache.x)") == (), level
    assert parse_line("NOTE:     Something") == ()
