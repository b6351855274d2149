"""vLLM and its LMCache server (mp mode) supervised as one unit, with real child processes.

Both processes are tests/support/fakeserver.py: the LMCache server's stand-in answers
``/healthcheck`` as LMCache's HTTP server does (503 while its engine starts).  The real
``lmcache server`` under kvwatch is in tests/e2e/test_lmcache_mp_cpu.py.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from agent.config import LmcacheConfig, ServerConfig
from agent.exposition import RenderedAtScrape
from agent.supervise.server import proc_start_time
from agent.supervise.states import ServerState
from agent.supervise.unit import ServerUnit
from parsers import events as ev
from tests.support.harness import free_port

FAKE = str(Path(__file__).parents[1] / "support" / "fakeserver.py")


def unit_config(tmp_path: Path, lmcache_load: float = 0.0, vllm_term_delay: float = 0.0, **lmcache) -> ServerConfig:
    vllm_port, http_port = free_port(), free_port()
    lmcache_command = (sys.executable, FAKE, "--port", str(http_port), "--health-path", "/healthcheck")
    lmcache_command += ("--load-seconds", str(lmcache_load), "--rate", "2")
    settings = dict(enabled=True, mode="mp", command=lmcache_command, http_port=http_port)
    settings.update(lmcache)
    return ServerConfig(
        name="gpu0",
        command=(sys.executable, FAKE, "--port", str(vllm_port), "--rate", "2", "--term-delay", str(vllm_term_delay)),
        log_file=tmp_path / "logs" / "gpu0.log",
        health_url=f"http://127.0.0.1:{vllm_port}/health",
        health_interval=0.1,
        health_timeout=1.0,
        backoff_initial=0.05,
        backoff_max=0.2,
        stop_timeout=5.0,
        lmcache=LmcacheConfig(**settings),
    )


def run_until(unit: ServerUnit, check: Callable[[], bool], timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        unit.tick()
        if check():
            return
        time.sleep(0.02)
    states = ", ".join(f"{p.who}: {p.state}" for p in unit.processes)
    raise AssertionError(f"timed out waiting for {what} ({states})")


def both_running(unit: ServerUnit) -> bool:
    return all(p.state == ServerState.RUNNING for p in unit.processes)


def running(unit: ServerUnit) -> ServerUnit:
    """The unit begun, once both of its processes run."""
    unit.begin()
    run_until(unit, lambda: both_running(unit), what="both running")
    return unit


@pytest.fixture
def units(tmp_path: Path) -> Iterator[Callable[..., ServerUnit]]:
    made: list[ServerUnit] = []

    def make(config: ServerConfig | None = None, **kw) -> ServerUnit:
        unit = ServerUnit(config or unit_config(tmp_path, **kw), tmp_path / "state")
        made.append(unit)
        return unit

    yield make
    for unit in made:
        for process in unit.processes:
            if process.pid is not None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(process.pid, signal.SIGKILL)


def test_the_lmcache_server_starts_first_and_vllm_waits_until_it_is_healthy(units, tmp_path: Path) -> None:
    unit = units(lmcache_load=1.5)
    unit.begin()
    lmcache, vllm = unit.lmcache, unit.vllm
    assert lmcache.pid is not None and vllm.pid is None
    assert vllm.state == ServerState.WAITING
    run_until(unit, lambda: lmcache.state == ServerState.RUNNING, what="the LMCache server healthy")
    healthy_at = time.monotonic()
    assert vllm.state == ServerState.WAITING or vllm.started_mono >= healthy_at - 0.1
    run_until(unit, lambda: both_running(unit), what="vLLM running")
    assert vllm.started_against == lmcache.identity
    assert vllm.started_mono - lmcache.started_mono >= 1.5  # not before the LMCache server answered
    assert (tmp_path / "logs" / "gpu0-lmcache.log").stat().st_size > 0  # its own raw log, beside vLLM's
    assert (tmp_path / "state" / "servers" / "gpu0.lmcache.json").exists()


def test_on_stop_vllm_exits_before_its_lmcache_server(units) -> None:
    unit = running(units(vllm_term_delay=1.0))
    vllm_pid, lmcache_pid = unit.vllm.pid, unit.lmcache.pid
    exits: dict[str, float] = {}
    unit.stop()

    def watch() -> bool:
        for name, pid in (("vllm", vllm_pid), ("lmcache", lmcache_pid)):
            if name not in exits and proc_start_time(pid) is None:
                exits[name] = time.monotonic()
        return len(exits) == 2 and unit.state == ServerState.STOPPED

    run_until(unit, watch, what="both stopped")
    assert exits["vllm"] < exits["lmcache"]
    assert exits["lmcache"] - exits["vllm"] < 3.0
    assert unit.lmcache.state == unit.vllm.state == ServerState.STOPPED


def test_a_crashed_lmcache_server_is_restarted_and_vllm_after_it(units) -> None:
    unit = running(units())
    old_vllm, old_lmcache = unit.vllm.pid, unit.lmcache.pid
    os.killpg(old_lmcache, signal.SIGKILL)
    run_until(unit, lambda: unit.vllm.pid is None or unit.vllm.state == ServerState.STOPPING, what="vLLM stopped")
    run_until(
        unit,
        lambda: both_running(unit) and unit.vllm.pid not in (None, old_vllm),
        what="both running again",
    )
    assert unit.lmcache.pid != old_lmcache
    assert unit.lmcache.last_exit_signal == signal.SIGKILL
    assert unit.lmcache.restarts == 1 and unit.vllm.restarts == 1
    assert unit.vllm.started_against == unit.lmcache.identity
    assert unit.vllm.started_mono >= unit.lmcache.started_mono


def test_a_new_kvwatch_adopts_both_and_starts_no_second_copy(units, tmp_path: Path) -> None:
    config = unit_config(tmp_path)
    first = running(units(config))
    pids = (first.lmcache.pid, first.vllm.pid)
    first.hand_over()  # as a kvwatch SIGKILLed leaves them: running, recorded
    second = units(config)
    second.begin()
    assert (second.lmcache.pid, second.vllm.pid) == pids
    assert second.lmcache.adopted and second.vllm.adopted
    run_until(second, lambda: both_running(second), what="both adopted and running")
    time.sleep(0.5)
    second.tick()
    assert (second.lmcache.pid, second.vllm.pid) == pids
    assert second.vllm.restarts == second.lmcache.restarts == 0


def test_a_vllm_whose_lmcache_server_died_while_kvwatch_was_away_is_restarted(units, tmp_path: Path) -> None:
    config = unit_config(tmp_path)
    first = running(units(config))
    old_vllm, old_lmcache = first.vllm.pid, first.lmcache.pid
    first.hand_over()
    os.killpg(old_lmcache, signal.SIGKILL)
    time.sleep(0.2)
    second = units(config)
    second.begin()
    assert second.vllm.adopted and not second.lmcache.adopted
    run_until(second, lambda: both_running(second) and second.vllm.pid != old_vllm, what="vLLM restarted")
    assert proc_start_time(old_vllm) is None
    assert second.vllm.started_against == second.lmcache.identity


def test_a_reload_of_only_the_lmcache_settings_restarts_vllm_then_the_lmcache_server(units, tmp_path: Path) -> None:
    config = unit_config(tmp_path)
    unit = running(units(config))
    old_vllm, old_lmcache = unit.vllm.pid, unit.lmcache.pid
    lmcache_command = (*config.lmcache.command, "--rate", "3")  # only the LMCache server's settings change
    changed = replace(config, lmcache=replace(config.lmcache, command=lmcache_command))
    exits: dict[str, float] = {}
    starts: dict[str, float] = {}
    unit.reload(changed)

    def watch() -> bool:
        for name, pid in (("vllm", old_vllm), ("lmcache", old_lmcache)):
            if name not in exits and proc_start_time(pid) is None:
                exits[name] = time.monotonic()
        for name, process in (("vllm", unit.vllm), ("lmcache", unit.lmcache)):
            if name not in starts and process.pid not in (None, old_vllm, old_lmcache):
                starts[name] = time.monotonic()
        return len(starts) == 2 and both_running(unit)

    run_until(unit, watch, what="both restarted")
    assert exits["vllm"] <= exits["lmcache"] <= starts["lmcache"] <= starts["vllm"]
    assert unit.lmcache.config.command == lmcache_command


def test_a_reload_that_changes_only_vllm_leaves_the_lmcache_server_running(units, tmp_path: Path) -> None:
    config = unit_config(tmp_path)
    unit = running(units(config))
    old_vllm, old_lmcache = unit.vllm.pid, unit.lmcache.pid
    changed = replace(config, command=(*config.command, "--lines", "0"))
    unit.reload(changed)
    run_until(unit, lambda: both_running(unit) and unit.vllm.pid != old_vllm, what="vLLM restarted")
    assert unit.lmcache.pid == old_lmcache and unit.lmcache.restarts == 0


def test_a_unit_whose_engine_is_asleep_or_paused_is_not_serving(units) -> None:
    """What the periodic canary asks before it sends a request."""
    unit = running(units())
    assert unit.serving
    unit.observe(ev.EngineSleep(None, transition="sleep", seconds=0.1))
    assert not unit.serving
    unit.observe(ev.EngineSleep(None, transition="wake_up", seconds=0.1))
    unit.observe(ev.EnginePause(None, state="paused_all"))
    assert not unit.serving
    unit.observe(ev.EnginePause(None, state="unpaused"))
    assert unit.serving


def test_the_lmcache_server_series_carry_the_process_label(units) -> None:
    unit = running(units())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(RenderedAtScrape(unit.families))
    text = generate_latest(registry).decode()
    assert 'kvwatch_server_up{process="lmcache",server="gpu0"} 1.0' in text
    assert 'kvwatch_server_up{process="vllm",server="gpu0"} 1.0' in text
    assert 'kvwatch_server_state{process="lmcache",server="gpu0",state="running"} 1.0' in text
    assert 'kvwatch_server_progress_age_seconds{process="lmcache"' not in text  # inference moves in vLLM only


def test_a_reload_to_the_in_process_mode_stops_the_lmcache_server_after_vllm(units, tmp_path: Path) -> None:
    config = unit_config(tmp_path)
    unit = running(units(config))
    old_vllm, old_lmcache = unit.vllm.pid, unit.lmcache.pid
    unit.reload(replace(config, lmcache=LmcacheConfig(enabled=False)))
    assert unit.lmcache is None
    run_until(
        unit,
        lambda: proc_start_time(old_lmcache) is None and unit.vllm.state == ServerState.RUNNING,
        what="the LMCache server stopped and vLLM running again",
    )
    assert unit.vllm.pid != old_vllm and not unit.retired


def test_what_the_lmcache_servers_log_tells_is_that_processs(units) -> None:
    """An error in the LMCache server's log is its last error, not vLLM's (the pipeline shows each process the
    events of its own files: tests/sinks/test_pipeline.py)."""
    unit = units()
    unit.observe_lmcache(ev.ServerError(None, "oom", "OutOfMemoryError"))
    assert unit.lmcache is not None and unit.lmcache.last_error == "oom"
    assert unit.vllm.last_error is None
    unit.observe(ev.ServerError(None, "cuda_error", "AcceleratorError"))
    assert (unit.vllm.last_error, unit.lmcache.last_error) == ("cuda_error", "oom")


def test_a_vllm_whose_worker_the_lmcache_server_no_longer_holds_is_restarted(units) -> None:
    """With ``unregistered_restart``: the server's log says it was asked for a worker it reaped (the real servers'
    lines: tests/e2e/test_lmcache_mp_cpu.py); vLLM alone starts again, against the same LMCache server, once."""
    unit = running(units(unregistered_restart=True))
    old_vllm, lmcache_pid = unit.vllm.pid, unit.lmcache.pid
    unit.observe_lmcache(ev.LmcacheUnregisteredWorker(None, "lookup", model="m", world_size=1))
    run_until(unit, lambda: unit.vllm.pid != old_vllm, what="vLLM stopped")
    # What the stopped run's requests left in the log, read after: no second restart.
    unit.observe_lmcache(ev.LmcacheUnregisteredWorker(None, "transfer", instance="7"))
    run_until(unit, lambda: both_running(unit) and unit.vllm.pid is not None, what="vLLM running again")
    time.sleep(0.3)
    unit.tick()
    assert unit.vllm.restarts == 1 and unit.vllm.state == ServerState.RUNNING
    assert unit.lmcache.pid == lmcache_pid and unit.lmcache.restarts == 0
    assert unit.vllm.started_against == unit.lmcache.identity


def test_a_worker_the_lmcache_server_no_longer_holds_is_reported_once_a_run(units, caplog) -> None:
    """Without ``unregistered_restart``: vLLM runs on, and the log says what to do, once for the run, not once for
    every refused request; the same words in vLLM's own log are not the LMCache server's."""
    unit = running(units())
    pid = unit.vllm.pid
    unit.observe(ev.LmcacheUnregisteredWorker(None, "lookup"))
    unit.tick()
    assert not [r for r in caplog.records if "no longer holds" in r.getMessage()]
    for operation in ("lookup", "retrieve", "store"):
        unit.observe_lmcache(ev.LmcacheUnregisteredWorker(None, operation, instance="3"))
        unit.tick()
    told = [r.getMessage() for r in caplog.records if "no longer holds" in r.getMessage()]
    assert len(told) == 1 and "(lookup)" in told[0] and "unregistered_restart = true" in told[0]
    assert unit.vllm.pid == pid and unit.vllm.restarts == 0 and unit.vllm.state == ServerState.RUNNING


def test_a_vllm_whose_pinging_worker_was_reaped_is_restarted_before_a_request_hangs(units) -> None:
    """A worker this run of vLLM registered, reaped after it had pinged (vLLM paused or hung past the reap timeout):
    restarted with ``unregistered_restart``, before any request of it is refused.  A worker reaped that never
    pinged (an idle vLLM's: the connector's heartbeat starts with its first store or load) is left to the next
    request, and a worker of another run (its vLLM gone without unregistering) is no news."""
    unit = running(units(unregistered_restart=True))
    first = unit.vllm.pid
    registered = ev.LmcacheEngineRegistration(None, "registered", "41", gpu=False, model="m", world_size=1)
    unit.observe_lmcache(registered)
    unit.observe_lmcache(
        ev.LmcacheEngineRegistration(None, "reaped", "41", gpu=False, silent_seconds=31.2, pinged=False)
    )
    unit.observe_lmcache(
        ev.LmcacheEngineRegistration(None, "reaped", "77", gpu=False, silent_seconds=36.0, pinged=True)
    )
    stays = time.monotonic() + 0.5
    while time.monotonic() < stays:
        unit.tick()
        assert unit.vllm.pid == first and unit.vllm.restarts == 0
        time.sleep(0.02)
    unit.observe_lmcache(registered)  # registered again (a new registration of the same worker)
    unit.observe_lmcache(
        ev.LmcacheEngineRegistration(None, "reaped", "41", gpu=False, silent_seconds=31.9, pinged=True)
    )
    run_until(unit, lambda: unit.vllm.restarts == 1 and both_running(unit), what="vLLM restarted and running")
    assert unit.vllm.pid != first and unit.lmcache.restarts == 0
    # The run before's worker reaped after the restart: not this run's.
    unit.observe_lmcache(
        ev.LmcacheEngineRegistration(None, "reaped", "41", gpu=False, silent_seconds=40.0, pinged=True)
    )
    time.sleep(0.3)
    unit.tick()
    assert unit.vllm.restarts == 1 and unit.vllm.state == ServerState.RUNNING


def test_a_kvwatch_that_adopts_vllm_knows_the_workers_it_registered(units, tmp_path: Path) -> None:
    """The workers a run of vLLM registered are kept in its record: a kvwatch that adopts it (and reads the LMCache
    server's log on from where the one before stopped) acts on the reap of one of them at once, not at the next
    request refused; a new run of vLLM starts with none."""
    config = unit_config(tmp_path, unregistered_restart=True)
    first = running(units(config))
    vllm_pid = first.vllm.pid
    first.observe_lmcache(ev.LmcacheEngineRegistration(None, "registered", "41", gpu=False, model="m", world_size=1))
    first.observe_lmcache(ev.LmcacheEngineRegistration(None, "registered", "42", gpu=False, model="m", world_size=1))
    first.observe_lmcache(ev.LmcacheEngineRegistration(None, "unregistered", "42", gpu=False))
    first.hand_over()
    second = units(config)
    second.begin()
    assert second.vllm.adopted and second.vllm.pid == vllm_pid and second.vllm.workers == {"41"}
    run_until(second, lambda: both_running(second), what="both adopted and running")
    second.observe_lmcache(
        ev.LmcacheEngineRegistration(None, "reaped", "41", gpu=False, silent_seconds=31.2, pinged=True)
    )
    run_until(second, lambda: second.vllm.restarts == 1 and both_running(second), what="vLLM restarted")
    assert second.vllm.pid != vllm_pid and second.vllm.workers == set()


def test_a_vllm_of_a_shared_lmcache_server_is_restarted_for_its_own_workers_only(units, tmp_path: Path) -> None:
    """An LMCache server run elsewhere (``launch = false``) may serve other vLLM servers: its log registers, reaps
    and is asked for their workers too.  vLLM's own are known by the ids its log gives them (``LMCache MP worker
    adapter created with instance_id=N``): a reap of one of them that had pinged, or a store refused for it, restarts
    vLLM; the same of another vLLM's worker, or a lookup the server cannot place (it names no worker), does not."""
    config = unit_config(tmp_path, launch=False, server_log=tmp_path / "lmcache.log", unregistered_restart=True)
    unit = running(units(config))
    assert unit.lmcache is None and unit.processes == [unit.vllm]
    first = unit.vllm.pid
    unit.observe(ev.LmcacheWorkerAdapter(None, "41"))
    unit.observe_lmcache(ev.LmcacheEngineRegistration(None, "registered", "41", gpu=False, model="m", world_size=1))
    unit.observe_lmcache(ev.LmcacheEngineRegistration(None, "registered", "77", gpu=False, model="m", world_size=1))
    assert unit.vllm.workers == {"41"}  # the other vLLM's registration is not ours
    for others in (
        ev.LmcacheEngineRegistration(None, "reaped", "77", gpu=False, silent_seconds=36.0, pinged=True),
        ev.LmcacheUnregisteredWorker(None, "store", "77"),
        ev.LmcacheUnregisteredWorker(None, "lookup", model="m", world_size=1),
    ):
        unit.observe_lmcache(others)
    stays = time.monotonic() + 0.5
    while time.monotonic() < stays:
        unit.tick()
        assert unit.vllm.pid == first and unit.vllm.restarts == 0
        time.sleep(0.02)
    unit.observe_lmcache(
        ev.LmcacheEngineRegistration(None, "reaped", "41", gpu=False, silent_seconds=31.2, pinged=True)
    )
    run_until(unit, lambda: unit.vllm.restarts == 1 and both_running(unit), what="vLLM restarted and running")
    assert unit.vllm.pid != first and unit.vllm.workers == set()
    # The new run's worker, refused a store: restarted again.
    unit.observe(ev.LmcacheWorkerAdapter(None, "42"))
    second = unit.vllm.pid
    unit.observe_lmcache(ev.LmcacheUnregisteredWorker(None, "store", "42"))
    run_until(unit, lambda: unit.vllm.restarts == 2 and both_running(unit), what="vLLM restarted again")
    assert unit.vllm.pid != second
