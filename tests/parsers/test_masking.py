"""Shapes of unread lines, as ``kvwatch replay --format unmatched`` shows them."""

from __future__ import annotations

import json

import pytest

from parsers.envelope import strip_ansi
from parsers.masking import looks_like_a_log_line, shape


@pytest.mark.parametrize(
    "prefix",
    ["", "\x1b[1;36m(APIServer pid=7)\x1b[0;0m ", "[1;36m(APIServer pid=7)[0;0m ", "^[[36m(APIServer pid=7)^[[m "],
)
def test_a_file_name_starting_with_m_survives_colour_codes_being_removed(prefix: str) -> None:
    """``[m`` is a bare reset only when no name follows it: ``[model.py:555]`` stays a file name."""
    line = prefix + "INFO 12-02 09:51:57 [model.py:555] Resolved architecture: LlamaForCausalLM"
    assert shape(line).endswith("INFO N-N N:N:N [model.py:N] Resolved architecture: LlamaForCausalLM")


@pytest.mark.parametrize(
    ("line", "plain"),
    [
        ("[32mINFO[m started [0m", "INFO started "),
        ("^[[1mbold^[[m [multiproc_executor.py:1] x", "bold [multiproc_executor.py:1] x"),
        ("\\x1b[mINFO [metrics.py:9] y", "INFO [metrics.py:9] y"),
    ],
)
def test_colour_residue_goes_and_bracketed_names_stay(line: str, plain: str) -> None:
    assert strip_ansi(line) == plain


def _otlp_export(*records: tuple[str | None, str]) -> str:
    """One OTLP/JSON export request (the OpenTelemetry Collector's file exporter) of (scope name, body)."""
    scopes = [
        {"scope": {"name": name} if name else {}, "logRecords": [{"timeUnixNano": "1", "body": {"stringValue": body}}]}
        for name, body in records
    ]
    return json.dumps({"resourceLogs": [{"scopeLogs": scopes}]})


@pytest.mark.parametrize(
    ("line", "looks"),
    [
        (_otlp_export((None, "(APIServer pid=1) INFO 12-02 09:51:57 [core.py:1] Something new")), True),
        (_otlp_export(("vllm.v1.engine.core", "Something new")), True),
        (_otlp_export(("httpx", "HTTP Request: GET /health"), (None, "plain text")), False),
        (_otlp_export(("httpx", "HTTP Request: GET /health"), ("lmcache.v1.cache_engine", "Something new")), True),
        ('{"resourceLogs": []}', False),
        ('{"log": "\\u001b[32mINFO 12-02 09:51:57 [core.py:1] Something new\\n"}', True),
    ],
)
def test_a_json_line_looks_like_a_log_line_when_one_of_its_records_does(line: str, looks: bool) -> None:
    """``--format unmatched`` lists a JSON line whose record (any record of an OTLP export) is one of vLLM's,
    LMCache's or uvicorn's, colour codes and all."""
    assert looks_like_a_log_line(line) is looks
