"""The HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` for kvwatch itself, ``/`` a landing page.

TLS and basic auth follow the idea of Prometheus' exporter web
configuration: a certificate and key (optionally a client CA, which then
requires client certificates), and users whose passwords come from files or
environment variables.  Passwords are compared in constant time.
"""

from __future__ import annotations

import base64
import contextlib
import gzip
import hmac
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client.registry import CollectorRegistry

from agent import __version__
from agent.config import MetricsConfig
from agent.families import exposition

log = logging.getLogger("kvwatch.http")

CONNECTION_TIMEOUT = 30.0  # seconds a connection may sit idle (Prometheus' scrape timeout is 10 s)

LANDING = """<!doctype html>
<html><head><title>kvwatch</title></head>
<body><h1>kvwatch {version}</h1>
<p>Metrics of vLLM and LMCache servers, read from their logs.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li></ul>
</body></html>
"""


class MetricsServer:
    """Serves a registry until stopped; ``health`` returns (ok, text) for ``/healthz``."""

    def __init__(
        self,
        config: MetricsConfig,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, str]],
        passwords: dict[str, str] | None = None,
    ) -> None:
        self.config = config
        handler = _handler(registry, health, passwords or {})
        server_class = _Server6 if ":" in config.address else _Server
        self.httpd = server_class((config.address, config.port), handler)
        if config.tls is not None:
            context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            context.minimum_version = ssl.TLSVersion.TLSv1_2
            context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
            if config.tls.client_ca_file is not None:
                context.load_verify_locations(cafile=str(config.tls.client_ca_file))
                context.verify_mode = ssl.CERT_REQUIRED
            self.httpd.tls = context
        self._thread = threading.Thread(target=self.httpd.serve_forever, name="kvwatch-http", daemon=True)

    @property
    def port(self) -> int:
        return self.httpd.server_address[1]

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class _Server(ThreadingHTTPServer):
    """One thread per connection; with TLS, the handshake happens in that thread.

    Wrapping the listening socket instead would run every handshake in the
    accept loop, where one client that connects and sends nothing would
    stall every scrape.
    """

    daemon_threads = True
    tls: ssl.SSLContext | None = None

    def finish_request(self, request, client_address) -> None:
        if self.tls is None:
            super().finish_request(request, client_address)
            return
        request.settimeout(CONNECTION_TIMEOUT)
        try:
            wrapped = self.tls.wrap_socket(request, server_side=True)
        except (OSError, ssl.SSLError) as exc:
            log.debug("TLS handshake with %s failed: %s", client_address[0], exc)
            return
        try:
            super().finish_request(wrapped, client_address)
        finally:
            wrapped.close()


class _Server6(_Server):
    """An IPv6 address; ``::`` also accepts IPv4 clients (dual stack) where the host allows."""

    address_family = socket.AF_INET6

    def server_bind(self) -> None:
        with contextlib.suppress(OSError, AttributeError):
            self.socket.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        super().server_bind()


class _Handler(BaseHTTPRequestHandler):
    """Serves /metrics, /healthz and a landing page; the subclass that :func:`_handler` makes holds what to serve."""

    server_version = f"kvwatch/{__version__}"
    timeout = CONNECTION_TIMEOUT  # an idle connection does not hold its thread for ever
    registry: CollectorRegistry
    passwords: dict[str, str]

    def health(self) -> tuple[bool, str]:
        raise NotImplementedError

    def log_message(self, format: str, *args) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def _authorized(self) -> bool:
        if not self.passwords:
            return True
        header = self.headers.get("Authorization", "")
        if not header.startswith("Basic "):
            return False
        try:
            user, _, password = base64.b64decode(header[6:], validate=True).decode("utf-8").partition(":")
        except (ValueError, UnicodeDecodeError):
            return False
        expected = self.passwords.get(user)
        # Compare against something even for an unknown user, so timing tells nothing.
        ok = hmac.compare_digest(password.encode(), (expected if expected is not None else "\0").encode())
        return ok and expected is not None

    def _send(self, code: int, body: bytes, content_type: str, extra: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        if not self._authorized():
            self._send(
                401, b"Unauthorized\n", "text/plain; charset=utf-8", {"WWW-Authenticate": 'Basic realm="kvwatch"'}
            )
            return
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            self._metrics()
        elif path == "/healthz":
            ok, text = self.health()
            self._send(200 if ok else 503, (text + "\n").encode(), "text/plain; charset=utf-8")
        elif path == "/":
            self._send(200, LANDING.format(version=__version__).encode(), "text/html; charset=utf-8")
        else:
            self._send(404, b"Not found: try /metrics\n", "text/plain; charset=utf-8")

    def _metrics(self) -> None:
        try:
            body, content_type = exposition(self.registry, self.headers.get("Accept", ""))
        except Exception:  # a collector bug: say so rather than drop the connection
            log.exception("collecting metrics failed")
            self._send(500, b"collecting metrics failed; see kvwatch's log\n", "text/plain; charset=utf-8")
            return
        extra = {}
        if "gzip" in self.headers.get("Accept-Encoding", ""):
            body = gzip.compress(body, compresslevel=3)
            extra["Content-Encoding"] = "gzip"
        self._send(200, body, content_type, extra)


def _handler(
    registry: CollectorRegistry, health: Callable[[], tuple[bool, str]], passwords: dict[str, str]
) -> type[_Handler]:
    """The handler class of one endpoint: what it serves, and to whom."""
    attributes = {"registry": registry, "passwords": passwords, "health": staticmethod(health)}
    return type("Handler", (_Handler,), attributes)
