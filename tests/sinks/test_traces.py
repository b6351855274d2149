"""Traces built from real log sequences, collected by the SDK's in-memory exporter."""

from __future__ import annotations

import json
import math
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes
from opentelemetry.trace import SpanKind, StatusCode
from prometheus_client.openmetrics.exposition import generate_latest as openmetrics

from agent.exposition import exposition
from agent.sinks.otlp import Tracing
from agent.sinks.prometheus import registry_for
from agent.sinks.stats import ServerStats
from agent.sinks.traces import TraceBuilder
from parsers import Clock, LogStream
from tests.support.lines import mp_connector_line

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"
REFERENCE = datetime(2026, 11, 30, tzinfo=UTC)


class Run:
    """Lines -> stream -> stats and trace builder -> SDK spans, as the agent wires them."""

    def __init__(self, tz=UTC, ratio: float = 1.0, now=None, **limits) -> None:
        self.exporter = InMemorySpanExporter()
        self.tracing = Tracing(self.exporter, sampling_ratio=ratio, wait_when_full=True)
        self.clock = Clock(tz, REFERENCE)
        self.stats = ServerStats("demo", self.clock)
        self.builder = TraceBuilder(
            self.stats,
            self.clock,
            self.tracing.writer("demo", lambda: self.stats.model or "tiny"),
            now=now,
            sampled=self.tracing.sampled,
            **limits,
        )
        self.stream = LogStream()

    def feed(self, lines) -> Run:
        for line in lines:
            for event in self.stream.feed(line.rstrip("\n")):
                self.stats.observe(event)
                self.builder.observe(event)
        return self

    def spans(self) -> list[ReadableSpan]:
        # Requests ended by id wait a moment for their access line; the log has ended.
        self.builder.release_held(0.0, everything=True)
        self.builder.release_lingering(everything=True)
        self.tracing.flush()
        return list(self.exporter.get_finished_spans())

    def roots(self) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == "vllm.request"]

    def children(self, root: ReadableSpan) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.parent is not None and s.parent.span_id == root.context.span_id]


def sample_lines() -> list[str]:
    return (SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6.log").read_text(encoding="utf-8").splitlines()


def ns(text: str, tz=UTC) -> int:
    when = datetime.fromisoformat(text)
    return int(when.replace(tzinfo=when.tzinfo or tz).timestamp() * 1_000_000) * 1000


def test_numbers_no_span_can_carry_are_left_out_and_every_span_is_written(caplog: pytest.LogCaptureFixture) -> None:
    """Costs, sizes and client ports far past what any transfer or socket has (a size of 10**400 GB is an
    infinite float; a cost of years would start a span before 1970): the spans are written without them."""
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

    huge = "9" * 400
    lines = [re.sub(r"\b(cost |size: )[\d.]+", lambda m: m.group(1) + huge, line) for line in sample_lines()]
    lines = [re.sub(r'(\d+\.\d+\.\d+\.\d+):\d+ - "', r"\1:" + "9" * 30 + ' - "', line) for line in lines]
    assert sum(huge in line for line in lines) >= 3 and sum("9" * 30 + " - " in line for line in lines) >= 3
    run = Run().feed(lines)
    roots = run.roots()
    assert len(roots) == 5
    encode_spans(run.spans()).SerializeToString()
    assert "Failed to encode" not in caplog.text  # the exporter's complaint about an attribute out of range
    for span in run.spans():
        assert "lmcache.size_bytes" not in span.attributes and "client.port" not in span.attributes
        assert span.start_time > 0 and span.end_time >= span.start_time
    assert all(root.attributes["client.address"] for root in roots)


def test_real_vllm_lmcache_log_gives_one_trace_per_request() -> None:
    run = Run().feed(sample_lines())
    roots = run.roots()
    assert len(roots) == 5
    assert len({r.context.trace_id for r in roots}) == 5
    first = roots[0]
    assert first.kind is SpanKind.SERVER
    a = first.attributes
    # Received request logs the client's id, Added request and LMCache the engine's suffixed one.
    assert a["gen_ai.response.id"] == "chatcmpl-9769c3ba5336ea52"
    assert a["vllm.request.id"] == "chatcmpl-9769c3ba5336ea52-bb72d9b8"
    assert a["gen_ai.operation.name"] == "chat"
    assert a["gen_ai.provider.name"] == "vllm"
    assert a["gen_ai.request.model"] == "/srv/models/tiny-llama"
    assert a["gen_ai.request.max_tokens"] == 10
    assert a["gen_ai.usage.input_tokens"] == 493
    assert a["gen_ai.usage.cache_read.input_tokens"] == 0
    assert a["http.response.status_code"] == 200 and a["http.route"] == "/v1/chat/completions"
    assert a["kvwatch.end_matched"] == "access" and a["kvwatch.start_seen"] is True
    # The log's own times: Received at 05:40:55 (whole seconds), the store at 05:40:55,464.
    assert first.start_time == ns("2026-11-25T05:40:55")
    children = {s.name: s for s in run.children(first)}
    assert set(children) == {"lmcache.lookup", "lmcache.store"}
    assert children["lmcache.lookup"].start_time == ns("2026-11-25T05:40:55.453")
    store = children["lmcache.store"]
    assert store.end_time == ns("2026-11-25T05:40:55.464")
    assert store.end_time - store.start_time == 270_800  # cost 0.2708 ms
    assert store.attributes["lmcache.stored_tokens"] == 256
    assert first.end_time >= store.end_time
    second = roots[1].attributes
    # vLLM's own prefix cache held 384 tokens, LMCache found 256: the prefill computed neither.
    assert second["gen_ai.usage.cache_read.input_tokens"] == 384
    assert second["lmcache.hit_tokens"] == 256
    assert second["vllm.prefix_cache.hit_tokens"] == 384
    assert pytest.approx(second["lmcache.hit_ratio"]) == 256 / 493
    resource = first.resource.attributes
    assert resource["service.name"] == "kvwatch"
    assert resource["kvwatch.server"] == "demo"
    assert resource["vllm.model"] == "/srv/models/tiny-llama"
    assert resource["host.name"]


def test_no_prompt_text_reaches_a_span() -> None:
    secret = "the user's private question about invoices"
    lines = [
        f"INFO 05-22 02:20:59 async_llm_engine.py:524] Received request cmpl-77: prompt: {secret!r}, "
        "params: SamplingParams(n=1, max_tokens=16), prompt_token_ids: [1, 2, 3, 4], lora_request: None.",
        "INFO 05-22 02:20:59 async_llm_engine.py:211] Added request cmpl-77.",
        "INFO 05-22 02:21:01 async_llm_engine.py:120] Finished request cmpl-77.",
    ]
    run = Run().feed(lines)
    (root,) = run.roots()
    assert root.attributes["gen_ai.usage.input_tokens"] == 4
    assert root.attributes["gen_ai.request.max_tokens"] == 16
    dumped = json.dumps([dict(s.attributes) for s in run.spans()] + [dict(root.resource.attributes)])
    assert "invoices" not in dumped and "private" not in dumped


def lookup(stamp: str, rid: str, total: int, hit: int, need: int = 0, computed: int = 0) -> str:
    return (
        f"[{stamp}] LMCache INFO: Reqid: {rid}, Total tokens {total}, Inference Engine computed tokens: {computed}, "
        f"LMCache hit tokens: {hit}, need to load: {need} (vllm_v1_adapter.py:1476:lmcache.integration.vllm.x)"
    )


def test_interleaved_concurrent_requests_are_kept_apart() -> None:
    # V0 style: every request ends by its id, in another order than it began.
    lines = [
        "INFO 10-02 10:00:00 [logger.py:39] Received request cmpl-a-0: params: SamplingParams(max_tokens=5).",
        "INFO 10-02 10:00:00 [logger.py:39] Received request cmpl-b-0: params: SamplingParams(max_tokens=7).",
        "INFO 10-02 10:00:00 [async_llm_engine.py:211] Added request cmpl-a-0.",
        "INFO 10-02 10:00:00 [async_llm_engine.py:211] Added request cmpl-b-0.",
        lookup("2026-10-02 10:00:00,100", "cmpl-b-0", 300, 256, 256),
        lookup("2026-10-02 10:00:00,120", "cmpl-a-0", 900, 0),
        "[2026-10-02 10:00:00,300] LMCache INFO: [req_id=cmpl-b-0] Retrieved 256 out of 256 required tokens "
        "(from 300 total tokens). size: 0.0312 gb, cost 2.0000 ms, throughput: 15.6000 GB/s;",
        "INFO 10-02 10:00:01 [async_llm_engine.py:120] Finished request cmpl-b-0.",
        'INFO:     127.0.0.1:5000 - "POST /v1/completions HTTP/1.1" 200 OK',
        "INFO 10-02 10:00:04 [async_llm_engine.py:120] Finished request cmpl-a-0.",
        'INFO:     127.0.0.1:5001 - "POST /v1/completions HTTP/1.1" 200 OK',
    ]
    run = Run().feed(lines)
    roots = {r.attributes["gen_ai.response.id"]: r for r in run.roots()}
    assert set(roots) == {"cmpl-a-0", "cmpl-b-0"}
    a, b = roots["cmpl-a-0"], roots["cmpl-b-0"]
    assert a.attributes["gen_ai.request.max_tokens"] == 5 and b.attributes["gen_ai.request.max_tokens"] == 7
    assert a.attributes["lmcache.hit_tokens"] == 0 and b.attributes["lmcache.hit_tokens"] == 256
    assert [s.name for s in run.children(b)] == ["lmcache.lookup", "lmcache.retrieve"]
    assert [s.name for s in run.children(a)] == ["lmcache.lookup"]
    assert b.end_time == ns("2026-10-02T10:00:01") and a.end_time == ns("2026-10-02T10:00:04")
    assert a.attributes["kvwatch.end_matched"] == b.attributes["kvwatch.end_matched"] == "id"
    assert b.attributes["lmcache.retrieved_tokens"] == 256
    # The access lines belonged to the requests already ended by id, and lent them their status.
    assert a.attributes["client.port"] == 5001 and b.attributes["client.port"] == 5000
    assert run.builder.open_requests == 0 and run.builder.held_count == 0


def test_v1_requests_end_at_their_access_lines_first_in_first_out() -> None:
    lines = [
        "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-aaa-11111111.",
        "(APIServer pid=1) INFO 11-25 05:40:56 [async_llm.py:578] Added request chatcmpl-bbb-22222222.",
        lookup("2026-11-25 05:40:56,500", "chatcmpl-aaa-11111111", 100, 0),
        'INFO:     127.0.0.1:1 - "GET /health HTTP/1.1" 200 OK',
        lookup("2026-11-25 05:40:57,000", "chatcmpl-bbb-22222222", 100, 0),
        'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        lookup("2026-11-25 05:40:58,000", "chatcmpl-ccc-33333333", 100, 0),
        'INFO:     127.0.0.1:3 - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error',
    ]
    run = Run().feed(lines)
    roots = {r.attributes["vllm.request.id"]: r for r in run.roots()}
    assert set(roots) == {"chatcmpl-aaa-11111111", "chatcmpl-bbb-22222222"}
    first, second = roots["chatcmpl-aaa-11111111"], roots["chatcmpl-bbb-22222222"]
    assert first.attributes["client.port"] == 2 and first.status.status_code is StatusCode.UNSET
    # A replay has no clock but the log's: the stamp-less access line takes the latest time seen.
    assert first.end_time == ns("2026-11-25T05:40:57")
    assert second.attributes["http.response.status_code"] == 500
    assert second.status.status_code is StatusCode.ERROR and second.attributes["error.type"] == "500"
    # Only the engine's id was seen: the client's id is derived from it.
    assert second.attributes["gen_ai.response.id"] == "chatcmpl-bbb"
    assert run.builder.open_requests == 1  # ccc has had no access line yet


def test_a_preempted_request_looked_up_twice_keeps_both_lookups() -> None:
    rid = "chatcmpl-p-0123abcd"
    lines = [
        lookup("2026-10-01 12:00:01,000", rid, 600, 0),
        lookup("2026-10-01 12:00:03,000", rid, 610, 512, 512),
        "(APIServer pid=1) INFO 10-01 12:00:04 [async_llm.py:922] Aborted request(s) " + rid + ".",
        "(APIServer pid=1) INFO 10-01 12:00:04 [async_llm.py:783] Request chatcmpl-p aborted.",
    ]
    run = Run().feed(lines)
    (root,) = run.roots()
    lookups = sorted(run.children(root), key=lambda s: s.start_time)
    assert [s.attributes["lmcache.attempt"] for s in lookups] == [1, 2]
    assert [s.attributes["lmcache.hit_tokens"] for s in lookups] == [0, 512]
    assert root.attributes["lmcache.lookups"] == 2
    assert root.attributes["gen_ai.usage.cache_read.input_tokens"] == 0  # the first lookup decided the prefill
    assert root.status.status_code is StatusCode.ERROR
    assert root.attributes["error.type"] == "aborted" and root.attributes["vllm.outcome"] == "aborted"
    # "Request chatcmpl-p aborted." came after the engine's abort: it starts no second trace.
    assert len(run.roots()) == 1 and run.builder.unmatched_ends == 0


def test_late_lines_of_an_engine_id_joined_after_the_clients_start_no_second_trace() -> None:
    # The front end names the client's id, the engine and LMCache its own (client id + "-<8 hex>"); a store
    # LMCache logs after the access line ended the request belongs to it, under either id.
    engine = "chatcmpl-late-5a5a5a5a"
    lines = [
        "(APIServer pid=1) INFO 11-25 05:40:55 [logger.py:49] Received request chatcmpl-late: params: "
        "SamplingParams(max_tokens=8), prompt_token_ids: None.",
        "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request " + engine + ".",
        lookup("2026-11-25 05:40:56,000", engine, 300, 0),
        'INFO:     127.0.0.1:7 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        f"[2026-11-25 05:40:57,000] LMCache INFO: [req_id={engine}] Stored 300 out of total 300 tokens. "
        "size: 0.0367 gb, cost 2.0000 ms, throughput: 18.3500 GB/s",
        lookup("2026-11-25 05:40:57,500", "chatcmpl-late", 300, 256),
    ]
    run = Run().feed(lines)
    (root,) = run.roots()
    assert root.attributes["gen_ai.response.id"] == "chatcmpl-late"
    assert root.attributes["vllm.request.id"] == engine
    assert run.builder.open_requests == 0


def test_failed_requests_are_errors_with_their_reason() -> None:
    lines = [
        "(APIServer pid=1) INFO 11-20 09:00:00 [request_logger.py:65] Received request chatcmpl-f: "
        "params: SamplingParams(max_tokens=4), lora_request: None.",
        "(APIServer pid=1) INFO 11-20 09:00:01 [async_llm.py:789] Request chatcmpl-f failed (engine dead).",
    ]
    (root,) = Run().feed(lines).roots()
    assert root.status.status_code is StatusCode.ERROR and root.attributes["error.type"] == "engine_dead"


def test_requests_failed_for_want_of_their_kv_end_with_that_reason_and_rescheduled_ones_go_on() -> None:
    lines = [
        "(APIServer pid=1) INFO 11-20 09:00:00 [async_llm.py:552] Added request chatcmpl-a-1a2b3c4d.",
        "(APIServer pid=1) INFO 11-20 09:00:00 [async_llm.py:552] Added request chatcmpl-b-5e6f7a8b.",
        "(EngineCore_DP0 pid=2) WARNING 11-20 09:00:01 [scheduler.py:1531] Recovered from KV load failure: "
        "1 request(s) rescheduled (256 tokens affected).",
        "(EngineCore_DP0 pid=2) ERROR 11-20 09:00:02 [scheduler.py:1522] Failing 1 request(s) due to KV load failure "
        "(failure_policy=fail, 512 tokens affected). Request IDs: {'chatcmpl-a-1a2b3c4d'}",
    ]
    run = Run().feed(lines)
    assert run.builder.open_requests == 1  # b, rescheduled, goes on
    (root,) = run.roots()
    assert root.attributes["vllm.request.id"] == "chatcmpl-a-1a2b3c4d"
    assert root.status.status_code is StatusCode.ERROR and root.attributes["error.type"] == "kv_load_failure"
    text = exposition(registry_for(lambda: [run.stats]))[0].decode()
    for line in (
        'kvwatch_vllm_kv_load_failures_total{policy="recompute",server="demo"} 1.0',
        'kvwatch_vllm_kv_load_failures_total{policy="fail",server="demo"} 1.0',
        'kvwatch_vllm_kv_load_failed_tokens_total{policy="recompute",server="demo"} 256.0',
        'kvwatch_vllm_kv_load_failed_tokens_total{policy="fail",server="demo"} 512.0',
    ):
        assert line in text.splitlines()


def test_a_request_begun_before_kvwatch_looked_is_marked() -> None:
    lines = [
        # Its Received, Added and lookup lines came before the part of the log we read.
        "[2026-11-25 05:40:55,464] LMCache INFO: [req_id=chatcmpl-old-bb72d9b8] Stored 256 out of total 256 "
        "tokens. size: 0.0002 GB, cost 0.2708 ms, throughput: 0.9017 GB/s; "
        "offload_time: 0.2031 ms, put_time: 0.0351 ms",
        'INFO:     127.0.0.1:56058 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        "INFO 10-02 10:00:00 async_llm_engine.py:120] Finished request cmpl-never-seen-0.",
    ]
    run = Run().feed(lines)
    (root,) = run.roots()
    assert root.attributes["kvwatch.start_seen"] is False
    assert root.start_time == ns("2026-11-25T05:40:55.464") - 270_800
    assert run.builder.unmatched_ends == 1


def test_store_start_is_an_event_of_its_store() -> None:
    rid = "chatcmpl-s-0a0b0c0d"
    lines = [
        lookup("2026-01-01 00:00:00,000", rid, 512, 0),
        f"[2026-01-01 00:00:00,010] LMCache INFO: Storing KV cache for 512 out of 512 tokens "
        f"(skip_leading_tokens=0) for request {rid} (vllm_v1_adapter.py:1059:lmcache.integration.vllm.x)",
        f"[2026-01-01 00:00:00,020] LMCache INFO: [req_id={rid}] Stored 512 out of total 512 tokens. size: 0.0004 GB,"
        " cost 1.0000 ms, throughput: 0.4 GB/s; offload_time: 0.5 ms, put_time: 0.1 ms",
    ]
    run = Run().feed(lines)
    run.builder.close()
    (root,) = run.roots()
    (store,) = [s for s in run.children(root) if s.name == "lmcache.store"]
    (event,) = store.events
    assert event.name == "lmcache.store_start" and event.attributes["lmcache.tokens"] == 512
    assert store.start_time == ns("2026-01-01T00:00:00.010")
    # The log ended before the request did: ended unfinished, status UNSET, and why.
    assert root.status.status_code is StatusCode.UNSET
    assert root.attributes["kvwatch.incomplete"] == "log_ended"
    assert run.builder.evicted["log_ended"] == 1


def test_open_table_is_capped_and_idle_requests_expire() -> None:
    clock = [1000.0]
    run = Run(now=lambda: clock[0], max_open=3, idle_timeout=60)
    run.feed(lookup(f"2026-01-01 00:00:0{i},000", f"chatcmpl-r{i}-0000000{i}", 10, 0) for i in range(5))
    assert run.builder.open_requests == 3
    assert run.builder.evicted["table_full"] == 2
    evicted = {r.attributes["vllm.request.id"]: r for r in run.roots()}
    assert set(evicted) == {"chatcmpl-r0-00000000", "chatcmpl-r1-00000001"}
    assert all(r.attributes["kvwatch.incomplete"] == "table_full" for r in evicted.values())
    assert run.builder.expire(1059.0) == 0
    clock[0] = 1100.0
    assert run.builder.expire(1100.0) == 3
    assert run.builder.open_requests == 0 and run.builder.evicted["idle_timeout"] == 3


def test_a_server_restart_ends_the_previous_runs_requests() -> None:
    lines = [
        lookup("2026-01-01 00:00:00,000", "chatcmpl-x-12345678", 10, 0),
        "INFO 01-01 00:05:00 [api_server.py:1] vLLM API server version 0.32.0",
    ]
    run = Run().feed(lines)
    (root,) = run.roots()
    assert root.attributes["kvwatch.incomplete"] == "server_restart"


def test_the_end_of_the_server_s_process_systemd_logged_ends_its_requests() -> None:
    """An OOM kill leaves no line of the server's: systemd's word that its main process ended ends the requests
    it had."""
    lines = [
        lookup("2026-01-01 00:00:00,000", "chatcmpl-x-12345678", 10, 0),
        "Jan 01 00:00:04 gpu-1 systemd[1]: fwupd.service: Main process exited, code=killed, status=9/KILL",
        "Jan 01 00:00:05 gpu-1 systemd[1]: vllm.service: Main process exited, code=killed, status=9/KILL",
    ]
    run = Run()
    run.stats.service_unit = "vllm.service"  # (a journal_unit follow of it)
    run.feed(lines[:2])
    assert run.builder.open_requests == 1  # another unit's end is not the server's
    run.feed(lines[2:])
    assert run.builder.open_requests == 0 and run.builder.evicted["server_stopped"] == 1
    (root,) = run.roots()
    assert root.attributes["kvwatch.incomplete"] == "server_stopped"


def test_a_server_restarted_without_lmcache_has_its_requests_ended_by_their_access_lines() -> None:
    """What the log showed of one run (LMCache's lookups, ids that end requests) is not the next run's: restarted
    without LMCache, an access line ends the request it answers (not, 15 minutes later, the idle timeout)."""
    lines = [
        "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-q1-11111111.",
        lookup("2026-11-25 05:40:55,100", "chatcmpl-q1-11111111", 100, 0),
        'INFO:     127.0.0.1:1 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        "(APIServer pid=2) INFO 11-25 06:00:00 [api_server.py:1] vLLM API server version 0.32.0",
        "(APIServer pid=2) INFO 11-25 06:01:00 [async_llm.py:578] Added request chatcmpl-q2-22222222.",
        'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    ]
    run = Run().feed(lines)
    assert run.builder.open_requests == 0
    roots = {r.attributes["vllm.request.id"]: r for r in run.roots()}
    assert roots["chatcmpl-q1-11111111"].attributes["client.port"] == 1
    assert roots["chatcmpl-q2-22222222"].attributes["client.port"] == 2
    assert "kvwatch.incomplete" not in roots["chatcmpl-q2-22222222"].attributes


def test_server_time_zone_is_applied_to_year_less_stamps() -> None:
    tz = ZoneInfo("America/New_York")
    lines = [
        "INFO 07-04 09:30:00 [async_llm_engine.py:211] Added request cmpl-tz-0.",
        "INFO 07-04 09:30:02 [async_llm_engine.py:120] Finished request cmpl-tz-0.",
    ]
    (root,) = Run(tz=tz).feed(lines).roots()
    assert root.start_time == ns("2026-07-04T13:30:00+00:00")
    assert root.end_time - root.start_time == 2_000_000_000


def test_tensor_parallel_ranks_count_tokens_once() -> None:
    lines = [
        f"(Worker_TP{rank} pid=81{rank}) [2025-11-02 08:00:00,100] LMCache INFO: [req_id=cmpl-77-0] Retrieved 512 "
        "out of 512 required tokens (from 700 total tokens). size: 0.0625 gb, cost 3.1000 ms, throughput: 20.16 GB/s;"
        for rank in (0, 1)
    ] + ["INFO 11-02 08:00:01 async_llm_engine.py:120] Finished request cmpl-77-0."]
    run = Run().feed(lines)
    (root,) = run.roots()
    assert root.attributes["lmcache.retrieved_tokens"] == 512
    assert sorted(s.attributes["lmcache.rank"] for s in run.children(root)) == [0, 1]


def test_a_load_lmcache_completed_in_part_is_on_the_request_once() -> None:
    lines = [
        "(EngineCore_DP0 pid=7) [2026-01-27 01:40:09,300] LMCache INFO: Reqid: chatcmpl-a45f, Total tokens 11095, "
        "LMCache hit tokens: 4096, need to load: 2048 (vllm_v1_adapter.py:1550:lmcache.integration.vllm.x)",
        *(
            f"(Worker_TP{rank} pid=8{rank}) [2026-01-27 01:40:09,403] LMCache WARNING: Request chatcmpl-a45f failed to "
            "load 256 tokens across 16 blocks (vllm_v1_adapter.py:1125:lmcache.integration.vllm.vllm_v1_adapter)"
            for rank in (0, 1)
        ),
        "(APIServer pid=6) INFO 01-27 01:40:11 [loggers.py:1] Finished request chatcmpl-a45f.",
    ]
    (root,) = Run().feed(lines).roots()
    assert root.attributes["lmcache.load_failed_tokens"] == 256
    assert root.attributes["lmcache.hit_tokens"] == 4096


def test_a_lookup_lmcache_gave_up_on_is_on_the_request() -> None:
    """LMCache's asynchronous lookup client past its lookup_timeout_ms: it says so, then the lookup line says 0."""
    timed_out = (
        "(EngineCore_DP0 pid=7) [2026-01-27 01:40:12,300] LMCache WARNING: Request chatcmpl-a45f is still waiting "
        "for async lookup after 3 seconds, returning 0 lmcache cached tokens so vllm can recompute "
        "(lmcache_async_lookup_client.py:178:lmcache.v1.lookup_client.lmcache_async_lookup_client)"
    )
    lines = [
        "(APIServer pid=6) INFO 01-27 01:40:09 [async_llm.py:578] Added request chatcmpl-a45f.",
        timed_out,
        "(EngineCore_DP0 pid=7) " + lookup("2026-01-27 01:40:12,301", "chatcmpl-a45f", 11095, 0),
        "(APIServer pid=6) INFO 01-27 01:40:15 [loggers.py:1] Finished request chatcmpl-a45f.",
    ]
    (root,) = Run().feed(lines).roots()
    assert root.attributes["lmcache.lookup_timed_out"] is True
    assert root.attributes["lmcache.hit_tokens"] == 0
    (plain,) = Run().feed([lines[0], *lines[2:]]).roots()
    assert "lmcache.lookup_timed_out" not in plain.attributes


def test_hit_ratio_buckets_carry_sampled_trace_ids_as_exemplars() -> None:
    run = Run().feed(sample_lines())
    trace_ids = {f"{r.context.trace_id:032x}" for r in run.roots()}
    registry = registry_for(lambda: [run.stats])
    text = openmetrics(registry).decode()
    # /metrics writes them byte for byte so (its OpenMetrics skips the library's per-character escaping).
    assert exposition(registry, "application/openmetrics-text; version=1.0.0")[0] == text.encode()
    marked = [
        line for line in text.splitlines() if line.startswith("kvwatch_lmcache_lookup_hit_ratio_bucket") and "#" in line
    ]
    assert len(marked) == 2  # the misses' bucket (0) and the hits' (256 of 493)
    for line in marked:
        assert line.split('trace_id="', 1)[1][:32] in trace_ids
    unsampled = Run(ratio=0.0).feed(sample_lines())
    assert unsampled.roots() == []
    assert unsampled.stats.hit_ratio.exemplars is None  # no exemplar may point at a trace never sent


def test_gen_ai_names_exist_in_the_pinned_semantic_conventions() -> None:
    run = Run().feed(sample_lines())
    known = {v for k, v in vars(gen_ai_attributes).items() if k.startswith("GEN_AI_") and isinstance(v, str)}
    used = {k for s in run.spans() for k in s.attributes if k.startswith("gen_ai.")}
    assert used and used <= known, used - known
    # The current names, not the older ones vLLM's own span still uses.
    assert "gen_ai.usage.prompt_tokens" not in used


def test_logged_outputs_end_requests_by_id_streamed_or_not() -> None:
    h = "(APIServer pid=1) INFO 11-25 05:41:{:02d} [request_logger.py:80] "
    lines = [
        h.format(0) + "Received request chatcmpl-w: params: SamplingParams(max_tokens=8), lora_request: None.",
        h.format(0) + "Generated response chatcmpl-w: output: 'ok', output_token_ids: [7], finish_reason: stop",
        'INFO:     127.0.0.1:7000 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        # From here on the log is known to end requests by id.
        h.format(0) + "Received request chatcmpl-s: params: SamplingParams(max_tokens=8), lora_request: None.",
        h.format(0) + "Added request chatcmpl-s-aaaaaaaa.",
        # A stream's access line comes when its headers go out, long before its end.
        'INFO:     127.0.0.1:7001 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        h.format(1) + "Received request chatcmpl-n: params: SamplingParams(max_tokens=8), lora_request: None.",
        h.format(1) + "Added request chatcmpl-n-bbbbbbbb.",
        h.format(2) + "Generated response chatcmpl-s (streaming delta): output: 'A', output_token_ids: [11], "
        "finish_reason: None",
        h.format(3)
        + "Generated response chatcmpl-n: output: 'done', output_token_ids: [1, 2, 3], finish_reason: length",
        'INFO:     127.0.0.1:7002 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        h.format(5) + "Generated response chatcmpl-s (streaming delta): output: 'B', output_token_ids: [12, 13], "
        "finish_reason: stop",
        h.format(6) + "Generated response chatcmpl-s (streaming complete): output: 'AB', output_token_ids: None, "
        "finish_reason: streaming_complete",
    ]
    run = Run().feed(lines)
    roots = {r.attributes["gen_ai.response.id"]: r for r in run.roots()}
    assert roots["chatcmpl-w"].attributes["client.port"] == 7000
    streamed, whole = roots["chatcmpl-s"], roots["chatcmpl-n"]
    assert streamed.end_time == ns("2026-11-25T05:41:06") and whole.end_time == ns("2026-11-25T05:41:03")
    assert streamed.attributes["gen_ai.usage.output_tokens"] == 3
    assert streamed.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert whole.attributes["gen_ai.usage.output_tokens"] == 3
    assert whole.attributes["gen_ai.response.finish_reasons"] == ("length",)
    assert streamed.attributes["client.port"] == 7001 and whole.attributes["client.port"] == 7002
    assert streamed.attributes["kvwatch.end_matched"] == whole.attributes["kvwatch.end_matched"] == "id"
    assert run.builder.open_requests == 0


def test_without_access_lines_a_request_ended_by_id_is_written_after_a_moment() -> None:
    clock = [5000.0]
    run = Run(now=lambda: clock[0])
    run.feed(
        [
            "INFO 10-02 10:00:00 async_llm_engine.py:211] Added request cmpl-q-0.",
            "INFO 10-02 10:00:03 async_llm_engine.py:120] Finished request cmpl-q-0.",
        ]
    )
    run.tracing.flush()
    assert len(run.exporter.get_finished_spans()) == 0
    assert run.builder.held_count == 1  # waiting for an access line that may follow
    clock[0] += 3.0
    run.builder.expire(clock[0])
    run.tracing.flush()
    (root,) = [s for s in run.exporter.get_finished_spans() if s.name == "vllm.request"]
    assert "http.response.status_code" not in root.attributes
    assert root.end_time - root.start_time == 3_000_000_000


def test_with_lmcache_an_access_line_closes_only_a_request_the_engine_has_run() -> None:
    lines = [
        "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-q1-11111111.",
        lookup("2026-11-25 05:40:55,100", "chatcmpl-q1-11111111", 100, 0),
        "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-q2-22222222.",
        # q2 has not been scheduled yet: this answer is q1's.
        'INFO:     127.0.0.1:1 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
        # A refusal: not one of the requests the engine took.
        'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 400 Bad Request',
        lookup("2026-11-25 05:40:56,000", "chatcmpl-q2-22222222", 100, 0),
        'INFO:     127.0.0.1:3 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
    ]
    run = Run().feed(lines)
    roots = {r.attributes["vllm.request.id"]: r for r in run.roots()}
    assert roots["chatcmpl-q1-11111111"].attributes["client.port"] == 1
    assert roots["chatcmpl-q2-22222222"].attributes["client.port"] == 3
    # q2's lookup came after the first answer, yet it belongs to q2's trace.
    assert len(run.children(roots["chatcmpl-q2-22222222"])) == 1


def test_otlp_json_encoding_matches_the_sdks_protobuf_encoding() -> None:
    import base64

    from google.protobuf.json_format import Parse
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from agent.sinks.otlp import otlp_json

    spans = Run().feed(sample_lines()).spans()
    document = otlp_json(spans)
    # OTLP/JSON writes ids in hex; protobuf's own JSON mapping wants base64.
    for resource_spans in document["resourceSpans"]:
        for scope_spans in resource_spans["scopeSpans"]:
            for span in scope_spans["spans"]:
                for key in ("traceId", "spanId", "parentSpanId"):
                    if key in span:
                        span[key] = base64.b64encode(bytes.fromhex(span[key])).decode()
    parsed = Parse(json.dumps(document), ExportTraceServiceRequest())
    assert parsed == encode_spans(spans)


def test_mp_server_prefetch_is_a_child_span_of_its_request() -> None:
    # LMCache's multiprocess server names vLLM's engine-side id; the front end's id joins them.
    run = Run().feed(
        [
            "(APIServer pid=1) INFO 09-01 09:50:45 [logger.py:49] Received request chatcmpl-8482be01b733726a: "
            "params: SamplingParams(n=1, max_tokens=16), lora_request: None.",
            "(APIServer pid=1) INFO 09-01 09:50:45 [async_llm.py:382] Added request "
            "chatcmpl-8482be01b733726a-acfe0b55.",
            "[2026-09-01 09:50:45,418] LMCache INFO: Prefetch request completed (L1+L2): 12/44 retained keys "
            "(12 L1, 0 L2) in 0.6 ms (external_request_id=chatcmpl-8482be01b733726a-acfe0b55, "
            "prefetch_request_id=-1) (storage_manager.py:726:lmcache.v1.distributed.storage_manager)",
            "(APIServer pid=1) INFO 09-01 09:50:46 [loggers.py:271] Aborted request chatcmpl-8482be01b733726a.",
        ]
    )
    [root] = run.roots()
    [prefetch] = [s for s in run.children(root) if s.name == "lmcache.prefetch"]
    assert prefetch.attributes["lmcache.prefetch.hit_keys"] == 12
    assert prefetch.attributes["lmcache.prefetch.requested_keys"] == 44
    assert prefetch.attributes["lmcache.prefetch.l1_keys"] == 12
    assert prefetch.end_time - prefetch.start_time == 600_000  # 0.6 ms
    assert root.attributes["lmcache.prefetch.hit_keys"] == 12


def test_a_trace_id_in_the_log_puts_the_request_under_the_clients_trace() -> None:
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    record = {
        "timestamp": "2026-09-01T10:00:00.123456Z",
        "body": "Added request chatcmpl-a269fdcb7c6ce890-a8a65d16.",
        "severity_text": "INFO",
        "service.name": "vllm",
        "trace_id": trace_id,
        "span_id": span_id,
    }
    run = Run().feed(
        [
            json.dumps(record),
            '(APIServer pid=1) INFO:     10.0.0.1:5000 - "POST /v1/chat/completions HTTP/1.1" 200 OK',
            json.dumps(record | {"body": "Finished request chatcmpl-a269fdcb7c6ce890-a8a65d16.", "trace_id": "0" * 32}),
        ]
    )
    [root] = run.roots()
    assert f"{root.context.trace_id:032x}" == trace_id
    assert root.parent is not None and root.parent.is_remote
    assert f"{root.parent.span_id:016x}" == span_id
    # A request without trace context is a root of its own.
    plain = Run().feed(
        [
            "INFO 09-01 10:00:00 [async_llm.py:382] Added request chatcmpl-x-1a2b3c4d.",
            "INFO 09-01 10:00:01 [async_llm.py:382] Finished request chatcmpl-x-1a2b3c4d.",
        ]
    )
    [own] = plain.roots()
    assert own.parent is None and f"{own.context.trace_id:032x}" != trace_id


def test_a_trace_id_in_a_text_log_s_fields_puts_the_request_under_the_clients_trace() -> None:
    """OpenTelemetry's logging instrumentation's default format prints the ids in brackets before the message."""
    trace_id, span_id = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    fields = f"[trace_id={trace_id} span_id={span_id} resource.service.name=vllm trace_sampled=True]"
    run = Run().feed(
        [
            f"2026-09-01 10:00:00,123 INFO [vllm.v1.engine.async_llm] [async_llm.py:382] {fields} - "
            "Added request chatcmpl-a269fdcb7c6ce890-a8a65d16.",
            "2026-09-01 10:00:00,420 INFO [uvicorn.access] [httptools_impl.py:476] [trace_id=0 span_id=0 resource"
            '.service.name=vllm trace_sampled=False] - 10.0.0.1:5000 - "POST /v1/chat/completions HTTP/1.1" 200',
        ]
    )
    [root] = run.roots()
    assert f"{root.context.trace_id:032x}" == trace_id
    assert root.parent is not None and f"{root.parent.span_id:016x}" == span_id


def _mp_request(name: str, prefetch: bool = False, ends: bool = True) -> list[str]:
    """One chat request of vLLM 0.32 with LMCache's MP connector, as its log and the LMCache server's show it
    (tests/fixtures/samples/vllm-0.32.0-cpu-lmcache-0.5.6-mp.log); a prefetch line only when the server hit."""
    lines = [
        f"(APIServer pid=1) INFO 12-02 06:49:42 [request_logger.py:65] Received request chatcmpl-{name}: "
        "params: SamplingParams(n=1, max_tokens=4), lora_request: None.",
        f"(APIServer pid=1) INFO 12-02 06:49:42 [async_llm.py:578] Added request chatcmpl-{name}-b76bdc55.",
    ]
    if prefetch:
        lines.append(
            "[2026-12-02 06:49:42,418] LMCache INFO: Prefetch request completed (L1+L2): 11/11 retained keys "
            f"(11 L1, 0 L2) in 0.6 ms (external_request_id=chatcmpl-{name}-b76bdc55, prefetch_request_id=-1) "
            "(storage_manager.py:726:lmcache.v1.distributed.storage_manager)"
        )
    if ends:
        lines.append('INFO:     127.0.0.1:46144 - "POST /v1/chat/completions HTTP/1.1" 200 OK')
    return lines


MP_LOOKUPS = (
    "(APIServer pid=1) INFO 12-02 06:49:43 [metrics.py:103] KV Transfer metrics: LMCache MP lookup count=1, "
    "LMCache MP lookup avg latency (ms)=15.553"
)


def test_an_mp_miss_says_zero_hit_tokens_only_once_vllm_showed_its_connector_asked() -> None:
    run = Run().feed(
        [
            *_mp_request("before"),  # no KV Transfer metrics line yet: unknown, not a miss
            MP_LOOKUPS,
            *_mp_request("hit", prefetch=True),
            *_mp_request("miss"),
            *_mp_request("unfinished", ends=False),
        ]
    )
    roots = {s.attributes["gen_ai.response.id"]: s for s in run.roots()}
    assert set(roots) == {"chatcmpl-before", "chatcmpl-hit", "chatcmpl-miss"}  # the unfinished one is still open
    assert roots["chatcmpl-miss"].attributes["lmcache.hit_tokens"] == 0
    assert roots["chatcmpl-miss"].attributes["http.response.status_code"] == 200  # closed by its access line
    assert "lmcache.hit_tokens" not in roots["chatcmpl-before"].attributes
    assert "lmcache.hit_tokens" not in roots["chatcmpl-hit"].attributes
    assert roots["chatcmpl-hit"].attributes["lmcache.prefetch.hit_keys"] == 11
    [unfinished] = run.builder.open.values()
    assert unfinished.id == "chatcmpl-unfinished"


def test_without_vllms_kv_transfer_lines_an_mp_request_without_prefetch_is_not_called_a_miss() -> None:
    run = Run().feed([*_mp_request("hit", prefetch=True), *_mp_request("quiet")])
    roots = {s.attributes["gen_ai.response.id"]: s for s in run.roots()}
    assert "lmcache.hit_tokens" not in roots["chatcmpl-quiet"].attributes
    assert roots["chatcmpl-quiet"].attributes["http.response.status_code"] == 200


def _mp_lookup_end(name: str, found: int) -> str:
    """The LMCache server's DEBUG line at the end of a request's lookup (LMCache 0.5.6's format)."""
    return (
        "\x1b[1m[2026-12-02 06:49:42,417] LMCache DEBUG:\x1b[0m MP lookup/prefetch end: "
        f"session=chatcmpl-{name}-b76bdc55 found_count={found} "
        "\x1b[3m(mp_server.py:73:lmcache.v1.mp_observability.subscribers.logging.mp_server)\x1b[0m"
    )


def test_the_mp_servers_debug_lookup_end_tells_a_miss_without_vllms_kv_transfer_lines() -> None:
    lines = [*_mp_request("miss"), *_mp_request("hit", prefetch=True)]
    lines.insert(2, _mp_lookup_end("miss", 0))
    lines.insert(6, _mp_lookup_end("hit", 11))
    roots = {s.attributes["gen_ai.response.id"]: s for s in Run().feed(lines).roots()}
    assert roots["chatcmpl-miss"].attributes["lmcache.hit_tokens"] == 0
    assert roots["chatcmpl-miss"].attributes["lmcache.mp.found_chunks"] == 0
    assert roots["chatcmpl-hit"].attributes["lmcache.mp.found_chunks"] == 11
    assert "lmcache.hit_tokens" not in roots["chatcmpl-hit"].attributes  # its prefetch says what it found


def test_an_mp_lookups_end_read_after_its_requests_end_still_tells_the_miss() -> None:
    clock = [5000.0]
    run = Run(now=lambda: clock[0], linger=1.0, read_clock=lambda: clock[0])
    run.feed([*_mp_request("late"), _mp_lookup_end("late", 0)])  # the LMCache server's log read second
    clock[0] += 1.1
    run.builder.expire(clock[0])
    [root] = run.roots()
    assert root.attributes["lmcache.hit_tokens"] == 0
    assert root.attributes["lmcache.mp.found_chunks"] == 0


def test_the_lmcache_servers_log_read_before_vllms_joins_each_request_by_its_client_id() -> None:
    """``kvwatch replay --server S lmcache.log vllm.log``: the LMCache server's prefetch names a request by its engine
    id before vLLM's log, read second, names it by the client's id, and vLLM's start (earlier in time than the
    prefetch) ends no request begun after it: one trace per request, its prefetch on it."""
    lmcache_server, vllm = [], []
    for port, (name, prefetch) in enumerate((("one", False), ("two", True), ("three", True))):
        lines = [line.replace(":46144 ", f":{port} ") for line in _mp_request(name, prefetch=prefetch)]
        lmcache_server += [line for line in lines if "LMCache" in line]
        vllm += [line for line in lines if "LMCache" not in line]
    start = "(APIServer pid=1) INFO 12-02 06:40:00 [api_server.py:1000] vLLM API server version 0.32.0"
    ends = [line for line in vllm if "POST" in line]
    begins = [line for line in vllm if "POST" not in line]
    run = Run(linger=math.inf, idle_timeout=math.inf).feed([*lmcache_server, start, *begins, *ends])
    run.builder.close()
    roots = {s.attributes["gen_ai.response.id"]: s.attributes for s in run.roots()}
    assert set(roots) == {"chatcmpl-one", "chatcmpl-two", "chatcmpl-three"}
    assert roots["chatcmpl-two"]["vllm.request.id"] == "chatcmpl-two-b76bdc55"
    assert roots["chatcmpl-two"]["lmcache.prefetch.hit_keys"] == 11
    assert roots["chatcmpl-two"]["gen_ai.request.max_tokens"] == 4  # from vLLM's line with the client's id
    # The access lines, which name no request, answer the requests in the order vLLM received them.
    assert [roots[f"chatcmpl-{name}"]["client.port"] for name in ("one", "two", "three")] == [0, 1, 2]
    assert {attributes["vllm.outcome"] for attributes in roots.values()} == {"responded"}


def test_a_restart_ends_the_requests_begun_before_it_and_not_those_after() -> None:
    restart = "(APIServer pid=2) INFO 12-02 06:49:42 [api_server.py:1000] vLLM API server version 0.32.0"
    before = _mp_request("before", ends=False)
    after = [line.replace("06:49:42", "06:49:50") for line in _mp_request("after", ends=False)]
    run = Run(linger=math.inf).feed([*before, *after, restart])
    assert [request.id for request in run.builder.open.values()] == ["chatcmpl-after"]
    assert run.builder.evicted["server_restart"] == 1


def _ended_before_its_prefetch(name: str) -> list[str]:
    """An MP request as a reading cycle may deliver it: vLLM's log (its access line) read before the LMCache
    server's log, whose prefetch line was written first."""
    lines = _mp_request(name, prefetch=True)
    prefetch = lines.pop(2)
    return [*lines, prefetch]


def test_on_a_source_of_several_files_a_piece_read_after_its_requests_end_joins_it() -> None:
    clock = [5000.0]
    run = Run(now=lambda: clock[0], linger=1.0, read_clock=lambda: clock[0])
    run.feed([MP_LOOKUPS, *_ended_before_its_prefetch("late")])
    run.tracing.flush()
    assert run.exporter.get_finished_spans() == ()  # still waiting for pieces from the other file
    assert run.builder.open_requests == 0
    clock[0] += 0.5
    run.builder.expire(clock[0])
    run.tracing.flush()
    assert run.exporter.get_finished_spans() == ()
    clock[0] += 0.6
    run.builder.expire(clock[0])
    run.tracing.flush()
    [root] = [s for s in run.exporter.get_finished_spans() if s.name == "vllm.request"]
    [prefetch] = [s for s in run.children(root) if s.name == "lmcache.prefetch"]
    assert prefetch.attributes["lmcache.prefetch.hit_keys"] == 11
    assert root.attributes["lmcache.prefetch.hit_keys"] == 11
    assert "lmcache.hit_tokens" not in root.attributes  # a hit, not a miss said at its end
    assert root.attributes["http.response.status_code"] == 200
    assert root.end_time >= prefetch.end_time
    assert run.builder.late == {} and not run.builder.lingering
    # A later line of the written request starts nothing new.
    run.feed(_ended_before_its_prefetch("late")[2:])
    assert run.builder.open_requests == 0


def test_on_a_source_of_one_file_a_piece_after_its_requests_end_is_not_joined() -> None:
    # One file's lines come in the order written: what follows the end is not the request's.
    run = Run().feed([MP_LOOKUPS, *_ended_before_its_prefetch("late")])
    [root] = run.roots()
    assert [s.name for s in run.children(root)] == []
    assert root.attributes["lmcache.hit_tokens"] == 0  # a miss, as far as this log says
    assert run.builder.open_requests == 0


def test_a_joiner_on_log_time_writes_lingering_requests_after_a_moment_of_reading() -> None:
    # The recent requests alone keep log time; what waits for another file's pieces waits on the reading's
    # clock, or a request would wait for the log's next stamped line, however late that came.
    reading = [100.0]
    run = Run(linger=1.0, read_clock=lambda: reading[0]).feed(
        [MP_LOOKUPS, *_ended_before_its_prefetch("first"), *_ended_before_its_prefetch("second")]
    )
    assert list(run.builder.lingering) == ["chatcmpl-first", "chatcmpl-second"]
    run.builder.release_lingering()
    assert len(run.builder.lingering) == 2
    reading[0] += 1.0
    run.builder.release_lingering()
    assert not run.builder.lingering and not run.builder.late
    run.tracing.flush()
    roots = {s.attributes["gen_ai.response.id"]: s for s in run.exporter.get_finished_spans() if s.parent is None}
    assert roots["chatcmpl-first"].attributes["lmcache.prefetch.hit_keys"] == 11
    assert roots["chatcmpl-second"].attributes["lmcache.prefetch.hit_keys"] == 11


def test_requests_waiting_for_late_pieces_are_as_many_as_the_open_table_holds_at_most() -> None:
    # A replay of several inputs of one server keeps ended requests until the last input is read.
    run = Run(linger=math.inf, max_open=2).feed([line for name in ("a", "b", "c") for line in _mp_request(name)])
    assert list(run.builder.lingering) == ["chatcmpl-b", "chatcmpl-c"]
    run.tracing.flush()
    assert [s.attributes["gen_ai.response.id"] for s in run.exporter.get_finished_spans()] == ["chatcmpl-a"]


def test_a_preemption_is_a_child_span_from_preemption_to_resume_with_lmcaches_load() -> None:
    added = "(APIServer pid=1) INFO 12-06 16:03:{} [async_llm.py:578] Added request cmpl-{}-0-97333607."
    access = 'INFO:     127.0.0.1:{} - "POST /v1/completions HTTP/1.1" 200 OK'
    lines = [
        added.format("07", "a"),
        added.format("07", "b"),
        mp_connector_line("2026-12-06 16:03:12,875", "<preempted> by preempted requests: {'cmpl-a-0-97333607'}"),
        mp_connector_line(
            "2026-12-06 16:03:13,225", "<resume-load> req=cmpl-a-0-97333607 apc=0 lmcache=1792 load=1792"
        ),
        # b answered while a waits preempted: a, seen first, cannot be the one answered.
        access.format(1),
        mp_connector_line(
            "2026-12-06 16:03:19,500", "<resume-load> req=cmpl-a-0-97333607 apc=256 lmcache=2048 load=1792"
        ),
        mp_connector_line("2026-12-06 16:03:20,072", "<preempted> by resumed requests: {'cmpl-a-0-97333607'}"),
        # Resumed in the step that preempted it again: only the resume is logged, LMCache had none of it.
        mp_connector_line("2026-12-06 16:03:25,000", "<preempted> by resumed requests: {'cmpl-a-0-97333607'}"),
        access.format(2),
    ]
    run = Run().feed(lines)
    roots = {r.attributes["vllm.request.id"]: r for r in run.roots()}
    a, b = roots["cmpl-a-0-97333607"], roots["cmpl-b-0-97333607"]
    assert (a.attributes["client.port"], b.attributes["client.port"]) == (2, 1)
    assert a.attributes["vllm.preemptions"] == 2 and "vllm.preemptions" not in b.attributes
    first, second = sorted((s for s in run.children(a) if s.name == "vllm.preemption"), key=lambda s: s.start_time)
    assert (first.end_time - first.start_time) / 1e9 == pytest.approx(7.197)
    assert dict(first.attributes) == {
        "vllm.resumed": True,
        "lmcache.hit_tokens": 2048,  # the last lookup before the resume
        "lmcache.need_to_load": 1792,
        "vllm.prefix_cache.hit_tokens": 256,
    }
    assert dict(second.attributes) == {"vllm.resumed": True} and second.start_time == second.end_time


def test_a_resumes_lookup_and_prefetch_are_not_the_prompts() -> None:
    """A request whose prompt LMCache's multiprocess server did not find, preempted, then resumed with what the
    server stored meanwhile: the resume's lookup end and prefetch (seen in a real run) are no hit of the prompt."""
    name = "r"
    request = _mp_request(name)
    prefetch = (
        "[2026-12-02 06:49:45,418] LMCache INFO: Prefetch request completed (L1+L2): 7/7 retained keys "
        f"(7 L1, 0 L2) in 0.6 ms (external_request_id=chatcmpl-{name}-b76bdc55, prefetch_request_id=-1) "
        "(storage_manager.py:726:lmcache.v1.distributed.storage_manager)"
    )
    lines = [
        MP_LOOKUPS,
        *request[:2],
        _mp_lookup_end(name, 0),
        mp_connector_line(
            "2026-12-02 06:49:44,000", f"<preempted> by preempted requests: {{'chatcmpl-{name}-b76bdc55'}}"
        ),
        _mp_lookup_end(name, 7).replace("06:49:42,417", "06:49:45,417"),
        prefetch,
        mp_connector_line(
            "2026-12-02 06:49:45,500", f"<preempted> by resumed requests: {{'chatcmpl-{name}-b76bdc55'}}"
        ),
        *request[2:],
    ]
    run = Run().feed(lines)
    [root] = run.roots()
    assert root.attributes["lmcache.mp.found_chunks"] == 0
    assert root.attributes["lmcache.hit_tokens"] == 0  # the prompt's miss
    assert "lmcache.prefetch.hit_keys" not in root.attributes
    assert [s.name for s in run.children(root)].count("lmcache.prefetch") == 1  # the resume's, as a child
    assert root.attributes["vllm.preemptions"] == 1


def test_a_load_the_multiprocess_connector_gave_up_is_on_the_trace() -> None:
    name = "b"
    request = _mp_request(name, prefetch=True)
    bypassed = mp_connector_line(
        "2026-12-02 06:49:43,000",
        f"Bypassing LMCache for request chatcmpl-{name}-b76bdc55 after a failed async KV load; "
        "the prompt will be recomputed locally.",
    )
    [root] = Run().feed([*request[:-1], bypassed, request[-1]]).roots()
    assert root.attributes["lmcache.load_bypassed"] is True
    [plain] = Run().feed(_mp_request("c", prefetch=True)).roots()
    assert "lmcache.load_bypassed" not in plain.attributes
