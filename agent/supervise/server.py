"""Start, adopt, watch, restart and stop the vLLM servers of ``[[server]]``.

A model load takes minutes, so the rule above all others: nothing that
happens to kvwatch restarts a healthy server.  Each server runs in its own
session (its own process group), writes straight into its raw log file --
no pipe to kvwatch that could fill up or break -- and is recorded (pid and
the kernel's start time of that pid) in the state directory.  A kvwatch that
starts finds the record, checks ``/proc/PID/stat`` still shows the same start
time (a recycled pid does not), and adopts the server instead of starting a
second one.  systemd's ``KillMode=process`` keeps the servers alive when
kvwatch itself is stopped by a crash, a watchdog kill or an upgrade.

What the supervisor learns about a server's insides (errors such as an OOM,
readiness, whether requests are moving) comes from the events of its log,
fed by the daemon; it never reads the log itself.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import signal
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from prometheus_client.core import Metric

from agent.config import ServerConfig
from agent.exposition import families
from agent.families import computed, counter, flag, gauge, value_of
from agent.periodic import Periodic
from agent.statedir import StateFile
from agent.supervise.rawlog import open_raw_log
from agent.supervise.states import DOWN, WAITING_TO_START, ServerState
from parsers import events as ev

log = logging.getLogger("kvwatch.server")

# Requests that say nothing about whether inference moves: health and readiness probes, scrapes, questions about
# the server.
PROBE_PATHS = frozenset(
    (
        "/health",
        "/ready",
        "/readyz",
        "/ping",
        "/metrics",
        "/version",
        "/v1/models",
        "/load",
        "/is_sleeping",
        "/is_paused",
        "/server_info",
        "/tokenizer_info",
        "/get_tokenizer_info",
        "/kv_event_sources",
        "/fault_tolerance/status",
    )
)
UNHEALTHY_AFTER = 3  # failed probes in a row before a running server counts as unhealthy
VLLM = "vllm"
LMCACHE = "lmcache"


def proc_start_time(pid: int) -> int | None:
    """The start time of ``pid`` in clock ticks since boot (field 22 of /proc/PID/stat), or None."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = data[data.rfind(b")") + 2 :].split()
    try:
        if fields[0] == b"Z":  # a zombie has exited
            return None
        return int(fields[19])
    except (IndexError, ValueError):
        return None


# The state directory's folder of server records, one ``NAME.json`` (``NAME.lmcache.json``) a process.
RECORDS = "servers"


def read_record(path: Path) -> tuple[dict, int, int] | None:
    """A server record (what a kvwatch wrote of a server it started) with its pid and that pid's start
    time; None for none, or one that cannot be read."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return record, int(record["pid"]), int(record["start_time"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def left_running(state_dir: Path, known: Iterable[Path]) -> Iterator[tuple[str, int]]:
    """(record name, pid) of each server an earlier kvwatch started that still runs, among the records
    the ``known`` ones (the servers of the configuration in use) are not."""
    ours = set(known)
    for path in sorted((state_dir / RECORDS).glob("*.json")):
        if path in ours:
            continue
        found = read_record(path)
        if found is not None and proc_start_time(found[1]) == found[2]:
            yield path.stem, found[1]


def _group_exists(group: int) -> bool:
    """True while a process of the group runs (a zombie waiting for its parent does not count)."""
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return any(_member_running(entry, group) for entry in os.scandir("/proc") if entry.name.isdigit())


def _member_running(entry: os.DirEntry, group: int) -> bool:
    try:
        with open(f"{entry.path}/stat", encoding="ascii", errors="replace") as handle:
            fields = handle.read().rpartition(")")[2].split()
    except OSError:
        return False
    return len(fields) > 2 and fields[2] == str(group) and fields[0] != "Z"  # state, ppid, pgrp


def config_digest(server: ServerConfig) -> str:
    """A digest of the settings that shape the running process: a change means a restart."""
    shaped = {
        "argv": server.argv(),
        "env": {k: v.describe() if hasattr(v, "describe") else v for k, v in server.added_environment().items()},
        "working_dir": str(server.working_dir),
        "log_file": str(server.log_file),
    }
    return hashlib.sha256(json.dumps(shaped, sort_keys=True).encode()).hexdigest()[:16]


class HealthProbe:
    """GETs the server's health URL every interval in its own thread; keeps the last result."""

    def __init__(self, url: str, interval: float, timeout: float) -> None:
        self.url = url
        self.interval = interval
        self.timeout = timeout
        self.ok: bool | None = None
        self.status: int | None = None
        self.duration: float | None = None
        self.failures = 0  # in a row
        self.checked_at: float | None = None
        self._loop = Periodic(f"kvwatch-probe {url}", self._turn)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _turn(self) -> float:
        self.check()
        return self.interval

    def check(self) -> None:
        began = time.monotonic()
        status = None
        try:
            with urllib.request.urlopen(self.url, timeout=self.timeout) as response:
                status = response.status
        except urllib.error.HTTPError as exc:
            status = exc.code
        except (OSError, ValueError):
            status = None
        self.duration = time.monotonic() - began
        self.status = status
        self.ok = status is not None and 200 <= status < 300
        self.failures = 0 if self.ok else self.failures + 1
        self.checked_at = time.time()


class SupervisedServer:
    """One ``[[server]]``: its process, state and history."""

    def __init__(
        self,
        config: ServerConfig,
        state_dir: Path,
        now: Callable[[], float] = time.monotonic,
        process: str = VLLM,
        waits_for: Callable[[], list[int] | None] | None = None,
    ) -> None:
        self.config = config
        self.name = config.name
        self.process_kind = process  # the `process` label: vllm, or the lmcache server beside it
        self.who = config.name if process == VLLM else f"{config.name} ({process} server)"  # in kvwatch's log
        self.digest = config_digest(config)
        suffix = "" if process == VLLM else f".{process}"
        self.record_path = state_dir / RECORDS / f"{config.name}{suffix}.json"
        self._record = StateFile.at(self.record_path, f"server {self.who}'s pid")
        # What must be up before this process starts: a callable giving its identity (pid and start
        # time) once it is, None until then.  The identity this process was started against is kept
        # (``started_against``): a different one later means what it connected to is gone.
        self.waits_for = waits_for
        self.started_against: list[int] | None = None
        # The workers of this run an LMCache multiprocess server holds (vLLM's, in mp mode), as its log said:
        # kept in the record, so that a kvwatch that adopts the server knows them without the lines read before.
        self.workers: set[str] = set()
        # The record is written from the reading thread too (what the log says), and from the supervising one.
        self._record_lock = threading.Lock()
        self._now = now
        self.state = ServerState.STOPPED
        self.entered: dict[ServerState, int] = dict.fromkeys(ServerState, 0)  # times each state was entered
        self.process: subprocess.Popen | None = None
        self.pid: int | None = None
        self.pid_start: int | None = None
        self.adopted = False
        self.started_at: float | None = None  # wall clock
        self.started_mono: float | None = None
        self.restarts = 0
        self.last_exit_code: int | None = None
        self.last_exit_signal: int | None = None
        self.last_error: str | None = None
        self.exits: deque[float] = deque()
        self.next_start: float | None = None
        self.stop_deadline: float | None = None
        self.stopping_for: str | None = None  # "restart" | "stop" | "remove"
        self.probe: HealthProbe | None = None
        self.ready_seen = False
        self.last_progress: float | None = None
        self.pending_requests = 0
        self.stall_reported = False
        # Engines in sleep mode -> their parts asleep, and engines paused: an engine at rest schedules nothing
        # and is not stalled.
        self.asleep: dict[int | None, list[str]] = {}
        self.paused: dict[int | None, bool] = {}
        self.spawn_error: str | None = None
        # The process group of a server whose leader exited: what is left of it is ended too.
        self.leftover_group: int | None = None
        self.leftover_deadline: float | None = None

    def reconfigure(self, config: ServerConfig) -> None:
        """New settings, used from the next start (a reload stops the server for it)."""
        self.config = config
        self.digest = config_digest(config)

    # -- life cycle -------------------------------------------------------------------

    def _enter(self, state: ServerState) -> None:
        """The one place the state changes: every change is logged and counted."""
        if state == self.state:
            return
        if state == ServerState.RUNNING and self.state == ServerState.STARTING and self.started_mono is not None:
            log.info("server %s: ready after %.0f s", self.who, self._now() - self.started_mono)
        else:
            log.info("server %s: %s -> %s", self.who, self.state, state)
        self.entered[state] += 1
        self.state = state

    @property
    def alive(self) -> bool:
        if self.pid is None:
            return False
        if self.process is not None:
            return self.process.poll() is None
        return proc_start_time(self.pid) == self.pid_start

    def adopt(self) -> bool:
        """Take over a server a previous kvwatch started, if its record shows one still running."""
        found = read_record(self.record_path)
        if found is None:
            return False
        record, pid, start = found
        if proc_start_time(pid) != start:
            log.info("server %s: recorded pid %d is gone (or now another process)", self.who, pid)
            self._forget()
            return False
        self.pid, self.pid_start, self.adopted = pid, start, True
        self.started_at = float(record.get("started_at", time.time()))
        self.started_mono = self._now() - max(0.0, time.time() - self.started_at)
        self.restarts = int(record.get("restarts", 0))
        # Its ready line was read by the kvwatch before: without a probe nothing else would say so.
        self.ready_seen = record.get("ready") is True
        against = record.get("started_against")
        self.started_against = [int(n) for n in against] if isinstance(against, list) else None
        workers = record.get("workers")
        self.workers = {str(worker) for worker in workers} if isinstance(workers, list) else set()
        self._enter(ServerState.STARTING)
        self.last_progress = self._now()
        self._start_probe()
        if record.get("digest") != self.digest:
            log.warning("server %s (pid %d): its settings changed while kvwatch was away; restarting it", self.who, pid)
            self.stop(reason="restart")
        else:
            log.info("server %s: adopted running pid %d", self.who, pid)
        return True

    @property
    def identity(self) -> list[int] | None:
        """Pid and kernel start time of the running process: another one means another run."""
        return [self.pid, self.pid_start or 0] if self.pid is not None and self.alive else None

    def start(self) -> None:
        config = self.config
        self.next_start = None
        if self.waits_for is not None:
            needed = self.waits_for()
            if needed is None:
                self._enter(ServerState.WAITING)  # started by ``tick`` once what it needs is up
                return
            self.started_against = needed
        self._end_leftovers(signal.SIGKILL)  # nothing of the last run may hold its GPU or port
        self.ready_seen = False
        self.stall_reported = False
        self.asleep, self.paused = {}, {}
        self.pending_requests = 0  # the last run's, gone with it: the new process runs nothing yet
        try:
            env = config.environment()
        except (OSError, KeyError) as exc:
            self._start_failed(f"cannot read a secret: {exc}")
            return
        try:
            log_fd = open_raw_log(config.log_file)
        except OSError as exc:
            self._start_failed(f"cannot open its log {config.log_file}: {exc.strerror or exc}")
            return
        try:
            self.process = subprocess.Popen(
                config.argv(),
                stdin=subprocess.DEVNULL,
                stdout=log_fd,
                stderr=log_fd,
                cwd=str(config.working_dir) if config.working_dir else None,
                env=env,
                start_new_session=True,  # its own process group: stopped as a whole, never by our signals
                close_fds=True,
            )
        except OSError as exc:
            self._start_failed(f"cannot start {config.argv()[0]}: {exc.strerror or exc}")
            return
        finally:
            os.close(log_fd)
        self.spawn_error = None
        self.pid = self.process.pid
        self.pid_start = proc_start_time(self.pid)
        self.adopted = False
        self.started_at = time.time()
        self.started_mono = self._now()
        self.last_progress = self._now()
        self.workers = set()  # a new run registers its own
        if self.state != ServerState.CRASH_LOOP:  # a crash loop lasts until the server has run long enough
            self._enter(ServerState.STARTING)
        self._save_record()
        self._start_probe()
        log.info("server %s: started pid %d: %s", self.who, self.pid, " ".join(config.shown_argv()))

    def _start_failed(self, reason: str) -> None:
        log.error("server %s: %s", self.who, reason)
        self.spawn_error = reason
        self.last_error = "start_failed"
        self._exited(None, None)

    def _start_probe(self) -> None:
        self._stop_probe()
        url = self.config.probe_url()
        if url:
            self.probe = HealthProbe(url, self.config.health_interval, self.config.health_timeout)
            self.probe.start()

    def _stop_probe(self) -> None:
        if self.probe is not None:
            self.probe.stop()
            self.probe = None

    def stop(self, reason: str = "stop") -> None:
        """Begin a graceful stop: SIGTERM to the whole group; ``tick`` sends SIGKILL after the timeout."""
        self.stopping_for = reason
        self.next_start = None
        if not self._group_alive():
            self._finish_stop()
            return
        self._enter(ServerState.STOPPING)
        self.stop_deadline = self._now() + self.config.stop_timeout
        self._signal_group(signal.SIGTERM)

    def _group_alive(self) -> bool:
        """True while the server or any process of its group runs (a child it forked, say)."""
        if self.pid is None:
            return False
        if self.process is not None:
            self.process.poll()  # reaps an exited leader (a zombie still counts as a member); never waits
        return self.alive or _group_exists(self.pid)

    def _signal_group(self, sig: int) -> None:
        if self.pid is None:
            return
        try:
            os.killpg(self.pid, sig)  # the server leads its own session, so its pgid is its pid
        except ProcessLookupError:
            pass
        except PermissionError:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def _end_leftovers(self, sig: int) -> None:
        """Signal what is left of the group of a server whose leader exited; forget it once gone."""
        group = self.leftover_group
        if group is None:
            return
        if _group_exists(group):
            log.warning("server %s: processes of its exited run are still there; sending %s", self.who, sig.name)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(group, sig)
        if sig == signal.SIGKILL or not _group_exists(group):
            self.leftover_group = self.leftover_deadline = None

    def _finish_stop(self) -> None:
        self._reap()
        self._stop_probe()
        self._enter(ServerState.STOPPED)
        self.pid = None
        self.process = None
        self.stop_deadline = None
        self._forget()

    def _reap(self) -> None:
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                code = self.process.wait(timeout=0.1)
                self._note_exit_status(code)

    def _note_exit_status(self, code: int | None) -> None:
        if code is None:
            self.last_exit_code, self.last_exit_signal = None, None
        elif code < 0:
            self.last_exit_code, self.last_exit_signal = None, -code
        else:
            self.last_exit_code, self.last_exit_signal = code, None

    def hand_over(self) -> None:
        """Leave the server running for the next kvwatch (its record stays)."""
        self._stop_probe()
        if self.process is not None:
            # Popen would reap it on garbage collection otherwise; the next kvwatch adopts it.
            self.process.returncode = 0
        self.process = None

    # -- the periodic check -------------------------------------------------------------

    def tick(self) -> None:
        now = self._now()
        if self.leftover_deadline is not None and now >= self.leftover_deadline:
            self._end_leftovers(signal.SIGKILL)
        if self.state == ServerState.STOPPING:
            if not self._group_alive():
                self._finish_stop_or_restart()
            elif self.stop_deadline is not None and now >= self.stop_deadline:
                log.warning(
                    "server %s: still running %.0f s after SIGTERM; sending SIGKILL",
                    self.who,
                    self.config.stop_timeout,
                )
                self._signal_group(signal.SIGKILL)
                self.stop_deadline = now + 5.0
            return
        if self.state == ServerState.WAITING:
            if self.waits_for is None or self.waits_for() is not None:
                self.start()
            return
        if self.state in WAITING_TO_START and self.pid is None:
            if self.next_start is not None and now >= self.next_start:
                self.restarts += 1
                self.start()
            return
        if self.state in DOWN:
            return
        if not self.alive:
            code = None
            if self.process is not None:
                code = self.process.poll()
            self._note_exit_status(code)
            self._stop_probe()
            self._exited(self.last_exit_code, self.last_exit_signal)
            return
        if self._record.failing is not None:
            # The state directory could not be written (a full disk): the record a kvwatch started after
            # this one adopts the server by, written once it can be.
            self._save_record()
        self._update_health(now)

    def _finish_stop_or_restart(self) -> None:
        reason = self.stopping_for
        self._finish_stop()
        if reason == "restart":
            self.restarts += 1
            self.start()

    @property
    def serving(self) -> bool:
        """Running with no engine at rest: a request sent now would be answered (the periodic canary's cue)."""
        return self.state == ServerState.RUNNING and not self.at_rest

    @property
    def at_rest(self) -> bool:
        """Whether an engine is asleep or paused (sleep mode, ``/pause``): its waiting requests wait for that."""
        return any(self.asleep.values()) or any(self.paused.values())

    def _update_health(self, now: float) -> None:
        if self.state == ServerState.CRASH_LOOP and self._recent_exits(now) >= self.config.crash_loop_starts:
            return  # restarted from a crash loop: it stays one until its exits leave the window
        probe = self.probe
        healthy: bool | None = probe.ok if probe is not None else (True if self.ready_seen else None)
        if healthy:
            self.ready_seen = True
        stalled = (
            self.pending_requests > 0
            and not self.at_rest
            and self.last_progress is not None
            and now - self.last_progress >= self.config.stall_after
        )
        if stalled:
            if not self.stall_reported:
                log.warning(
                    "server %s: %d requests waiting or running and no progress for %.0f s: engine stalled",
                    self.who,
                    self.pending_requests,
                    now - self.last_progress,
                )
                self.stall_reported = True
                self.last_error = "stalled"
            self._enter(ServerState.STALLED)
            if self.config.stall_restart:
                log.warning("server %s: restarting the stalled engine (stall_restart = true)", self.who)
                self.stop(reason="restart")
            return
        self.stall_reported = False
        if healthy:
            self._enter(ServerState.RUNNING)
        elif probe is not None and self.ready_seen and probe.failures >= UNHEALTHY_AFTER:
            self._enter(ServerState.UNHEALTHY)
        elif not self.ready_seen:
            self._enter(ServerState.STARTING)

    def _exited(self, code: int | None, sig: int | None) -> None:
        now = self._now()
        if self.pid is not None and _group_exists(self.pid):
            # What it forked outlives it (an engine process holding GPU memory): asked to end
            # now, killed when its stop_timeout is up or at the next start, whichever is first.
            self.leftover_group = self.pid
            self.leftover_deadline = now + self.config.stop_timeout
            self._end_leftovers(signal.SIGTERM)
        self.pid = None
        self.process = None
        self._forget()
        ran = now - self.started_mono if self.started_mono is not None else 0.0
        how = f"signal {sig}" if sig else (f"code {code}" if code is not None else "an unknown status (adopted)")
        if self.spawn_error is None:
            log.warning(
                "server %s: exited with %s after %.0f s%s",
                self.who,
                how,
                ran,
                f" (last error in its log: {self.last_error})" if self.last_error else "",
            )
        policy = self.config.restart
        failed = sig is not None or code != 0
        if policy == "never" or (policy == "on-failure" and not failed):
            self._enter(ServerState.EXITED)
            return
        self.exits.append(now)
        recent = self._recent_exits(now)
        delay = min(self.config.backoff_max, self.config.backoff_initial * (2 ** max(0, recent - 1)))
        delay *= random.uniform(0.5, 1.0)  # jitter: servers that failed together do not restart together
        self.next_start = now + delay
        if recent >= self.config.crash_loop_starts:
            if self.state != ServerState.CRASH_LOOP:
                log.error(
                    "server %s: crash loop: %d exits in %.0f s (last: %s%s); next start in %.0f s",
                    self.who,
                    recent,
                    self.config.crash_loop_window,
                    how,
                    f", last error {self.last_error}" if self.last_error else "",
                    delay,
                )
            self._enter(ServerState.CRASH_LOOP)
        else:
            self._enter(ServerState.BACKOFF)
            log.info("server %s: restarting in %.1f s", self.who, delay)

    def _recent_exits(self, now: float) -> int:
        """Exits within the crash-loop window."""
        while self.exits and now - self.exits[0] > self.config.crash_loop_window:
            self.exits.popleft()
        return len(self.exits)

    # -- what the log says --------------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        """Events from this server's log: errors, readiness, progress."""
        kind = type(event)
        if kind is ev.ServerError:
            if not (event.error == "engine_dead" and self.state == ServerState.STOPPING):  # the stop we asked for
                self.last_error = event.error
        elif kind is ev.ServerReady:
            first = not self.ready_seen
            self.ready_seen = True
            if first and self.pid is not None:
                self._save_record()  # so that a kvwatch that adopts the server knows it is ready
            if self.probe is not None:
                self.probe.failures = 0  # probes that failed while the model loaded say nothing of health
        elif kind is ev.EngineStats:
            running = event.running or 0
            waiting = event.waiting or 0
            self.pending_requests = running + waiting
            moving = (event.prompt_throughput, event.generation_throughput, event.throughput)
            if any(value for value in moving):
                self.last_progress = self._now()
        elif kind is ev.HttpAccess:
            if event.path not in PROBE_PATHS:  # kvwatch's own probes say nothing of the engine
                self.last_progress = self._now()
        elif kind in (ev.RequestFinished, ev.RequestAdded, ev.RequestAborted):
            self.last_progress = self._now()
        elif kind is ev.EngineSleep:
            self.asleep[event.engine] = ev.asleep_after(self.asleep.get(event.engine), event)
            self.last_progress = self._now()  # the time asleep (or waking) is no stall
        elif kind is ev.EnginePause:
            self.paused[event.engine] = event.state != "unpaused"
            self.last_progress = self._now()

    def note_worker(self, instance: str, held: bool) -> None:
        """A worker of this run the LMCache server now holds (registered) or no longer holds."""
        with self._record_lock:
            if (instance in self.workers) == held:
                return
            if held:
                self.workers.add(instance)
            else:
                self.workers.discard(instance)
        if self.pid is not None:
            self._save_record()

    # -- the state record -----------------------------------------------------------------

    def _save_record(self) -> None:
        with self._record_lock:  # the last save holds what every save before it knew
            record = {
                "pid": self.pid,
                "start_time": self.pid_start,
                "started_at": self.started_at,
                "digest": self.digest,
                "restarts": self.restarts,
                "command": self.config.argv()[0],
                "ready": self.ready_seen,
                "started_against": self.started_against,
                "workers": sorted(self.workers),
            }
            with contextlib.suppress(OSError):  # else the write fails, and says why
                self.record_path.parent.mkdir(parents=True, exist_ok=True)
            self._record.save(json.dumps(record))

    def _forget(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.record_path.unlink()

    # -- views ---------------------------------------------------------------------------

    def uptime(self) -> float | None:
        if self.pid is None or self.started_mono is None:
            return None
        return max(0.0, self._now() - self.started_mono)

    def progress_age(self) -> float | None:
        if self.last_progress is None or self.pid is None or self.process_kind != VLLM:
            return None
        return max(0.0, self._now() - self.last_progress)

    def status_text(self) -> str:
        text = f"{self.name} {self.state}"
        if self.state in WAITING_TO_START and self.last_error:
            text += f" ({self.last_error})"
        return text

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [([self.name, self.process_kind], self)])


def _states(server: SupervisedServer, labels: tuple[str, ...]) -> Iterable:
    return [((state.value,), 1 if server.state == state else 0) for state in ServerState]


def _entered(server: SupervisedServer, labels: tuple[str, ...]) -> Iterable:
    return [((state.value,), count) for state, count in server.entered.items()]


def _last_error(server: SupervisedServer, labels: tuple[str, ...]) -> Iterable:
    return [((server.last_error,), 1)] if server.last_error is not None else []


def _probe_duration(server: SupervisedServer) -> float | None:
    probe = server.probe
    return None if probe is None or probe.ok is None else probe.duration or 0.0


SPECS = (
    gauge(
        "kvwatch_server_up",
        "1 while the supervised process runs (vLLM, or the LMCache server beside it: label process).",
        flag(lambda s: s.pid is not None and s.alive),
        native="Prometheus' `up` of a vLLM scrape",
        labels="process",
    ),
    gauge(
        "kvwatch_server_state",
        "1 for the supervised process's current state: waiting, starting, running, unhealthy, stalled, backoff, "
        "crash_loop, stopping, stopped, exited.",
        _states,
        labels="process state",
        doc=(
            "1 for the current state: `waiting` (vLLM, until its LMCache server is healthy), `starting`, `running`, "
            "`unhealthy`, `stalled`, `backoff`, `crash_loop`, `stopping`, `stopped`, `exited`; `process` is `vllm`, "
            "or `lmcache` for the LMCache server kvwatch runs beside it (mp mode), as on every `kvwatch_server_*` "
            "series"
        ),
    ),
    counter(
        "kvwatch_server_state_changes_total",
        "Times the supervised server entered each state (a server that flaps between running and unhealthy, "
        "or starts again and again, shows here).",
        _entered,
        labels="process state",
        doc=(
            'times the server entered each state; `state="unhealthy"` counts a server that flaps between healthy and '
            "not (alert `KvwatchServerFlapping`)"
        ),
    ),
    counter(
        "kvwatch_server_restarts_total",
        "Times kvwatch started the server again.",
        value_of("restarts"),
        doc="times kvwatch started the server again (after an exit, a changed config, a stall restart)",
        labels="process",
    ),
    gauge(
        "kvwatch_server_last_exit_code",
        "Exit code of the server's last exit (not by a signal).",
        value_of("last_exit_code"),
        doc="exit code of the last exit not caused by a signal",
        labels="process",
    ),
    gauge(
        "kvwatch_server_last_exit_signal",
        "Signal that ended the server's last run.",
        value_of("last_exit_signal"),
        doc="signal number that ended the last run (9 after an OOM kill)",
        labels="process",
    ),
    gauge(
        "kvwatch_server_last_error",
        "Always 1; the last error seen: an error kind of its log (oom, engine_dead ...), stalled or start_failed.",
        _last_error,
        labels="process error",
        doc=(
            "always 1; the last error seen for the server: a `kvwatch_vllm_errors_total` kind from its log (`oom` "
            "…), `stalled`, or `start_failed` (its program or log could not be opened, a secret could not be read); "
            "kept across restarts until the next error"
        ),
    ),
    gauge(
        "kvwatch_server_uptime_seconds",
        "Seconds since the running server process started.",
        computed(lambda s: s.uptime()),
        doc="seconds since the running server process started (kept across an adoption)",
        labels="process",
    ),
    gauge(
        "kvwatch_server_health_up",
        "1 when the last health probe got a 2xx answer.",
        flag(lambda s: s.probe.ok if s.probe is not None else None),
        doc="1 when the last probe of `/health` (the LMCache server's: `/healthcheck`) answered 2xx",
        native="vLLM's `/health`; LMCache's `/healthcheck`",
        labels="process",
    ),
    gauge(
        "kvwatch_server_health_probe_duration_seconds",
        "Duration of the last health probe.",
        computed(_probe_duration),
        labels="process",
    ),
    gauge(
        "kvwatch_server_progress_age_seconds",
        "Seconds since the log last showed inference moving (throughput, a request, an access line).",
        computed(lambda s: s.progress_age()),
        doc=(
            "seconds since the log last showed inference moving (non-zero throughput, a request added or finished, "
            "an access line other than probes)"
        ),
        labels="process",
    ),
)
