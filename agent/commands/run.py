"""``kvwatch run``: the long-running agent.

Wiring, in the direction data flows::

    supervised raw logs ┐                     ┌─► ServerStats ─► /metrics
    [[follow]] files    ├─► Tailer ─► lines ─►│   (per server)
    journalctl --follow ┘   (one thread)      └─► Supervised.observe (errors, progress)

The main thread owns the supervisors and signals: it ticks every server
twice a second, keeps systemd informed (READY, STATUS, WATCHDOG only while
the tail loop and its own loop make progress, STOPPING), and reacts to
SIGTERM/SIGINT (stop the servers, exit 0), SIGHUP (reload; restart only the
servers whose settings changed) and SIGUSR2 (hand over: exit and leave the
servers running for the next kvwatch to adopt).
"""

from __future__ import annotations

import logging
import platform
import signal
import threading
import time
from collections.abc import Iterator

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from agent import __version__
from agent import config as configuration
from agent.commands import bench as bench_history
from agent.commands.canary import PeriodicCanary
from agent.config import Config, ConfigError, FollowConfig, ServerConfig
from agent.pipeline import SourcePipeline
from agent.sinks.http import MetricsServer
from agent.sinks.prometheus import SPECS, collect_families, trace_families
from agent.sinks.traces import TraceBuilder
from agent.sources.journal import JournalSource
from agent.sources.tail import PositionStore, Source, Tailer
from agent.supervise.gpus import count_gpus
from agent.supervise.sdnotify import Notifier
from agent.supervise.server import STATES, Supervised
from agent.supervise.versions import installed_versions
from agent.timezones import resolve_timezone

log = logging.getLogger("kvwatch")

TICK = 0.5
GPU_REFRESH = 60.0
# Exit status of a hand-over (EX_TEMPFAIL): the unit's RestartForceExitStatus=
# starts the next kvwatch at once, and it adopts the servers left running.
EXIT_HANDED_OVER = 75


class Daemon:
    def __init__(self, config: Config, gpu_root: str = "/") -> None:
        self.config = config
        self.gpu_root = gpu_root
        self.lock = threading.Lock()
        self.pipelines: dict[str, SourcePipeline] = {}
        self.servers: dict[str, Supervised] = {}
        self.journals: dict[str, JournalSource] = {}
        self.traces: dict[str, TraceBuilder] = {}
        self.canaries: dict[str, PeriodicCanary] = {}
        self._bench: tuple[tuple[float, int], dict] | None = None  # ((mtime, size), last runs)
        self.tracing = self._tracing(config)
        self.server_versions: dict[str, dict[str, str]] = {}
        self.gpus: dict[str, int] = {}
        self.gpus_checked = 0.0
        self.gpus_reported_missing: int | None = None
        self.notifier = Notifier()
        self.last_tick = time.monotonic()
        self._signals: list[int] = []
        self._wake = threading.Event()
        state_dir = config.agent.state_dir
        state_dir.mkdir(parents=True, exist_ok=True)
        self.tailer = Tailer(
            self._deliver,
            PositionStore(str(state_dir / "positions.json")),
            poll_interval=config.agent.poll_interval,
            nice=config.agent.reader_nice,
            max_line=config.agent.max_line_length,
            lock=self.lock,
        )
        registry = CollectorRegistry(auto_describe=False)
        registry.register(_DaemonCollector(self))
        self.registry = registry
        self.http = MetricsServer(config.metrics, registry, self.health, _read_passwords(config))

    # -- wiring sources ------------------------------------------------------------

    def _deliver(self, source: str, lines: list) -> None:
        pipeline = self.pipelines.get(source)
        if pipeline is not None:
            pipeline.feed(lines)

    @staticmethod
    def _tracing(config: Config):
        if not config.tracing.enabled:
            return None
        from agent.sinks import otlp as otel

        try:
            return otel.from_config(config.tracing)
        except (ValueError, OSError, KeyError) as exc:
            reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else str(exc)
            raise ConfigError(config.path, "tracing", f"cannot set up the trace exporter: {reason}") from None

    def _pipeline(self, name: str, timezone: str | None, model: str | None = None) -> SourcePipeline:
        pipeline = SourcePipeline(name, resolve_timezone(timezone), self.config.agent.max_line_length)
        self.pipelines[name] = pipeline
        if self.tracing is not None:
            stats = pipeline.stats
            builder = TraceBuilder(
                stats,
                stats.clock,
                self.tracing.writer(name, lambda: stats.model or model),
                now=time.time,
                sampled=self.tracing.sampled,
                max_open=self.config.tracing.max_open_requests,
                idle_timeout=self.config.tracing.idle_timeout,
            )
            pipeline.listeners.append(builder.observe)
            self.traces[name] = builder
        return pipeline

    def add_server(self, server: ServerConfig, start: bool = True) -> Supervised:
        pipeline = self._pipeline(server.name, server.timezone, server.model)
        supervised = Supervised(server, self.config.agent.state_dir)
        pipeline.listeners.append(supervised.observe)
        self.servers[server.name] = supervised
        self.server_versions[server.name] = installed_versions(server.python if server.command is None else None)
        self.tailer.add(
            Source(
                server.name,
                (str(server.log_file),),
                pipeline.stats.skipped,
                start_at_end=True,
                rotate_bytes=server.log_max_bytes,
                backups=server.log_backups,
            )
        )
        if start and not supervised.adopt():
            supervised.start()
        self._start_canary(server, supervised)
        return supervised

    def _start_canary(self, server: ServerConfig, supervised: Supervised) -> None:
        old = self.canaries.pop(server.name, None)
        if old is not None:
            old.stop()
        if server.canary_interval:
            canary = PeriodicCanary(server.name, server, lambda: supervised.state == "running")
            self.canaries[server.name] = canary
            canary.start()

    def add_follow(self, follow: FollowConfig) -> None:
        pipeline = self._pipeline(follow.name, follow.timezone)
        if follow.journal_unit:
            journal = JournalSource(
                follow,
                self.config.agent.state_dir,
                self.config.agent.max_line_length,
                pipeline.stats.skipped,
                self._deliver,
                self.lock,
                nice=self.config.agent.reader_nice,
            )
            self.journals[follow.name] = journal
            journal.start()
        else:
            self.tailer.add(
                Source(follow.name, follow.paths, pipeline.stats.skipped, start_at_end=follow.start_at == "end")
            )

    def remove_source(self, name: str) -> None:
        """Forget a server or follow entirely: its series leave /metrics with it."""
        self.tailer.remove(name)
        journal = self.journals.pop(name, None)
        if journal is not None:
            journal.stop()
        canary = self.canaries.pop(name, None)
        if canary is not None:
            canary.stop()
        with self.lock:
            self.pipelines.pop(name, None)
            self.servers.pop(name, None)
            self.server_versions.pop(name, None)
            builder = self.traces.pop(name, None)
            if builder is not None:
                builder.close("agent_stopped")

    # -- the main loop -------------------------------------------------------------

    def run(self) -> int:
        # Handlers first: a signal that arrives while servers are being started
        # is queued for the loop, never the default action (SIGHUP would kill us).
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR2):
            signal.signal(sig, self._on_signal)
        self.http.start()  # bound in __init__: a taken port fails before any server starts
        for server in self.config.servers:
            self.add_server(server)
        for follow in self.config.follows:
            self.add_follow(follow)
        self.tailer.start()
        log.info(
            "kvwatch %s: serving metrics on %s:%d; %d servers, %d follows",
            __version__,
            self.config.metrics.address or "*",
            self.http.port,
            len(self.servers),
            len(self.config.follows),
        )
        self.notifier.ready(self.status())
        last_status = ""
        last_ping = 0.0
        while True:
            self._wake.wait(TICK)
            self._wake.clear()
            while self._signals:
                sig = self._signals.pop(0)
                if sig in (signal.SIGTERM, signal.SIGINT):
                    return self.shutdown()
                if sig == signal.SIGUSR2:
                    return self.hand_over()
                if sig == signal.SIGHUP:
                    self.reload()
            self.tick()
            status = self.status()
            if status != last_status:
                self.notifier.status(status)
                last_status = status
            interval = self.notifier.watchdog_interval
            now = time.monotonic()
            if interval is not None and now - last_ping >= interval and self.loops_alive():
                self.notifier.watchdog()
                last_ping = now

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
            if supervised.state == "stopped" and supervised.stopping_for == "remove":
                self.remove_source(name)
        if self.traces:
            wall = time.time()
            with self.lock:
                for builder in self.traces.values():
                    builder.expire(wall)
        now = time.monotonic()
        if now - self.gpus_checked >= GPU_REFRESH or not self.gpus_checked:
            self.gpus = count_gpus(self.gpu_root)
            self.gpus_checked = now
            missing = self.gpus_missing()
            if missing and missing != self.gpus_reported_missing:  # once per change, not every minute
                visible = sum(self.gpus.values())
                log.warning("only %d of the %d expected GPUs are visible", visible, self.config.agent.expected_gpus)
            self.gpus_reported_missing = missing
        self.last_tick = now

    def bench_runs(self) -> dict:
        """The last ``kvwatch bench`` run per parameter set, from the state directory (re-read when it changes)."""
        path = self.config.agent.state_dir / bench_history.HISTORY
        try:
            stat = path.stat()
        except OSError:
            return {}
        key = (stat.st_mtime, stat.st_size)
        if self._bench is None or self._bench[0] != key:
            self._bench = (key, bench_history.last_per_parameter_set(bench_history.read_history(path)))
        return self._bench[1]

    def gpus_missing(self) -> int | None:
        expected = self.config.agent.expected_gpus
        return None if expected is None else max(0, expected - sum(self.gpus.values()))

    def loops_alive(self) -> bool:
        """True while the tail loop and the supervision loop both move: the watchdog's condition."""
        now = time.monotonic()
        limit = max(5.0, 3 * self.config.agent.poll_interval)
        return now - self.tailer.last_cycle < limit and now - self.last_tick < max(5.0, 10 * TICK)

    def health(self) -> tuple[bool, str]:
        if self.loops_alive():
            return True, "ok"
        return False, "kvwatch's loops are not making progress"

    def status(self) -> str:
        if not self.servers:
            return f"following {len(self.pipelines)} sources"
        return "; ".join(s.status_text() for s in self.servers.values())

    # -- reload, stop, hand over ------------------------------------------------------

    def reload(self) -> None:
        try:
            new = configuration.load(self.config.path)
        except ConfigError as exc:
            log.error("reload: keeping the running configuration: %s", exc)
            return
        if new.metrics != self.config.metrics or new.agent != self.config.agent or new.tracing != self.config.tracing:
            log.warning("reload: [agent], [metrics] and [tracing] changes take effect at the next start of kvwatch")
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
                log.info("reload: server %s changed; restarting it", name)
                supervised = self.servers[name]
                supervised.reconfigure(server)
                supervised.stop(reason="restart")
                self._start_canary(server, supervised)
        old_follows = {f.name: f for f in self.config.follows}
        new_follows = {f.name: f for f in new.follows}
        for name, follow in old_follows.items():
            if new_follows.get(name) != follow:
                self.remove_source(name)
        for name, follow in new_follows.items():
            if old_follows.get(name) != follow:
                self.add_follow(follow)
        self.config = Config(
            self.config.path, self.config.agent, self.config.metrics, new.servers, new.follows, self.config.tracing
        )
        log.info("reload: done")

    def shutdown(self) -> int:
        self.notifier.stopping("stopping servers")
        log.info("stopping: SIGTERM to every server, SIGKILL after its stop_timeout")
        for supervised in self.servers.values():
            supervised.stop()
        while any(s.state == "stopping" for s in self.servers.values()):
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
        for canary in self.canaries.values():
            canary.stop()
        self.tailer.stop()
        for journal in self.journals.values():
            journal.stop()
        if self.tracing is not None:
            with self.lock:
                for builder in self.traces.values():
                    builder.close("agent_stopped")
            self.tracing.shutdown()
        self.http.stop()
        self.notifier.close()


def _read_passwords(config: Config) -> dict[str, str]:
    passwords = {}
    for user, secret in config.metrics.basic_auth.items():
        try:
            passwords[user] = secret.read()
        except (OSError, KeyError) as exc:
            raise ConfigError(config.path, f"metrics.basic_auth.{user}", f"cannot read the password: {exc}") from None
    return passwords


class _DaemonCollector(Collector):
    """Every family: the parsed stats of each source, supervision, tailing, the host's GPUs."""

    def __init__(self, daemon: Daemon) -> None:
        self.daemon = daemon

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        daemon = self.daemon
        with daemon.lock:
            stats = [p.stats for p in daemon.pipelines.values()]
            families = list(collect_families(stats))
            families += list(self._agent_families(stats))
            if daemon.tracing is not None:
                families += list(trace_families(daemon.tracing, daemon.traces.values()))
        return iter(families)

    def _agent_families(self, stats) -> Iterator[Metric]:
        d = self.daemon
        fams: dict[str, Metric] = {}

        def fam(name: str) -> Metric:
            if name not in fams:
                spec = SPECS[name]
                kind = CounterMetricFamily if spec.type == "counter" else GaugeMetricFamily
                fams[name] = kind(name, spec.help, labels=spec.labels)
            return fams[name]

        fam("kvwatch_build_info").add_metric([__version__, platform.python_version()], 1)
        for vendor, count in sorted(d.gpus.items()):
            fam("kvwatch_gpus").add_metric([vendor], count)
        if not d.gpus:
            fam("kvwatch_gpus").add_metric(["none"], 0)
        if d.config.agent.expected_gpus is not None:
            fam("kvwatch_gpus_expected").add_metric([], d.config.agent.expected_gpus)
            fam("kvwatch_gpus_missing").add_metric([], d.gpus_missing() or 0)
        for name, s in d.servers.items():
            fam("kvwatch_server_up").add_metric([name], 1 if s.pid is not None and s.alive else 0)
            for state in STATES:
                fam("kvwatch_server_state").add_metric([name, state], 1 if s.state == state else 0)
            fam("kvwatch_server_restarts_total").add_metric([name], s.restarts)
            if s.last_exit_code is not None:
                fam("kvwatch_server_last_exit_code").add_metric([name], s.last_exit_code)
            if s.last_exit_signal is not None:
                fam("kvwatch_server_last_exit_signal").add_metric([name], s.last_exit_signal)
            if s.last_error is not None:
                fam("kvwatch_server_last_error").add_metric([name, s.last_error], 1)
            uptime = s.uptime()
            if uptime is not None:
                fam("kvwatch_server_uptime_seconds").add_metric([name], uptime)
            if s.probe is not None and s.probe.ok is not None:
                fam("kvwatch_server_health_up").add_metric([name], 1 if s.probe.ok else 0)
                fam("kvwatch_server_health_probe_duration_seconds").add_metric([name], s.probe.duration or 0.0)
            age = s.progress_age()
            if age is not None:
                fam("kvwatch_server_progress_age_seconds").add_metric([name], age)
        for st in stats:
            versions = d.server_versions.get(st.server, {})
            vllm = st.version or versions.get("vllm", "")
            lmcache = (st.lmcache_info[0] if st.lmcache_info else "") or versions.get("lmcache", "")
            server = d.servers.get(st.server)
            model = st.model or (server.config.model if server is not None and server.config.model else "")
            fam("kvwatch_server_info").add_metric([st.server, vllm, lmcache, model or ""], 1)
        for source, paths in d.tailer.snapshot().items():
            for path, tail in paths.items():
                fam("kvwatch_tail_offset_bytes").add_metric([source, path], tail.offset)
                fam("kvwatch_tail_size_bytes").add_metric([source, path], tail.size)
                fam("kvwatch_tail_rotations_total").add_metric([source, path], tail.rotations)
                fam("kvwatch_tail_truncations_total").add_metric([source, path], tail.truncations)
                if tail.lag_seconds is not None:
                    fam("kvwatch_tail_lag_seconds").add_metric([source, path], tail.lag_seconds)
                if source in d.servers:
                    fam("kvwatch_server_log_rotations_total").add_metric([source], tail.log_rotations)
        for source, paths in d.tailer.errors().items():
            for path, reason in paths.items():
                fam("kvwatch_tail_read_error").add_metric([source, path, reason], 1)
        for name, journal in d.journals.items():
            fam("kvwatch_journal_up").add_metric([name], 1 if journal.running else 0)
        for (mode, model, params), entry in d.bench_runs().items():
            labels = [mode, model, params]
            fam("kvwatch_bench_last_run_timestamp_seconds").add_metric(labels, entry["time"])
            for result, value in sorted(entry["results"].items()):
                fam("kvwatch_bench_last_result").add_metric([*labels, result], value)
        for name, canary in d.canaries.items():
            for result, count in canary.runs.items():
                fam("kvwatch_canary_runs_total").add_metric([name, result], count)
            if canary.last_time is None:
                continue
            fam("kvwatch_canary_last_run_timestamp_seconds").add_metric([name], canary.last_time)
            last = canary.last
            reason = last.reason if last is not None else "error"
            fam("kvwatch_canary_ok").add_metric([name, reason], 1 if last is not None and last.ok else 0)
            if last is not None:
                fam("kvwatch_canary_last_hit_tokens").add_metric([name], last.hit_tokens)
                if last.latency is not None:
                    fam("kvwatch_canary_last_latency_seconds").add_metric([name], last.latency)
        yield from fams.values()


def run(config_path: str) -> int:
    """Load the configuration and run until told to stop; returns the exit status."""
    config = configuration.load(config_path)
    daemon = Daemon(config)
    return daemon.run()
