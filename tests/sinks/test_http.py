"""The HTTP endpoint in-process, on real sockets: address families and compression."""

from __future__ import annotations

import gzip
import socket
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, Counter

from agent.config import MetricsConfig
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
