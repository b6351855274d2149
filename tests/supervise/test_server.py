"""The supervisor with real child processes (tests/support/fakeserver.py): start, crash, back off, stop, adopt."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.config import ServerConfig
from agent.exposition import RenderedAtScrape
from agent.supervise.server import UNHEALTHY_AFTER, SupervisedServer, proc_start_time
from agent.supervise.states import ServerState
from parsers import events as ev
from tests.support.harness import free_port, live_members

FAKE = str(Path(__file__).parents[1] / "support" / "fakeserver.py")


def server(tmp_path: Path, *args: str, **kw) -> ServerConfig:
    defaults = dict(
        name="fake",
        command=(sys.executable, FAKE, *args),
        log_file=tmp_path / "logs" / "fake.log",
        health_url="",
        backoff_initial=0.05,
        backoff_max=0.2,
        stop_timeout=2.0,
    )
    defaults.update(kw)
    return ServerConfig(**defaults)


def wait_for(check: Callable[[], bool], supervised: SupervisedServer | None = None, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if supervised is not None:
            supervised.tick()
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out; state {supervised.state if supervised else '?'}")


@pytest.fixture
def cleanup():
    started: list[SupervisedServer] = []
    yield started
    for s in started:
        if s.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(s.pid, signal.SIGKILL)


def test_start_writes_straight_to_a_0640_log_in_its_own_session(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(server(tmp_path, "--rate", "50"), tmp_path / "state")
    cleanup.append(s)
    s.start()
    log = tmp_path / "logs" / "fake.log"
    wait_for(lambda: log.exists() and "Engine 000" in log.read_text(), s)
    assert (log.stat().st_mode & 0o777) == 0o640
    assert os.getpgid(s.pid) == s.pid and os.getsid(s.pid) == s.pid
    # stdout and stderr are the file itself, not a pipe to kvwatch.
    assert os.readlink(f"/proc/{s.pid}/fd/1") == str(log)
    assert os.readlink(f"/proc/{s.pid}/fd/2") == str(log)
    record = json.loads((tmp_path / "state" / "servers" / "fake.json").read_text())
    assert record["pid"] == s.pid and record["start_time"] == proc_start_time(s.pid)


def test_the_child_gets_kvwatch_environment_minus_systemd_sockets(tmp_path: Path, cleanup, monkeypatch) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", "/run/systemd/notify")
    monkeypatch.setenv("TOKEN_SOURCE", "s3cr3t")
    from agent.config import Secret

    config = server(
        tmp_path, "--rate", "5", env={"CUDA_VISIBLE_DEVICES": "3"}, secret_env={"HF_TOKEN": Secret(env="TOKEN_SOURCE")}
    )
    s = SupervisedServer(config, tmp_path / "state")
    cleanup.append(s)
    s.start()
    # Read once the child has run the server's program: until then (a loaded machine) its environ may read empty.
    wait_for(lambda: b"PYTHONUNBUFFERED=1" in Path(f"/proc/{s.pid}/environ").read_bytes().split(b"\0"), s)
    environ = Path(f"/proc/{s.pid}/environ").read_bytes().split(b"\0")
    assert b"CUDA_VISIBLE_DEVICES=3" in environ
    assert b"HF_TOKEN=s3cr3t" in environ
    assert b"PYTHONUNBUFFERED=1" in environ
    assert not any(item.startswith(b"NOTIFY_SOCKET=") for item in environ)


def test_probes_that_failed_while_the_model_loaded_do_not_make_a_ready_server_unhealthy(
    tmp_path: Path, cleanup
) -> None:
    port = free_port()
    config = server(
        tmp_path,
        "--load-seconds",
        "3.5",
        "--port",
        str(port),
        health_url=f"http://127.0.0.1:{port}/health",
        health_interval=1.0,
    )
    s = SupervisedServer(config, tmp_path / "state")
    cleanup.append(s)
    s.start()
    wait_for(lambda: s.probe is not None and s.probe.failures >= UNHEALTHY_AFTER, s)
    wait_for(lambda: "startup complete" in config.log_file.read_text(), s)
    s.observe(ev.ServerReady(None))  # what the daemon does when the log says so
    wait_for(lambda: s.state == "running", s)
    assert s.entered[ServerState.UNHEALTHY] == 0


def test_an_adopted_server_without_a_probe_is_running_when_its_log_said_ready(tmp_path: Path, cleanup) -> None:
    """The ready line was read by the kvwatch before; the one that adopts the server must not wait for it."""
    config = server(tmp_path, "--rate", "5")  # health_url "": no probe
    first = SupervisedServer(config, tmp_path / "state")
    cleanup.append(first)
    first.start()
    first.observe(ev.ServerReady(None))
    wait_for(lambda: first.state == "running", first)
    first.hand_over()
    second = SupervisedServer(config, tmp_path / "state")
    cleanup.append(second)
    assert second.adopt()
    wait_for(lambda: second.state == "running", second)


def test_a_crash_is_restarted_with_backoff_and_the_exit_is_recorded(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(server(tmp_path, "--exit-after", "0.2", "--exit-code", "3"), tmp_path / "state")
    cleanup.append(s)
    s.start()
    first = s.pid
    wait_for(lambda: s.state == "backoff", s)
    assert s.last_exit_code == 3 and s.last_exit_signal is None
    wait_for(lambda: s.restarts >= 1 and s.pid not in (None, first), s)


def test_a_crash_loop_is_detected_and_named_with_the_last_error(tmp_path: Path, cleanup) -> None:
    config = server(tmp_path, "--exit-after", "0.05", "--oom", crash_loop_starts=3, crash_loop_window=60.0)
    s = SupervisedServer(config, tmp_path / "state")
    cleanup.append(s)
    # The daemon feeds the supervisor the events of the server's log; here they come from the log by hand.
    s.start()
    wait_for(lambda: s.state == "backoff", s)
    s.observe(ev.ServerError(None, error="oom"))
    wait_for(lambda: s.state == "crash_loop", s)
    assert s.last_error == "oom"
    assert "oom" in s.status_text()


def test_every_state_change_is_counted_and_exported(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(server(tmp_path, "--exit-after", "0.1", "--exit-code", "3"), tmp_path / "state")
    cleanup.append(s)
    s.start()
    wait_for(lambda: s.restarts >= 2, s)
    assert s.entered[ServerState.STARTING] == s.restarts + 1
    assert s.entered[ServerState.BACKOFF] >= 2 and s.entered[ServerState.RUNNING] == 0
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RenderedAtScrape(s.families))
    text = generate_latest(registry).decode()
    backoffs = s.entered[ServerState.BACKOFF]
    assert (
        f'kvwatch_server_state_changes_total{{process="vllm",server="fake",state="backoff"}} {float(backoffs)}' in text
    )


def test_clean_exit_is_not_restarted_on_failure_policy(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(server(tmp_path, "--exit-after", "0.1", "--exit-code", "0"), tmp_path / "state")
    cleanup.append(s)
    s.start()
    wait_for(lambda: s.state == "exited", s)
    assert s.restarts == 0 and s.last_exit_code == 0


def test_restart_always_restarts_a_clean_exit(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(
        server(tmp_path, "--exit-after", "0.1", "--exit-code", "0", restart="always"), tmp_path / "state"
    )
    cleanup.append(s)
    s.start()
    wait_for(lambda: s.restarts >= 1, s)


def test_stop_is_graceful(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(server(tmp_path, "--rate", "20"), tmp_path / "state")
    cleanup.append(s)
    s.start()
    pid = s.pid
    time.sleep(0.3)
    s.stop()
    wait_for(lambda: s.state == "stopped", s)
    assert s.last_exit_code == 0 and s.last_exit_signal is None
    assert proc_start_time(pid) is None
    assert "Shutting down" in (tmp_path / "logs" / "fake.log").read_text()
    assert not (tmp_path / "state" / "servers" / "fake.json").exists()


def test_a_server_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(server(tmp_path, "--ignore-term", stop_timeout=0.5), tmp_path / "state")
    cleanup.append(s)
    s.start()
    time.sleep(0.3)
    began = time.monotonic()
    s.stop()
    wait_for(lambda: s.state == "stopped", s)
    assert time.monotonic() - began >= 0.5
    assert s.last_exit_signal == signal.SIGKILL


def test_the_whole_process_group_is_stopped(tmp_path: Path, cleanup) -> None:
    """vLLM forks engine and worker processes: they go with it."""
    script = (
        "import subprocess, sys, time\n"
        "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
        "time.sleep(60)\n"
    )
    s = SupervisedServer(server(tmp_path, command=(sys.executable, "-c", script)), tmp_path / "state")
    cleanup.append(s)
    s.start()
    group = s.pid
    wait_for(lambda: len(live_members(group)) == 2)
    s.stop()
    wait_for(lambda: s.state == "stopped", s)
    wait_for(lambda: live_members(group) == [], timeout=5)


def test_adoption_of_a_running_server(tmp_path: Path, cleanup) -> None:
    config = server(tmp_path, "--rate", "20")
    first = SupervisedServer(config, tmp_path / "state")
    cleanup.append(first)
    first.start()
    pid = first.pid
    first.hand_over()  # the old kvwatch exits, leaving it running
    second = SupervisedServer(config, tmp_path / "state")
    cleanup.append(second)
    assert second.adopt()
    assert second.pid == pid and second.adopted and second.alive
    second.tick()
    assert second.state in ("starting", "running")
    # An adopted server is not our child: its exit is still seen, and it is restarted.
    os.killpg(pid, signal.SIGKILL)
    wait_for(lambda: second.restarts == 1 and second.pid not in (None, pid), second)
    assert second.last_exit_code is None  # unknowable for a process that is not our child


def test_a_server_record_the_state_directory_refused_is_written_once_it_can_be(tmp_path: Path, cleanup) -> None:
    """A full disk when the server started, freed while it runs: its record is written at a later check, so
    that a kvwatch started after this one adopts the server rather than starting a second one."""
    state = tmp_path / "state"
    blocked = state / "servers" / "fake.json"
    blocked.mkdir(parents=True)  # a directory where the record goes: its writes fail
    (blocked / "x").write_text("")
    config = server(tmp_path, "--rate", "20")
    first = SupervisedServer(config, state)
    cleanup.append(first)
    first.start()
    assert first._record.failing is not None
    (blocked / "x").unlink()
    blocked.rmdir()
    wait_for(lambda: blocked.is_file(), first)
    assert json.loads(blocked.read_text())["pid"] == first.pid
    first.hand_over()
    second = SupervisedServer(config, state)
    cleanup.append(second)
    assert second.adopt() and second.pid == first.pid


def test_a_recycled_pid_is_not_adopted(tmp_path: Path) -> None:
    record = tmp_path / "state" / "servers" / "fake.json"
    record.parent.mkdir(parents=True)
    # Our own pid, with a start time that is not ours: a pid reused by another process.
    record.write_text(json.dumps({"pid": os.getpid(), "start_time": proc_start_time(os.getpid()) - 1}))
    s = SupervisedServer(server(tmp_path), tmp_path / "state")
    assert not s.adopt()
    assert not record.exists()


def test_changed_settings_restart_an_adopted_server(tmp_path: Path, cleanup) -> None:
    first = SupervisedServer(server(tmp_path, "--rate", "20"), tmp_path / "state")
    cleanup.append(first)
    first.start()
    pid = first.pid
    first.hand_over()
    second = SupervisedServer(server(tmp_path, "--rate", "30"), tmp_path / "state")
    cleanup.append(second)
    assert second.adopt()
    wait_for(lambda: second.pid not in (None, pid) and second.state in ("starting", "running"), second)
    assert proc_start_time(pid) is None


def test_health_probe_makes_a_server_running_and_its_loss_unhealthy(tmp_path: Path, cleanup) -> None:
    port = free_port()
    config = server(tmp_path, "--port", str(port), health_url=f"http://127.0.0.1:{port}/health", health_interval=0.1)
    s = SupervisedServer(config, tmp_path / "state")
    cleanup.append(s)
    s.start()
    wait_for(lambda: s.state == "running", s)
    assert s.probe is not None and s.probe.status == 200 and s.probe.duration is not None
    s.probe.url = f"http://127.0.0.1:{port}/missing"  # the server now answers 404
    wait_for(lambda: s.state == "unhealthy", s)


def test_a_stalled_engine_is_reported_and_not_restarted_by_default(tmp_path: Path, cleanup) -> None:
    s = SupervisedServer(server(tmp_path, "--stall", stall_after=1.0), tmp_path / "state")
    cleanup.append(s)
    s.start()
    s.observe(ev.ServerReady(None))
    s.observe(ev.EngineStats(None, prompt_throughput=0.0, generation_throughput=0.0, running=0, waiting=3))

    def probed() -> bool:
        # Probes all along, kvwatch's and a Kubernetes readiness probe's, and questions about the server: no progress.
        for path in ("/health", "/readyz", "/server_info", "/v1/models"):
            s.observe(ev.HttpAccess(None, method="GET", path=path, status=200))
        return s.state == "stalled"

    wait_for(probed, s, timeout=5)
    assert s.last_error == "stalled" and s.restarts == 0
    s.observe(ev.EngineStats(None, prompt_throughput=5.0, generation_throughput=1.0, running=1, waiting=0))
    wait_for(lambda: s.state == "running", s)


def test_a_stalled_engine_is_restarted_when_configured(tmp_path: Path, cleanup) -> None:
    s = restarted_when_stalled(tmp_path, cleanup)
    first = s.pid
    s.observe(ev.EngineStats(None, prompt_throughput=0.0, generation_throughput=0.0, running=0, waiting=3))
    wait_for(lambda: s.restarts == 1 and s.pid not in (None, first), s)


def restarted_when_stalled(tmp_path: Path, cleanup: list) -> SupervisedServer:
    """A ready stand-in that reports waiting requests and no progress, restarted after 0.5 s of that."""
    s = SupervisedServer(server(tmp_path, "--stall", stall_after=0.5, stall_restart=True), tmp_path / "state")
    cleanup.append(s)
    s.start()
    s.observe(ev.ServerReady(None))
    return s


def stays_running(supervised: SupervisedServer, seconds: float) -> None:
    """Tick for ``seconds``: the server is running all along (no stall, no restart)."""
    pid, restarts = supervised.pid, supervised.restarts
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        supervised.tick()
        assert (supervised.state, supervised.restarts, supervised.pid) == ("running", restarts, pid)
        time.sleep(0.05)


def test_requests_of_a_run_that_crashed_are_not_the_next_runs(tmp_path: Path, cleanup) -> None:
    """A server killed with requests running and waiting starts again with none: vLLM prints no stats line while
    idle, so the last run's queue must not make the new run look stalled (and restart it, again and again)."""
    s = SupervisedServer(server(tmp_path, "--quiet", stall_after=1.0, stall_restart=True), tmp_path / "state")
    cleanup.append(s)
    s.start()
    first = s.pid
    s.observe(ev.ServerReady(None))
    s.observe(ev.EngineStats(None, prompt_throughput=0.0, generation_throughput=0.0, running=2, waiting=3))
    os.kill(first, signal.SIGKILL)
    wait_for(lambda: s.restarts == 1 and s.pid not in (None, first), s)
    second = s.pid
    s.observe(ev.ServerReady(None))
    stays_running(s, 2.5)
    assert s.restarts == 1 and s.pid == second


def test_an_engine_asleep_is_not_stalled_and_not_restarted(tmp_path: Path, cleanup) -> None:
    """Sleep mode (vLLM's /sleep with mode=keep) keeps requests waiting and the engine still: no stall until it
    wakes every part, and the wake-up starts the stall clock again."""
    s = restarted_when_stalled(tmp_path, cleanup)
    first = s.pid
    s.observe(ev.EngineStats(None, prompt_throughput=0.0, generation_throughput=0.0, running=0, waiting=3))
    s.observe(ev.EngineSleep(None, transition="sleep", seconds=0.5))
    s.observe(ev.EngineSleep(None, transition="wake_up", seconds=0.2, tags=["weights"]))  # the KV cache sleeps on
    stays_running(s, 1.5)
    assert s.restarts == 0 and s.pid == first
    assert not s.serving  # no canary request while the KV cache sleeps
    s.observe(ev.EngineSleep(None, transition="wake_up", seconds=0.2, tags=["kv_cache"]))  # awake, and still stuck
    assert s.serving
    wait_for(lambda: s.restarts == 1 and s.pid not in (None, first), s)


def test_an_engine_paused_is_not_stalled_and_not_restarted(tmp_path: Path, cleanup) -> None:
    """``/pause`` (weights updated between training steps) leaves requests waiting: no stall until it goes on."""
    s = restarted_when_stalled(tmp_path, cleanup)
    first = s.pid
    s.observe(ev.EnginePause(None, state="paused_new"))
    s.observe(ev.EngineStats(None, prompt_throughput=0.0, generation_throughput=0.0, running=0, waiting=3))
    stays_running(s, 1.5)
    assert s.restarts == 0 and s.pid == first
    s.observe(ev.EnginePause(None, state="unpaused"))
    wait_for(lambda: s.restarts == 1 and s.pid not in (None, first), s)


def test_a_missing_program_backs_off_instead_of_crashing(tmp_path: Path) -> None:
    s = SupervisedServer(server(tmp_path, command=("/nonexistent/vllm",)), tmp_path / "state")
    s.start()
    assert s.state == "backoff"
    assert "cannot start /nonexistent/vllm" in (s.spawn_error or "")


def test_an_unreadable_secret_is_a_start_failure_that_names_its_source(tmp_path: Path, monkeypatch) -> None:
    from agent.config import Secret

    monkeypatch.delenv("NO_SUCH_VAR", raising=False)
    s = SupervisedServer(server(tmp_path, api_key=Secret(env="NO_SUCH_VAR")), tmp_path / "state")
    s.start()
    assert s.state == "backoff" and "NO_SUCH_VAR" in (s.spawn_error or "")


# A server that starts a child which ignores SIGTERM (an engine process stuck in a GPU call), writes
# the child's pid to a file, and then either waits (until SIGTERM ends it) or exits at once.
FORKING = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c",
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); time.sleep(600)"],
    stdout=subprocess.PIPE)
child.stdout.readline()  # it ignores SIGTERM from now on
open(sys.argv[1], "w").write(str(child.pid))
time.sleep(0.3)
if sys.argv[2] == "exit":
    sys.exit(1)
time.sleep(600)
"""


@pytest.fixture
def forking(tmp_path: Path, cleanup) -> Iterator[Callable[..., tuple[SupervisedServer, Callable[[], int]]]]:
    """A supervised FORKING server (``mode``: wait or exit) and what gives its current child's pid;
    every child it started is killed at the end, whatever the test did."""
    children: list[int] = []
    pid_file = tmp_path / "child.pid"

    def child() -> int:
        wait_for(lambda: pid_file.exists() and pid_file.read_text().strip() != "")
        pid = int(pid_file.read_text())
        pid_file.unlink()
        children.append(pid)
        return pid

    def make(mode: str, **kw) -> tuple[SupervisedServer, Callable[[], int]]:
        config = server(tmp_path, **kw)
        command = (sys.executable, "-c", FORKING, str(pid_file), mode)
        s = SupervisedServer(ServerConfig(**{**config.__dict__, "command": command}), tmp_path / "state")
        cleanup.append(s)
        s.start()
        return s, child

    yield make
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    # a zombie whose parent (the test) does not reap it counts as gone
    return (proc_start_time(pid) is None) or Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] == "Z"


def test_stop_ends_the_whole_process_group_even_a_child_that_ignores_sigterm(forking) -> None:
    s, child = forking("wait", stop_timeout=0.5)
    pid = child()
    s.stop()
    wait_for(lambda: s.state == "stopped", s)
    wait_for(lambda: _gone(pid))


def test_a_server_that_exits_leaving_a_child_has_its_group_cleaned_before_the_restart(forking) -> None:
    s, child = forking("exit", stop_timeout=30.0, backoff_initial=0.5, backoff_max=0.5)
    first = child()
    wait_for(lambda: s.restarts >= 1, s)  # the child ignored SIGTERM; the restart kills it first
    wait_for(lambda: _gone(first))
    assert not _gone(child())  # the new run's child


def test_stop_after_the_leader_exited_still_ends_its_children(forking) -> None:
    s, child = forking("exit", stop_timeout=0.5, restart="never")
    pid = child()
    wait_for(lambda: s.state == "exited", s)
    wait_for(lambda: _gone(pid), s)  # SIGKILL once its stop_timeout is up


def test_a_crash_loop_stays_one_while_restarted_until_the_server_has_run_long_enough(tmp_path: Path, cleanup) -> None:
    config = server(tmp_path, "--exit-after", "0.3", crash_loop_starts=2, crash_loop_window=60.0)
    s = SupervisedServer(config, tmp_path / "state")
    cleanup.append(s)
    s.start()
    wait_for(lambda: s.state == "crash_loop", s)
    seen = set()
    deadline = time.monotonic() + 3.0
    while time.monotonic() < deadline:
        s.tick()
        seen.add(s.state)
        time.sleep(0.01)
    assert s.restarts >= 2
    assert seen == {ServerState.CRASH_LOOP}, seen
