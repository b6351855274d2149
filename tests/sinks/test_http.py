"""The HTTP endpoint in-process, on real sockets: address families, compression, bursts, slow and bad clients."""

from __future__ import annotations

import concurrent.futures
import gzip
import http.client
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import CounterMetricFamily

from agent.config import MetricsConfig
from agent.sinks import http as http_module
from agent.sinks.http import MetricsServer


def serve(address: str) -> MetricsServer:
    registry = CollectorRegistry()
    Counter("kvwatch_test_total", "A counter.", registry=registry).inc()
    server = MetricsServer(MetricsConfig(address=address, port=0), registry, lambda: (True, "ok"))
    server.start()
    return server


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6 on this host")
def test_double_colon_serves_ipv6_and_ipv4_clients() -> None:
    server = serve("::")
    try:
        for host in ("[::1]", "127.0.0.1"):
            with urllib.request.urlopen(f"http://{host}:{server.port}/metrics", timeout=5) as response:
                assert b"kvwatch_test_total 1.0" in response.read()
    finally:
        server.stop()


def test_gzip_when_the_scraper_accepts_it() -> None:
    server = serve("127.0.0.1")
    try:
        request = urllib.request.Request(f"http://127.0.0.1:{server.port}/metrics", headers={"Accept-Encoding": "gzip"})
        with urllib.request.urlopen(request, timeout=5) as response:
            assert response.headers["Content-Encoding"] == "gzip"
            assert b"kvwatch_test_total 1.0" in gzip.decompress(response.read())
    finally:
        server.stop()


class SlowCollector:
    """A collector that takes ``seconds`` to render and counts its renderings."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.renderings = 0

    def collect(self):
        self.renderings += 1
        time.sleep(self.seconds)
        family = CounterMetricFamily("kvwatch_slow", "A slow family.")
        family.add_metric([], self.renderings)
        yield family


def slow_server(seconds: float, health=lambda: (True, "ok")) -> tuple[MetricsServer, SlowCollector]:
    registry = CollectorRegistry(auto_describe=False)
    collector = SlowCollector(seconds)
    registry.register(collector)
    server = MetricsServer(MetricsConfig(address="127.0.0.1", port=0), registry, health)
    server.start()
    return server, collector


def get(port: int, path: str, timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_a_burst_of_scrapes_is_answered_whole_from_shared_renderings() -> None:
    server, collector = slow_server(0.3)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=100) as pool:
            answers = list(pool.map(lambda _: get(server.port, "/metrics"), range(200)))
        assert [status for status, _ in answers] == [200] * 200
        assert all(b"kvwatch_slow_total" in body for _, body in answers)
        assert collector.renderings < 40  # 200 scrapes, a few renderings
    finally:
        server.stop()


def test_healthz_is_answered_while_a_slow_rendering_goes_on() -> None:
    server, _collector = slow_server(3.0)
    try:
        scrape = threading.Thread(target=get, args=(server.port, "/metrics"))
        scrape.start()
        time.sleep(0.2)
        started = time.monotonic()
        assert get(server.port, "/healthz") == (200, b"ok\n")
        assert time.monotonic() - started < 1.0
        scrape.join()
    finally:
        server.stop()


def test_slow_clients_take_no_thread_each_are_cut_off_and_the_excess_is_refused(monkeypatch) -> None:
    monkeypatch.setattr(http_module, "HEAD_TIMEOUT", 5.0)  # long enough to open them all on a busy machine
    server, _collector = slow_server(0.0)
    threads = threading.active_count()
    idle = []
    try:
        for _ in range(http_module.MAX_CONNECTIONS + 20):
            client = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            client.sendall(b"G")  # one byte, then nothing: a head that never ends
            idle.append(client)
        wait_until(lambda: server.refused >= 20)
        assert threading.active_count() <= threads + 1
        assert idle[-1].recv(200).startswith(b"HTTP/1.1 503")
        # Past HEAD_TIMEOUT every slow client is cut off ...
        wait_until(lambda: server.connections == 0, timeout=15.0)
        assert all(client.recv(10) == b"" for client in idle[:5])
        assert get(server.port, "/metrics")[0] == 200  # ... and scrapes are served again
    finally:
        for client in idle:
            client.close()
        server.stop()


def wait_until(check, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_malformed_requests_get_a_clear_status() -> None:
    server, _collector = slow_server(0.0)
    try:
        for request, status in (
            (b"NONSENSE\r\n\r\n", b"400"),
            (b"GET /metrics HTTP/2.0\r\n\r\n", b"505"),
            (b"POST /metrics HTTP/1.1\r\nHost: x\r\n\r\n", b"405"),
            (b"GET /metrics HTTP/1.1\r\n" + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n", b"431"),
        ):
            with socket.create_connection(("127.0.0.1", server.port), timeout=5) as client:
                client.sendall(request)
                assert client.recv(100).split(b" ")[1] == status, request[:30]
    finally:
        server.stop()


def test_keep_alive_serves_several_requests_on_one_connection() -> None:
    server, _collector = slow_server(0.0)
    try:
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        for path in ("/metrics", "/healthz", "/", "/nope"):
            connection.request("GET", path)
            response = connection.getresponse()
            response.read()
            assert response.status == (404 if path == "/nope" else 200)
        connection.request("HEAD", "/metrics")
        response = connection.getresponse()
        assert response.status == 200 and response.read() == b""
        connection.close()
    finally:
        server.stop()
