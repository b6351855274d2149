"""A ``[[server]]`` as one unit: vLLM and, in LMCache's multiprocess mode, the LMCache server it needs.

In ``mp`` mode with ``launch`` (the default), vLLM's ``LMCacheMPConnector`` connects to a
separate ``lmcache server`` process.  The two are supervised together:

* the LMCache server starts first; vLLM starts once the LMCache server's health check answers
  (vLLM waits in state ``waiting`` meanwhile);
* on stop, vLLM stops first and the LMCache server after it has exited;
* an LMCache server that exits is restarted with its own backoff.  vLLM cannot carry on without
  it: with vLLM 0.32 and LMCache 0.5.6, requests hang while ``/health`` still answers 200, and a
  restarted LMCache server is not reconnected (the engine dies minutes later).  So vLLM is
  stopped as soon as its LMCache server is gone or was replaced, and started again once the new
  one is healthy;
* a reload that changes only the LMCache server's settings restarts both, in that order;
* a kvwatch restart or hand-over adopts both; a vLLM whose recorded LMCache server is not the one
  running any more is restarted;
* a worker of vLLM that the LMCache server dropped (its reaper, after the worker went silent) is
  not registered again while vLLM runs on: the server then refuses or never answers its requests.
  When the server says it was asked for such a worker, or reaped a worker this run of vLLM
  registered that had been pinging it (so vLLM hung or was paused past the reap timeout, not
  merely idle), vLLM is restarted with ``lmcache.unregistered_restart``; otherwise it is
  reported, once per run of vLLM.  A run's workers are known by the ids its connector logs
  (``lmcache_worker_adapter``) and, from a server kvwatch launched, by the server's registrations;
  an LMCache server run elsewhere whose log is read (``server_log``) is watched the same way for
  vLLM's own workers.  They are kept in vLLM's record, so a kvwatch that adopts it knows them.

Without ``launch`` (an LMCache server run elsewhere, maybe shared by several vLLM servers) and
in the in-process mode, the unit's processes are vLLM alone.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

from prometheus_client.core import Metric

from agent.config import ServerConfig
from agent.supervise.server import LMCACHE, SupervisedServer, config_digest
from agent.supervise.states import DOWN, ServerState
from parsers import events as ev

log = logging.getLogger("kvwatch.server")


def vllm_settings(config: ServerConfig) -> ServerConfig:
    """The settings that concern vLLM itself: the LMCache server's own keys taken out (and
    in-process settings kept, since they are vLLM's environment)."""
    lmcache = config.lmcache
    if lmcache.mode != "mp":
        return config
    own = replace(lmcache, settings={}, command=None, args=(), env={}, http_port=0, server_log=None)
    return replace(config, lmcache=own)


class ServerUnit:
    """The processes of one ``[[server]]``, started, watched, restarted and stopped in order."""

    def __init__(self, config: ServerConfig, state_dir: Path, now: Callable[[], float] = time.monotonic) -> None:
        self.name = config.name
        self.config = config
        self._state_dir = state_dir
        self._now = now
        self.stopping_for: str | None = None  # "stop" | "remove" while the unit stops
        self.lmcache_restart_pending = False  # restart the LMCache server once vLLM is down
        self.retired: list[SupervisedServer] = []  # an LMCache server a reload took away, stopping
        # What the LMCache server last said of a worker of vLLM it no longer holds (read from its log by the reading
        # thread, acted on by ``tick``), and the run of vLLM already told of (by its start time).
        self.worker_lost: str | None = None
        self._worker_lost_told: float | None = None
        self.lmcache = self._lmcache_process(config)
        self.vllm = SupervisedServer(config, state_dir, now, waits_for=self._lmcache_ready)

    def _lmcache_process(self, config: ServerConfig) -> SupervisedServer | None:
        launched = config.lmcache_server()
        return SupervisedServer(launched, self._state_dir, self._now, process=LMCACHE) if launched else None

    def _lmcache_ready(self) -> list[int] | None:
        """The identity of the LMCache server vLLM may start against; None while vLLM must wait."""
        lmcache = self.lmcache
        if lmcache is None:
            return []
        if self.lmcache_restart_pending or lmcache.state != ServerState.RUNNING:
            return None
        return lmcache.identity

    @property
    def processes(self) -> list[SupervisedServer]:
        return [self.vllm] if self.lmcache is None else [self.lmcache, self.vllm]

    @property
    def state(self) -> ServerState:
        """vLLM's state, except while the unit stops (until every process has)."""
        everything = [*self.processes, *self.retired]
        if any(p.state == ServerState.STOPPING for p in everything):
            return ServerState.STOPPING
        if self.stopping_for is not None and any(p.state not in DOWN for p in everything):
            return ServerState.STOPPING
        return self.vllm.state

    @property
    def serving(self) -> bool:
        """Running with no engine asleep or paused: a request sent now would be answered."""
        return self.state == ServerState.RUNNING and self.vllm.serving

    # -- life cycle -------------------------------------------------------------------

    def begin(self) -> None:
        """Adopt what a previous kvwatch left running, start the rest (LMCache first)."""
        if self.lmcache is not None and not self.lmcache.adopt():
            self.lmcache.start()
        if not self.vllm.adopt():
            self.vllm.start()  # waits for the LMCache server when there is one

    def stop(self, reason: str = "stop") -> None:
        """vLLM first; the LMCache server once vLLM has exited (``tick``)."""
        self.stopping_for = reason
        self.lmcache_restart_pending = False
        self.vllm.stop()
        self._stop_lmcache_after_vllm()

    def reload(self, config: ServerConfig) -> None:
        """New settings: restart what they change (an LMCache server restarted takes vLLM with it)."""
        old = self.config
        self.config = config
        vllm_changed = vllm_settings(config) != vllm_settings(old)
        launched = config.lmcache_server()
        lmcache_changed = (launched is None) != (self.lmcache is None) or (
            launched is not None and self.lmcache is not None and config_digest(launched) != self.lmcache.digest
        )
        if lmcache_changed:
            if self.lmcache is not None:
                if launched is None:
                    self.retired.append(self.lmcache)  # stopped once vLLM is down
                    self.lmcache = None
                else:
                    self.lmcache.reconfigure(launched)
                    self.lmcache_restart_pending = True
            elif launched is not None:
                self.lmcache = self._lmcache_process(config)
                self.lmcache.start()
            log.info("server %s: its LMCache server's settings changed; restarting vLLM, then it", self.name)
        if vllm_changed or lmcache_changed:
            self.vllm.reconfigure(config)
            self.vllm.stop(reason="restart")
        self.tick()

    def hand_over(self) -> None:
        for process in [*self.processes, *self.retired]:
            process.hand_over()

    # -- the periodic check -------------------------------------------------------------

    def tick(self) -> None:
        lmcache = self.lmcache
        if lmcache is not None:
            lmcache.tick()
            self._vllm_follows_lmcache(lmcache)
        self._vllm_registers_again()
        self.vllm.tick()
        self._stop_lmcache_after_vllm()

    def _vllm_follows_lmcache(self, lmcache: SupervisedServer) -> None:
        """A vLLM connected to an LMCache server that is gone (or was replaced) is restarted."""
        vllm = self.vllm
        if vllm.pid is None or vllm.state == ServerState.STOPPING or self.stopping_for is not None:
            return
        if lmcache.identity is not None and lmcache.identity == vllm.started_against:
            return  # the LMCache server vLLM connected to (also when both were adopted)
        log.warning(
            "server %s: its LMCache server %s; restarting vLLM, whose LMCacheMPConnector does not reconnect",
            self.name,
            "was replaced" if lmcache.identity is not None else "is gone",
        )
        vllm.stop(reason="restart")

    def _vllm_registers_again(self) -> None:
        """A vLLM whose worker the LMCache server no longer holds: restarted (its connector registers at the start
        only), or reported.  Only a vLLM that has been ready: what a run before it left in the log is no news."""
        what, self.worker_lost = self.worker_lost, None
        vllm = self.vllm
        if what is None or vllm.pid is None or not vllm.ready_seen or self.stopping_for is not None:
            return
        if vllm.state == ServerState.STOPPING:
            return
        if self.config.lmcache.unregistered_restart:
            log.warning("server %s: %s; restarting vLLM, which registers at its start only", self.name, what)
            vllm.stop(reason="restart")
        elif self._worker_lost_told != vllm.started_mono:
            self._worker_lost_told = vllm.started_mono
            log.warning(
                "server %s: %s; its requests are refused or hang until vLLM is restarted "
                "(lmcache.unregistered_restart = true does that)",
                self.name,
                what,
            )

    def _stop_lmcache_after_vllm(self) -> None:
        if self.vllm.state != ServerState.STOPPING:  # the vLLM that used a retired LMCache server is gone
            for process in list(self.retired):
                if process.state not in DOWN and process.state != ServerState.STOPPING:
                    process.stop()
                process.tick()
                if process.state in DOWN:
                    self.retired.remove(process)
        if self.vllm.pid is not None:
            return
        lmcache = self.lmcache
        if lmcache is None or lmcache.state == ServerState.STOPPING:
            return
        if self.lmcache_restart_pending:
            self.lmcache_restart_pending = False
            lmcache.stop(reason="restart")
        elif self.stopping_for is not None and lmcache.state not in DOWN:
            lmcache.stop()

    # -- what the log says, views ------------------------------------------------------

    def observe(self, event: ev.Event) -> None:
        """An event of vLLM's log (a worker's multiprocess connector says the id its LMCache server knows it by)."""
        self.vllm.observe(event)
        if type(event) is ev.LmcacheWorkerAdapter:
            self.vllm.note_worker(event.instance, held=True)

    def observe_lmcache(self, event: ev.Event) -> None:
        """An event of its LMCache server's log: that process's errors and readiness, the workers of vLLM it holds,
        and whether it lost one of them.  A server kvwatch did not launch (``launch = false``, its ``server_log``
        read) may serve other vLLM servers too: there a worker is vLLM's only by the id vLLM's log gave it."""
        lmcache = self.lmcache
        launched = lmcache is not None
        if lmcache is not None:
            lmcache.observe(event)
        kind = type(event)
        if kind is ev.LmcacheUnregisteredWorker:
            if launched or event.instance in self.vllm.workers:
                self.worker_lost = (
                    f"its LMCache server was asked ({event.operation}) for a worker of vLLM it no longer holds"
                )
        elif kind is ev.LmcacheEngineRegistration:
            if event.change == "registered":
                if launched:  # (a shared server registers other vLLMs' workers too)
                    self.vllm.note_worker(event.instance, held=True)
            elif event.change == "reaped" and event.pinged and event.instance in self.vllm.workers:
                # It had pinged, then went silent past the reap timeout: vLLM hung or was paused (not idle).
                self.worker_lost = f"its LMCache server reaped worker {event.instance} of vLLM after it went silent"
            else:
                self.vllm.note_worker(event.instance, held=False)

    def status_text(self) -> str:
        text = self.vllm.status_text()
        if self.lmcache is not None:
            text += f", LMCache server {self.lmcache.state}"
        return text

    def families(self) -> Iterator[Metric]:
        for process in self.processes:
            yield from process.families()
