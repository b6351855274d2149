"""``kvwatch run``: the long-running agent.

Wiring, in the direction data flows::

    supervised raw logs ┐                     ┌─► ServerStats ─► /metrics
    [[follow]] files    ├─► Tailer ─► lines ─►│   (per server)
    journalctl --follow ┘   (one thread)      └─► SupervisedServer.observe (errors, progress)

Each ``[[server]]`` and ``[[follow]]`` is one :class:`Managed` record: its
pipeline and whatever runs for it (the supervised server, a journal reader,
a trace builder, a periodic canary).  Every component renders its own series;
the collector here only puts them together.

The main thread owns the supervisors and signals: it ticks every server
twice a second, keeps systemd informed (READY, STATUS, WATCHDOG only while
the tail loop and its own loop make progress, STOPPING), and reacts to
SIGTERM/SIGINT (stop the servers, exit 0), SIGHUP (reload; restart only the
servers whose settings changed) and SIGUSR2 (hand over: exit and leave the
servers running for the next kvwatch to adopt).
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import glob
import logging
import os
import platform
import resource
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prometheus_client import ProcessCollector
from prometheus_client.core import Metric
from prometheus_client.registry import CollectorRegistry

from agent import __version__
from agent import config as configuration
from agent.commands import EXIT_FAILED, CommandError, add_config_option, load_config
from agent.commands.bench import HISTORY, BenchHistory
from agent.config import Config, ConfigError, FollowConfig, ServerConfig
from agent.exposition import RenderedAtScrape, exposition, families, merged
from agent.families import gauge
from agent.pipeline import LMCACHE_SERVER_FILES, VLLM_FILES, SourcePipeline
from agent.sinks.checkpoint import restore_stats, stats_record
from agent.sinks.http import MetricsServer
from agent.sinks.prometheus import collect_families
from agent.sinks.recent import DEFAULT_CHUNK, REQUESTS_SINK, JoinedOnDemand, KeptEvents, RecentRequests
from agent.sinks.traces import LINGER, TraceBuilder
from agent.sources import containers
from agent.sources.journal import JournalSource, followed_unit
from agent.sources.pods import discover as discover_pods
from agent.sources.positions import PositionStore
from agent.sources.tail import Source, Tailer
from agent.statedir import StateDirInUse, hold, state_families
from agent.supervise.gpus import HostGpus
from agent.supervise.sdnotify import Notifier
from agent.supervise.server import left_running
from agent.supervise.states import ServerState
from agent.supervise.unit import ServerUnit
from agent.supervise.versions import installed_versions
from agent.timezones import resolve_timezone

if TYPE_CHECKING:
    from agent.commands.canary import PeriodicCanary

log = logging.getLogger("kvwatch.run")

TICK = 0.5
# Exit status of a hand-over (EX_TEMPFAIL): the unit's RestartForceExitStatus=
# starts the next kvwatch at once, and it adopts the servers left running.
EXIT_HANDED_OVER = 75


@dataclass
class Managed:
    """One ``[[server]]`` or ``[[follow]]``: its pipeline and everything kvwatch runs for it."""

    name: str
    pipeline: SourcePipeline
    model: str | None = None  # the configured model, until the log names it
    server: ServerUnit | None = None
    journal: JournalSource | None = None
    trace: TraceBuilder | None = None  # joins each request's lines into traces (and ``recent``'s rows)
    # The last requests, for kvwatch top (/api/requests): fed by ``trace``, or joined while someone reads them.
    recent: RecentRequests | JoinedOnDemand | None = None
    canary: PeriodicCanary | None = None
    versions: dict[str, str] = field(default_factory=dict)  # vLLM and LMCache installed for the server

    def stop_threads(self) -> None:
        """Stop what runs in threads of its own for this source (the journal reader, the canary)."""
        if self.journal is not None:
            self.journal.stop()
        self.stop_canary()

    def stop_canary(self) -> None:
        if self.canary is not None:
            self.canary.stop()
            self.canary = None

    def families(self) -> Iterator[Metric]:
        """The series of what runs for this source (its stats and traces are rendered apart)."""
        yield from families(INFO_SPECS, [([self.name], self)])
        for part in (self.server, self.journal, self.canary):
            if part is not None:
                yield from part.families()


def _server_info(managed: Managed, labels: tuple[str, ...]) -> Iterable:
    # One source per version, so the series never changes under a running server: the package
    # installed beside the server's python when kvwatch can tell, else what the log says.
    stats = managed.pipeline.stats
    vllm = managed.versions.get("vllm") or stats.version or ""
    lmcache = managed.versions.get("lmcache") or (stats.lmcache_info[0] if stats.lmcache_info else "")
    return [((vllm, lmcache, stats.model or managed.model or ""), 1)]


INFO_SPECS = (
    gauge(
        "kvwatch_server_info",
        "Always 1; versions of the server's installed packages (else from its log), and the model.",
        _server_info,
        labels="vllm_version lmcache_version model",
        doc="always 1; versions of the packages installed beside the server's `python` (for a followed log or a "
        "custom `command`, what the log says); the model",
        native="vLLM's `vllm:cache_config_info` / `model_name` label",
    ),
)
BUILD_SPECS = (
    gauge(
        "kvwatch_build_info",
        "Always 1; kvwatch's version.",
        lambda _, labels: [((__version__, platform.python_version()), 1)],
        labels="version python_version",
        per_server=False,
    ),
)


# Whether the configuration kvwatch runs is the file's (as Prometheus says of its own).
RELOAD_SPECS = (
    gauge(
        "kvwatch_config_last_reload_successful",
        "1 when the last reload (SIGHUP) read the configuration file, 0 when it was refused and the running one kept.",
        lambda daemon, labels: [((), int(daemon.reload_ok))],
        per_server=False,
        doc="1 when the last reload (`SIGHUP`, `systemctl reload`) applied the configuration file, 0 when the file "
        "was refused (its error is in kvwatch's log) and the running configuration kept; 1 at start",
        native="Prometheus' own `prometheus_config_last_reload_successful`",
    ),
    gauge(
        "kvwatch_config_last_reload_success_timestamp_seconds",
        "When the configuration was last read successfully (start or reload), unix time.",
        lambda daemon, labels: [((), daemon.reload_ok_at)],
        per_server=False,
    ),
)


class Daemon:
    def __init__(self, config: Config, gpu_root: str = "/") -> None:
        self.config = config
        state_dir = config.agent.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.state_hold = hold(state_dir)  # before anything of the directory is read: see statedir.hold
        self.reload_ok = True  # the configuration in use is the file's
        self.reload_ok_at = time.time()
        self.lock = threading.Lock()  # held while lines reach the sinks, and while a scrape reads them
        self.managed: dict[str, Managed] = {}
        self.tracing = self._tracing(config)
        # Without traces, every server's last request events, kept to join its rows from when they are asked for.
        self.kept_events = KeptEvents(config.agent.recent_requests)
        self.gpus = HostGpus(gpu_root, config.agent.expected_gpus)
        self.bench = BenchHistory(config.agent.state_dir / HISTORY)
        self.notifier = Notifier()
        self.last_tick = time.monotonic()
        self._trimmed_at = 0.0  # when freed memory was last given back (see TRIM_INTERVAL)
        self._signals: list[int] = []
        self._wake = threading.Event()
        # [[pods]] and [[containers]]: the logs followed now (name -> as what), and how many scans each has been
        # missing.
        self.discovered: dict[str, tuple[str, FollowConfig]] = {}  # name -> (the table's kind, as what)
        self._discovered_missing: dict[str, int] = {}
        self._discovered_clashing: set[str] = set()  # said once each
        self.containers_running: dict[str, bool] = {}  # [[containers]]' servers: whether each runs now
        self._next_discovery = 0.0
        self.started = False
        self.tailer = Tailer(
            self._deliver,
            PositionStore(str(state_dir / "positions.json")),
            poll_interval=config.agent.poll_interval,
            nice=config.agent.reader_nice,
            max_line=config.agent.max_line_length,
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(RenderedAtScrape(self.families))
        ProcessCollector(registry=registry)  # process_start_time_seconds: when kvwatch (re)started
        self.registry = registry
        self.http = MetricsServer(
            config.metrics,
            registry,
            self.health,
            _read_passwords(config),
            requests=self.recent_requests,
            page=self.status_page,
        )

    def recent_requests(self) -> dict[str, list[dict]]:
        """``/api/requests``: each source's last requests, newest last."""
        with self.lock:
            return {name: m.recent.as_list() for name, m in self.managed.items() if m.recent is not None}

    def status_page(self) -> str:
        """``/``: the servers and their last requests, as ``kvwatch top`` shows them."""
        from agent.sinks.page import render_page
        from agent.sinks.status import read_snapshot

        return render_page(read_snapshot(exposition(self.registry)[0].decode(), self.recent_requests()))

    @property
    def servers(self) -> dict[str, ServerUnit]:
        return {name: m.server for name, m in list(self.managed.items()) if m.server is not None}

    # -- wiring sources ------------------------------------------------------------

    def _deliver(self, source: str, files: list[tuple[list, str]]) -> None:
        managed = self.managed.get(source)
        if managed is not None:
            managed.pipeline.feed_files(files)

    @staticmethod
    def _tracing(config: Config):
        if not config.tracing.enabled:
            return None
        from agent.sinks import otlp

        try:
            return otlp.from_config(config.tracing)
        except (ValueError, OSError, KeyError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise ConfigError(config.path, "tracing", f"cannot set up the trace exporter: {reason}") from None

    def _managed(
        self,
        name: str,
        timezone: str | None,
        model: str | None = None,
        chunk: int = DEFAULT_CHUNK,
        several_files: bool = False,
        lmcache_server_logs: tuple[str, ...] = (),
        tell_lmcache_server: bool = True,
    ) -> Managed:
        pipeline = SourcePipeline(
            name,
            resolve_timezone(timezone),
            self.config.agent.max_line_length,
            self.lock,
            lmcache_server_logs,
            tell_lmcache_server=tell_lmcache_server,
        )
        managed = Managed(name, pipeline, model)
        stats = pipeline.stats
        keep = self.config.agent.recent_requests
        limits = {
            "max_open": self.config.tracing.max_open_requests,
            "idle_timeout": self.config.tracing.idle_timeout,
            # Lines of two files come in the order they were read: pieces of a request may follow its end.
            "linger": LINGER if several_files else 0.0,
        }
        if self.tracing is not None:
            managed.recent = RecentRequests(stats, chunk, keep) if keep else None
            also = managed.recent.add if managed.recent is not None else None
            managed.trace = self.tracing.builder(stats, stats.clock, model, now=time.time, also=also, **limits)
            pipeline.listen(REQUESTS_SINK, managed.trace.observe)
        elif keep:
            managed.recent = JoinedOnDemand(stats, chunk, keep, self.kept_events, **limits)
            pipeline.listen(REQUESTS_SINK, managed.recent.observe)
            pipeline.after_each_feed(REQUESTS_SINK, managed.recent.join_unjoined)
        with self.lock:
            self.managed[name] = managed
        return managed

    def add_server(self, server: ServerConfig, start: bool = True) -> ServerUnit:
        lmcache_log = server.lmcache_log()
        managed = self._managed(
            server.name,
            server.timezone,
            server.model,
            server.chunk_size(),
            several_files=lmcache_log is not None,
            lmcache_server_logs=(str(lmcache_log),) if lmcache_log else (),
            tell_lmcache_server=False,  # (its files are known: it writes them)
        )
        supervised = ServerUnit(server, self.config.agent.state_dir)
        # Each process is told what its own log says (an error of the LMCache server's is its, not vLLM's).
        managed.pipeline.listen("supervisor", supervised.observe, VLLM_FILES)
        managed.pipeline.listen("supervisor", supervised.observe_lmcache, LMCACHE_SERVER_FILES)
        managed.server = supervised
        managed.versions = installed_versions(server.python if server.command is None else None)
        # LMCache's multiprocess server logs what the connector does not: read as part of this server,
        # and rotated by kvwatch like vLLM's when kvwatch starts that server (it writes the log then).
        paths = (str(server.log_file), *((str(lmcache_log),) if lmcache_log else ()))
        self.tailer.add(
            Source(
                server.name,
                paths,
                managed.pipeline.stats.skipped,
                start_at_end=True,
                raw_logs=paths if server.lmcache.launched else paths[:1],
                rotate_bytes=server.log_max_bytes,
                backups=server.log_backups,
                **self._checkpointed(managed),
            )
        )
        if start:
            supervised.begin()
        self._start_canary(managed, server)
        return supervised

    @staticmethod
    def _start_canary(managed: Managed, server: ServerConfig) -> None:
        managed.stop_canary()
        supervised = managed.server
        if server.canary_interval and supervised is not None:
            from agent.commands.canary import PeriodicCanary  # loaded only where a canary is configured

            # (not while an engine is asleep or paused: its requests would wait, and the canary fail, for nothing)
            managed.canary = PeriodicCanary(server.name, server, lambda: supervised.serving)
            managed.canary.start()

    def add_follow(self, follow: FollowConfig) -> None:
        files = tuple(pattern for _key, pattern in follow.placed_paths())
        several_files = len(files) > 1 or any(glob.has_magic(path) for path in files)
        server_log = (follow.lmcache_server_log,) if follow.lmcache_server_log else ()
        managed = self._managed(
            follow.name, follow.timezone, several_files=several_files, lmcache_server_logs=server_log
        )
        # systemd's lines in a unit's journal are about that unit: the end of its main process stops the server.
        managed.pipeline.stats.service_unit = followed_unit(follow)
        if follow.journal:
            managed.journal = JournalSource(
                follow,
                self.config.agent.state_dir,
                self.config.agent.max_line_length,
                managed.pipeline.stats.skipped,
                self._deliver,
                nice=self.config.agent.reader_nice,
                **self._checkpointed(managed),
            )
            managed.journal.start()
        else:
            self.tailer.add(
                Source(
                    follow.name,
                    files,
                    managed.pipeline.stats.skipped,
                    start_at_end=follow.start_at == "end",
                    **self._checkpointed(managed),
                )
            )

    def sync_discovered(self, first: bool = False) -> None:
        """Follow the pods' and Docker containers' logs that appeared since the last scan; forget those gone for
        two scans (the second look lets the tailer read what was written just before one went)."""
        # name -> (table, start_at, log files): the first table that picks one names it
        found: dict[str, tuple[str, str, tuple[str, ...]]] = {}
        running: dict[str, bool] = {}  # the containers' among them: whether each runs
        for pods in self.config.pods:
            for name, patterns in discover_pods(pods).items():
                found.setdefault(name, ("pods", pods.start_at, patterns))
        for table in self.config.containers:
            for name, container in containers.picked(table).items():
                if name not in found:
                    found[name] = ("containers", table.start_at, (container.log_file,))
                    running[name] = container.running
        taken = {s.name for s in self.config.servers} | {f.name for f in self.config.follows}
        for name, (kind, start_at, patterns) in found.items():
            self._discovered_missing.pop(name, None)
            following = self.discovered.get(name)
            if following is not None and following[1].paths == patterns:
                continue
            if name in taken:
                if name not in self._discovered_clashing:
                    log.warning("%s: %s is the name of a [[server]] or [[follow]]: its log is not read", kind, name)
                    self._discovered_clashing.add(name)
                continue
            if following is not None:  # the same name, another pod or container (a StatefulSet's pod made anew)
                self.remove_source(name)
            follow = FollowConfig(name, paths=patterns, start_at=start_at if first else "beginning")
            log.info("%s: following %s (%s)", kind, name, ", ".join(patterns))
            self.add_follow(follow)
            self.discovered[name] = (kind, follow)
        for name in [n for n in self.discovered if n not in found]:
            self._discovered_missing[name] = self._discovered_missing.get(name, 0) + 1
            if self._discovered_missing[name] >= 2:
                log.info("%s: %s is gone; its series go with it", self.discovered[name][0], name)
                self.remove_source(name)
                del self.discovered[name], self._discovered_missing[name]
        self.containers_running = {name: up for name, up in running.items() if name in self.discovered}

    def _checkpointed(self, managed: Managed) -> dict[str, Callable]:
        """How a source (the tailer, a journal) saves its numbers with its place in the log, and gets them back."""
        stats = managed.pipeline.stats

        def save() -> dict:
            with self.lock:
                return stats_record(stats)

        def restore(record: dict) -> None:
            with self.lock:
                left = restore_stats(stats, record)
            if left:
                log.warning("%s: counting afresh what the saved numbers lack: %s", managed.name, ", ".join(left))
            log.info("%s: counters resumed from the last checkpoint of the read positions", managed.name)

        return {"save_numbers": save, "restore_numbers": restore}

    def remove_source(self, name: str) -> None:
        """Forget a server or follow entirely: its series leave /metrics with it."""
        self.tailer.remove(name)
        with self.lock:
            managed = self.managed.pop(name, None)
            if managed is not None and managed.trace is not None:
                managed.trace.close("agent_stopped")
        if managed is not None:
            managed.stop_threads()

    # -- the main loop -------------------------------------------------------------

    def run(self) -> int:
        # Handlers first: a signal that arrives while servers are being started
        # is queued for the loop, never the default action (SIGHUP would kill us).
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)
        self.http.start()  # bound in __init__: a taken port fails before any server starts
        for server in self.config.servers:
            self.add_server(server)
        self._say_left_running()
        for follow in self.config.follows:
            self.add_follow(follow)
        self.sync_discovered(first=True)
        self.tailer.start()
        self.started = True  # every source is in place: /healthz says so from now on
        tune_collector()
        give_back_memory()  # what compiling the parsers' patterns left (about 1.5 MiB)
        self._trimmed_at = time.monotonic()
        log.info(
            "kvwatch %s: serving metrics on %s:%d; %d servers, %d follows",
            __version__,
            self.config.metrics.address or "*",
            self.http.port,
            len(self.servers),
            len(self.config.follows),
        )
        if self.config.reads_nothing:
            log.warning("%s %s", self.config.path, configuration.NOTHING_TO_READ)
        self.notifier.ready(self.status())
        last_status = ""
        last_ping = 0.0
        while True:
            self._wake.wait(TICK)
            self._wake.clear()
            exit_status = self._handle_signals()
            if exit_status is not None:
                return exit_status
            self.tick()
            status = self.status()
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            last_ping = self._ping_watchdog(last_ping)

    def _say_left_running(self) -> None:
        """Servers an earlier kvwatch started (and left running through a crash or a hand-over) that no
        [[server]] names any more: said, never stopped (a configuration given by mistake must not take a
        host's servers down)."""
        known = (process.record_path for unit in self.servers.values() for process in unit.processes)
        for name, pid in left_running(self.config.agent.state_dir, known):
            log.warning(
                "server record %s: pid %d, started by an earlier kvwatch, runs but no [[server]] of %s names it: "
                "left running (stop it, or name it in a [[server]] again for kvwatch to adopt it)",
                name,
                pid,
                self.config.path,
            )

    def _handle_signals(self) -> int | None:
        """Act on the signals queued since the last look; the exit status when one ends the agent."""
        while self._signals:
            sig = self._signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT):
                return self.shutdown()
            if sig == signal.SIGUSR2:
                return self.hand_over()
            if sig == signal.SIGHUP:
                self.reload()
        return None

    def _ping_watchdog(self, last_ping: float) -> float:
        """WATCHDOG=1 when it is due and both loops move; returns when it was last sent."""
        interval = self.notifier.watchdog_interval
        now = time.monotonic()
        if interval is not None and now - last_ping >= interval and self.loops_alive():
            self.notifier.watchdog()
            return now
        return last_ping

    def _on_signal(self, signum: int, _frame) -> None:
        self._signals.append(signum)
        self._wake.set()

    def tick(self) -> None:
        for supervised in list(self.servers.values()):
            try:
                supervised.tick()
            except Exception:  # one server's bug must not stop the others' supervision
                log.exception("supervising %s failed", supervised.name)
        for name, supervised in list(self.servers.items()):
            if supervised.state == ServerState.STOPPED and supervised.stopping_for == "remove":
                self.remove_source(name)
        wall = time.time()
        with self.lock:
            for managed in self.managed.values():
                # A joiner on log time (the recent requests alone) expires its idle requests on log time
                # itself: the wall clock says nothing of a log whose time zone is not kvwatch's.  What waits
                # for pieces from another file waits on the reading's clock, in both.
                if managed.trace is not None:
                    managed.trace.expire(wall)
                elif isinstance(managed.recent, JoinedOnDemand):
                    managed.recent.tick()
        for managed in list(self.managed.values()):
            if managed.journal is not None:
                managed.journal.retry_save()  # outside the lock: a save waits for a delivery to end
        now = time.monotonic()
        tables = (*self.config.pods, *self.config.containers)
        if tables and now >= self._next_discovery:
            self.sync_discovered()
            self._next_discovery = now + min(t.scan_interval for t in tables)
        self.gpus.refresh(now)
        if now - self._trimmed_at >= TRIM_INTERVAL:
            give_back_memory()
            self._trimmed_at = now
        self.last_tick = now

    def loops_alive(self) -> bool:
        """True while the tail loop and the supervision loop both move: the watchdog's condition."""
        if self.tailer.dead:
            return False
        now = time.monotonic()
        limit = max(5.0, 3 * self.config.agent.poll_interval)
        return now - self.tailer.last_cycle < limit and now - self.last_tick < max(5.0, 10 * TICK)

    def health(self) -> tuple[bool, str]:
        if not self.started:
            # /metrics is served from the first moment; ready means the followed files are open (a line
            # written after a 200 here is read, even with start_at = "end").
            return False, "starting: servers and followed files being set up"
        if self.loops_alive():
            return True, "ok"
        return False, "kvwatch's loops are not making progress"

    def status(self) -> str:
        if not self.servers:
            return f"following {len(self.managed)} sources"
        return "; ".join(s.status_text() for s in self.servers.values())

    def families(self) -> list[Metric]:
        """Every series of /metrics: each source's stats and components, the tailer, the host, kvwatch itself.

        What the reading thread changes is copied under the lock and rendered after it is
        released, so a scrape never holds up the reading for longer than a copy."""
        with self.lock:
            managed = list(self.managed.values())
            snapshots = [m.pipeline.stats.snapshot() for m in managed]
            traces = [list(m.trace.families()) for m in managed if m.trace is not None and self.tracing is not None]
        groups: list[Iterable[Metric]] = [
            collect_families(snapshots),
            *(m.families() for m in managed),
            *traces,
            self.tailer.families(),
            self.gpus.families(),
            self.bench.families(),
            families(BUILD_SPECS, [([], None)]),
            families(RELOAD_SPECS, [([], self)]),
            families(containers.SPECS, [([name], up) for name, up in self.containers_running.items()]),
            state_families(),
        ]
        if self.tracing is not None:
            groups.append(self.tracing.families())
        return merged(groups)

    # -- reload, stop, hand over ------------------------------------------------------

    def reload(self) -> None:
        try:
            new = configuration.load(self.config.path)
        except ConfigError as exc:
            log.error("reload: keeping the running configuration: %s", exc)
            self.reload_ok = False
            return
        if new.metrics != self.config.metrics or new.agent != self.config.agent or new.tracing != self.config.tracing:
            log.warning("reload: [agent], [metrics] and [tracing] changes take effect at the next start of kvwatch")
        self._reload_servers(new)
        self._reload_follows(new)
        self.config = Config(
            self.config.path,
            self.config.agent,
            self.config.metrics,
            new.servers,
            new.follows,
            self.config.tracing,
            new.pods,
            new.containers,
        )
        self._next_discovery = 0.0  # scan with the new [[pods]] and [[containers]] at the next tick
        self.reload_ok, self.reload_ok_at = True, time.time()
        log.info("reload: done")
        if new.reads_nothing:
            log.warning("reload: %s %s", new.path, configuration.NOTHING_TO_READ)

    def _reload_servers(self, new: Config) -> None:
        """Stop the servers removed, start those added, restart only those whose settings changed."""
        old_servers = {s.name: s for s in self.config.servers}
        new_servers = {s.name: s for s in new.servers}
        for name in old_servers:
            if name not in new_servers and name in self.servers:
                log.info("reload: server %s removed; stopping it", name)
                self.servers[name].stop(reason="remove")
        for name, server in new_servers.items():
            if name not in old_servers:
                log.info("reload: server %s added", name)
                self.add_server(server)
            elif server != old_servers[name] and name in self.servers:
                log.info("reload: server %s changed; restarting what the change concerns", name)
                self.servers[name].reload(server)
                self._start_canary(self.managed[name], server)

    def _reload_follows(self, new: Config) -> None:
        old_follows = {f.name: f for f in self.config.follows}
        new_follows = {f.name: f for f in new.follows}
        for name, follow in old_follows.items():
            if new_follows.get(name) != follow:
                self.remove_source(name)
        for name, follow in new_follows.items():
            if old_follows.get(name) != follow:
                self.add_follow(follow)

    def shutdown(self) -> int:
        self.notifier.stopping("stopping servers")
        log.info("stopping: SIGTERM to every server, SIGKILL after its stop_timeout")
        for supervised in self.servers.values():
            supervised.stop()
        while any(s.state == ServerState.STOPPING for s in self.servers.values()):
            time.sleep(0.1)
            for supervised in self.servers.values():
                supervised.tick()
        self._close()
        log.info("stopped")
        return 0

    def hand_over(self) -> int:
        self.notifier.stopping("handing over: servers left running")
        for supervised in self.servers.values():
            supervised.hand_over()
        self._close()
        log.info("handed over: %d servers left running for the next kvwatch to adopt", len(self.servers))
        return EXIT_HANDED_OVER

    def _close(self) -> None:
        for managed in self.managed.values():
            managed.stop_threads()
        self.tailer.stop()
        if self.tracing is not None:
            with self.lock:
                for managed in self.managed.values():
                    if managed.trace is not None:
                        managed.trace.close("agent_stopped")
            self.tracing.shutdown()
        self.http.stop()
        self.notifier.close()
        self.state_hold.close()


def _read_passwords(config: Config) -> dict[str, str]:
    passwords = {}
    for user, secret in config.metrics.basic_auth.items():
        try:
            passwords[user] = secret.read()
        except (OSError, KeyError) as exc:
            raise ConfigError(config.path, f"metrics.basic_auth.{user}", f"cannot read the password: {exc}") from None
    return passwords


# -- the command ----------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser(
        "run",
        help="supervise the configured servers, follow logs, serve /metrics",
        description="Run the agent: start (or adopt) every [[server]], follow every [[follow]], serve /metrics. "
        "SIGTERM/SIGINT stop the servers and exit; SIGHUP reloads the configuration; SIGUSR2 exits (status 75) "
        "leaving the servers running for the next kvwatch to adopt.",
    )
    add_config_option(run)
    run.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    setup_logging(config.agent.log_level)
    raise_open_file_limit()
    try:
        daemon = Daemon(config)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None
    except StateDirInUse as exc:
        raise CommandError(
            f"{config.path}: agent.state_dir: {exc}; two would adopt, restart and stop each other's servers: stop "
            "that one, or give this one a state_dir of its own",
            EXIT_FAILED,
        ) from None
    except OSError as exc:
        raise CommandError(_start_failure(config, exc), EXIT_FAILED) from None
    return daemon.run()


def _start_failure(config: Config, exc: OSError) -> str:
    """What could not be set up, and the setting that names it: a file's error carries its name, the
    metrics socket's does not."""
    reason = exc.strerror or str(exc)
    if exc.filename is not None:
        return f"{config.path}: agent.state_dir: cannot use {exc.filename}: {reason}"
    where = f"{config.metrics.address or '*'}:{config.metrics.port}"
    return f"{config.path}: metrics.address, metrics.port: cannot serve metrics on {where}: {reason}"


# Every followed file is held open, and a glob over a node's container logs can match thousands; at a
# soft limit of 1,024 (a shell's usual) the files past it, and then /metrics' connections, failed.
# Go daemons (mtail, node_exporter) raise the soft limit to the hard one as they start, and kvwatch's
# systemd unit sets it: as high here, wherever kvwatch runs.
OPEN_FILES_WANTED = 1 << 20


# Objects the cyclic garbage collector lets pile up before it looks at the young ones (Python's default: 700).
# A scrape at 32 servers makes some 40,000 objects that live until it is written (prometheus_client's samples
# among them, which the collector never untracks), a batch of lines thousands: at the default they set off
# young collections by the hundred, and a full collection of the whole heap every few scrapes (30 ms at 32
# servers, as long as the scrape itself).  Nearly all of them are freed by their counts, never by the collector.
YOUNG_OBJECTS = 10_000


# Freed memory the C allocator holds inside its heap (start-up's compiling, a flood's reads leave such holes) is
# given back to the system this often: glibc's malloc_trim takes a few hundred microseconds at most.
TRIM_INTERVAL = 10.0


def _malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):  # a C library without it (musl)
        return None


MALLOC_TRIM = _malloc_trim()


def give_back_memory() -> bool:
    """Give the pages the C allocator holds freed back to the system; False where the C library cannot."""
    if MALLOC_TRIM is None:
        return False
    MALLOC_TRIM(0)
    return True


def tune_collector() -> None:
    """The garbage collector set for a long-running reader (see YOUNG_OBJECTS)."""
    gc.collect()  # start-up's garbage first: what is frozen is never freed
    gc.freeze()  # what start-up made lives as long as kvwatch: no full collection looks at it again
    gc.set_threshold(YOUNG_OBJECTS, *gc.get_threshold()[1:])


def raise_open_file_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = OPEN_FILES_WANTED if hard == resource.RLIM_INFINITY else min(hard, OPEN_FILES_WANTED)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError) as exc:
            log.warning("cannot raise the limit of open files from %d to %d: %s", soft, wanted, exc)


def setup_logging(level: str) -> None:
    # Under systemd the journal adds time and unit; elsewhere the time helps.
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if os.environ.get("JOURNAL_STREAM")
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)
