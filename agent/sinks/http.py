"""The HTTP endpoint: ``/metrics`` for Prometheus, ``/healthz`` for kvwatch itself, ``/api/requests`` (each
server's last requests, for ``kvwatch top``), ``/`` a status page.

One event loop in one thread holds every connection, so neither many
scrapers nor many idle or slow clients cost a thread each: at most
``MAX_CONNECTIONS`` are open at once (one more is answered 503 and closed),
a request's head must arrive whole within ``HEAD_TIMEOUT`` (a client that
sends a byte now and then is cut off), and an idle keep-alive connection is
closed after ``IDLE_TIMEOUT``.  The exposition is rendered in a worker
thread; scrapes that arrive while one is being rendered get that same one,
so a burst of scrapers costs one rendering.  ``/healthz`` is answered by the
loop itself and never waits for a rendering.

TLS and basic auth follow the idea of Prometheus' exporter web
configuration: a certificate and key (optionally a client CA, which then
requires client certificates), and users whose passwords come from files or
environment variables.  Passwords are compared in constant time.
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import contextlib
import gzip
import hmac
import json
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from http import HTTPStatus

from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import CollectorRegistry

from agent import __version__
from agent.config import MetricsConfig
from agent.exposition import exposition

log = logging.getLogger("kvwatch.http")

MAX_CONNECTIONS = 256  # open at once (Prometheus keeps one per target); each costs a few KiB, no thread
BACKLOG = 128  # connections the kernel holds before kvwatch accepts them
HEAD_TIMEOUT = 10.0  # seconds for a request's line and headers to arrive (Prometheus' scrape timeout is 10 s)
IDLE_TIMEOUT = 30.0  # seconds an idle keep-alive connection stays open
MAX_HEAD = 16 * 1024  # bytes of request line and headers
TEXT = "text/plain; charset=utf-8"
HTML = "text/html; charset=utf-8"

LANDING = """<!doctype html>
<html><head><title>kvwatch</title></head>
<body><h1>kvwatch {version}</h1>
<p>Metrics of vLLM and LMCache servers, read from their logs.</p>
<ul><li><a href="metrics">/metrics</a></li><li><a href="healthz">/healthz</a></li></ul>
</body></html>
"""


class Request:
    """What kvwatch reads of a request: method, path and headers (names in lower case)."""

    __slots__ = ("headers", "method", "path", "version")

    def __init__(self, method: str, path: str, version: str, headers: dict[str, str]) -> None:
        self.method = method
        self.path = path
        self.version = version
        self.headers = headers

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        if self.version == "HTTP/1.0":
            return connection == "keep-alive"
        return connection != "close"


class BadRequest(Exception):
    """A request kvwatch answers with an error and then closes the connection."""

    def __init__(self, status: HTTPStatus) -> None:
        super().__init__(status.phrase)
        self.status = status


def parse_head(head: bytes) -> Request:
    """A request's line and headers (up to the blank line); raises :class:`BadRequest`."""
    try:
        text = head.decode("latin-1")
        line, *fields = text.split("\r\n")
        method, target, version = line.split(" ")
    except ValueError:
        raise BadRequest(HTTPStatus.BAD_REQUEST) from None
    if not version.startswith("HTTP/1."):
        raise BadRequest(HTTPStatus.HTTP_VERSION_NOT_SUPPORTED)
    headers = {}
    for field in fields:
        if not field:
            continue
        name, colon, value = field.partition(":")
        if not colon:
            raise BadRequest(HTTPStatus.BAD_REQUEST)
        headers[name.strip().lower()] = value.strip()
    return Request(method, target.split("?", 1)[0], version, headers)


class SharedRendering:
    """Renders the exposition in a worker thread; requests that arrive during a rendering share it."""

    def __init__(self, registry: CollectorRegistry, pool: concurrent.futures.Executor) -> None:
        self.registry = registry
        self.pool = pool
        self._rendering: dict[str, asyncio.Future] = {}  # content type -> the rendering under way

    async def body(self, accept: str) -> tuple[bytes, str]:
        _encoder, content_type = choose_encoder(accept)
        future = self._rendering.get(content_type)
        if future is None:
            loop = asyncio.get_running_loop()
            future = loop.run_in_executor(self.pool, exposition, self.registry, accept)
            self._rendering[content_type] = future
            future.add_done_callback(lambda _done: self._rendering.pop(content_type, None))
        return await asyncio.shield(future)


class MetricsServer:
    """Serves a registry until stopped; ``health`` returns (ok, text) for ``/healthz``.

    The socket is bound at construction, so a port in use fails before any server starts."""

    def __init__(
        self,
        config: MetricsConfig,
        registry: CollectorRegistry,
        health: Callable[[], tuple[bool, str]],
        passwords: dict[str, str] | None = None,
        requests: Callable[[], dict] | None = None,
        page: Callable[[], str] | None = None,
    ) -> None:
        self.config = config
        self.health = health
        self.requests = requests  # /api/requests: each server's last requests (kvwatch top)
        self.page = page  # /: the status page (a landing page without it)
        self.passwords = passwords or {}
        self.tls = _tls_context(config)
        self.sock = _bind(config.address, config.port)
        self.connections = 0
        self.refused = 0
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="kvwatch-render")
        self.rendering = SharedRendering(registry, self._pool)
        self._loop = asyncio.new_event_loop()
        self._loop.set_exception_handler(_quiet)
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="kvwatch-http", daemon=True)

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def start(self) -> None:
        self._thread.start()
        serving = asyncio.run_coroutine_threadsafe(self._serve(), self._loop)
        self._server = serving.result(timeout=10)

    async def _serve(self) -> asyncio.Server:
        return await asyncio.start_server(
            self._connection,
            sock=self.sock,
            ssl=self.tls,
            ssl_handshake_timeout=HEAD_TIMEOUT if self.tls else None,
            limit=MAX_HEAD,
        )

    def stop(self) -> None:
        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(timeout=10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=10)
            self._loop.close()
        else:
            self.sock.close()
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.wait(tasks, timeout=5)

    # -- one connection -----------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.connections >= MAX_CONNECTIONS:
            self.refused += 1
            if self.refused == 1 or self.refused % 1000 == 0:
                log.warning("more than %d connections open; refusing more (%d so far)", MAX_CONNECTIONS, self.refused)
            await _respond(writer, "GET", HTTPStatus.SERVICE_UNAVAILABLE, b"too many connections\n", TEXT, close=True)
            await _close(writer)
            return
        self.connections += 1
        try:
            await self._requests(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, TimeoutError, ssl.SSLError, OSError):
            pass  # the client went away, or was too slow: nothing to answer
        finally:
            self.connections -= 1
            await _close(writer)

    async def _requests(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first = True
        while True:
            # The first byte of a next request may take a while (keep-alive); once it
            # has come, the whole head must follow within HEAD_TIMEOUT.
            start = await asyncio.wait_for(reader.read(1), HEAD_TIMEOUT if first else IDLE_TIMEOUT)
            if not start:
                return
            first = False
            try:
                head = start + await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), HEAD_TIMEOUT)
                request = parse_head(head[:-4])
            except asyncio.LimitOverrunError:
                await _respond(writer, "GET", HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE, b"", TEXT, close=True)
                return
            except BadRequest as exc:
                await _respond(writer, "GET", exc.status, f"{exc.status.phrase}\n".encode(), TEXT, close=True)
                return
            if "content-length" in request.headers or "transfer-encoding" in request.headers:
                await _respond(writer, request.method, HTTPStatus.BAD_REQUEST, b"no body expected\n", TEXT, close=True)
                return
            status, body, content_type, extra = await self._answer(request)
            await _respond(writer, request.method, status, body, content_type, extra, close=not request.keep_alive)
            if not request.keep_alive:
                return

    async def _answer(self, request: Request) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        if request.method not in ("GET", "HEAD"):
            return HTTPStatus.METHOD_NOT_ALLOWED, b"GET or HEAD only\n", TEXT, {"Allow": "GET, HEAD"}
        if not self._authorized(request.headers.get("authorization", "")):
            return HTTPStatus.UNAUTHORIZED, b"Unauthorized\n", TEXT, {"WWW-Authenticate": 'Basic realm="kvwatch"'}
        if request.path == "/metrics":
            return await self._metrics(request)
        if request.path == "/healthz":
            ok, text = self.health()
            return (HTTPStatus.OK if ok else HTTPStatus.SERVICE_UNAVAILABLE), (text + "\n").encode(), TEXT, {}
        if request.path == "/api/requests" and self.requests is not None:
            body = json.dumps({"servers": self.requests()}).encode()
            return HTTPStatus.OK, body, "application/json", {"Cache-Control": "no-store"}
        if request.path == "/":
            if self.page is None:
                return HTTPStatus.OK, LANDING.format(version=__version__).encode(), HTML, {}
            try:  # rendered in a worker thread, as /metrics is
                page = await asyncio.get_running_loop().run_in_executor(self._pool, self.page)
            except Exception:
                log.exception("rendering the status page failed")
                return HTTPStatus.INTERNAL_SERVER_ERROR, b"rendering the page failed; see kvwatch's log\n", TEXT, {}
            return HTTPStatus.OK, page.encode(), HTML, {"Cache-Control": "no-store"}
        return HTTPStatus.NOT_FOUND, b"Not found: try /metrics\n", TEXT, {}

    async def _metrics(self, request: Request) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        try:
            body, content_type = await self.rendering.body(request.headers.get("accept", ""))
        except Exception:  # a collector bug: say so rather than drop the connection
            log.exception("collecting metrics failed")
            return HTTPStatus.INTERNAL_SERVER_ERROR, b"collecting metrics failed; see kvwatch's log\n", TEXT, {}
        if "gzip" in request.headers.get("accept-encoding", ""):
            body = await asyncio.get_running_loop().run_in_executor(self._pool, gzip.compress, body, 3)
            return HTTPStatus.OK, body, content_type, {"Content-Encoding": "gzip"}
        return HTTPStatus.OK, body, content_type, {}

    def _authorized(self, header: str) -> bool:
        if not self.passwords:
            return True
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


async def _respond(
    writer: asyncio.StreamWriter,
    method: str,
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    extra: dict[str, str] | None = None,
    close: bool = False,
) -> None:
    lines = [
        f"HTTP/1.1 {status.value} {status.phrase}",
        f"Server: kvwatch/{__version__}",
        f"Content-Type: {content_type}",
        f"Content-Length: {len(body)}",
        *(f"{key}: {value}" for key, value in (extra or {}).items()),
    ]
    if close:
        lines.append("Connection: close")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    if method != "HEAD":
        writer.write(body)
    await asyncio.wait_for(writer.drain(), IDLE_TIMEOUT)


async def _close(writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(OSError, TimeoutError, ssl.SSLError):
        await asyncio.wait_for(writer.wait_closed(), 1.0)


def _bind(address: str, port: int) -> socket.socket:
    """The listening socket; ``::`` also takes IPv4 clients (dual stack) where the host allows."""
    if ":" in address:
        dual = address == "::" and socket.has_dualstack_ipv6()
        return socket.create_server(
            (address, port), family=socket.AF_INET6, backlog=BACKLOG, reuse_port=False, dualstack_ipv6=dual
        )
    return socket.create_server((address, port), backlog=BACKLOG)


def _tls_context(config: MetricsConfig) -> ssl.SSLContext | None:
    if config.tls is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(str(config.tls.cert_file), str(config.tls.key_file))
    if config.tls.client_ca_file is not None:
        context.load_verify_locations(cafile=str(config.tls.client_ca_file))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


def _quiet(loop: asyncio.AbstractEventLoop, context: dict) -> None:
    """Failed handshakes and dropped clients are the client's business: debug level, not tracebacks."""
    exc = context.get("exception")
    if isinstance(exc, ConnectionError | ssl.SSLError | TimeoutError | OSError):
        log.debug("connection: %s", exc)
        return
    loop.default_exception_handler(context)
