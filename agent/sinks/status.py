"""What ``kvwatch top`` shows of each server, read from kvwatch's own metrics exposition.

``kvwatch top`` is a client of ``/metrics`` (of a running kvwatch, or of the
registry it builds itself when it follows log files): one reading of the
exposition is a :class:`Snapshot`; a :class:`Trend` keeps the last ones, for
rates (requests per second, the LMCache hit ratio of the last interval) and the
sparklines.  Nothing here knows how a line reads.
"""

from __future__ import annotations

import itertools
import math
from collections import deque
from dataclasses import asdict, dataclass, field

from prometheus_client.parser import text_string_to_metric_families

# States of a supervised server that want the reader's eyes (see agent.supervise.states).
TROUBLED_STATES = frozenset(("unhealthy", "stalled", "backoff", "crash_loop", "exited"))


@dataclass
class ServerStatus:
    """One server at one reading.  Per-engine numbers are summed (KV usage: the fullest engine)."""

    name: str
    state: str | None = None  # the supervised vLLM's state; None for a server kvwatch only follows
    lmcache_state: str | None = None  # the LMCache server's, in multiprocess mode
    ready: bool | None = None  # what the log says (a followed server)
    stopped: bool = False  # the log's last lifecycle line was a shutdown
    uptime_seconds: float | None = None
    restarts: float = 0.0
    model: str | None = None
    version: str | None = None
    lmcache_version: str | None = None
    prompt_throughput: float | None = None  # tokens/s, as the last stats line said
    generation_throughput: float | None = None
    running: float | None = None
    waiting: float | None = None
    kv_cache_usage: float | None = None  # 0..1
    prefix_cache_hit_ratio: float | None = None  # vLLM's windowed rate, 0..1
    external_prefix_cache_hit_ratio: float | None = None  # vLLM's windowed rate of KV-connector hits, 0..1
    preemptions: float = 0.0
    requests_added: float = 0.0
    lmcache_lookups: float = 0.0
    lmcache_lookup_tokens: float = 0.0
    lmcache_hit_tokens: float = 0.0
    lmcache_degraded: bool = False
    lmcache_unhealthy: bool = False  # its health monitor's degraded mode
    lmcache_bypassed_backends: list[str] = field(default_factory=list)
    lmcache_server_hit_ratio: float | None = None  # the multiprocess server's last hit-rate summary (prefix), 0..1
    lmcache_workers: float | None = None  # vLLM workers the multiprocess server holds now (once its start was read)
    # requests of workers the multiprocess server does not hold (KvwatchLmcacheUnregisteredWorker)
    lmcache_unregistered_requests: float = 0.0
    # keys the multiprocess server failed to move, by operation (KvwatchLmcacheKeyFailures)
    lmcache_key_failures: dict[str, float] = field(default_factory=dict)
    errors: dict[str, float] = field(default_factory=dict)
    suspicious_lines: float = 0.0
    lmcache_error_lines: float = 0.0  # LMCache's error and critical lines (KvwatchLmcacheErrors)
    lmcache_memory_full: float = 0.0  # stores LMCache cut short for want of memory (KvwatchLmcacheMemoryFull)
    last_error: str | None = None
    canary: str | None = None  # the last canary's verdict (its reason)
    startup_phases: dict[str, float] = field(default_factory=dict)
    asleep: bool = False  # an engine in vLLM's sleep mode
    paused: bool = False  # an engine's scheduler paused (/pause)

    @property
    def at_rest(self) -> str | None:
        """``asleep`` or ``paused`` while an engine is (why it does nothing), else None."""
        return "asleep" if self.asleep else ("paused" if self.paused else None)

    @property
    def shown_state(self) -> str:
        """The supervised server's state; for a server kvwatch only reads, what its log says."""
        if self.state is not None:
            return self.state
        if self.stopped:
            return "stopped"
        return "following" if self.ready is None else ("ready" if self.ready else "not ready")

    @property
    def lmcache_hit_ratio(self) -> float | None:
        """Since kvwatch started reading: LMCache hit tokens over the tokens looked up."""
        return self.lmcache_hit_tokens / self.lmcache_lookup_tokens if self.lmcache_lookup_tokens else None

    def conditions(self) -> list[str]:
        """What the alert rules would fire on, as far as one reading tells."""
        found = []
        if self.state in TROUBLED_STATES:
            found.append(self.state)
        if self.lmcache_state in TROUBLED_STATES:
            found.append(f"lmcache server {self.lmcache_state}")
        found += [f"{kind} error" for kind, count in sorted(self.errors.items()) if count]
        if self.lmcache_degraded:
            found.append("LMCache degraded")
        if self.lmcache_unhealthy:
            found.append("LMCache unhealthy")
        found += [f"LMCache bypassing {backend}" for backend in sorted(self.lmcache_bypassed_backends)]
        if self.lmcache_error_lines:
            found.append("LMCache errors logged")
        if self.lmcache_memory_full:
            found.append("LMCache memory full")
        if self.lmcache_workers == 0 and self.prompt_throughput:
            found.append("LMCache holds no worker")  # (KvwatchLmcacheNoWorkers: vLLM computes prompts meanwhile)
        if self.lmcache_unregistered_requests:
            found.append("LMCache asked by a worker it does not hold")
        found += [f"LMCache {operation} failures" for operation, n in sorted(self.lmcache_key_failures.items()) if n]
        if self.suspicious_lines:
            found.append("suspicious lines")
        if self.canary not in (None, "works"):
            found.append(f"canary: {self.canary}")
        return found


@dataclass
class Snapshot:
    """One reading of the exposition: every server, and the host's GPUs."""

    servers: dict[str, ServerStatus]
    gpus_missing: float = 0.0
    kvwatch_version: str | None = None
    # Each server's last requests (agent.sinks.recent rows), newest last: /api/requests, not /metrics.
    requests: dict[str, list[dict]] = field(default_factory=dict)
    # The last `kvwatch bench` run of each parameter set: (benchmark, model, params) -> {"time", "results"}.
    benchmarks: dict[tuple[str, str, str], dict] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "kvwatch_version": self.kvwatch_version,
            "gpus_missing": self.gpus_missing,
            "benchmarks": [
                {"benchmark": key[0], "model": key[1], "params": key[2], **run} for key, run in self.benchmarks.items()
            ],
            "servers": [
                {
                    **asdict(s),
                    "lmcache_hit_ratio": s.lmcache_hit_ratio,
                    "conditions": s.conditions(),
                    "recent_requests": self.requests.get(s.name, []),
                }
                for s in self.servers.values()
            ],
        }


def _add(value: float | None, more: float) -> float:
    return more if value is None else value + more


def read_snapshot(exposition: str, requests: dict[str, list[dict]] | None = None) -> Snapshot:
    """The snapshot the text of a ``/metrics`` reading describes (with ``/api/requests``' rows)."""
    servers: dict[str, ServerStatus] = {}
    snapshot = Snapshot(servers, requests=requests or {})

    def server(labels: dict[str, str]) -> ServerStatus:
        name = labels["server"]
        found = servers.get(name)
        if found is None:
            found = servers[name] = ServerStatus(name)
        return found

    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            _take(sample.name, sample.labels, sample.value, snapshot, server)
    return snapshot


def _take(name: str, labels: dict[str, str], value: float, snapshot: Snapshot, server) -> None:  # noqa: C901
    """One sample into the snapshot (a table of the series ``top`` reads)."""
    if name == "kvwatch_build_info":
        snapshot.kvwatch_version = labels.get("version")
        return
    if name == "kvwatch_gpus_missing":
        snapshot.gpus_missing = value
        return
    if name in ("kvwatch_bench_last_result", "kvwatch_bench_last_run_timestamp_seconds"):
        key = (labels.get("benchmark", ""), labels.get("model", ""), labels.get("params", ""))
        run = snapshot.benchmarks.setdefault(key, {"time": None, "results": {}})
        if name == "kvwatch_bench_last_result":
            run["results"][labels.get("result", "")] = value
        else:
            run["time"] = value
        return
    if "server" not in labels or math.isnan(value):
        return
    s = server(labels)
    lmcache_process = labels.get("process") == "lmcache"
    if name == "kvwatch_server_state" and value == 1:
        if lmcache_process:
            s.lmcache_state = labels["state"]
        else:
            s.state = labels["state"]
    elif name == "kvwatch_server_uptime_seconds" and not lmcache_process:
        s.uptime_seconds = value
    elif name == "kvwatch_server_restarts_total":
        s.restarts += value
    elif name == "kvwatch_server_last_error" and value == 1 and not lmcache_process:
        s.last_error = labels.get("error")
    elif name == "kvwatch_vllm_server_ready":
        s.ready = value == 1
    elif name == "kvwatch_vllm_server_stopped":
        s.stopped = value == 1
    elif name == "kvwatch_vllm_info":
        s.model, s.version = labels.get("model") or s.model, labels.get("version") or s.version
    elif name == "kvwatch_lmcache_info":
        s.lmcache_version = labels.get("version") or s.lmcache_version
    elif name == "kvwatch_vllm_prompt_throughput_tokens_per_second":
        s.prompt_throughput = _add(s.prompt_throughput, value)
    elif name == "kvwatch_vllm_generation_throughput_tokens_per_second":
        s.generation_throughput = _add(s.generation_throughput, value)
    elif name == "kvwatch_vllm_sleeping":
        s.asleep = s.asleep or value == 1
    elif name == "kvwatch_vllm_paused":
        s.paused = s.paused or value == 1
    elif name == "kvwatch_vllm_requests_running":
        s.running = _add(s.running, value)
    elif name == "kvwatch_vllm_requests_waiting":
        s.waiting = _add(s.waiting, value)
    elif name == "kvwatch_vllm_kv_cache_usage_ratio":
        s.kv_cache_usage = value if s.kv_cache_usage is None else max(s.kv_cache_usage, value)
    elif name == "kvwatch_vllm_prefix_cache_hit_ratio":
        s.prefix_cache_hit_ratio = value if s.prefix_cache_hit_ratio is None else max(s.prefix_cache_hit_ratio, value)
    elif name == "kvwatch_vllm_external_prefix_cache_hit_ratio":
        s.external_prefix_cache_hit_ratio = value
    elif name == "kvwatch_vllm_preemptions_total":
        s.preemptions += value
    elif name == "kvwatch_vllm_requests_added_total":
        s.requests_added = value
    elif name == "kvwatch_lmcache_lookups_total":
        s.lmcache_lookups = value
    elif name == "kvwatch_lmcache_lookup_tokens_total":
        s.lmcache_lookup_tokens = value
    elif name == "kvwatch_lmcache_hit_tokens_total":
        s.lmcache_hit_tokens = value
    elif name == "kvwatch_lmcache_server_lookup_hit_ratio":
        if labels.get("plane") == "prefix":
            s.lmcache_server_hit_ratio = value
    elif name == "kvwatch_lmcache_engines_registered":
        s.lmcache_workers = value
    elif name == "kvwatch_lmcache_unregistered_worker_requests_total":
        s.lmcache_unregistered_requests += value
    elif name == "kvwatch_lmcache_key_failures_total":
        s.lmcache_key_failures[labels.get("operation", "")] = value
    elif name == "kvwatch_lmcache_degraded":
        s.lmcache_degraded = value == 1
    elif name == "kvwatch_lmcache_unhealthy":
        s.lmcache_unhealthy = value == 1
    elif name == "kvwatch_lmcache_backend_bypassed":
        if value == 1:
            s.lmcache_bypassed_backends.append(labels.get("backend", ""))
    elif name == "kvwatch_vllm_errors_total":
        s.errors[labels.get("error", "other")] = value
    elif name == "kvwatch_lines_suspicious_total":
        s.suspicious_lines += value
    elif name == "kvwatch_log_problem_lines_total":
        if labels.get("producer") == "lmcache" and labels.get("level") in ("error", "critical"):
            s.lmcache_error_lines += value
    elif name == "kvwatch_lmcache_stores_skipped_total":
        if labels.get("reason") == "memory_pressure":
            s.lmcache_memory_full += value
    elif name == "kvwatch_canary_ok" and value == 1:
        s.canary = labels.get("reason")
    elif name == "kvwatch_vllm_startup_phase_seconds":
        s.startup_phases[labels.get("phase", "")] = value


class Trend:
    """The last readings (with their wall-clock times): rates between readings, and sparkline series."""

    def __init__(self, keep: int = 120) -> None:
        self.readings: deque[tuple[float, Snapshot]] = deque(maxlen=keep)

    def add(self, when: float, snapshot: Snapshot) -> None:
        self.readings.append((when, snapshot))

    @property
    def latest(self) -> Snapshot | None:
        return self.readings[-1][1] if self.readings else None

    def _pair(self, name: str) -> tuple[float, ServerStatus, ServerStatus] | None:
        if len(self.readings) < 2:
            return None
        (before, old), (now, new) = self.readings[-2], self.readings[-1]
        if name not in old.servers or name not in new.servers or now <= before:
            return None
        return now - before, old.servers[name], new.servers[name]

    def requests_per_second(self, name: str) -> float | None:
        pair = self._pair(name)
        if pair is None:
            return None
        seconds, old, new = pair
        return max(new.requests_added - old.requests_added, 0.0) / seconds

    def recent_lmcache_hit_ratio(self, name: str) -> float | None:
        """LMCache hit tokens over tokens looked up between the last two readings; where vLLM's log holds
        no lookup (LMCache's multiprocess mode), the server's last hit-rate summary (None: neither)."""
        series = self.lmcache_hit_ratio_series(name)
        if series and series[-1] is not None:
            return series[-1]
        server = self.latest.servers.get(name) if self.latest is not None else None
        return server.lmcache_server_hit_ratio if server is not None else None

    def lmcache_hit_ratio_series(self, name: str) -> list[float | None]:
        """The LMCache hit ratio between each two readings kept (None where nothing was looked up)."""
        readings = [snapshot.servers.get(name) for _, snapshot in self.readings]
        out: list[float | None] = []
        for old, new in itertools.pairwise(readings):
            looked_up = new.lmcache_lookup_tokens - old.lmcache_lookup_tokens if old and new else 0
            out.append((new.lmcache_hit_tokens - old.lmcache_hit_tokens) / looked_up if looked_up > 0 else None)
        return out

    def series(self, name: str, field_name: str) -> list[float | None]:
        """A field of one server over the readings kept (None where it had no value)."""
        return [getattr(s.servers.get(name), field_name, None) for _, s in self.readings]


def number(value: float | None, digits: int = 1) -> str:
    """A number as the views print it ("—": none)."""
    return "—" if value is None else f"{value:,.{digits}f}"


def percent(ratio: float | None) -> str:
    """A ratio as a percentage with one decimal ("—": none)."""
    return "—" if ratio is None else f"{ratio * 100:.1f}%"


SPARK = "▁▂▃▄▅▆▇█"


def sparkline(values: list[float | None], width: int = 24, top: float | None = None) -> str:
    """The last ``width`` values as block characters (a gap where a value is missing)."""
    shown = values[-width:]
    known = [v for v in shown if v is not None]
    if not known:
        return ""
    ceiling = top if top is not None else max(known)
    out = []
    for value in shown:
        if value is None:
            out.append(" ")
        elif ceiling <= 0:
            out.append(SPARK[0])
        else:
            out.append(SPARK[min(len(SPARK) - 1, int(value / ceiling * (len(SPARK) - 1) + 0.5))])
    return "".join(out)
