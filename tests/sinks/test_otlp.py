"""What kvwatch sends over the wire, checked by real OTLP receivers on loopback."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from opentelemetry.proto.trace.v1 import trace_pb2
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from agent.sinks.otlp import Tracing, make_exporter
from agent.sinks.stats import ServerStats
from agent.sinks.traces import TraceBuilder
from parsers import Clock, LogStream
from tests.support.harness import REPO, Agent, kvwatch, wait_for
from tests.support.otlp_receiver import GrpcReceiver, HttpReceiver, attributes, tracing_env

SAMPLE = REPO / "tests" / "fixtures" / "samples" / "vllm-0.32.0-cpu-lmcache-0.5.6.log"
ENV = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}


def replay(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return kvwatch("replay", *args, env={**ENV, **(env or {})}, timeout=120)


def check_sample_traces(received) -> None:
    spans = received.spans()
    roots = [(r, s) for r, s in spans if s.name == "vllm.request"]
    assert len(roots) == 5 and len(spans) == 11
    by_id = {s.span_id: s for _, s in spans}
    for resource, span in spans:
        assert resource["service.name"] == "kvwatch"
        assert resource["kvwatch.server"] == "vllm-0.32.0-cpu-lmcache-0.5.6"
        assert resource["vllm.model"] == "/srv/models/tiny-llama"
        if span.name != "vllm.request":
            parent = by_id[span.parent_span_id]
            assert parent.name == "vllm.request" and parent.trace_id == span.trace_id
    for _, root in roots:
        assert root.kind == trace_pb2.Span.SPAN_KIND_SERVER and not root.parent_span_id
        a = attributes(root.attributes)
        assert a["gen_ai.operation.name"] == "chat" and a["gen_ai.usage.input_tokens"] == 493
        assert a["gen_ai.response.id"].startswith("chatcmpl-") and a["vllm.request.id"].startswith(
            a["gen_ai.response.id"]
        )
    # Every cached input token (vLLM's prefix cache held 384 of each repeat), LMCache's 256 beside it.
    cached = sorted(attributes(s.attributes)["gen_ai.usage.cache_read.input_tokens"] for _, s in roots)
    assert cached == [0, 384, 384, 384, 384]
    hits = sorted(attributes(s.attributes)["lmcache.hit_tokens"] for _, s in roots)
    assert hits == [0, 256, 256, 256, 256]
    first = min((s for _, s in roots), key=lambda s: s.start_time_unix_nano)
    assert first.start_time_unix_nano == 1795585255_000_000_000  # 2026-11-25 05:40:55 UTC, from the log
    for body in received.bodies:  # the request lines' sampling parameters stay in the log
        assert b"SamplingParams" not in body and b"temperature" not in body


def test_replay_exports_over_otlp_http() -> None:
    receiver = HttpReceiver()
    try:
        result = replay("--traces-endpoint", receiver.endpoint, str(SAMPLE))
        assert result.returncode == 0, result.stderr
        assert "5 requests, 11 spans sent, 0 lost" in result.stderr
        assert set(receiver.paths) == {"/v1/traces"}
        assert receiver.headers[0]["content-type"] == "application/x-protobuf"
        check_sample_traces(receiver)
    finally:
        receiver.close()


def test_standard_otel_variables_configure_the_exporter() -> None:
    receiver = HttpReceiver()
    try:
        env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.port}",
            "OTEL_EXPORTER_OTLP_HEADERS": "x-tenant=team-a",
            "OTEL_SERVICE_NAME": "kvwatch-gpu-07",
        }
        result = replay("--traces", str(SAMPLE), env=env)
        assert result.returncode == 0, result.stderr
        assert receiver.paths[0] == "/v1/traces"  # the per-signal path appended to the base endpoint
        assert receiver.headers[0]["x-tenant"] == "team-a"
        assert {r["service.name"] for r, _ in receiver.spans()} == {"kvwatch-gpu-07"}
    finally:
        receiver.close()


def test_replay_exports_over_otlp_grpc() -> None:
    receiver = GrpcReceiver()
    try:
        result = replay("--traces-protocol", "grpc", "--traces-endpoint", receiver.endpoint, str(SAMPLE))
        assert result.returncode == 0, result.stderr
        check_sample_traces(receiver)
    finally:
        receiver.close()


def test_a_refusing_collector_is_reported_as_lost_spans() -> None:
    receiver = HttpReceiver(status=400)  # not retryable: the exporter gives up at once
    try:
        result = replay("--traces-endpoint", receiver.endpoint, str(SAMPLE))
        assert result.returncode == 1
        assert "11 lost (export_failed: 11)" in result.stderr
    finally:
        receiver.close()


def test_traces_file_is_otlp_json(tmp_path: Path) -> None:
    out = tmp_path / "traces.jsonl"
    result = replay("--traces-file", str(out), "--format", "prometheus", str(SAMPLE))
    assert result.returncode == 0, result.stderr
    assert "kvwatch_lmcache_lookups_total" in result.stdout
    assert (
        'kvwatch_trace_requests_total{outcome="responded",server="vllm-0.32.0-cpu-lmcache-0.5.6"} 5.0' in result.stdout
    )
    assert "kvwatch_trace_spans_exported_total 11.0" in result.stdout
    spans = []
    for line in out.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                spans += scope_spans["spans"]
    assert len(spans) == 11
    for span in spans:
        int(span["traceId"], 16), int(span["spanId"], 16)  # hex, as OTLP/JSON wants, not base64
        assert len(span["traceId"]) == 32 and len(span["spanId"]) == 16
    roots = [s for s in spans if s["name"] == "vllm.request"]
    assert len(roots) == 5 and all(s["kind"] == 2 for s in roots)  # SPAN_KIND_SERVER as a number
    assert {s["parentSpanId"] for s in spans if s["name"] != "vllm.request"} <= {s["spanId"] for s in roots}


def _roots(traces: Path) -> list[dict]:
    roots = []
    for line in traces.read_text().splitlines():
        for resource_spans in json.loads(line)["resourceSpans"]:
            for scope_spans in resource_spans["scopeSpans"]:
                roots += [span for span in scope_spans["spans"] if span["name"] == "vllm.request"]
    return roots


def test_a_server_replayed_from_vllms_log_and_its_lmcache_servers_has_one_trace_per_request(tmp_path: Path) -> None:
    """LMCache's multiprocess mode: vLLM's log, then the LMCache server's (the real pair of one run), read as one
    server: each request's prefetch, in the second file, joins the request the first file ended."""
    samples = SAMPLE.parent
    logs = [str(samples / "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log"), str(samples / "lmcache-0.5.6-mp-server.log")]
    out = tmp_path / "traces.jsonl"
    result = replay("--server", "mp", "--traces-file", str(out), *logs)
    assert result.returncode == 0, result.stderr
    roots = _roots(out)
    told = [{a["key"]: next(iter(a["value"].values())) for a in root["attributes"]} for root in roots]
    assert sorted(t["gen_ai.response.id"] for t in told) == [f"chatcmpl-req-{n}" for n in ("one", "three", "two")]
    assert {t["vllm.outcome"] for t in told} == {"responded"}
    assert sorted(t.get("lmcache.prefetch.hit_keys", "0") for t in told) == ["0", "11", "11"]
    # Each file a server of its own: nothing to join, each writes at once.
    apart = tmp_path / "apart.jsonl"
    assert replay("--traces-file", str(apart), *logs).returncode == 0
    assert len(_roots(apart)) == 5


class _Stuck(SpanExporter):
    """An exporter that does not return until told: a collector slower than the log."""

    def __init__(self) -> None:
        self.release = threading.Event()

    def export(self, spans):
        self.release.wait(10)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def _feed(tracing: Tracing, lines) -> TraceBuilder:
    from datetime import UTC, datetime

    clock = Clock(UTC, datetime(2026, 11, 30, tzinfo=UTC))
    stats = ServerStats("s", clock)
    builder = TraceBuilder(stats, clock, tracing.writer("s", lambda: None), now=time.time, sampled=tracing.sampled)
    stream = LogStream()
    for line in lines:
        for event in stream.feed(line):
            builder.observe(event)
    builder.close()  # the log ended: requests waiting for an access line go now
    return builder


def _many_requests(n: int) -> list[str]:
    return [
        f"INFO 10-02 10:00:00 async_llm_engine.py:120] Added request cmpl-{i}-0.\n"
        f"INFO 10-02 10:00:01 async_llm_engine.py:120] Finished request cmpl-{i}-0."
        for i in range(n)
    ]


def test_a_live_agent_drops_and_counts_rather_than_wait() -> None:
    stuck = _Stuck()
    tracing = Tracing(stuck, max_queue_size=16, max_export_batch_size=4, schedule_delay_millis=10)
    lines = [piece for block in _many_requests(100) for piece in block.split("\n")]
    started = time.monotonic()
    _feed(tracing, lines)
    assert time.monotonic() - started < 5  # the reader never waited for the exporter
    assert tracing.dropped["queue_full"] >= 100 - 16 - 4
    stuck.release.set()
    tracing.shutdown()


def test_a_collector_down_is_said_once_and_its_return_once(caplog: pytest.LogCaptureFixture) -> None:
    """The real OTLP/HTTP exporter against a collector that refuses (400, not retried), then accepts: the exporter's
    own words on the first failed export pass, the next failures' are held back, and kvwatch says when exports
    fail and when they work again (a collector down for a day wrote a line or two every batch)."""
    caplog.set_level(logging.INFO)
    receiver = HttpReceiver(status=400)
    tracing = Tracing(make_exporter("http/protobuf", receiver.endpoint, timeout=2), max_export_batch_size=2)
    try:
        for _ in range(4):
            _feed(tracing, [piece for block in _many_requests(2) for piece in block.split("\n")])
            assert tracing.flush()
        assert tracing.dropped["export_failed"] == 8
        theirs = [r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]
        ours = [r.getMessage() for r in caplog.records if r.name == "kvwatch.otlp"]
        assert len(theirs) == 1 and "400" in theirs[0].getMessage()  # the reason, once
        assert len(ours) == 1 and ours[0].startswith("traces cannot be exported")
        receiver.status = 200
        _feed(tracing, [piece for block in _many_requests(2) for piece in block.split("\n")])
        assert tracing.flush()
        assert [r.getMessage() for r in caplog.records if r.name == "kvwatch.otlp"][1:] == [
            "traces are exported again (8 spans lost meanwhile)"
        ]
        receiver.status = 400  # a new outage is said again
        _feed(tracing, [piece for block in _many_requests(2) for piece in block.split("\n")])
        assert tracing.flush()
        assert len([r for r in caplog.records if r.name.startswith("opentelemetry.exporter")]) == 2
        assert len([r for r in caplog.records if r.name == "kvwatch.otlp"]) == 3
    finally:
        tracing.shutdown()
        receiver.close()


def test_a_replay_waits_rather_than_drop() -> None:
    class Slow(SpanExporter):
        exported = 0

        def export(self, spans):
            time.sleep(0.01)
            Slow.exported += len(spans)
            return SpanExportResult.SUCCESS

        def shutdown(self) -> None:
            pass

    tracing = Tracing(Slow(), wait_when_full=True, max_queue_size=16, max_export_batch_size=4)
    lines = [piece for block in _many_requests(200) for piece in block.split("\n")]
    _feed(tracing, lines)
    tracing.shutdown()
    assert tracing.dropped == {"queue_full": 0, "export_failed": 0}
    assert Slow.exported == tracing.counts["exported"] == 200


def traced_follow(tmp_path: Path, receiver: HttpReceiver) -> tuple[Agent, Path]:
    """A kvwatch (not started) following an empty log as server gpu0, its traces sent to ``receiver``."""
    log = tmp_path / "vllm.log"
    log.write_text("")
    body = (
        # From the beginning: the lines a test appends right after kvwatch answers /healthz may come
        # before the tailer first opens the file (on a loaded machine), and must be read all the same.
        f'[[follow]]\nname = "gpu0"\npaths = ["{log}"]\ntimezone = "UTC"\nstart_at = "beginning"\n\n'
        f'[tracing]\nenabled = true\nendpoint = "{receiver.endpoint}"\n'
    )
    return Agent(tmp_path, body, env=tracing_env()), log


def test_the_agent_traces_a_followed_log_and_links_exemplars(tmp_path: Path) -> None:
    receiver = HttpReceiver()
    agent, log = traced_follow(tmp_path, receiver)
    try:
        agent.start()
        with open(log, "a", encoding="utf-8") as out:
            out.write(SAMPLE.read_text(encoding="utf-8"))
        wait_for(lambda: len(receiver.spans()) == 11, what="11 spans at the receiver")
        check_roots = [s for _, s in receiver.spans() if s.name == "vllm.request"]
        assert len(check_roots) == 5
        assert agent.value("kvwatch_trace_requests_total", server="gpu0", outcome="responded") == 5
        assert agent.value("kvwatch_trace_open_requests", server="gpu0") == 0
        wait_for(lambda: agent.value("kvwatch_trace_spans_exported_total") == 11, what="the export count")
        assert agent.value("kvwatch_trace_spans_dropped_total", reason="queue_full") == 0
        request = urllib.request.Request(agent.url("/metrics"), headers={"Accept": "application/openmetrics-text"})
        with urllib.request.urlopen(request, timeout=5) as response:
            text = response.read().decode()
        marked = [
            line
            for line in text.splitlines()
            if line.startswith("kvwatch_lmcache_lookup_hit_ratio_bucket") and " # " in line
        ]
        sent = {s.trace_id.hex() for s in check_roots}
        assert marked and all(line.split('trace_id="', 1)[1][:32] in sent for line in marked)
    finally:
        agent.kill()
        receiver.close()


def test_prometheus_stores_the_exemplars_and_they_name_sent_traces(tmp_path: Path) -> None:
    from tests.support.prometheus import Prometheus, prometheus_binary

    prometheus_binary()  # skip (or fail under CI) before starting anything
    receiver = HttpReceiver()
    agent, log = traced_follow(tmp_path, receiver)
    prometheus = None
    try:
        agent.start()
        prometheus = Prometheus(tmp_path, [f"127.0.0.1:{agent.port}"], features=("exemplar-storage",))
        with open(log, "a", encoding="utf-8") as out:
            out.write(SAMPLE.read_text(encoding="utf-8"))
        wait_for(lambda: len(receiver.spans()) == 11, what="11 spans at the receiver")
        found = wait_for(
            # An exemplar carries its lookup's time: the sample log's, 2026-11-25.
            lambda: prometheus.exemplars('kvwatch_lmcache_lookup_hit_ratio_bucket{server="gpu0"}', 1795500000),
            timeout=30,
            what="exemplars in Prometheus",
        )
        sent = {s.trace_id.hex() for _, s in receiver.spans()}
        stored = {e["labels"]["trace_id"] for series in found for e in series["exemplars"]}
        assert stored and stored <= sent
        # The same scrape carried the trace series.
        result = prometheus.query('kvwatch_trace_requests_total{server="gpu0",outcome="responded"}')
        assert result and float(result[0]["value"][1]) == 5
    finally:
        if prometheus is not None:
            prometheus.close()
        agent.kill()
        receiver.close()


@pytest.mark.parametrize("body, reason", [('protocol = "zipkin"', "must be one of"), ("sampling_ratio = 2", "0 to 1")])
def test_bad_tracing_settings_are_named(tmp_path: Path, body: str, reason: str) -> None:
    config = tmp_path / "k.toml"
    config.write_text(f"[tracing]\nenabled = true\n{body}\n")
    result = kvwatch("check", "--config", str(config))
    assert result.returncode == 2
    assert "tracing." in result.stderr and reason in result.stderr
