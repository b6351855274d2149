"""``kvwatch top``: the same numbers as /metrics and replay, from a running kvwatch or from log files;
``q`` quits the live view in a real terminal (a pseudo-terminal); a kvwatch it cannot reach is said plainly."""

from __future__ import annotations

import contextlib
import json
import os
import pty
import select
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.harness import REPO, STATS, kvwatch, self_signed_certificate, wait_for

RELEASE_LOG = REPO / "tests" / "fixtures" / "releases" / "0.32.0" / "server.log"
LOOKUP = "[2025-12-14 16:18:24,320] LMCache INFO: Reqid: cmpl-{n}, Total tokens 600, LMCache hit tokens: {hit}, "
LOOKUP += "need to load: {hit} (vllm_v1_adapter.py:1:lmcache.integration.vllm.vllm_v1_adapter)\n"


def command(*args: str, **more_env: str) -> subprocess.CompletedProcess:
    """``kvwatch ARGS`` with ``more_env`` in its environment."""
    return kvwatch(*args, env={**os.environ, **more_env}, timeout=120)


def replayed(path: Path) -> dict[str, float]:
    """Sums of kvwatch replay's series by name, for the server of ``path``."""
    text = command("replay", "-f", "prometheus", "--jobs", "1", str(path)).stdout
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + sample.value
    return out


def test_top_following_a_log_shows_what_replay_counts() -> None:
    done = command("top", "--log", str(RELEASE_LOG), "--json")
    assert done.returncode == 0, done.stderr
    (server,) = json.loads(done.stdout)["servers"]
    again = replayed(RELEASE_LOG)
    assert server["name"] == "server" and server["version"] == "0.32.0"
    assert server["requests_added"] == again["kvwatch_vllm_requests_added_total"] == 8
    assert server["running"] == again["kvwatch_vllm_requests_running"]
    assert server["kv_cache_usage"] == again["kvwatch_vllm_kv_cache_usage_ratio"]
    assert server["prefix_cache_hit_ratio"] == again["kvwatch_vllm_prefix_cache_hit_ratio"] > 0
    assert server["state"] is None  # followed, not supervised
    assert server["ready"] is False and server["stopped"] is True  # its log ends with the shutdown


def test_top_following_an_lmcache_servers_log_tells_it_by_its_first_lines() -> None:
    """The real log of LMCache's multiprocess server: its uvicorn lines (its start, a scrape, its ``Shutting down``)
    are its HTTP server's, none of a vLLM's, as ``kvwatch replay`` of the file has them."""
    log = REPO / "tests" / "fixtures" / "samples" / "lmcache-0.5.6-mp-server.log"
    done = command("top", "--log", str(log), "--json")
    assert done.returncode == 0, done.stderr
    (server,) = json.loads(done.stdout)["servers"]
    again = replayed(log)
    assert (server["ready"], server["stopped"]) == (False, False)
    assert again["kvwatch_vllm_server_ready"] == again["kvwatch_vllm_server_shutdowns_total"] == 0
    assert again["kvwatch_lmcache_prefetches_total"] == 2


def test_once_into_a_file_is_a_report_wider_than_a_terminal_s_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    report = command("top", "--log", str(RELEASE_LOG), "--once").stdout  # captured: no terminal
    widths = {len(line) for line in report.splitlines()}
    assert max(widths) == 120
    assert "prefix hit" in report and "attention" in report and "vLLM cached" in report  # gone at 80 columns
    assert "stopped" in report
    narrow = command("top", "--log", str(RELEASE_LOG), "--once", COLUMNS="80").stdout
    assert max(len(line) for line in narrow.splitlines()) == 80 and "prefix hit" not in narrow


def test_top_reads_a_running_kvwatch_with_its_tls_and_basic_auth(agents, tmp_path: Path) -> None:
    key, cert = self_signed_certificate(tmp_path)
    password = tmp_path / "password"
    password.write_text("hunter2\n")
    log = tmp_path / "vllm-a.log"
    added = "(APIServer pid=1) INFO 12-14 16:18:24 [async_llm.py:1] Added request cmpl-{n}.\n"
    access = '(APIServer pid=1) INFO:     127.0.0.1:5 - "POST /v1/completions HTTP/1.1" 200 OK\n'
    log.write_text(
        STATS + added.format(n=1) + LOOKUP.format(n=1, hit=0) + access + added.format(n=2) + LOOKUP.format(n=2, hit=512)
    )
    agent = agents(
        f'[metrics.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
        f'[metrics.basic_auth]\nprom = {{ file = "{password}" }}\n\n'
        f'[[follow]]\nname = "vllm-a"\npaths = ["{log}"]\nstart_at = "beginning"\n'
    )
    agent.start(wait=False)
    wait_for(lambda: command("top", "--config", str(agent.config), "--json").returncode == 0, timeout=60)

    def reading() -> dict:
        return json.loads(command("top", "--config", str(agent.config), "--json").stdout)["servers"][0]

    server = wait_for(lambda: (s := reading())["lmcache_lookups"] == 2 and s, what="both lookups read")
    assert (server["name"], server["running"], server["lmcache_hit_tokens"]) == ("vllm-a", 1, 512)
    assert server["lmcache_hit_ratio"] == 512 / 1200
    assert server["prefix_cache_hit_ratio"] == 0.5
    # /api/requests: the request that ended (its access line came), with why its hit fell short.
    # cmpl-2 has not ended: no row yet, though its lines are a year old (idleness is measured in log time).
    (row,) = server["recent_requests"]
    assert (row["id"], row["status"], row["lmcache_hit_tokens"], row["reason"]) == ("cmpl-1", 200, 0, "not seen before")
    text = command("top", "--config", str(agent.config), "--once", COLUMNS="200").stdout
    assert "vllm-a" in text and "42.7%" in text  # the LMCache hit ratio since start
    context = ssl.create_default_context(cafile=str(cert))
    with pytest.raises(urllib.error.HTTPError) as denied:  # the requests are guarded as /metrics is
        urllib.request.urlopen(f"https://127.0.0.1:{agent.port}/api/requests", context=context, timeout=10)
    assert denied.value.code == 401
    refused = command("top", "--url", f"https://127.0.0.1:{agent.port}", "--once")
    assert refused.returncode != 0 and "cannot reach kvwatch" in refused.stderr  # no CA given: TLS fails


def test_an_unreachable_kvwatch_is_said_plainly(tmp_path: Path) -> None:
    done = command("top", "--url", "http://127.0.0.1:9", "--once")
    assert done.returncode != 0
    assert "cannot reach kvwatch" in done.stderr and "Traceback" not in done.stderr


class Terminal:
    """``kvwatch top ARGS`` on a pseudo-terminal of 160 x 30: what it has drawn so far, keys sent to it."""

    def __init__(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.pid, self.fd = pty.fork()
        if self.pid == 0:  # the child
            os.chdir(REPO)
            os.environ.update({"COLUMNS": "160", "LINES": "30", "TERM": "xterm", **(env or {})})
            os.execv(sys.executable, [sys.executable, "-m", "agent", "top", *args])
        self.shown = bytearray()

    def until(self, text: bytes, what: str, timeout: float = 60) -> None:
        """Read the screen until ``text`` is drawn anew."""
        deadline, start = time.monotonic() + timeout, len(self.shown)
        while text not in self.shown[start:] and time.monotonic() < deadline:
            if select.select([self.fd], [], [], 0.5)[0]:
                self.shown.extend(os.read(self.fd, 65536))
        assert text in self.shown[start:], f"{what}: {bytes(self.shown[-400:])!r}"

    def quit(self) -> int:
        """Press q; the exit status (the test fails if it does not quit within 30 s)."""
        os.write(self.fd, b"q")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            finished, status = os.waitpid(self.pid, os.WNOHANG)
            if finished:
                return os.waitstatus_to_exitcode(status)
            if select.select([self.fd], [], [], 0.2)[0]:
                with contextlib.suppress(OSError):  # the terminal closes as the child exits
                    self.shown.extend(os.read(self.fd, 65536))
        raise AssertionError("kvwatch top did not quit on q")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError, ChildProcessError):
            os.kill(self.pid, 9)
            os.waitpid(self.pid, 0)
        os.close(self.fd)


def test_q_quits_the_live_view_in_a_terminal(tmp_path: Path) -> None:
    log = tmp_path / "live.log"
    log.write_text(STATS)
    terminal = Terminal("--log", str(log), "--interval", "0.2")
    try:
        terminal.until(b"live", "the server")
        assert b"kvwatch top" in terminal.shown
        with log.open("a") as handle:  # a line written now shows on a later redraw
            handle.write(STATS.replace("Running: 1 reqs", "Running: 4321 reqs"))
        terminal.until(b"4,321", "the new line's running requests", timeout=30)
        assert terminal.quit() == 0
    finally:
        terminal.close()


def test_the_live_view_says_when_kvwatch_goes_away_and_shows_it_again_when_it_is_back(agents, tmp_path: Path) -> None:
    """A kvwatch restarting under ``kvwatch top --url``: the last picture stays with the reason; the next
    reading after it is back shows the server again (no colour: NO_COLOR)."""
    log = tmp_path / "back.log"
    log.write_text(STATS)
    agent = agents(f'[[follow]]\nname = "comeback"\npaths = ["{log}"]\nstart_at = "beginning"\n').start()
    terminal = Terminal("--url", agent.url(""), "--interval", "0.3", env={"NO_COLOR": "1"})
    try:
        terminal.until(b"comeback", "the server")
        agent.kill()
        terminal.until(b"cannot reach kvwatch", "the reason while kvwatch is away")
        agent.start()
        terminal.until(b"comeback", "the server again")
        assert b"\x1b[3" not in terminal.shown  # no colour: NO_COLOR (cursor moves aside, no SGR colour codes)
        assert terminal.quit() == 0
    finally:
        terminal.close()


def test_recent_requests_0_keeps_none_and_joins_nothing(agents, tmp_path: Path) -> None:
    log = tmp_path / "quiet.log"
    log.write_text(STATS)
    agent = agents(f'[[follow]]\nname = "quiet"\npaths = ["{log}"]\nstart_at = "beginning"\n')
    agent.config.write_text(agent.config.read_text().replace("[metrics]", "recent_requests = 0\n\n[metrics]", 1))
    agent.start()
    wait_for(lambda: agent.value("kvwatch_vllm_stats_lines_total", server="quiet", engine="0") == 1, what="the line")
    status, body = agent.get("/api/requests")
    assert (status, json.loads(body)) == (200, {"servers": {}})
    checked = command("check", "--config", str(agent.config))
    assert "recent_requests = 0" in checked.stdout, checked.stderr


def test_a_preempted_requests_latency_says_how_often(tmp_path: Path) -> None:
    log = tmp_path / "vllm.log"
    connector = "[2026-12-06 16:03:{}] LMCache WARNING: <preempted> by {} requests: {{'cmpl-a-0-97333607'}} (x.py:1:x)"
    log.write_text(
        "(APIServer pid=1) INFO 12-06 16:03:07 [async_llm.py:578] Added request cmpl-a-0-97333607.\n"
        + connector.format("12,875", "preempted")
        + "\n"
        + connector.format("20,072", "resumed")
        + "\n"
        + 'INFO:     127.0.0.1:1 - "POST /v1/completions HTTP/1.1" 200 OK\n'
    )
    report = command("top", "--log", str(log), "--once", COLUMNS="160").stdout
    assert "preempted 1×" in report, report
