"""A short human report of what a replayed log held, per server."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from agent.sinks.stats import EngineStatsState, ServerStats, declare_count
from parsers import events as ev

# Counts their metrics keep from events alone (declared with the same words as there).
_STALL_SECONDS = declare_count(ev.EngineStall, "seconds")
_LOAD_FAILURES = declare_count(ev.LmcacheLoadFailed)
_LOAD_FAILED_TOKENS = declare_count(ev.LmcacheLoadFailed, "tokens")
_LOADS_BYPASSED = declare_count(ev.LmcacheLoadBypassed)
_STORES_SKIPPED = declare_count(ev.LmcacheStoreSkipped, by="reason")
_UNHEALTHY_SKIPS = declare_count(ev.LmcacheUnhealthySkip, by="operation")
_MP_LOOKUPS = declare_count(ev.LmcacheMpLookup, by="result")
_RESUMED = declare_count(ev.RequestResumed)


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _pct(part: float, whole: float) -> str:
    return f"{100.0 * part / whole:.1f}%" if whole else "n/a"


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{100.0 * value:.1f}%"


def _counted(items: dict[str, int]) -> str:
    return ", ".join(f"{key} {value:,}" for key, value in sorted(items.items()) if value) or "none"


def _engines(stats: ServerStats) -> Iterable[tuple[str, EngineStatsState]]:
    return sorted((k, v) for k, v in stats.engines.items() if v.lines)


def render(servers: Iterable[ServerStats]) -> str:
    out: list[str] = []
    for s in servers:
        out.append(f"server {s.server}")
        out += _reading(s)
        out += _server(s)
        out.append(_requests(s))
        out += _lmcache(s)
        out += _lmcache_server(s)
        out += _engine_lines(s)
        out.append(f"  errors       {_counted(s.errors)}")
        stalled = s.count_of(_STALL_SECONDS)
        if stalled:
            out.append(f"  waits        vLLM's processes waited on each other {_n(stalled)} s")
        out += _service_lines(s)
        logged = {f"{producer} {level}": count for (producer, level), count in s.problem_lines.items()}
        out.append(f"  logged       {_counted(logged)} (warning and error lines that gave no other event)")
        out += ["  " + line for line in _bench_lines(s.bench)]
    return "\n".join(out) + "\n"


def _service_lines(s: ServerStats) -> list[str]:
    """What systemd's lines said of each unit they name (a unit's journal: the server's own)."""
    out = []
    for unit in sorted(s.service_lines):
        ended = {how: n for (name, how), n in s.service_exits.items() if name == unit}
        failed = {result: n for (name, result), n in s.service_failures.items() if name == unit}
        parts = [f"main process {_counted(ended)}" if any(ended.values()) else ""]
        if unit in s.service_exit_codes:
            parts.append(f"last exit code {s.service_exit_codes[unit]}")
        if unit in s.service_exit_signals:
            parts.append(f"last signal {s.service_exit_signals[unit]}")
        parts.append(f"failed {_counted(failed)}" if any(failed.values()) else "")
        for label, counts in (
            ("OOM-killed processes", s.service_oom_kills),
            ("restarts", s.service_restarts),
            ("start limit hit", s.service_start_limit_hits),
        ):
            if counts.get(unit):
                parts.append(f"{label} {counts[unit]:,}")
        out.append(f"  systemd      {unit}: " + "; ".join(part for part in parts if part))
    return out


def _reading(s: ServerStats) -> list[str]:
    """Lines read, parsed, skipped and suspicious; the span of log time."""
    skipped = sum(s.skipped.values())
    suspicious = sum(s.suspicious.values())
    # A warning or error line that only says its level counts as "other", like a line of no event.
    only_level = sum(s.problem_lines.values()) + s.problems_while_stopping
    out = [
        f"  lines        {s.lines:,} read, {s.parsed_lines - suspicious - only_level:,} parsed, "
        f"{s.unparsed_lines - suspicious:,} other, {suspicious:,} suspicious, {skipped:,} skipped"
        + (f" ({_counted(s.skipped)})" if skipped else "")
    ]
    if suspicious:
        out.append(
            f"  suspicious   {_counted(s.suspicious)} -- a format this version does not parse; see --format events"
        )
    if any(s.sink_errors.values()):
        out.append(f"  sink errors  {_counted(s.sink_errors)} -- events a kvwatch bug skipped there (see its log)")
    if s.first_time is not None and s.last_time is not None:
        tz = s.clock.tz if s.clock is not None else UTC  # the source's time zone, the stamps' own
        first, last = (datetime.fromtimestamp(t, tz).isoformat(timespec="seconds") for t in (s.first_time, s.last_time))
        out.append(f"  log time     {first} .. {last}")
    return out


def _server(s: ServerStats) -> list[str]:
    bits = [
        f"vLLM {s.version}" if s.version else "",
        f"LMCache {s.lmcache_info[0]}" if s.lmcache_info else "",
        f"model {s.model}" if s.model else "",
        f"{s.starts} start(s)" if s.starts else "",
        f"{s.shutdowns} shutdown(s)" if s.shutdowns else "",
        f"KV capacity {s.kv_capacity_tokens:,} tokens" if s.kv_capacity_tokens else "",
    ]
    shown = [bit for bit in bits if bit]
    return ["  server       " + ", ".join(shown)] if shown else []


def _requests(s: ServerStats) -> str:
    http_by_class: dict[str, int] = {}
    for (_method, _path, status), count in s.http.items():
        key = status[0] + "xx"
        http_by_class[key] = http_by_class.get(key, 0) + count
    line = (
        f"  requests     received {s.received:,}, added {s.added:,}, finished {s.finished:,}, "
        f"aborted {s.aborted:,}, cancelled {s.cancelled:,}; HTTP {_counted(http_by_class)}"
    )
    resumed = int(s.count_of(_RESUMED))
    if s.preempted or resumed:
        loads = s.resume_loads
        line += (
            f"; preempted {s.preempted:,}, resumed {resumed:,} "
            f"({loads.loads:,} with LMCache loading {loads.tokens:,} tokens)"
        )
    return line


def _lmcache(s: ServerStats) -> list[str]:
    if not (s.lookups or s.stores or s.retrieves):
        return []
    return [
        f"  LMCache      {s.lookups:,} lookups, {s.hit_tokens:,} of {s.lookup_tokens:,} tokens hit "
        f"({_pct(s.hit_tokens, s.lookup_tokens)}), need to load {s.need_to_load_tokens:,}; "
        f"stored {s.stored_tokens:,} tokens in {s.stores:,} stores, "
        f"retrieved {s.retrieved_tokens:,} in {s.retrieves:,}"
        + (f"; {s.lookup_timeouts:,} lookup timeouts" if s.lookup_timeouts else "")
        + ("; DEGRADED (LMCache engine failed to start)" if s.lmcache_degraded else "")
        + ("; UNHEALTHY at the end (its health monitor's degraded mode)" if s.lmcache_unhealthy else "")
        + "".join(
            f"; bypassing {backend} at the end" for backend, on in sorted(s.lmcache_bypassed_backends.items()) if on
        )
        + _lmcache_shortfalls(s)
    ]


def _lmcache_shortfalls(s: ServerStats) -> str:
    """Stores LMCache cut short, loads it completed only in part, what it skipped while unhealthy."""
    skipped = {reason: int(n) for reason, n in s.counts_by(_STORES_SKIPPED).items()}
    failures = s.count_of(_LOAD_FAILURES)
    text = f"; stores cut short: {_counted(skipped)}" if any(skipped.values()) else ""
    if failures:
        text += f"; {failures:,.0f} loads failed ({s.count_of(_LOAD_FAILED_TOKENS):,.0f} tokens)"
    bypassed = s.count_of(_LOADS_BYPASSED)
    if bypassed:
        text += f"; {bypassed:,.0f} failed loads bypassed (computed again)"
    unhealthy = {operation: int(n) for operation, n in s.counts_by(_UNHEALTHY_SKIPS).items()}
    if any(unhealthy.values()):
        text += f"; skipped while unhealthy: {_counted(unhealthy)}"
    return text


def _lmcache_server(s: ServerStats) -> list[str]:
    """LMCache's multiprocess server: its prefetches (keys, not tokens), its lookups' ends (DEBUG) and its own
    hit-rate summaries."""
    lookups = {result: int(n) for result, n in s.counts_by(_MP_LOOKUPS).items()}
    if not (s.prefetches or s.server_lookups or lookups):
        return []
    found, asked = sum(s.prefetch_hit_keys.values()), s.prefetch_requested_keys
    line = f"  LMCache MP   {s.prefetches:,} prefetches with a hit, {found:,} of {asked:,} keys found"
    if lookups:
        line += f"; lookups ended: {_counted(lookups)}"
    if s.server_lookups:
        line += (
            f"; {s.server_lookups:,} lookups in its hit-rate summaries, "
            f"last {_ratio(s.server_lookup_hit_ratio.get('prefix'))} of the tokens asked for"
        )
    return [line]


def _engine_lines(s: ServerStats) -> list[str]:
    out = []
    for engine, state in _engines(s):
        g, p = state.gauges, state.peaks
        prefix, external = g.get("prefix_cache_hit_rate"), g.get("external_prefix_cache_hit_rate")
        out.append(
            f"  engine {engine:<5} {state.lines:,} stats lines; prefix cache hit {_ratio(prefix)}"
            f", external {_ratio(external)} (last); peak prompt "
            f"{_n(p.get('prompt_throughput', 0))} tok/s, generation {_n(p.get('generation_throughput', 0))} tok/s, "
            f"running {_n(p.get('running', 0))}, waiting {_n(p.get('waiting', 0))}, "
            f"KV usage {_ratio(p.get('kv_cache_usage'))}"
        )
    return out


_BENCH_UNITS = {
    "requests_per_second": "req/s",
    "tokens_per_second": "tok/s",
    "tokens": "tokens",
    "latency_seconds": "s",
    "duration_seconds": "s",
    "requests": "requests",
}


def _bench_lines(bench: dict) -> list[str]:
    """One line per benchmark kind: ``bench latency  batch mean 1.475 s, batch p10 1.470 s, ...``."""
    by_benchmark: dict[str, list[str]] = {}
    for (kind, labels), value in sorted(bench.items()):
        named = dict(labels)
        benchmark = named.pop("benchmark", "")
        qualifier = " ".join(named[k] for k in sorted(named))
        text = f"{value:,.4g}" if kind == "latency_seconds" else f"{value:,.2f}".rstrip("0").rstrip(".")
        by_benchmark.setdefault(benchmark, []).append(
            f"{qualifier + ' ' if qualifier else ''}{text} {_BENCH_UNITS[kind]}"
        )
    return [f"bench {name:<7} " + ", ".join(parts) for name, parts in by_benchmark.items()]
