"""``kvwatch canary``'s verdicts, against a stand-in OpenAI server that logs what LMCache would.

The real vLLM + LMCache cases (the cache works; no connector) run in
tests/e2e; here a small HTTP server plays the API and appends, per request,
the LMCache lines of each failure mode to a log file, so that every verdict is
reached for real through the CLI.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.harness import free_port, kvwatch
from tests.support.stand_ins import json_reply

STAMP = "2026-12-01 10:00:00,000"


def lookup(rid: str, total: int, hit: int) -> str:
    return (
        f"[{STAMP}] LMCache INFO: Reqid: {rid}, Total tokens {total}, Inference Engine computed tokens: 0, "
        f"LMCache hit tokens: {hit}, need to load: {hit} (vllm_v1_adapter.py:1476:lmcache.integration.vllm.x)"
    )


def stored(rid: str, tokens: int) -> str:
    return (
        f"[{STAMP}] LMCache INFO: [req_id={rid}] Stored {tokens} out of total {tokens} tokens. size: 0.0002 GB, "
        "cost 0.2 ms, throughput: 1.0 GB/s; offload_time: 0.1 ms, put_time: 0.02 ms"
    )


class StandIn:
    """/v1/models and /v1/chat/completions; ``behave(n, rid)`` gives the log lines of request n."""

    def __init__(self, log: Path, behave, api_key: str | None = None) -> None:
        self.log = log
        self.behave = behave
        self.api_key = api_key
        self.seen: list[dict] = []
        stand_in = self

        class Handler(BaseHTTPRequestHandler):
            def _reply(self, status: int, body) -> None:
                json_reply(self, status, body)

            def _authorised(self) -> bool:
                return stand_in.api_key is None or self.headers.get("Authorization") == f"Bearer {stand_in.api_key}"

            def do_GET(self) -> None:
                if not self._authorised():
                    return self._reply(401, {"error": "unauthorised"})
                self._reply(200, {"data": [{"id": "tiny-llama"}]})

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                if not self._authorised():
                    return self._reply(401, {"error": "unauthorised"})
                stand_in.seen.append({"path": self.path, "headers": dict(self.headers), "body": body})
                prefix = "chatcmpl-" if self.path == "/v1/chat/completions" else "cmpl-"
                external = prefix + self.headers["X-Request-Id"] + ("" if prefix == "chatcmpl-" else "-0")
                lines = stand_in.behave(len(stand_in.seen), f"{external}-0a1b2c3d")
                # A pair of lists: vLLM's lines and LMCache's multiprocess server's (its own log).
                vllm, lmcache = lines if isinstance(lines, tuple) else (lines, [])
                for path, written in ((stand_in.log, vllm), (stand_in.log.with_name("lmcache.log"), lmcache)):
                    with open(path, "a", encoding="utf-8") as out:
                        out.write("".join(line + "\n" for line in written))
                self._reply(200, {"id": external, "usage": {"prompt_tokens": 480}, "choices": [{"index": 0}]})

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def run_canary(
    tmp_path: Path, behave, *extra: str, api_key: str | None = None, seen: list | None = None
) -> subprocess.CompletedProcess:
    log = tmp_path / "server.log"
    log.write_text(lookup("chatcmpl-older-request-11111111", 480, 0) + "\n")  # before the canary: ignored
    stand_in = StandIn(log, behave, api_key)
    if seen is not None:
        stand_in.seen = seen
    try:
        return kvwatch("canary", "--url", stand_in.url, "--log", str(log), *extra, timeout=120)
    finally:
        stand_in.close()


def works(n: int, rid: str) -> list[str]:
    return [lookup(rid, 480, 0 if n == 1 else 256)] + ([stored(rid, 256)] if n == 1 else [])


def test_a_working_cache_passes_with_a_row_per_request(tmp_path: Path) -> None:
    result = run_canary(tmp_path, works, "-n", "3")
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("kvwatch-canary-")]
    assert len(rows) == 3
    assert [row.split()[2] for row in rows] == ["0", "256", "256"]  # LMCache hit tokens per request
    assert [row.split()[1] for row in rows] == ["480"] * 3  # prompt tokens from the API's usage
    assert "ok: the cache works" in result.stdout


@pytest.mark.parametrize(
    "behave, explanation",
    [
        (lambda n, rid: [], "the LMCache connector is not loaded"),
        (
            lambda n, rid: [
                f"[{STAMP}] LMCache ERROR: Timeout occurred for rank 0, recreating all sockets. Error: Resource "
                "temporarily unavailable (zmq_transport.py:121:lmcache.v1.rpc.zmq_transport)",
                lookup(rid, 480, 0),
            ],
            "LMCache runs degraded",
        ),
        (
            lambda n, rid: (
                [lookup(rid, 480, 0), stored(rid, 256)]
                if n == 1
                else [
                    f"[{STAMP}] LMCache WARNING: Request {rid} is still waiting for async lookup after 3 seconds, "
                    "returning 0 lmcache cached tokens so vllm can recompute "
                    "(lmcache_async_lookup_client.py:178:lmcache.v1.lookup_client.lmcache_async_lookup_client)",
                    lookup(rid, 480, 0),
                ]
            ),
            "LMCache gave up on the lookup of 1 of the 1 later requests after 3 s",
        ),
        (
            lambda n, rid: [
                f"[{STAMP}] LMCache WARNING: HealthMonitor: System unhealthy, entering degraded mode "
                "(base.py:281:lmcache.v1.health_monitor.base)",
                f"[{STAMP}] LMCache WARNING: LMCache is unhealthy, skipping lookup operation "
                "(cache_engine.py:1193:lmcache.v1.cache_engine)",
                lookup(rid, 480, 0),
            ],
            "LMCache's health monitor holds it unhealthy",
        ),
        (lambda n, rid: [lookup(rid, 120, 0)], "shorter than LMCache's chunk size (256)"),
        (
            lambda n, rid: [lookup(rid, 480, 0)] + ([stored(rid, 256)] if n == 1 else []),
            "hash tokens differently (start the server with PYTHONHASHSEED=0)",
        ),
    ],
    ids=["no-connector", "degraded", "lookup-timeout", "unhealthy", "prompt-under-chunk", "hash-seed"],
)
def test_each_failure_is_explained(tmp_path: Path, behave, explanation: str) -> None:
    result = run_canary(tmp_path, behave, "-n", "2")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "FAILED: " in result.stdout and explanation in result.stdout


def test_the_api_key_is_sent(tmp_path: Path) -> None:
    key = tmp_path / "key"
    key.write_text("sk-canary\n")
    assert run_canary(tmp_path, works, "--api-key-file", str(key), api_key="sk-canary").returncode == 0
    result = run_canary(tmp_path, works, api_key="sk-canary")
    assert result.returncode == 2 and "answered 401 (API key?)" in result.stderr


def test_an_unreachable_server_cannot_run_the_canary(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    log.write_text("")
    started = time.monotonic()
    result = kvwatch("canary", "--url", f"http://127.0.0.1:{free_port()}", "--log", str(log), timeout=60)
    assert result.returncode == 2 and "cannot reach the server" in result.stderr
    assert time.monotonic() - started < 30


def test_canary_needs_a_server_and_its_log(tmp_path: Path) -> None:
    result = kvwatch("canary")
    assert result.returncode == 2 and "needs --url and --log" in result.stderr


def test_the_completions_endpoint_works_too(tmp_path: Path) -> None:
    seen: list = []
    result = run_canary(tmp_path, works, "--endpoint", "completions", "--model", "tiny-llama", seen=seen)
    assert result.returncode == 0, result.stdout + result.stderr
    assert {request["path"] for request in seen} == {"/v1/completions"}
    assert all("prompt" in request["body"] and "messages" not in request["body"] for request in seen)


# LMCache's multiprocess mode: vLLM's connector logs its lookups per interval, the LMCache server the
# prefetches (only of requests that hit) and its stores, in its own log.
def mp_interval() -> str:
    return (
        "(APIServer pid=1) INFO 12-02 06:49:48 [metrics.py:103] KV Transfer metrics: LMCache MP lookup count=1, "
        "LMCache MP lookup avg latency (ms)=9.027"
    )


def prefetch(rid: str, keys: int) -> str:
    return (
        f"[{STAMP}] LMCache INFO: Prefetch request completed (L1+L2): {keys}/{keys} retained keys ({keys} L1, 0 L2) "
        f"in 3.8 ms (external_request_id={rid}, prefetch_request_id=2) "
        "(storage_manager.py:651:lmcache.v1.distributed.storage_manager)"
    )


def mp_stored(tokens: int) -> str:
    return (
        f"[{STAMP}] LMCache INFO: Stored {tokens} tokens in 0.041 seconds "
        "(engine_driven_transfer.py:447:lmcache.v1.multiprocess.modules.engine_driven_transfer)"
    )


def mp_works(n: int, rid: str) -> tuple[list[str], list[str]]:
    return [mp_interval()], ([mp_stored(256)] if n == 1 else [prefetch(rid, 1)])


def mp_misses(n: int, rid: str) -> tuple[list[str], list[str]]:
    return [mp_interval()], ([mp_stored(256)] if n == 1 else [])


def test_multiprocess_mode_passes_on_the_lmcache_servers_prefetches(tmp_path: Path) -> None:
    lmcache_log = tmp_path / "lmcache.log"
    lmcache_log.write_text(prefetch("chatcmpl-older-request-11111111", 9) + "\n")  # before the canary: ignored
    result = run_canary(tmp_path, mp_works, "-n", "3", "--log", str(lmcache_log))
    assert result.returncode == 0, result.stdout + result.stderr
    rows = [line for line in result.stdout.splitlines() if line.startswith("kvwatch-canary-")]
    assert [row.split()[2] for row in rows] == ["-", "256", "256"]  # a key is one 256-token chunk
    assert "ok: the cache works: LMCache's server found 1, 1 keys (chunks of 256 tokens)" in result.stdout


def test_multiprocess_mode_without_prefetches_is_a_miss_not_a_missing_connector(tmp_path: Path) -> None:
    lmcache_log = tmp_path / "lmcache.log"
    lmcache_log.write_text("")
    result = run_canary(tmp_path, mp_misses, "-n", "2", "--log", str(lmcache_log))
    assert result.returncode == 1, result.stdout + result.stderr
    assert "LMCache's multiprocess server found nothing of the repeated prompt" in result.stdout
    assert "it stored the first" in result.stdout
