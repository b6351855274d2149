"""``kvwatch run`` end to end with real processes, files and signals (the servers are tests/support/fakeserver.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from agent import config as configuration
from agent.commands.run import EXIT_HANDED_OVER, Daemon
from agent.supervise.server import proc_start_time
from tests.support.harness import (
    FAKE,
    REPO,
    STATS,
    as_nobody,
    fake_server,
    free_port,
    self_signed_certificate,
    stats_lines,
    wait_for,
)
from tests.support.otlp_receiver import HttpReceiver, attributes, traced_follow, tracing_env


def test_supervised_server_metrics_health_and_landing_page(agents) -> None:
    port = free_port()
    agent = agents(fake_server("fake", "--lines", "40", "--rate", "100", port=port)).start()
    wait_for(lambda: stats_lines(agent, "fake") == 40, what="40 stats lines")
    wait_for(
        lambda: agent.value("kvwatch_server_state", process="vllm", server="fake", state="running") == 1, what="running"
    )
    assert agent.value("kvwatch_server_up", process="vllm", server="fake") == 1
    assert agent.value("kvwatch_server_health_up", process="vllm", server="fake") == 1
    assert agent.value("kvwatch_vllm_prefix_cache_hit_ratio", server="fake", engine="0") == 0.5
    info = [k for k in agent.metrics() if k[0] == "kvwatch_server_info"]
    assert dict(info[0][1])["vllm_version"] == "0.32.0"
    assert any(k[0] == "kvwatch_build_info" for k in agent.metrics())
    assert agent.get("/healthz") == (200, "ok\n")
    status, page = agent.get("/")
    assert status == 200 and 'href="metrics"' in page
    assert agent.get("/nope")[0] == 404
    log = agent.directory / "logs" / "fake.log"
    assert (log.stat().st_mode & 0o777) == 0o640


def test_followed_file_every_event_counted_exactly(agents, tmp_path: Path) -> None:
    """Rotation by rename, copytruncate, delete-and-recreate and a symlink switch under a running agent."""
    logs = tmp_path / "followed"
    logs.mkdir()
    current = logs / "vllm.log"
    current.write_text("")
    link = tmp_path / "link.log"
    agent = agents(
        f'[[follow]]\nname = "f"\npaths = ["{current}"]\n\n[[follow]]\nname = "l"\npaths = ["{link}"]\n'
    ).start()
    written = 0

    def write(path: Path, n: int) -> None:
        # Numbered lines, as real logs differ line to line (their time stamps):
        # a copytruncate is told from growth by the changed head of the file.
        nonlocal written
        with open(path, "a") as handle:
            for i in range(written, written + n):
                handle.write(STATS.replace("10.0 tokens/s", f"{i}.0 tokens/s"))
                handle.flush()
        written += n

    write(current, 50)
    wait_for(lambda: stats_lines(agent, "f") == written, what="first lines")
    # rename rotation: the writer finishes the old file after the rename
    os.rename(current, logs / "vllm.log.1")
    write(logs / "vllm.log.1", 7)
    write(current, 11)
    wait_for(lambda: stats_lines(agent, "f") == written, what="lines across a rename")
    # copytruncate
    with open(current, "r+") as handle:
        handle.truncate(0)
    write(current, 13)
    wait_for(lambda: stats_lines(agent, "f") == written, what="lines after a truncation")
    # delete and recreate
    current.unlink()
    time.sleep(0.5)
    write(current, 17)
    wait_for(lambda: stats_lines(agent, "f") == written, what="lines after delete-and-recreate")
    # partial line written in pieces
    with open(current, "a") as handle:
        for piece in (STATS[:30], STATS[30:90], STATS[90:]):
            handle.write(piece)
            handle.flush()
            time.sleep(0.1)
    written += 1
    wait_for(lambda: stats_lines(agent, "f") == written, what="a line written in pieces")
    assert agent.value("kvwatch_tail_rotations_total", server="f", path=str(current)) == 2
    assert agent.value("kvwatch_tail_truncations_total", server="f", path=str(current)) == 1
    assert agent.value("kvwatch_lines_skipped_total", server="f", reason="partial") is None
    # a symlink that appears after start, then switches target
    first, second = tmp_path / "run1.log", tmp_path / "run2.log"
    first.write_text(STATS * 3)
    link.symlink_to(first)
    wait_for(lambda: stats_lines(agent, "l") == 3, what="a file appearing after start")
    second.write_text(STATS * 4)
    tmp_link = tmp_path / "tmp.link"
    tmp_link.symlink_to(second)
    os.replace(tmp_link, link)
    wait_for(lambda: stats_lines(agent, "l") == 7, what="lines after a symlink switch")


def test_a_sink_bug_on_one_kind_of_event_loses_no_line_and_no_other_number(agents, tmp_path: Path) -> None:
    """A bug in the request joiner raising on every ``Added request`` line (injected into the real kvwatch
    process by a sitecustomize on PYTHONPATH: none is known): each is counted in kvwatch_sink_errors_total and
    logged once with where it was raised, the stats still count those lines, and every line is read.  (The
    joiner runs once the recent requests are asked for: the lines before are joined then, those after with each
    delivery of lines.)"""
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "from agent.sinks import traces\n\n\n"
        "def _added(self, event, when):\n"
        "    raise RuntimeError('an injected joiner bug on ' + event.request_id)\n\n\n"
        "traces.TraceBuilder._added = _added\n"
    )
    log = tmp_path / "vllm.log"
    log.write_text("")
    python_path = os.pathsep.join(filter(None, (str(hook), os.environ.get("PYTHONPATH"))))
    agent = agents(f'[[follow]]\nname = "f"\npaths = ["{log}"]\n', env={"PYTHONPATH": python_path}).start()
    added = "INFO 11-25 10:00:0{n} [async_llm.py:252] Added request chatcmpl-{n}.\n"
    with open(log, "a") as handle:
        for n in range(6):
            handle.write(added.format(n=n) + STATS)
            handle.flush()
            if n == 2:
                wait_for(lambda: agent.value("kvwatch_lines_total", server="f") == 6, what="the first lines")
                assert agent.value("kvwatch_sink_errors_total", server="f", sink="requests") == 0  # none joined
                assert agent.get("/api/requests")[0] == 200
                assert agent.value("kvwatch_sink_errors_total", server="f", sink="requests") == 3
    wait_for(lambda: agent.value("kvwatch_lines_total", server="f") == 12, what="every line")
    assert agent.value("kvwatch_sink_errors_total", server="f", sink="requests") == 6
    assert agent.value("kvwatch_sink_errors_total", server="f", sink="stats") == 0
    assert agent.value("kvwatch_vllm_requests_added_total", server="f") == 6
    assert stats_lines(agent, "f") == 6
    log_text = agent.log()
    assert log_text.count("the requests sink raised RuntimeError") == 1 and "sitecustomize.py" in log_text
    assert "bug on chatcmpl-" not in log_text  # an exception's text may quote the event's: never logged
    assert agent.process.poll() is None


def test_sigkill_mid_file_then_restart_resumes_exactly(agents, tmp_path: Path) -> None:
    log = tmp_path / "app.log"
    log.write_text("")
    body = f'[[follow]]\nname = "f"\npaths = ["{log}"]\n'
    agent = agents(body).start()
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            f"line = {STATS!r}\n"
            f"with open({str(log)!r}, 'a') as f:\n"
            "    for i in range(3000):\n"
            "        f.write(line); f.flush()\n"
            "        if i % 50 == 0: time.sleep(0.01)\n",
        ]
    )
    wait_for(lambda: stats_lines(agent, "f") > 300, what="reading under way")
    agent.process.kill()  # SIGKILL, mid-file
    agent.process.wait()
    saved = json.loads((tmp_path / "state" / "positions.json").read_text())["positions"]["f"][str(log)]
    writer.wait(timeout=60)
    with open(log, "rb") as handle:
        before = handle.read(saved["offset"]).count(b"\n")
        after = handle.read().count(b"\n")
    assert before + after == 3000 and after > 0
    again = agents(body).start()
    # The counters were saved with the position: they go on from it, to exactly what was written.
    wait_for(lambda: stats_lines(again, "f") == 3000, what="the counters to reach the 3000 lines written")
    time.sleep(0.5)
    assert stats_lines(again, "f") == 3000


def test_a_state_file_kvwatch_cannot_write_is_one_warning_and_a_metric_and_the_reading_goes_on(
    agents, tmp_path: Path
) -> None:
    """The read positions cannot be saved (a directory is in their way: the same failure as a full disk
    at every save, for any user): kvwatch says so once, not at each of its saves a second, shows it on
    /metrics, and reads on."""
    log = tmp_path / "vllm.log"
    log.write_text("")
    blocked = tmp_path / "state" / "positions.json"
    blocked.mkdir(parents=True)
    (blocked / "in-the-way").write_text("")
    agent = agents(f'[[follow]]\nname = "f"\npaths = ["{log}"]\n').start()
    path = str(blocked)
    for n in range(1, 4):
        with open(log, "a") as handle:
            handle.write(STATS)
        wait_for(lambda n=n: agent.value("kvwatch_lines_total", server="f") == n, what=f"line {n} read")
        wait_for(
            lambda n=n: (agent.value("kvwatch_state_write_failures_total", path=path) or 0) >= n,
            what=f"save {n} tried",
        )
        time.sleep(1.1)  # the positions are saved at most once a second
    assert agent.value("kvwatch_state_write_failing", path=path) == 1
    assert agent.log().count("cannot save read positions") == 1, agent.log()
    shutil.rmtree(blocked)
    with open(log, "a") as handle:
        handle.write(STATS)
    wait_for(lambda: agent.value("kvwatch_state_write_failing", path=path) == 0, what="a save that succeeds")
    assert json.loads(blocked.read_text())["positions"]["f"][str(log)]["offset"] == 4 * len(STATS.encode())
    assert "read positions saved to" in agent.log()


def test_sigterm_stops_every_server_gracefully_and_exits_0(agents) -> None:
    agent = agents(fake_server("a", "--rate", "5") + fake_server("b", "--ignore-term", stop_timeout=0.5)).start()
    # Both have installed their signal handlers once they print.
    wait_for(lambda: stats_lines(agent, "a") > 0 and stats_lines(agent, "b") > 0, what="both servers printing")
    pids = {n: json.loads((agent.directory / "state" / "servers" / f"{n}.json").read_text())["pid"] for n in "ab"}
    agent.signal(signal.SIGTERM)
    assert agent.wait() == 0
    for pid in pids.values():
        assert proc_start_time(pid) is None
    assert "Shutting down" in (agent.directory / "logs" / "a.log").read_text()
    assert "sending SIGKILL" in agent.log()


def test_hand_over_leaves_servers_running_and_the_next_kvwatch_adopts_them(agents) -> None:
    body = fake_server("fake", "--rate", "20")
    agent = agents(body).start()
    wait_for(lambda: stats_lines(agent, "fake") > 5, what="the server's lines")
    assert agent.value("kvwatch_vllm_server_ready", server="fake") == 1
    record = json.loads((agent.directory / "state" / "servers" / "fake.json").read_text())
    metrics = agent.metrics()
    before = {
        "lines": metrics[("kvwatch_vllm_stats_lines_total", (("engine", "0"), ("server", "fake")))],
        "info": [k for k in metrics if k[0] == "kvwatch_server_info"],
    }
    agent.signal(signal.SIGUSR2)
    assert agent.wait() == EXIT_HANDED_OVER
    assert proc_start_time(record["pid"]) == record["start_time"], "the server must outlive the hand-over"
    time.sleep(0.5)
    again = agents(body).start()
    # /healthz answers as soon as the port is bound; the adoption comes right after.
    wait_for(lambda: "adopted running pid" in again.log(), what="the adoption")
    wait_for(lambda: stats_lines(again, "fake") > before["lines"], what="lines read again after adoption")
    # What the server's start-up said, long before the saved position, is still known.
    assert again.value("kvwatch_vllm_server_ready", server="fake") == 1
    assert again.value("kvwatch_vllm_kv_cache_capacity_tokens", server="fake") == 65536
    assert again.value("kvwatch_vllm_kv_cache_max_concurrency", server="fake") == 32
    assert [k for k in again.metrics() if k[0] == "kvwatch_server_info"] == before["info"]
    assert again.value("kvwatch_server_restarts_total", process="vllm", server="fake") == 0
    assert json.loads((again.directory / "state" / "servers" / "fake.json").read_text())["pid"] == record["pid"]
    # Neither does a crash of kvwatch (SIGKILL) touch the server.
    again.kill()
    assert proc_start_time(record["pid"]) == record["start_time"]


def test_a_server_an_earlier_kvwatch_left_running_that_no_server_names_now_is_said_and_left_running(agents) -> None:
    agent = agents(fake_server("old", "--rate", "5")).start()
    wait_for(lambda: stats_lines(agent, "old") > 0, what="the server's lines")
    record = json.loads((agent.directory / "state" / "servers" / "old.json").read_text())
    agent.signal(signal.SIGUSR2)
    assert agent.wait() == EXIT_HANDED_OVER
    # The configuration changed while no kvwatch ran: the server is named otherwise.
    again = agents(fake_server("new", "--rate", "5")).start()
    said = (
        f"server record old: pid {record['pid']}, started by an earlier kvwatch, runs but no [[server]] of "
        f"{again.config} names it: left running"
    )
    wait_for(lambda: said in again.log(), what="the server left running said")
    wait_for(lambda: stats_lines(again, "new") > 0, what="the new server's lines")
    assert "server record new" not in again.log()
    assert proc_start_time(record["pid"]) == record["start_time"], "it is never stopped"


def test_a_second_kvwatch_on_the_same_state_directory_stops_at_its_start_and_leaves_the_servers_alone(
    agents, tmp_path: Path
) -> None:
    body = fake_server("fake", "--rate", "20")
    first = agents(body).start()
    wait_for(lambda: stats_lines(first, "fake") > 5, what="the server's lines")
    state = first.directory / "state"
    record = json.loads((state / "servers" / "fake.json").read_text())
    # The same servers on another port (an operator's `kvwatch run` beside the service), on the first's state.
    (tmp_path / "second").mkdir()
    second = agents(body, directory=tmp_path / "second")
    second.config.write_text(
        second.config.read_text()
        .replace('state_dir = "state"', f'state_dir = "{state}"')
        .replace('log_dir = "logs"', f'log_dir = "{first.directory / "logs"}"')
    )
    second.start(wait=False)
    assert second.wait() == 1
    assert f"{second.config}: agent.state_dir: {state} is in use by another kvwatch (pid {first.process.pid})" in (
        second.log()
    )
    assert "adopted" not in second.log() and "restarting" not in second.log()
    assert proc_start_time(record["pid"]) == record["start_time"], "the first's server must be left running"
    lines = stats_lines(first, "fake")
    wait_for(lambda: stats_lines(first, "fake") > lines, what="the first kvwatch reading on")
    # The lock goes with its holder, even with a SIGKILL, and the server it started (which lives on) never
    # held it: the next kvwatch starts and adopts that server.
    first.kill()
    second.start()
    wait_for(lambda: "adopted running pid" in second.log(), what="the adoption")
    assert json.loads((state / "servers" / "fake.json").read_text())["pid"] == record["pid"]


def test_sighup_restarts_only_changed_servers_and_drops_removed_series(agents) -> None:
    keep, change, drop = (fake_server(n, "--rate", "10") for n in ("keep", "change", "drop"))
    agent = agents(keep + change + drop).start()
    wait_for(
        lambda: all(agent.value("kvwatch_server_up", process="vllm", server=n) == 1 for n in ("keep", "change", "drop"))
    )
    state = agent.directory / "state" / "servers"
    pid_of = {n: json.loads((state / f"{n}.json").read_text())["pid"] for n in ("keep", "change", "drop")}
    config = agent.config.read_text()
    config = config.replace(drop, "").replace(change, fake_server("change", "--rate", "11"))
    config += fake_server("new", "--rate", "10")
    agent.config.write_text(config)
    agent.signal(signal.SIGHUP)
    wait_for(lambda: agent.value("kvwatch_server_up", process="vllm", server="new") == 1, what="the added server")
    wait_for(
        lambda: agent.value("kvwatch_server_up", process="vllm", server="drop") is None,
        what="the removed server's series",
    )
    wait_for(lambda: json.loads((state / "change.json").read_text())["pid"] != pid_of["change"], what="restart")
    assert json.loads((state / "keep.json").read_text())["pid"] == pid_of["keep"]
    assert proc_start_time(pid_of["drop"]) is None
    # The tailer drops the removed server's files at its next cycle (their series a moment after the rest).
    wait_for(
        lambda: not any(dict(k[1]).get("server") == "drop" for k in agent.metrics()),
        what="every series of the removed server",
    )


def test_a_bad_reload_keeps_the_running_configuration(agents) -> None:
    agent = agents(fake_server("fake", "--rate", "10")).start()
    agent.config.write_text(agent.config.read_text() + "\nbogus = 1\n")
    agent.signal(signal.SIGHUP)
    wait_for(lambda: "keeping the running configuration" in agent.log(), what="the reload error")
    assert "bogus: unknown key" in agent.log()
    assert agent.value("kvwatch_server_up", process="vllm", server="fake") == 1
    # Said on /metrics too, as Prometheus says it of itself, until a reload succeeds.
    assert agent.value("kvwatch_config_last_reload_successful") == 0
    loaded = agent.value("kvwatch_config_last_reload_success_timestamp_seconds")
    assert 0 < loaded <= time.time()
    agent.config.write_text(agent.config.read_text().replace("\nbogus = 1\n", ""))
    agent.signal(signal.SIGHUP)
    wait_for(lambda: agent.value("kvwatch_config_last_reload_successful") == 1, what="the good reload")
    assert agent.value("kvwatch_config_last_reload_success_timestamp_seconds") > loaded


def test_a_configuration_that_reads_nothing_is_said_at_the_start_and_at_a_reload(agents, tmp_path: Path) -> None:
    """Valid, and kvwatch serves its own metrics; but a server or log left out by mistake is said, not silent."""
    agent = agents("").start()
    said = f"{agent.config} {configuration.NOTHING_TO_READ}"
    wait_for(lambda: said in agent.log(), what="the warning at the start")
    log = tmp_path / "vllm.log"
    log.write_text("")
    empty = agent.config.read_text()
    agent.config.write_text(empty + f'[[follow]]\nname = "f"\npaths = ["{log}"]\n')
    agent.signal(signal.SIGHUP)
    wait_for(lambda: agent.log().count("reload: done") == 1, what="the reload")
    assert agent.log().count(said) == 1
    agent.config.write_text(empty)
    agent.signal(signal.SIGHUP)
    wait_for(lambda: f"reload: {said}" in agent.log(), what="the warning at the reload")


def refusing_server(tmp_path: Path, name: str) -> str:
    """A [[server]] whose program refuses its command line with a real argparse, as vLLM's api_server.py
    does with an unknown flag: the usage, the error line, exit code 2."""
    program = tmp_path / "api_server.py"
    program.write_text(
        "import argparse\nparser = argparse.ArgumentParser()\nparser.add_argument('--port')\nparser.parse_args()\n"
    )
    return (
        f'[[server]]\nname = "{name}"\ncommand = ["{sys.executable}", "{program}", "--bogus-flag"]\n'
        'health_url = ""\nbackoff_initial = 0.1\nbackoff_max = 0.5\ncrash_loop_starts = 3\n'
    )


@pytest.mark.parametrize(("cause", "exit_code", "error"), [("oom", 1, "oom"), ("refused", 2, "config_error")])
def test_crash_loop_is_visible_on_metrics_with_its_last_error(
    agents, tmp_path: Path, cause: str, exit_code: int, error: str
) -> None:
    if cause == "oom":
        body = fake_server("bad", "--exit-after", "0.05", "--oom", crash_loop_starts=3)
    else:
        body = refusing_server(tmp_path, "bad")
    agent = agents(body).start()
    wait_for(
        lambda: agent.value("kvwatch_server_state", process="vllm", server="bad", state="crash_loop") == 1,
        what="crash loop",
    )
    assert agent.value("kvwatch_server_last_exit_code", process="vllm", server="bad") == exit_code
    assert agent.value("kvwatch_vllm_errors_total", server="bad", error=error) >= 1
    assert agent.value("kvwatch_server_last_error", process="vllm", server="bad", error=error) == 1
    assert "crash loop" in agent.log() and f"last error {error}" in agent.log()


def test_a_taken_port_fails_before_any_server_starts(agents, tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        agent = agents(fake_server("fake", "--rate", "10"))
        agent.config.write_text(
            agent.config.read_text().replace(f"port = {agent.port}", f"port = {taken.getsockname()[1]}")
        )
        agent.start(wait=False)
        assert agent.wait() == 1
    assert f"{agent.config}: metrics.address, metrics.port: cannot serve metrics on 127.0.0.1:" in agent.log()
    assert "state" not in agent.log()  # the one thing that failed is named
    assert not (tmp_path / "logs" / "fake.log").exists()


def test_a_state_directory_that_cannot_be_made_fails_naming_its_setting(agents, tmp_path: Path) -> None:
    agent = agents(fake_server("fake", "--rate", "10"))
    (agent.directory / "state").write_text("a file where the directory should be\n")
    agent.start(wait=False)
    assert agent.wait() == 1
    assert f"{agent.config}: agent.state_dir: cannot use " in agent.log()
    assert "File exists" in agent.log() and "metrics" not in agent.log()
    assert not (tmp_path / "logs" / "fake.log").exists()


def test_sd_notify_ready_status_watchdog_stopping(agents, tmp_path: Path) -> None:
    address = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(address)
    sock.settimeout(10)
    agent = agents(fake_server("fake", "--rate", "10"), env={"NOTIFY_SOCKET": address, "WATCHDOG_USEC": "400000"})
    agent.start(wait=False)
    messages: list[str] = []

    def receive_until(predicate) -> None:
        while not any(predicate(m) for m in messages):
            messages.append(sock.recv(4096).decode())

    receive_until(lambda m: "READY=1" in m)
    ready = next(m for m in messages if "READY=1" in m)
    assert "STATUS=" in ready
    receive_until(lambda m: m == "WATCHDOG=1")
    receive_until(lambda m: m.startswith("STATUS=") and "fake running" in m)
    agent.signal(signal.SIGTERM)
    receive_until(lambda m: "STOPPING=1" in m)
    assert agent.wait() == 0
    sock.close()


def test_basic_auth_and_tls(agents, tmp_path: Path) -> None:
    key, cert = self_signed_certificate(tmp_path)
    password = tmp_path / "password"
    password.write_text("hunter2\n")
    agent = agents(
        f'[metrics.tls]\ncert_file = "{cert}"\nkey_file = "{key}"\n'
        f'[metrics.basic_auth]\nprom = {{ file = "{password}" }}\n'
    )
    text = agent.config.read_text().replace("[metrics]\n", "[metrics]\n", 1)
    # the [metrics] keys come first in the file; the sub-tables above follow it
    agent.config.write_text(text)
    agent.start(wait=False)
    context = ssl.create_default_context(cafile=str(cert))
    url = f"https://127.0.0.1:{agent.port}/metrics"

    def fetch(user: str | None, secret: str | None) -> int:
        request = urllib.request.Request(url)
        if user is not None:
            import base64

            token = base64.b64encode(f"{user}:{secret}".encode()).decode()
            request.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(request, context=context, timeout=5) as response:
                return response.status
        except urllib.error.HTTPError as exc:
            return exc.code

    wait_for(lambda: fetch("prom", "hunter2") == 200, what="an authorised TLS scrape")
    assert fetch(None, None) == 401
    assert fetch("prom", "wrong") == 401
    assert fetch("other", "hunter2") == 401
    with pytest.raises((urllib.error.URLError, ConnectionError)):
        urllib.request.urlopen(f"http://127.0.0.1:{agent.port}/metrics", timeout=5)
    # A client that connects and never starts its handshake holds up nobody else.
    with socket.create_connection(("127.0.0.1", agent.port)):
        assert fetch("prom", "hunter2") == 200


def test_permission_denied_is_reported_and_retried_by_an_unprivileged_kvwatch(agents, request) -> None:
    # pytest's own temporary root is 0700; this kvwatch runs as nobody and must reach its config.
    tmp_path = Path(tempfile.mkdtemp(prefix="kvwatch-perm-"))
    request.addfinalizer(lambda: shutil.rmtree(tmp_path, ignore_errors=True))
    prefix, env = as_nobody(tmp_path / "kvwatch")
    tmp_path.chmod(0o777)
    log = tmp_path / "secret.log"
    log.write_text(STATS * 2)
    log.chmod(0o600)
    (tmp_path / "state").mkdir(mode=0o777)
    (tmp_path / "logs").mkdir(mode=0o777)
    private = tmp_path / "private"  # a directory kvwatch's user may not list: a glob there finds nothing
    private.mkdir(mode=0o700)
    (private / "vllm.log").write_text(STATS)
    pattern = str(private / "*.log")
    agent = agents(
        f'[[follow]]\nname = "f"\npaths = ["{log}"]\nstart_at = "beginning"\n'
        f'\n[[follow]]\nname = "g"\npaths = ["{pattern}"]\nstart_at = "beginning"\n',
        directory=tmp_path,
        prefix=prefix,
        env=env,
        cwd=tmp_path,
    )
    agent.config.chmod(0o644)
    agent.start()
    wait_for(
        lambda: agent.value("kvwatch_tail_read_error", server="f", path=str(log), reason="permission_denied") == 1,
        what="the permission error on /metrics",
    )
    assert "cannot read" in agent.log() and "will retry" in agent.log()
    wait_for(lambda: agent.value("kvwatch_tail_glob_unlistable", server="g", path=pattern) == 1, what="the glob's")
    assert f"cannot list {private} (will retry): permission denied" in agent.log()
    log.chmod(0o644)
    wait_for(lambda: stats_lines(agent, "f") == 2, what="the lines once readable")
    assert agent.value("kvwatch_tail_read_error", server="f", path=str(log), reason="permission_denied") is None
    private.chmod(0o755)
    wait_for(lambda: stats_lines(agent, "g") == 1, what="the glob's file once its directory can be listed")
    assert agent.value("kvwatch_tail_glob_unlistable", server="g", path=pattern) is None


def test_a_state_directory_kvwatch_may_write_but_not_list_is_used_with_a_warning(agents, request) -> None:
    """A directory of mode 0733 owned by another user: kvwatch (here: nobody) may make and replace its
    files but not open the directory itself, which is what the lock is taken on."""
    # pytest's own temporary root is 0700; this kvwatch runs as nobody and must reach its config.
    place = Path(tempfile.mkdtemp(prefix="kvwatch-lock-"))
    request.addfinalizer(lambda: shutil.rmtree(place, ignore_errors=True))
    prefix, env = as_nobody(place / "kvwatch")
    place.chmod(0o777)
    (place / "state").mkdir()
    (place / "state").chmod(0o733)
    (place / "logs").mkdir(mode=0o777)
    log = place / "vllm.log"
    log.write_text(STATS)
    log.chmod(0o644)
    agent = agents(
        f'[[follow]]\nname = "f"\npaths = ["{log}"]\nstart_at = "beginning"\n', directory=place, prefix=prefix, env=env
    )
    agent.config.chmod(0o644)
    agent.start()
    wait_for(lambda: stats_lines(agent, "f") == 1, what="the line read")
    assert f"{place / 'state'} cannot be locked (Permission denied)" in agent.log()
    wait_for(lambda: (place / "state" / "positions.json").exists(), what="the read positions saved")


@pytest.mark.skipif(shutil.which("prlimit") is None, reason="needs prlimit (util-linux)")
def test_a_glob_over_more_files_than_the_soft_open_file_limit_is_read_whole(agents, tmp_path: Path) -> None:
    """Each followed file is held open: started under a shell's low soft limit (here 64; 1,024 is
    usual) kvwatch raises it to the hard one, as mtail and node_exporter do, and reads every file."""
    logs = tmp_path / "containers"
    logs.mkdir()
    for n in range(150):
        (logs / f"pod-{n}.log").write_text(STATS)
    agent = agents(
        f'[[follow]]\nname = "f"\npaths = ["{logs / "*.log"}"]\nstart_at = "beginning"\n',
        prefix=["prlimit", "--nofile=64:4096", "--"],
    )
    agent.start()
    wait_for(lambda: stats_lines(agent, "f") == 150, what="a stats line of every file")
    read_errors = [key for key in agent.metrics() if key[0] == "kvwatch_tail_read_error"]
    assert read_errors == []
    assert agent.get("/metrics")[0] == 200 and "cannot read" not in agent.log()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnhandledThreadExceptionWarning")  # the death this test causes
def test_a_reading_thread_that_died_makes_healthz_fail(tmp_path: Path) -> None:
    """A tail thread that ends (here: a wait too long for the OS, as poll_interval = inf once caused)
    must show on /healthz and stop the systemd watchdog, not leave a healthy-looking agent reading nothing."""
    cfg = configuration.parse(
        {
            "agent": {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "logs")},
            "metrics": {"address": "127.0.0.1", "port": 0},
        },
        str(tmp_path / "kvwatch.toml"),
    )
    daemon = Daemon(cfg)
    try:
        assert daemon.health() == (False, "starting: servers and followed files being set up")
        daemon.started = True  # as run() sets it once every source is in place
        assert daemon.health()[0]
        daemon.tailer.poll_interval = float("inf")
        daemon.tailer.start()
        wait_for(lambda: daemon.tailer.dead, what="the reading thread to end")
        assert daemon.health() == (False, "kvwatch's loops are not making progress")
    finally:
        daemon.http.stop()


def test_a_slow_scrape_does_not_hold_up_the_reading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The numbers are copied under the readers' lock and rendered after it is released."""
    from agent.commands import run as run_module

    cfg = configuration.parse(
        {
            "agent": {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "logs")},
            "metrics": {"address": "127.0.0.1", "port": 0},
            "follow": [{"name": "f", "paths": [str(tmp_path / "a.log")]}],
        },
        str(tmp_path / "kvwatch.toml"),
    )
    daemon = Daemon(cfg)
    daemon.add_follow(cfg.follows[0])
    rendering = run_module.collect_families

    def slow(stats):
        time.sleep(2.0)
        return rendering(stats)

    monkeypatch.setattr(run_module, "collect_families", slow)
    try:
        scrape = threading.Thread(target=daemon.families)
        scrape.start()
        time.sleep(0.3)
        assert daemon.lock.acquire(timeout=0.5), "the scrape holds the lock the reading thread needs"
        daemon.lock.release()
        scrape.join()
    finally:
        daemon.http.stop()


MP_LOOKUPS = (
    "(APIServer pid=1) INFO 12-02 06:49:44 [metrics.py:103] KV Transfer metrics: LMCache MP lookup count=3, "
    "LMCache MP lookup avg latency (ms)=15.553\n"
)
PREFETCH = (
    "[2026-12-02 06:49:45,619] LMCache INFO: Prefetch request completed (L1+L2): 11/11 retained keys (11 L1, 0 L2) "
    "in 12.2 ms (external_request_id=chatcmpl-mp-{n}-b648c1bb, prefetch_request_id={n}) "
    "(storage_manager.py:651:lmcache.v1.distributed.storage_manager)\n"
)


def test_an_mp_server_reads_its_lmcache_servers_log_as_its_own(agents, tmp_path: Path) -> None:
    """[server.lmcache] mode = "mp": vLLM gets the MP connector, and the LMCache server's log counts under the
    server's name.  The "python" here is a stand-in that runs tests/support/fakeserver.py whatever it is given."""
    stand_in = tmp_path / "bin" / "python"
    stand_in.parent.mkdir()
    stand_in.write_text(f"#!/bin/sh\nexec {sys.executable} {FAKE} --rate 5\n")
    stand_in.chmod(0o755)
    lmcache_log = tmp_path / "lmcache-server.log"
    body = (
        f'[[server]]\nname = "mp"\npython = "{stand_in}"\nmodel = "tiny"\nhealth_url = ""\nlog_max_bytes = "64KiB"\n'
        f'[server.lmcache]\nmode = "mp"\nmp_port = 6555\nlaunch = false\nserver_log = "{lmcache_log}"\n'
    )
    agent = agents(body).start()
    wait_for(lambda: stats_lines(agent, "mp") > 0, what="the server's own lines")
    assert '"kv_connector":"LMCacheMPConnector"' in agent.log() and "tcp://127.0.0.1" in agent.log()
    with open(lmcache_log, "a") as handle:  # LMCache's server, run by someone else, writes its own log
        for n in range(3):
            handle.write(PREFETCH.format(n=n))
            # Its HTTP server's lines (uvicorn's, as vLLM's are): health checks of it, its stop; then its crash.
            handle.write('INFO:     127.0.0.1:60220 - "GET /healthcheck HTTP/1.1" 200 OK\n')
        handle.write("INFO:     Shutting down\n")
        handle.write("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB.\n")
    wait_for(lambda: agent.value("kvwatch_lmcache_prefetches_total", server="mp") == 3, what="the 3 prefetches")
    assert agent.value("kvwatch_lmcache_prefetch_hit_keys_total", server="mp", tier="l1") == 33
    # ... are none of vLLM's: no response of its, no shutdown.
    assert agent.value("kvwatch_http_responses_total", server="mp", method="GET", path="other", status="200") is None
    assert agent.value("kvwatch_vllm_server_shutdowns_total", server="mp") == 0
    # Its crash is counted for the server, and is no error of vLLM's own process.
    wait_for(lambda: agent.value("kvwatch_vllm_errors_total", server="mp", error="oom") == 1, what="the crash")
    assert agent.value("kvwatch_server_last_error", server="mp", process="vllm", error="oom") is None
    # Only kvwatch's own raw log is rotated by kvwatch; the LMCache server's log is left to its owner.
    with open(lmcache_log, "a") as handle:
        handle.write(PREFETCH.format(n=9) * 1000)
    wait_for(lambda: agent.value("kvwatch_lmcache_prefetches_total", server="mp") == 1003, what="1,000 more")
    time.sleep(1)
    assert not list(tmp_path.glob("lmcache-server.log.*"))


@pytest.mark.parametrize("named", [True, False])
def test_a_follow_reads_the_lmcache_servers_log_it_names_or_lists_as_that_servers(
    agents, tmp_path: Path, named: bool
) -> None:
    """A [[follow]] of a vLLM kvwatch did not start and of its LMCache server's log, named so
    (``lmcache_server_log``) or one more of its ``paths`` (told by its first lines): the LMCache server's
    prefetches count under the follow's name, its HTTP server's lines as none of vLLM's."""
    vllm_log, lmcache_log = tmp_path / "vllm.log", tmp_path / "lmcache-server.log"
    vllm_log.write_text("")
    lmcache_log.write_text("")
    if named:
        body = f'[[follow]]\nname = "mp"\npaths = ["{vllm_log}"]\nlmcache_server_log = "{lmcache_log}"\n'
    else:
        body = f'[[follow]]\nname = "mp"\npaths = ["{vllm_log}", "{lmcache_log}"]\n'
    agent = agents(body).start()
    with open(vllm_log, "a") as handle:
        handle.write('(APIServer pid=1) INFO:     127.0.0.1:46144 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n')
    with open(lmcache_log, "a") as handle:
        handle.write(
            "[2026-12-02 06:47:56,192] LMCache INFO: LMCache cache server is running... "
            "(server.py:511:lmcache.v1.multiprocess.server)\n"
        )
        handle.write('INFO:     127.0.0.1:60220 - "GET /healthcheck HTTP/1.1" 200 OK\n')
        handle.write(PREFETCH.format(n=1))
        handle.write("INFO:     Shutting down\n")
    wait_for(lambda: agent.value("kvwatch_lmcache_prefetches_total", server="mp") == 1, what="the prefetch")
    wait_for(lambda: agent.value("kvwatch_lines_total", server="mp") == 5, what="every line")
    path = "/v1/chat/completions"
    assert agent.value("kvwatch_http_responses_total", server="mp", method="POST", path=path, status="200") == 1
    assert agent.value("kvwatch_http_responses_total", server="mp", method="GET", path="other", status="200") is None
    assert agent.value("kvwatch_vllm_server_shutdowns_total", server="mp") == 0


def _requests_then_their_prefetches(agent, vllm_log: Path, lmcache_log: Path, keys: int) -> None:
    """Three MP requests as two files of one source may be read: vLLM's log (to each request's access line) read
    before the LMCache server's, whose prefetch lines were written first."""
    wait_for(
        lambda: all(
            agent.value("kvwatch_tail_offset_bytes", server="mp", path=str(p)) == 0 for p in (vllm_log, lmcache_log)
        ),
        what="both files followed",
    )
    with open(vllm_log, "a") as handle:
        handle.write(MP_LOOKUPS)
        for n in range(3):
            handle.write(
                f"(APIServer pid=1) INFO 12-02 06:49:45 [logger.py:49] Received request chatcmpl-mp-{n}: "
                "params: SamplingParams(n=1, max_tokens=4), lora_request: None.\n"
                "(APIServer pid=1) INFO 12-02 06:49:45 [async_llm.py:578] Added request "
                f"chatcmpl-mp-{n}-b648c1bb.\n"
                'INFO:     127.0.0.1:46144 - "POST /v1/chat/completions HTTP/1.1" 200 OK\n'
            )
    wait_for(lambda: agent.value("kvwatch_lines_total", server="mp") == 10, what="vLLM's lines read")
    time.sleep(0.2)
    with open(lmcache_log, "a") as handle:
        for n in range(3):
            handle.write(PREFETCH.format(n=n).replace("11/11 retained", f"{keys}/11 retained"))


def test_a_prefetch_line_read_after_its_requests_access_line_joins_its_trace(agents, tmp_path: Path) -> None:
    """The request waits a moment for its pieces from the source's other file before its trace is written."""
    vllm_log, lmcache_log = tmp_path / "vllm.log", tmp_path / "lmcache.log"
    vllm_log.touch()
    lmcache_log.touch()
    receiver = HttpReceiver()
    try:
        agent = agents(traced_follow("mp", [vllm_log, lmcache_log], receiver.endpoint), env=tracing_env(50)).start()
        _requests_then_their_prefetches(agent, vllm_log, lmcache_log, keys=11)
        roots = wait_for(
            lambda: [s for _, s in receiver.spans() if s.name == "vllm.request"] if len(receiver.spans()) >= 6 else [],
            what="a trace per request",
        )
        hit_keys = {
            attributes(s.attributes)["gen_ai.response.id"]: attributes(s.attributes).get("lmcache.prefetch.hit_keys")
            for s in roots
        }
        assert hit_keys == {f"chatcmpl-mp-{n}": 11 for n in range(3)}
        assert sorted(s.name for _, s in receiver.spans()) == ["lmcache.prefetch"] * 3 + ["vllm.request"] * 3
    finally:
        receiver.close()


def test_without_tracing_the_recent_requests_get_their_late_prefetches_too(agents, tmp_path: Path) -> None:
    """The recent requests alone keep log time, but wait for late pieces on the reading's clock: they are shown
    a moment after their end, not when the log next prints a stamp."""
    vllm_log, lmcache_log = tmp_path / "vllm.log", tmp_path / "lmcache.log"
    vllm_log.touch()
    lmcache_log.touch()
    agent = agents(f'[[follow]]\nname = "mp"\npaths = ["{vllm_log}", "{lmcache_log}"]\n').start()
    _requests_then_their_prefetches(agent, vllm_log, lmcache_log, keys=5)

    def rows() -> list:
        status, body = agent.get("/api/requests")
        return json.loads(body)["servers"].get("mp", []) if status == 200 else []

    shown = wait_for(lambda: len(rows()) == 3 and rows(), what="the three requests shown")
    # Without its prefetch each would be a miss ("not seen before": vLLM showed its connector asked).
    assert [row["reason"] for row in shown] == ["partial: 5 of 11 keys"] * 3


def test_an_mp_server_and_the_lmcache_server_kvwatch_launches_for_it(agents, tmp_path: Path) -> None:
    """mode = "mp" with launch: kvwatch starts the LMCache server (a stand-in answering /healthcheck), then
    vLLM; reads both logs as one server; a SIGKILLed kvwatch's successor adopts both; SIGTERM stops vLLM first."""
    vllm_port, http_port = free_port(), free_port()
    lmcache = [sys.executable, FAKE, "--port", str(http_port), "--health-path", "/healthcheck", "--load-seconds", "1"]
    body = (
        fake_server("mp", "--rate", "5", "--term-delay", "0.5", port=vllm_port)
        + '[server.lmcache]\nmode = "mp"\n'
        + f"http_port = {http_port}\ncommand = [{', '.join(json.dumps(a) for a in lmcache)}]\n"
    )
    agent = agents(body).start()
    for process in ("lmcache", "vllm"):
        wait_for(
            lambda p=process: agent.value("kvwatch_server_state", process=p, server="mp", state="running") == 1,
            what=f"{process} running",
        )
    state = agent.directory / "state" / "servers"
    records = {
        p: json.loads((state / f"mp{'.lmcache' if p == 'lmcache' else ''}.json").read_text())
        for p in ("lmcache", "vllm")
    }
    assert records["vllm"]["started_at"] - records["lmcache"]["started_at"] >= 1.0  # after the health check
    assert agent.value("kvwatch_server_state_changes_total", process="vllm", server="mp", state="waiting") == 1
    # Both logs count under one server: the LMCache stand-in prints stats lines too.
    lmcache_log = agent.directory / "logs" / "mp-lmcache.log"
    wait_for(lambda: lmcache_log.stat().st_size > 0, what="the LMCache server's raw log")
    agent.kill()  # SIGKILL: both processes stay, recorded
    again = agents(body).start()
    wait_for(lambda: again.log().count("adopted running pid") == 2, what="both adopted")
    for process in ("lmcache", "vllm"):
        wait_for(
            lambda p=process: again.value("kvwatch_server_state", process=p, server="mp", state="running") == 1,
            what=f"{process} running after the adoption",
        )
        assert again.value("kvwatch_server_restarts_total", process=process, server="mp") == 0
    pids = {p: records[p]["pid"] for p in records}
    assert all(proc_start_time(pid) == records[p]["start_time"] for p, pid in pids.items())
    again.signal(signal.SIGTERM)
    assert again.wait() == 0
    log = again.log()
    assert log.index("server mp: stopping -> stopped") < log.index("server mp (lmcache server): running -> stopping")
    assert all(proc_start_time(pid) is None for pid in pids.values())


def test_a_reload_of_only_the_lmcache_settings_restarts_both_in_order(agents) -> None:
    """SIGHUP with a changed [server.lmcache] command: vLLM stops, then the LMCache server, which starts again
    before vLLM does; a reload that changes nothing leaves both alone."""
    vllm_port, http_port = free_port(), free_port()
    lmcache = [sys.executable, FAKE, "--quiet", "--port", str(http_port), "--health-path", "/healthcheck"]

    def body(extra: list[str]) -> str:
        command = ", ".join(json.dumps(a) for a in lmcache + extra)
        return (
            fake_server("mp", "--rate", "5", port=vllm_port)
            + f'[server.lmcache]\nmode = "mp"\nhttp_port = {http_port}\ncommand = [{command}]\n'
        )

    agent = agents(body([])).start()
    state = agent.directory / "state" / "servers"
    running = lambda p: agent.value("kvwatch_server_state", process=p, server="mp", state="running") == 1  # noqa: E731
    wait_for(lambda: running("lmcache") and running("vllm"), what="both running")
    before = {n: json.loads((state / n).read_text())["pid"] for n in ("mp.json", "mp.lmcache.json")}
    agent.signal(signal.SIGHUP)  # nothing changed
    wait_for(lambda: "reload: done" in agent.log(), what="the first reload")
    agent.config.write_text(agent.config.read_text().replace(body([]), body(["--rate", "3"])))
    agent.signal(signal.SIGHUP)

    def pids() -> dict[str, int]:
        return {n: json.loads((state / n).read_text())["pid"] for n in ("mp.json", "mp.lmcache.json")}

    wait_for(
        lambda: all(p != before[n] for n, p in pids().items()) and running("lmcache") and running("vllm"),
        what="both restarted",
    )
    log = agent.log()
    log = log[log.index("reload: server mp changed") :]
    order = [
        "server mp: running -> stopping",
        "server mp: stopping -> stopped",
        "server mp (lmcache server): running -> stopping",
        "server mp (lmcache server): started pid",
        "server mp: waiting -> starting",
    ]
    assert [log.index(line) for line in order] == sorted(log.index(line) for line in order)
    assert agent.value("kvwatch_server_restarts_total", process="lmcache", server="mp") == 1


FREED_IN_THE_MIDDLE = """
import sys
sys.path.insert(0, sys.argv[1])
from agent.commands.run import give_back_memory

def rss_kib():
    with open("/proc/self/status") as status:
        return int(status.read().split("VmRSS:")[1].split()[0])

blocks = [bytes(4096) for _ in range(8000)]  # 32 MiB in the C heap (each above pymalloc's sizes)
kept = blocks[::100]  # one in a hundred stays: the rest are holes below the heap's top
del blocks
before = rss_kib()
print(give_back_memory(), before - rss_kib())
"""


def test_freed_memory_inside_the_heap_is_given_back() -> None:
    """What the C allocator keeps of freed memory between blocks still in use (start-up's compiling, a flood's
    reads) goes back to the system (glibc: this machine's C library)."""
    done = subprocess.run(
        [sys.executable, "-c", FREED_IN_THE_MIDDLE, str(REPO)], capture_output=True, text=True, check=True
    )
    trimmed, freed_kib = done.stdout.split()
    assert trimmed == "True"
    assert int(freed_kib) > 16 * 1024, done.stdout
