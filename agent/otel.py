"""Request records to OpenTelemetry spans, exported over OTLP (or written as OTLP JSON).

One exporter and one batch span processor serve every source; each
(server, model) pair gets a tracer provider of its own, because the server
name and the model are resource attributes, and the OTLP encoder groups spans
by resource.  The span's trace id is the one :class:`agent.traces.TraceBuilder`
drew when the request was first seen (exemplars point at it before the
request ends), handed to the SDK through a one-shot id generator.

Attribute names follow the OpenTelemetry GenAI semantic conventions of the
pinned ``opentelemetry-semantic-conventions`` where one fits; LMCache's
numbers go under ``lmcache.*``, vLLM's under ``vllm.*``, kvwatch's own
bookkeeping under ``kvwatch.*``.  No prompt or completion text is ever read,
so none can be sent.

Losing spans is counted, never silent: ``dropped["queue_full"]`` when the
processor's queue was full (a live agent never waits for the collector),
``dropped["export_failed"]`` when the exporter gave up on a batch.  A replay
waits instead: before the queue can fill it flushes, so a whole old log's
traces arrive.
"""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import IO

from google.protobuf.json_format import MessageToDict
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanKind, Status, StatusCode

from agent import __version__
from agent.config import TracingConfig
from agent.stats import GIB
from agent.traces import OpenRequest
from parsers.requests import external_request_id

PROTOCOLS = ("http/protobuf", "grpc")
PROVIDER = "vllm"  # gen_ai.provider.name: the conventions list no value for a self-hosted server
ROOT_SPAN = "vllm.request"


# -- exporters ----------------------------------------------------------------------------


class OtlpJsonFileExporter(SpanExporter):
    """Writes each batch as one OTLP/JSON ``ExportTraceServiceRequest`` per line.

    The JSON mapping of OTLP differs from protobuf's default in two ways this
    applies: trace and span ids are hex, not base64, and enums are numbers."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        document = MessageToDict(encode_spans(spans), use_integers_for_enums=True)
        for resource_spans in document.get("resourceSpans", ()):
            for scope_spans in resource_spans.get("scopeSpans", ()):
                for span in scope_spans.get("spans", ()):
                    for key in ("traceId", "spanId", "parentSpanId"):
                        if span.get(key):
                            span[key] = _b64_to_hex(span[key])
        line = json.dumps(document, separators=(",", ":"))
        try:
            with self._lock:
                self.out.write(line + "\n")
                self.out.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        pass


def _b64_to_hex(text: str) -> str:
    import base64

    return base64.b64decode(text).hex()


def make_exporter(
    protocol: str | None = None,
    endpoint: str | None = None,
    headers: Mapping[str, str] | None = None,
    timeout: float | None = None,
) -> SpanExporter:
    """The OTLP exporter for ``protocol``; what is None comes from the standard ``OTEL_*`` variables."""
    protocol = protocol or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
    )
    if protocol == "http/protobuf":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout)
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter as GrpcExporter
        except ImportError:
            raise ValueError("OTLP over gRPC needs the grpc extra: pip install 'kvwatch[grpc]'") from None
        return GrpcExporter(endpoint=endpoint, headers=dict(headers) if headers else None, timeout=timeout)
    raise ValueError(f"unknown OTLP protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, counts: dict[str, int]) -> None:
        self.inner = inner
        self.counts = counts

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter's bug loses the batch, not the agent
            result = SpanExportResult.FAILURE
        key = "exported" if result is SpanExportResult.SUCCESS else "export_failed"
        self.counts[key] += len(spans)
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class _CountingBatchProcessor(BatchSpanProcessor):
    """The SDK's batch processor, counting the spans it drops when its queue is full."""

    def __init__(self, exporter: SpanExporter, counts: dict[str, int], **options) -> None:
        super().__init__(exporter, **options)
        self.counts = counts
        self.max_queue = self._batch_processor._max_queue_size

    def queue_length(self) -> int:
        return len(self._batch_processor._queue)

    def shutdown(self, timeout: float = 30.0) -> None:
        # The SDK's own shutdown always allows 30 s; a stopping agent should not hang that long.
        self._batch_processor.shutdown(timeout_millis=int(timeout * 1000))

    def on_end(self, span: ReadableSpan) -> None:
        if span.context.trace_flags.sampled and self.queue_length() >= self.max_queue:
            self.counts["queue_full"] += 1
        super().on_end(span)


class _PresetTraceId(IdGenerator):
    """Gives the next root span the trace id it is told; span ids stay random."""

    def __init__(self) -> None:
        self._random = RandomIdGenerator()
        self.next_trace_id: int | None = None

    def generate_span_id(self) -> int:
        return self._random.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id, self.next_trace_id = self.next_trace_id, None
        return trace_id if trace_id is not None else self._random.generate_trace_id()


# -- the tracing pipeline ------------------------------------------------------------------


class Tracing:
    """The exporter, the processor, one tracer provider per (server, model), and the counts."""

    def __init__(
        self,
        exporter: SpanExporter,
        sampling_ratio: float = 1.0,
        wait_when_full: bool = False,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_millis: float | None = None,
    ) -> None:
        """Sizes left None come from ``OTEL_BSP_*`` (the SDK's defaults: queue 2048, batch 512, 5 s)."""
        self.counts = {"exported": 0, "export_failed": 0, "queue_full": 0}
        self.exporter = _CountingExporter(exporter, self.counts)
        self.processor = _CountingBatchProcessor(
            self.exporter,
            self.counts,
            max_queue_size=max_queue_size,
            max_export_batch_size=max_export_batch_size,
            schedule_delay_millis=schedule_delay_millis,
        )
        self.sampler = TraceIdRatioBased(sampling_ratio)
        self.sampling_ratio = sampling_ratio
        self.wait_when_full = wait_when_full
        self._providers: dict[tuple[str, str], tuple[trace.Tracer, _PresetTraceId]] = {}
        self._lock = threading.Lock()
        self.host = socket.gethostname()
        self.service_name = os.environ.get("OTEL_SERVICE_NAME") or "kvwatch"

    def sampled(self, trace_id: int) -> bool:
        return self.sampler.should_sample(None, trace_id, ROOT_SPAN).decision is Decision.RECORD_AND_SAMPLE

    def _tracer(self, server: str, model: str) -> tuple[trace.Tracer, _PresetTraceId]:
        key = (server, model)
        found = self._providers.get(key)
        if found is None:
            attributes = {
                "service.name": self.service_name,
                "service.version": __version__,
                "host.name": self.host,
                "kvwatch.server": server,
            }
            if model:
                attributes["vllm.model"] = model
            # Resource.create also reads OTEL_RESOURCE_ATTRIBUTES; ours win over it.
            ids = _PresetTraceId()
            provider = TracerProvider(resource=Resource.create(attributes), sampler=self.sampler, id_generator=ids)
            provider.add_span_processor(self.processor)
            found = self._providers[key] = (provider.get_tracer("kvwatch", __version__), ids)
        return found

    def writer(self, server: str, model: Callable[[], str | None]) -> Callable[[OpenRequest], None]:
        """The function a :class:`agent.traces.TraceBuilder` of ``server`` hands ended requests to."""

        def write(request: OpenRequest) -> None:
            if not request.sampled:
                return
            with self._lock:
                tracer, ids = self._tracer(server, model() or "")
                emit_request(tracer, ids, request, model() or None)
                if self.wait_when_full and self.processor.queue_length() >= self.processor.max_queue // 2:
                    self.processor.force_flush()

        return write

    @property
    def dropped(self) -> dict[str, int]:
        return {"queue_full": self.counts["queue_full"], "export_failed": self.counts["export_failed"]}

    def flush(self) -> bool:
        return self.processor.force_flush()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Send what is queued, waiting at most ``timeout`` for a slow or absent collector."""
        self.processor.shutdown(timeout)


def from_config(config: TracingConfig) -> Tracing:
    """The live agent's pipeline; raises ``ValueError``, ``OSError`` or ``KeyError`` with a reason."""
    exporter = make_exporter(config.protocol, config.endpoint, config.resolved_headers(), config.timeout)
    return Tracing(
        exporter,
        config.resolved_sampling_ratio(),
        max_queue_size=config.max_queue_size,
        max_export_batch_size=min(512, config.max_queue_size),
    )


# -- one request's spans ---------------------------------------------------------------------


def _ns(seconds: float) -> int:
    # Log stamps are never finer than microseconds; rounding there undoes the float's error.
    return round(seconds * 1e6) * 1000


def _put(attributes: dict, key: str, value) -> None:
    if value is not None:
        attributes[key] = value


def _per_rank_max(pieces: list[tuple], tokens_at: int, rank_at: int) -> int:
    """Tokens moved for the request: every tensor-parallel rank logs its own share of the same tokens."""
    per_rank: dict[object, int] = {}
    for piece in pieces:
        per_rank[piece[rank_at]] = per_rank.get(piece[rank_at], 0) + piece[tokens_at]
    return max(per_rank.values(), default=0)


def request_attributes(request: OpenRequest, model: str | None) -> dict:
    a: dict[str, object] = {gen_ai.GEN_AI_PROVIDER_NAME: PROVIDER}
    _put(a, gen_ai.GEN_AI_OPERATION_NAME, request.operation)
    _put(a, gen_ai.GEN_AI_REQUEST_MODEL, model)
    _put(a, gen_ai.GEN_AI_REQUEST_MAX_TOKENS, request.max_tokens)
    external = request.id
    internal = next((i for i in request.ids if external_request_id(i) is not None), None)
    if internal is not None and external_request_id(internal) == request.id:
        a["vllm.request.id"] = internal
    elif external_request_id(request.id) is not None and len(request.ids) == 1:
        a["vllm.request.id"] = request.id  # only the engine's id was seen
        external = external_request_id(request.id) or request.id
    a[gen_ai.GEN_AI_RESPONSE_ID] = external
    first = request.lookups[0] if request.lookups else None
    input_tokens = request.prompt_tokens if request.prompt_tokens is not None else (first[1] if first else None)
    _put(a, gen_ai.GEN_AI_USAGE_INPUT_TOKENS, input_tokens)
    if first is not None:
        _when, total, hit, need, computed, _min_retrieve = first
        a[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = hit
        a["lmcache.hit_tokens"] = hit
        a["lmcache.total_tokens"] = total
        if total > 0:
            a["lmcache.hit_ratio"] = hit / total
        _put(a, "lmcache.need_to_load", need)
        _put(a, "vllm.prefix_cache.hit_tokens", computed)
        a["lmcache.lookups"] = len(request.lookups)
    _put(a, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, request.output_tokens)
    if request.finish_reason is not None:
        a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (request.finish_reason,)
    if request.pending_lookups:
        a["lmcache.lookups_pending"] = request.pending_lookups
    if request.retrieves:
        a["lmcache.retrieved_tokens"] = _per_rank_max(request.retrieves, 2, 7)
    if request.stores:
        a["lmcache.stored_tokens"] = _per_rank_max(request.stores, 2, 8)
    if request.access is not None:
        method, path, status, client = request.access
        a["http.request.method"] = method
        a["http.route"] = path
        a["http.response.status_code"] = status
        host, _, port = client.rpartition(":")
        if host:
            a["client.address"] = host.strip("[]")
            if port.isdigit():
                a["client.port"] = int(port)
    a["vllm.outcome"] = request.outcome or "unknown"
    _put(a, "error.type", request.error_type)
    _put(a, "kvwatch.end_matched", request.end_matched)
    a["kvwatch.start_seen"] = request.started_in_view
    if request.outcome == "evicted":
        a["kvwatch.incomplete"] = request.failure or "unknown"
    return a


def _status(request: OpenRequest) -> Status:
    if request.outcome in ("aborted", "cancelled", "failed"):
        return Status(
            StatusCode.ERROR,
            f"request {request.outcome}" + (f": {request.error_type}" if request.outcome == "failed" else ""),
        )
    if request.access is not None and request.access[2] >= 500:
        return Status(StatusCode.ERROR, f"HTTP {request.access[2]}")
    return Status(StatusCode.UNSET)


def emit_request(tracer: trace.Tracer, ids: _PresetTraceId, request: OpenRequest, model: str | None) -> None:
    """Start and end the root span and its children, with the times the log gave."""
    end = request.end if request.end is not None else request.start
    ids.next_trace_id = request.trace_id
    root = tracer.start_span(
        ROOT_SPAN,
        kind=SpanKind.SERVER,
        start_time=_start_ns(request),
        attributes=request_attributes(request, model),
    )
    ids.next_trace_id = None
    context = trace.set_span_in_context(root)
    for attempt, (when, total, hit, need, computed, min_retrieve) in enumerate(request.lookups, 1):
        attributes = {"lmcache.total_tokens": total, "lmcache.hit_tokens": hit, "lmcache.attempt": attempt}
        _put(attributes, "lmcache.need_to_load", need)
        _put(attributes, "vllm.prefix_cache.hit_tokens", computed)
        _put(attributes, "lmcache.min_retrieve_tokens", min_retrieve)
        span = tracer.start_span("lmcache.lookup", context=context, start_time=_ns(when), attributes=attributes)
        span.end(end_time=_ns(when))
    for when, cost, retrieved, required, total, size_gb, gbps, rank in request.retrieves:
        attributes = {"lmcache.retrieved_tokens": retrieved}
        _put(attributes, "lmcache.required_tokens", required)
        _put(attributes, "lmcache.total_tokens", total)
        _put(attributes, "lmcache.size_bytes", int(size_gb * GIB) if size_gb is not None else None)
        _put(attributes, "lmcache.throughput_gb_per_second", gbps)
        _put(attributes, "lmcache.rank", rank)
        span = tracer.start_span(
            "lmcache.retrieve", context=context, start_time=_ns(when) - round(cost * 1e9), attributes=attributes
        )
        span.end(end_time=_ns(when))
    for when, cost, stored, total, size_gb, gbps, offload_ms, put_ms, rank, started in request.stores:
        attributes = {"lmcache.stored_tokens": stored}
        _put(attributes, "lmcache.total_tokens", total)
        _put(attributes, "lmcache.size_bytes", int(size_gb * GIB) if size_gb is not None else None)
        _put(attributes, "lmcache.throughput_gb_per_second", gbps)
        _put(attributes, "lmcache.offload_ms", offload_ms)
        _put(attributes, "lmcache.put_ms", put_ms)
        _put(attributes, "lmcache.rank", rank)
        begin = _ns(when) - round(cost * 1e9)  # the cost is finer than the stamps
        if started is not None:
            begin = min(begin, _ns(started[0]))
        span = tracer.start_span("lmcache.store", context=context, start_time=begin, attributes=attributes)
        if started is not None:
            span.add_event("lmcache.store_start", _store_start_attributes(started), timestamp=_ns(started[0]))
        span.end(end_time=_ns(when))
    for started in request.store_starts:  # announced, never reported stored
        root.add_event("lmcache.store_start", _store_start_attributes(started), timestamp=_ns(started[0]))
    root.set_status(_status(request))
    root.end(end_time=_ns(end))


def _start_ns(request: OpenRequest) -> int:
    """The root's start: its first sighting, or a transfer's start if one began earlier."""
    start = _ns(request.start)
    for piece in request.stores + request.retrieves:
        start = min(start, _ns(piece[0]) - round(piece[1] * 1e9))
    return start


def _store_start_attributes(started: tuple) -> dict:
    _when, tokens, total, skip, rank = started
    attributes = {"lmcache.tokens": tokens, "lmcache.total_tokens": total, "lmcache.skip_leading_tokens": skip}
    _put(attributes, "lmcache.rank", rank)
    return attributes
