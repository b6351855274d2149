"""Request records to OpenTelemetry spans, exported over OTLP (or written as OTLP JSON).

One exporter and one batch span processor serve every source.  A request's
spans are built finished, as the SDK's ``ReadableSpan`` (their times come
from the log, not from a clock running while they were open), with the trace
id :class:`agent.sinks.traces.TraceBuilder` drew when the request was first seen --
exemplars point at it before the request ends -- and handed to the processor.
Each (server, model) pair has its resource, since the server name and the
model are resource attributes; the OTLP encoder groups spans by them.

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

import contextlib
import json
import logging
import math
import os
import random
import socket
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import IO, Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import Decision, TraceIdRatioBased
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.semconv._incubating.attributes import gen_ai_attributes as gen_ai
from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags
from prometheus_client.core import Metric

from agent import __version__
from agent.config import TRACE_PROTOCOLS, TracingConfig
from agent.exposition import families
from agent.families import computed, counter, keyed
from agent.sinks.stats import ServerStats
from agent.sinks.traces import (
    DEFAULT_IDLE_TIMEOUT,
    DEFAULT_MAX_OPEN,
    Access,
    Lookup,
    OpenRequest,
    Retrieve,
    Store,
    StoreStart,
    TraceBuilder,
    builder_families,
)
from parsers import Clock
from parsers.events import GIB
from parsers.ids import CANARY_MARK, external_request_id

log = logging.getLogger("kvwatch.otlp")

PROVIDER = "vllm"  # gen_ai.provider.name: the conventions list no value for a self-hosted server
ROOT_SPAN = "vllm.request"


# -- exporters ----------------------------------------------------------------------------


class OtlpJsonFileExporter(SpanExporter):
    """Writes each batch as one OTLP/JSON ``ExportTraceServiceRequest`` per line (JSON Lines).

    Encoded here rather than through protobuf's JSON mapping, which is several
    times slower and differs from OTLP/JSON: there, trace and span ids are hex
    (not base64), enums are numbers and 64-bit integers are decimal strings."""

    def __init__(self, out: IO[str]) -> None:
        self.out = out
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        line = json.dumps(otlp_json(spans), separators=(",", ":"))
        try:
            with self._lock:
                self.out.write(line + "\n")
                self.out.flush()
        except OSError:
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        with contextlib.suppress(OSError):  # a full disk was already reported by export
            self.out.close()


def otlp_json(spans: Sequence[ReadableSpan]) -> dict:
    """One ``ExportTraceServiceRequest`` in OTLP/JSON, spans grouped by resource and scope."""
    groups: dict[int, tuple[Resource, dict[tuple, list]]] = {}
    for span in spans:
        resource = span.resource
        entry = groups.setdefault(id(resource), (resource, {}))
        scope = span.instrumentation_scope
        key = (scope.name, scope.version) if scope is not None else ("", None)
        entry[1].setdefault(key, []).append(_json_span(span))
    resource_spans = []
    for resource, scopes in groups.values():
        resource_spans.append(
            {
                "resource": {"attributes": _json_attributes(resource.attributes)},
                "scopeSpans": [
                    {"scope": {"name": name, **({"version": version} if version else {})}, "spans": items}
                    for (name, version), items in scopes.items()
                ],
            }
        )
    return {"resourceSpans": resource_spans}


def _json_span(span: ReadableSpan) -> dict:
    context = span.context
    status = span.status
    out = {
        "traceId": f"{context.trace_id:032x}",
        "spanId": f"{context.span_id:016x}",
        "name": span.name,
        "kind": span.kind.value + 1,  # OTLP counts from SPAN_KIND_UNSPECIFIED = 0
        "startTimeUnixNano": str(span.start_time),
        "endTimeUnixNano": str(span.end_time),
        "attributes": _json_attributes(span.attributes),
        "status": {"code": status.status_code.value}
        if status.description is None
        else {"code": status.status_code.value, "message": status.description},
    }
    # Span flags: "is_remote is known" (0x100), and set (0x200) for a parent in another process.
    out["flags"] = 0x300 if span.parent is not None and span.parent.is_remote else 0x100
    if span.parent is not None:
        out["parentSpanId"] = f"{span.parent.span_id:016x}"
    if span.events:
        out["events"] = [
            {"timeUnixNano": str(e.timestamp), "name": e.name, "attributes": _json_attributes(e.attributes)}
            for e in span.events
        ]
    return out


def _json_attributes(attributes) -> list[dict]:
    return [{"key": key, "value": _json_value(value)} for key, value in (attributes or {}).items()]


def _json_value(value) -> dict:
    if isinstance(value, bool):
        return {"boolValue": value}
    if isinstance(value, int):
        return {"intValue": str(value)}
    if isinstance(value, float):
        return {"doubleValue": value}
    if isinstance(value, str):
        return {"stringValue": value}
    return {"arrayValue": {"values": [_json_value(item) for item in value]}}


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
    raise ValueError(f"unknown OTLP protocol {protocol!r}; use one of {', '.join(TRACE_PROTOCOLS)}")


class _OutageWords(logging.Filter):
    """An exporter's own warnings and errors while exports fail: those of the first failed export are said (they
    hold the reason: refused, unreachable, timed out), those of the next ones held back until an export works --
    a collector down for a day would otherwise write a line or two every batch (the spans lost are counted)."""

    def __init__(self) -> None:
        super().__init__()
        self.quiet = False

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno < logging.WARNING or not self.quiet


class _CountingExporter(SpanExporter):
    def __init__(self, inner: SpanExporter, counts: dict[str, int]) -> None:
        self.inner = inner
        self.counts = counts
        self.lost_before: int | None = None  # while exports fail: the spans lost before they began to fail
        self.outage_words = _OutageWords()
        # The exporter's module and those of its bases log its failures (gRPC's base class retries).
        self.exporter_loggers = [
            logging.getLogger(module)
            for module in {cls.__module__ for cls in type(inner).__mro__ if cls.__module__.startswith("opentelemetry")}
        ]
        for logger in self.exporter_loggers:
            logger.addFilter(self.outage_words)

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            result = self.inner.export(spans)
        except Exception:  # an exporter's bug loses the batch, not the agent
            result = SpanExportResult.FAILURE
        exported = result is SpanExportResult.SUCCESS
        self._outage(exported)
        self.counts["exported" if exported else "export_failed"] += len(spans)
        return result

    def _outage(self, exported: bool) -> None:
        """Say when exports begin to fail and when they work again, once each."""
        if not exported and self.lost_before is None:
            self.lost_before = self.counts["export_failed"]
            log.warning(
                "traces cannot be exported: their spans are dropped and counted "
                '(kvwatch_trace_spans_dropped_total{reason="export_failed"}); said again once an export works'
            )
            self.outage_words.quiet = True
        elif exported and self.lost_before is not None:
            log.info(
                "traces are exported again (%d spans lost meanwhile)", self.counts["export_failed"] - self.lost_before
            )
            self.lost_before = None
            self.outage_words.quiet = False

    def shutdown(self) -> None:
        self.inner.shutdown()
        for logger in self.exporter_loggers:
            logger.removeFilter(self.outage_words)

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
        self._resources: dict[tuple[str, str], Resource] = {}
        self.scope = InstrumentationScope("kvwatch", __version__)
        self._lock = threading.Lock()
        self.host = socket.gethostname()
        self.service_name = os.environ.get("OTEL_SERVICE_NAME") or "kvwatch"

    def sampled(self, trace_id: int) -> bool:
        return self.sampler.should_sample(None, trace_id, ROOT_SPAN).decision is Decision.RECORD_AND_SAMPLE

    def resource(self, server: str, model: str) -> Resource:
        key = (server, model)
        found = self._resources.get(key)
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
            found = self._resources[key] = Resource.create(attributes)
        return found

    def writer(self, server: str, model: Callable[[], str | None]) -> Callable[[OpenRequest], None]:
        """The function a :class:`agent.sinks.traces.TraceBuilder` of ``server`` hands ended requests to."""

        def write(request: OpenRequest) -> None:
            if not request.sampled:
                return
            name = model() or ""
            with self._lock:
                for span in request_spans(request, self.resource(server, name), self.scope, name or None):
                    self.processor.on_end(span)
                if self.wait_when_full and self.processor.queue_length() >= self.processor.max_queue // 2:
                    self.processor.force_flush()

        return write

    def builder(
        self,
        stats: ServerStats,
        clock: Clock,
        model: str | None = None,
        now: Callable[[], float] | None = None,
        max_open: int = DEFAULT_MAX_OPEN,
        idle_timeout: float = DEFAULT_IDLE_TIMEOUT,
        also: Callable[[OpenRequest], None] | None = None,
        linger: float = 0.0,
    ) -> TraceBuilder:
        """The trace builder of one source, writing into this pipeline (``model``: the configured one,
        until the log names it; ``now``: the wall clock when following a live log; ``also``: another
        writer each ended request goes to, sampled or not; ``linger``: see :class:`TraceBuilder`)."""
        write = self.writer(stats.server, lambda: stats.model or model)
        if also is not None:
            spans, write = write, lambda request: (also(request), spans(request))
        return TraceBuilder(
            stats,
            clock,
            write,
            now=now,
            sampled=self.sampled,
            max_open=max_open,
            idle_timeout=idle_timeout,
            linger=linger,
        )

    @property
    def dropped(self) -> dict[str, int]:
        return {"queue_full": self.counts["queue_full"], "export_failed": self.counts["export_failed"]}

    def flush(self) -> bool:
        return self.processor.force_flush()

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [([], self)])

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
    """Set an attribute the log may not give; a float that is no finite number is not given either."""
    if value is not None and (not isinstance(value, float) or math.isfinite(value)):
        attributes[key] = value


# The longest transfer a span is drawn for: a cost beyond it (or not finite) is no duration.
LONGEST_COST = 86_400.0


def _cost_ns(seconds: float) -> int:
    """A cost the log gives, in nanoseconds, or 0 when it is no duration a span can have."""
    return round(seconds * 1e9) if 0.0 <= seconds <= LONGEST_COST else 0


def _bytes(size_gb: float | None) -> int | None:
    """A size in GB as bytes, when it fits OTLP's int64."""
    if size_gb is None or not 0.0 <= size_gb < 2**63 / GIB:
        return None
    return int(size_gb * GIB)


def _per_rank_max(pieces: list[Store] | list[Retrieve], tokens: Callable[[Any], int]) -> int:
    """The most tokens any one tensor-parallel rank moved (each rank logs its own share)."""
    per_rank: dict[int | None, int] = {}
    for piece in pieces:
        per_rank[piece.rank] = per_rank.get(piece.rank, 0) + tokens(piece)
    return max(per_rank.values(), default=0)


def request_attributes(request: OpenRequest, model: str | None) -> dict:
    """The root span's attributes: the GenAI conventions where they fit, then LMCache's, HTTP's, kvwatch's."""
    a: dict[str, object] = {gen_ai.GEN_AI_PROVIDER_NAME: PROVIDER}
    _put(a, gen_ai.GEN_AI_OPERATION_NAME, request.operation)
    _put(a, gen_ai.GEN_AI_REQUEST_MODEL, model)
    _put(a, gen_ai.GEN_AI_REQUEST_MAX_TOKENS, request.max_tokens)
    _ids(a, request)
    first = request.lookups[0] if request.lookups else None
    input_tokens = request.prompt_tokens if request.prompt_tokens is not None else (first.total if first else None)
    _put(a, gen_ai.GEN_AI_USAGE_INPUT_TOKENS, input_tokens)
    if first is not None:
        _first_lookup(a, first, len(request.lookups))
    elif request.mp_miss:
        a["lmcache.hit_tokens"] = 0  # LMCache's multiprocess server was asked and logged no prefetch
    _put(a, gen_ai.GEN_AI_USAGE_OUTPUT_TOKENS, request.output_tokens)
    if request.finish_reason is not None:
        a[gen_ai.GEN_AI_RESPONSE_FINISH_REASONS] = (request.finish_reason,)
    _lmcache_moves(a, request)
    if request.preemptions:
        a["vllm.preemptions"] = len(request.preemptions)
    if request.access is not None:
        _http(a, request.access)
    if CANARY_MARK in request.id:
        a["kvwatch.canary"] = True  # kvwatch canary's own request
    a["vllm.outcome"] = request.outcome or "unknown"
    _put(a, "error.type", request.error_type)
    _put(a, "kvwatch.end_matched", request.end_matched)
    a["kvwatch.start_seen"] = request.started_in_view
    if request.outcome == "evicted":
        a["kvwatch.incomplete"] = request.failure or "unknown"
    return a


def _ids(a: dict[str, object], request: OpenRequest) -> None:
    """The client's id as the response id; vLLM's internal id beside it when the log showed it (alone, or with the
    client's id it was made from, whichever came first)."""
    internal = next((i for i in request.ids if external_request_id(i) is not None), None)
    client = external_request_id(internal) if internal is not None else None
    if client is not None and (client in request.ids or len(request.ids) == 1):
        a["vllm.request.id"] = internal
        a[gen_ai.GEN_AI_RESPONSE_ID] = client
    else:
        a[gen_ai.GEN_AI_RESPONSE_ID] = request.id


def _first_lookup(a: dict[str, object], first: Lookup, lookups: int) -> None:
    """What LMCache found for the prompt (at the first lookup: later ones follow a preemption)."""
    # Every input token the prefill did not compute, as vLLM's own usage reports cached_tokens: its
    # prefix cache's and LMCache's together (LMCache's hit counts from the prompt's start too).
    a[gen_ai.GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS] = max(first.hit, first.engine_computed or 0)
    a["lmcache.hit_tokens"] = first.hit
    a["lmcache.total_tokens"] = first.total
    if first.total > 0:
        a["lmcache.hit_ratio"] = first.hit / first.total
    _put(a, "lmcache.need_to_load", first.need_to_load)
    _put(a, "vllm.prefix_cache.hit_tokens", first.engine_computed)
    a["lmcache.lookups"] = lookups


def _lmcache_moves(a: dict[str, object], request: OpenRequest) -> None:
    """KV moved for the request: pending lookups, retrieves, prefetches, stores."""
    if request.pending_lookups:
        a["lmcache.lookups_pending"] = request.pending_lookups
    if request.retrieves:
        a["lmcache.retrieved_tokens"] = _per_rank_max(request.retrieves, lambda r: r.retrieved)
    if request.load_failed_tokens:
        a["lmcache.load_failed_tokens"] = request.load_failed_tokens
    if request.load_bypassed:
        a["lmcache.load_bypassed"] = True
    if request.lookup_timed_out:
        a["lmcache.lookup_timed_out"] = True
    _put(a, "lmcache.mp.found_chunks", request.mp_found_chunks)
    prefetch = request.prompt_prefetch
    if prefetch is not None:
        a["lmcache.prefetch.hit_keys"] = prefetch.hit_keys
        _put(a, "lmcache.prefetch.requested_keys", prefetch.requested_keys)
    if request.stores:
        a["lmcache.stored_tokens"] = _per_rank_max(request.stores, lambda s: s.stored)


def _http(a: dict[str, object], access: Access) -> None:
    a["http.request.method"] = access.method
    a["http.route"] = access.path
    a["http.response.status_code"] = access.status
    host, _, port = access.client.rpartition(":")
    if host:
        a["client.address"] = host.strip("[]")
        if port.isdigit() and len(port) <= 5 and int(port) <= 65535:
            a["client.port"] = int(port)


def _status(request: OpenRequest) -> Status:
    if request.outcome in ("aborted", "cancelled", "failed"):
        return Status(
            StatusCode.ERROR,
            f"request {request.outcome}" + (f": {request.error_type}" if request.outcome == "failed" else ""),
        )
    if request.access is not None and request.access.status >= 500:
        return Status(StatusCode.ERROR, f"HTTP {request.access.status}")
    return Status(StatusCode.UNSET)


_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_span_ids = random.Random()


def _context(trace_id: int) -> SpanContext:
    return SpanContext(trace_id, _span_ids.getrandbits(64) or 1, is_remote=False, trace_flags=_SAMPLED)


def request_spans(
    request: OpenRequest, resource: Resource, scope: InstrumentationScope, model: str | None
) -> list[ReadableSpan]:
    """The root span and its children, finished, with the times the log gave."""
    trace_id = request.trace_id
    root_context = _context(trace_id)
    spans: list[ReadableSpan] = []

    def child(name: str, start: int, end: int, attributes: dict, events: tuple = ()) -> None:
        spans.append(
            ReadableSpan(
                name,
                _context(trace_id),
                root_context,
                resource,
                attributes,
                events,
                start_time=start,
                end_time=end,
                instrumentation_scope=scope,
            )
        )

    for attempt, (when, total, hit, need, engine_computed, min_retrieve) in enumerate(request.lookups, 1):
        attributes = {"lmcache.total_tokens": total, "lmcache.hit_tokens": hit, "lmcache.attempt": attempt}
        _put(attributes, "lmcache.need_to_load", need)
        _put(attributes, "vllm.prefix_cache.hit_tokens", engine_computed)
        _put(attributes, "lmcache.min_retrieve_tokens", min_retrieve)
        child("lmcache.lookup", _ns(when), _ns(when), attributes)
    for when, hit_keys, requested_keys, l1_keys, l2_keys, ms in request.prefetches:
        attributes = {"lmcache.prefetch.hit_keys": hit_keys}
        _put(attributes, "lmcache.prefetch.requested_keys", requested_keys)
        _put(attributes, "lmcache.prefetch.l1_keys", l1_keys)
        _put(attributes, "lmcache.prefetch.l2_keys", l2_keys)
        end = _ns(when)
        child("lmcache.prefetch", end - _cost_ns((ms or 0.0) / 1000.0), end, attributes)
    for when, cost, retrieved, required, total, size_gb, gbps, rank in request.retrieves:
        attributes = {"lmcache.retrieved_tokens": retrieved}
        _put(attributes, "lmcache.required_tokens", required)
        _put(attributes, "lmcache.total_tokens", total)
        _put(attributes, "lmcache.size_bytes", _bytes(size_gb))
        _put(attributes, "lmcache.throughput_gb_per_second", gbps)
        _put(attributes, "lmcache.rank", rank)
        end = _ns(when)
        child("lmcache.retrieve", end - _cost_ns(cost), end, attributes)  # the cost is finer than the stamps
    for when, cost, stored, total, size_gb, gbps, offload_ms, put_ms, rank, started in request.stores:
        attributes = {"lmcache.stored_tokens": stored}
        _put(attributes, "lmcache.total_tokens", total)
        _put(attributes, "lmcache.size_bytes", _bytes(size_gb))
        _put(attributes, "lmcache.throughput_gb_per_second", gbps)
        _put(attributes, "lmcache.offload_ms", offload_ms)
        _put(attributes, "lmcache.put_ms", put_ms)
        _put(attributes, "lmcache.rank", rank)
        end = _ns(when)
        begin = end - _cost_ns(cost)
        events: tuple = ()
        if started is not None:
            begin = min(begin, _ns(started.when))
            events = (_store_start_event(started),)
        child("lmcache.store", begin, end, attributes, events)
    for preempted, resumed, load in request.preemptions:
        # From its preemption to its resume: the time it waited, its KV dropped.
        attributes = {"vllm.resumed": resumed is not None}
        if load is not None:
            attributes["lmcache.hit_tokens"] = load.hit
            attributes["lmcache.need_to_load"] = load.need_to_load
            attributes["vllm.prefix_cache.hit_tokens"] = load.engine_computed
        begin = _ns(preempted if preempted is not None else resumed)  # one of the two is known
        child("vllm.preemption", begin, _ns(resumed) if resumed is not None else begin, attributes)
    start = _ns(request.start)
    end = _ns(request.end if request.end is not None else request.start)
    for span in spans:  # a transfer that began before the first line, or a stamp cut to whole seconds
        start = min(start, span.start_time)
        end = max(end, span.end_time)
    # Under the span the log record named, when OpenTelemetry-shaped logs carried one.
    parent = (
        SpanContext(trace_id, request.parent_span_id, is_remote=True, trace_flags=_SAMPLED)
        if request.parent_span_id is not None
        else None
    )
    spans.append(
        ReadableSpan(
            ROOT_SPAN,
            root_context,
            parent,
            resource,
            request_attributes(request, model),
            tuple(_store_start_event(started) for started in request.store_starts),  # announced, never stored
            kind=SpanKind.SERVER,
            status=_status(request),
            start_time=start,
            end_time=end,
            instrumentation_scope=scope,
        )
    )
    return spans


def _store_start_event(started: StoreStart) -> Event:
    attributes = {
        "lmcache.tokens": started.tokens,
        "lmcache.total_tokens": started.total,
        "lmcache.skip_leading_tokens": started.skip_leading,
    }
    _put(attributes, "lmcache.rank", started.rank)
    return Event("lmcache.store_start", attributes, _ns(started.when))


# The exporter's series: present while tracing is on (run, or replay --traces).
SPECS = (
    counter(
        "kvwatch_trace_spans_exported_total",
        "Spans the exporter delivered.",
        computed(lambda tracing: tracing.counts["exported"]),
        per_server=False,
        native="the Collector's `otelcol_receiver_accepted_spans`",
    ),
    counter(
        "kvwatch_trace_spans_dropped_total",
        "Spans lost: queue_full (the collector was slower than the log), export_failed (it refused or was down).",
        keyed("dropped"),
        labels="reason",
        per_server=False,
        doc=(
            "spans lost: `queue_full` (the collector was slower than the log), `export_failed` (refused, or down "
            "past the exporter's retries)"
        ),
        native="the SDK's `otel.sdk.processor.span.processed` with `error.type`",
    ),
)


def trace_families(tracing: Tracing, builders: Iterable[TraceBuilder]) -> Iterator[Metric]:
    """The series of a tracing pipeline: its builders' (one per source), then the exporter's."""
    yield from builder_families(builders)
    yield from tracing.families()
