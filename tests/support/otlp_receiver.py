"""Real OTLP receivers on loopback (HTTP/protobuf and gRPC), decoding with opentelemetry-proto."""

from __future__ import annotations

import gzip
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
from opentelemetry.proto.trace.v1 import trace_pb2


def traced_follow(
    name: str, paths: list, endpoint: str, start_at: str | None = None, lmcache_server_log: object = None
) -> str:
    """A kvwatch configuration following ``paths`` (and an LMCache server's log) as one source, its traces sent to
    ``endpoint``."""
    start = f'start_at = "{start_at}"\n' if start_at else ""
    if lmcache_server_log is not None:
        start += f'lmcache_server_log = "{lmcache_server_log}"\n'
    listed = ", ".join(f'"{path}"' for path in paths)
    follow = f'[[follow]]\nname = "{name}"\npaths = [{listed}]\n{start}'
    return follow + f'\n[tracing]\nenabled = true\nendpoint = "{endpoint}"\n'


def tracing_env(schedule_delay_ms: int = 100) -> dict[str, str]:
    """Environment overrides for a kvwatch under test: no OTEL_* of the caller's, and batches sent
    after ``schedule_delay_ms`` instead of the SDK's 5 s."""
    return {**{k: "" for k in os.environ if k.startswith("OTEL_")}, "OTEL_BSP_SCHEDULE_DELAY": str(schedule_delay_ms)}


class Received:
    def __init__(self) -> None:
        self.requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self.bodies: list[bytes] = []
        self.lock = threading.Lock()

    def add(self, body: bytes) -> None:
        message = trace_service_pb2.ExportTraceServiceRequest()
        message.ParseFromString(body)
        with self.lock:
            self.bodies.append(body)
            self.requests.append(message)

    def spans(self) -> list[tuple[dict, trace_pb2.Span]]:
        """(resource attributes, span) for every span received so far."""
        out = []
        with self.lock:
            for request in self.requests:
                for resource_spans in request.resource_spans:
                    resource = attributes(resource_spans.resource.attributes)
                    for scope_spans in resource_spans.scope_spans:
                        out.extend((resource, span) for span in scope_spans.spans)
        return out


def attributes(pairs) -> dict:
    out = {}
    for pair in pairs:
        kind = pair.value.WhichOneof("value")
        out[pair.key] = getattr(pair.value, kind) if kind else None
    return out


class HttpReceiver(Received):
    """POST /v1/traces; answers ``status`` (200 by default)."""

    def __init__(self, status: int = 200) -> None:
        super().__init__()
        self.status = status
        self.paths: list[str] = []
        self.headers: list[dict] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if self.headers.get("Content-Encoding") == "gzip":
                    body = gzip.decompress(body)
                receiver.paths.append(self.path)
                receiver.headers.append({k.lower(): v for k, v in self.headers.items()})
                if receiver.status == 200:
                    receiver.add(body)
                reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                self.send_response(receiver.status)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.endpoint = f"http://127.0.0.1:{self.port}/v1/traces"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class GrpcReceiver(Received):
    def __init__(self) -> None:
        super().__init__()
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2_grpc

        receiver = self

        class Service(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request, context):  # the gRPC method's name
                receiver.add(request.SerializeToString())
                return trace_service_pb2.ExportTraceServiceResponse()

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Service(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.endpoint = f"http://127.0.0.1:{self.port}"
        self.server.start()

    def close(self) -> None:
        self.server.stop(0)
