"""Generate the Grafana dashboards from Grafana's own typed models (grafana-foundation-sdk).

    python -m dashboards.build            # rewrite dashboards/*.json and the Kubernetes recipe's copies
    python -m dashboards.build --check    # exit 1 if a file in the tree is not what this builds

The JSON files are what ships (in the repository and the installed package);
this module is how they are made, so a panel is changed here, never by hand.
``tests/dashboards`` runs ``--check``.  The SDK is needed only to build: it is
a test dependency, not a runtime one.

Conventions every panel follows: the datasource is the ``datasource``
template variable (no datasource uid, no ``${DS_...}`` input), every query is
filtered by ``instance`` and ``server`` (and ``engine`` for stats series),
rates use ``$__rate_interval``, every panel has a unit.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.builders import dashboard as db
from grafana_foundation_sdk.builders import heatmap, prometheus, stat, table, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

HERE = Path(__file__).resolve().parent
OVERVIEW_UID = "kvwatch-overview"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")

# The label selector of the chosen hosts and servers, which every query carries ...
SERVERS = 'instance=~"$instance", server=~"$server"'
ENGINES = SERVERS + ', engine=~"$engine"'  # ... and of the chosen engines, for stats series
TOKENS_PER_SECOND = "suffix: tok/s"  # a Grafana custom unit


def query(expr: str, legend: str = "{{server}}", exemplar: bool = False, ref: str = "A") -> prometheus.Dataquery:
    target = prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)
    if exemplar:
        target = target.exemplar(True)
    return target


def _targets(panel, queries):
    for i, target in enumerate(queries):
        panel = panel.with_target(target.ref_id(chr(ord("A") + i)))
    return panel


# What a panel of one LMCache mode shows for servers of the other, instead of "No data".
IN_PROCESS_ONLY = 'none: no selected server runs LMCache in-process (mode = "in_process")'
MP_ONLY = 'none: no selected server runs LMCache\'s multiprocess server (mode = "mp")'


def series(
    title: str,
    unit: str,
    *queries: prometheus.Dataquery,
    description: str = "",
    width: int = 8,
    no_value: str = "",
):
    panel = (
        timeseries.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(8)
        .fill_opacity(10)
        .legend(
            common_builders.VizLegendOptions()
            .show_legend(True)
            .display_mode(common.LegendDisplayMode.LIST)
            .placement(common.LegendPlacement.BOTTOM)
        )
    )
    if no_value:
        panel = panel.no_value(no_value)
    return _targets(panel, queries)


def increase_in_range(metric: str, by: str = "") -> str:
    """The increase of a counter over the dashboard's range, counting whole a series that began within it: a unit
    systemd's lines name for the first time (in a syslog file) has a series from its first line on."""
    selected = f"{metric}{{{SERVERS}}}"
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}((increase({selected}[$__range]) > 0) or ({selected} > 0 unless {selected} offset $__range)) > 0"


def single(title: str, unit: str, *queries: prometheus.Dataquery, description: str = "", width: int = 4):
    panel = (
        stat.Panel()
        .title(title)
        .description(description)
        .unit(unit)
        .datasource(DATASOURCE)
        .span(width)
        .height(4)
        .color_mode(common.BigValueColorMode.VALUE)
        .graph_mode(common.BigValueGraphMode.AREA)
    )
    return _targets(panel, queries)


def listing(title: str, unit: str, *queries: prometheus.Dataquery, description: str = "", width: int = 12):
    panel = table.Panel().title(title).description(description).unit(unit).datasource(DATASOURCE).span(width).height(8)
    return _targets(panel, [target.instant().format(PromQueryFormat.TABLE) for target in queries])


def rate(metric: str, selector: str = SERVERS, by: str = "server") -> str:
    return f"sum by ({by}) (rate({metric}{{{selector}}}[$__rate_interval]))"


def variables() -> list:
    def label(name: str, query: str, title: str):
        return (
            db.QueryVariable(name)
            .label(title)
            .query(query)
            .datasource(DATASOURCE)
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC)
            .multi(True)
            .include_all(True)
            .all_value(".*")
            .current(model.VariableOption(selected=True, text="All", value="$__all"))
        )

    return [
        db.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label("instance", "label_values(kvwatch_lines_total, instance)", "Host"),
        label("server", 'label_values(kvwatch_lines_total{instance=~"$instance"}, server)', "Server"),
        label("engine", f"label_values(kvwatch_vllm_stats_lines_total{{{SERVERS}}}, engine)", "Engine"),
    ]


def overview() -> db.Dashboard:
    d = (
        db.Dashboard("kvwatch / vLLM + LMCache")
        .uid(OVERVIEW_UID)
        .description("What vLLM and LMCache do on each host, read from their logs by kvwatch.")
        .tags(["kvwatch", "vllm", "lmcache"])
        .editable()
        .time("now-6h", "now")
        .refresh("30s")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .timezone("browser")
        .variables(variables())
    )

    for row in (health_row, lmcache_row, engine_row, requests_row, benchmarks_row, kvwatch_row):
        d = row(d)
    return d


def health_row(d: db.Dashboard) -> db.Dashboard:
    """Is each server up, healthy, restarting or in error?"""
    d = d.with_row(db.Row("Health"))
    d = d.with_panel(
        single(
            "Servers up",
            "short",
            query(f'sum(kvwatch_server_up{{{SERVERS}, process!="lmcache"}})', "up"),
            description="Supervised vLLM servers running (their LMCache servers: the LMCache server row).",
        )
    )
    d = d.with_panel(
        single(
            "Servers ready",
            "short",
            query(f"sum(kvwatch_vllm_server_ready{{{SERVERS}}})", "ready"),
            description="Servers whose log says they serve (supervised or followed).",
        )
    )
    d = d.with_panel(
        single(
            "GPUs visible / expected",
            "short",
            query('sum by (instance) (kvwatch_gpus{instance=~"$instance"})', "{{instance}} visible"),
            query('sum by (instance) (kvwatch_gpus_expected{instance=~"$instance"})', "{{instance}} expected"),
            width=6,
        )
    )
    d = d.with_panel(
        single(
            "Restarts in range",
            "short",
            query(f"sum by (server) (increase(kvwatch_server_restarts_total{{{SERVERS}}}[$__range]))", "{{server}}"),
            query(increase_in_range("kvwatch_service_restarts_total", "server, unit"), "{{server}} {{unit}} (systemd)"),
            description="kvwatch's restarts of the servers it runs; systemd's of a followed server's unit.",
            width=5,
        )
    )
    d = d.with_panel(
        single(
            "Errors in range",
            "short",
            query(f"sum by (error) (increase(kvwatch_vllm_errors_total{{{SERVERS}}}[$__range])) > 0", "{{error}}"),
            query(increase_in_range("kvwatch_service_exits_total", "unit, how"), "{{unit}}: main process {{how}}"),
            query(increase_in_range("kvwatch_service_failures_total", "unit, result"), "{{unit}} failed: {{result}}"),
            query(increase_in_range("kvwatch_service_oom_kills_total", "unit"), "{{unit}}: OOM-killed processes"),
            query(
                increase_in_range("kvwatch_service_start_limit_hits_total", "unit"),
                "{{unit}}: systemd gave up restarting",
            ),
            description="OOM, engine dead, CUDA errors ... seen in the logs; and how systemd saw units' processes end "
            "(host memory's OOM killer among them), where a followed log holds its lines.",
            width=5,
        )
    )
    d = d.with_panel(
        listing(
            "Server state",
            "short",
            query(f"kvwatch_server_state{{{SERVERS}}} == 1", "{{server}} {{state}}"),
            description="starting, running, unhealthy, stalled, backoff, crash_loop, stopping, stopped, exited.",
        )
    )
    d = d.with_panel(
        listing(
            "Servers",
            "short",
            query(f"kvwatch_server_info{{{SERVERS}}}", "{{server}} {{vllm_version}} {{lmcache_version}} {{model}}"),
            query(f"kvwatch_vllm_info{{{SERVERS}}}", "{{server}} vLLM {{version}} {{model}}"),
            query(f"kvwatch_lmcache_info{{{SERVERS}}}", "{{server}} LMCache {{version}}"),
            query(f"kvwatch_server_uptime_seconds{{{SERVERS}}}", "{{server}} uptime s"),
            query(f"kvwatch_server_health_up{{{SERVERS}}}", "{{server}} healthy"),
            query(f"kvwatch_server_last_exit_code{{{SERVERS}}}", "{{server}} last exit code"),
            query(f"kvwatch_server_last_exit_signal{{{SERVERS}}}", "{{server}} last exit signal"),
            query(f"kvwatch_service_last_exit_code{{{SERVERS}}}", "{{server}} {{unit}} last exit code (systemd)"),
            query(f"kvwatch_service_last_exit_signal{{{SERVERS}}}", "{{server}} {{unit}} last exit signal (systemd)"),
            query(f"kvwatch_server_last_error{{{SERVERS}}}", "{{server}} last error {{error}}"),
            description="Versions and model (from the log, else the server's packages), uptime, how the last run "
            "ended.",
        )
    )
    d = d.with_panel(
        series(
            "Health-probe latency",
            "s",
            query(f"kvwatch_server_health_probe_duration_seconds{{{SERVERS}}}"),
            description="Duration of the last /health probe.",
            width=6,
        )
    )
    d = d.with_panel(
        series(
            "Seconds since inference moved",
            "s",
            query(f"kvwatch_server_progress_age_seconds{{{SERVERS}}}"),
            description="A stall shows as a line that keeps rising while requests wait.",
            width=6,
        )
    )
    d = d.with_panel(
        series(
            "Starts and shutdowns",
            "short",
            query(
                f"sum by (server) (increase(kvwatch_vllm_server_starts_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} starts",
            ),
            query(
                f"sum by (server) (increase(kvwatch_vllm_server_shutdowns_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} shutdowns",
            ),
            description="Start banners and shutdowns the logs show (any supervisor's restarts, not only kvwatch's).",
            width=12,
        )
    )
    return d


def lmcache_row(d: db.Dashboard) -> db.Dashboard:
    """What LMCache finds, loads, stores and retrieves: a row for each mode, a panel of one mode saying so
    (instead of "No data") where the selected servers run the other."""
    d = d.with_row(db.Row("LMCache (in-process connector)"))
    d = d.with_panel(
        series(
            "Hit tokens vs looked-up tokens",
            TOKENS_PER_SECOND,
            query(rate("kvwatch_lmcache_hit_tokens_total"), "{{server}} hit"),
            query(rate("kvwatch_lmcache_lookup_tokens_total"), "{{server}} looked up"),
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "Hit ratio",
            "percentunit",
            query(
                f"{rate('kvwatch_lmcache_hit_tokens_total')} / {rate('kvwatch_lmcache_lookup_tokens_total')}",
                exemplar=True,
            ),
            description="Hit tokens over looked-up tokens.",
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        heatmap.Panel()
        .title("Per-request hit ratio")
        .description("Lookups by hit ratio (0 is a miss); the dots are exemplars linking to the request's trace.")
        .unit("percentunit")
        .datasource(DATASOURCE)
        .span(8)
        .height(8)
        .calculate(False)
        .no_value(IN_PROCESS_ONLY)
        .with_target(
            query(
                f"sum by (le) (increase(kvwatch_lmcache_lookup_hit_ratio_bucket{{{SERVERS}}}[$__rate_interval]))",
                "{{le}}",
                exemplar=True,
            ).format(PromQueryFormat.HEATMAP)
        )
    )
    d = d.with_panel(
        series(
            "Need-to-load tokens",
            TOKENS_PER_SECOND,
            query(rate("kvwatch_lmcache_need_to_load_tokens_total")),
            query(rate("kvwatch_lmcache_engine_computed_tokens_total"), "{{server}} in vLLM's prefix cache"),
            query(rate("kvwatch_lmcache_resume_load_tokens_total"), "{{server}} for preempted requests resumed"),
            description="Tokens LMCache had to load into vLLM, beside those vLLM already held; and (its "
            "multiprocess connector) what it loaded for preempted requests as they resumed.",
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "Tokens stored and retrieved",
            TOKENS_PER_SECOND,
            query(rate("kvwatch_lmcache_stored_tokens_total"), "{{server}} stored"),
            query(rate("kvwatch_lmcache_store_start_tokens_total"), "{{server}} stores begun"),
            query(rate("kvwatch_lmcache_retrieved_tokens_total"), "{{server}} retrieved"),
            query(rate("kvwatch_lmcache_retrieve_requested_tokens_total"), "{{server}} retrieves asked for"),
            description="Per tensor-parallel rank: each rank logs its own share.",
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "Store and retrieve throughput",
            "Bps",
            query(rate("kvwatch_lmcache_stored_bytes_total"), "{{server}} stored"),
            query(rate("kvwatch_lmcache_retrieved_bytes_total"), "{{server}} retrieved"),
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "Store and retrieve latency (p50, p99)",
            "s",
            *[
                query(
                    f"histogram_quantile({p}, sum by (le, server) "
                    f"(rate(kvwatch_lmcache_{kind}_duration_seconds_bucket{{{SERVERS}}}[$__rate_interval])))",
                    f"{{{{server}}}} {kind} p{int(p * 100)}",
                )
                for kind in ("store", "retrieve")
                for p in (0.5, 0.99)
            ],
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "Lookups, timeouts, degraded",
            "short",
            query(rate("kvwatch_lmcache_lookups_total"), "{{server}} lookups/s"),
            query(rate("kvwatch_lmcache_lookup_timeouts_total"), "{{server}} timeouts/s"),
            query(rate("kvwatch_lmcache_lookups_pending_total"), "{{server}} pending/s"),
            query(rate("kvwatch_lmcache_lookups_below_min_retrieve_total"), "{{server}} below min_retrieve/s"),
            query(
                rate("kvwatch_lmcache_unhealthy_skips_total", by="server, operation"),
                "{{server}} {{operation}}s skipped unhealthy/s",
            ),
            query(f"max by (server) (kvwatch_lmcache_degraded{{{SERVERS}}})", "{{server}} degraded"),
            query(f"max by (server) (kvwatch_lmcache_unhealthy{{{SERVERS}}})", "{{server}} unhealthy"),
            description=(
                "Degraded is 1 while LMCache runs without its engine (every lookup a miss); unhealthy while its "
                "health monitor holds it so (lookups, loads and stores skipped)."
            ),
            width=12,
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "Stores begun and transfers",
            "ops",
            query(rate("kvwatch_lmcache_stores_total"), "{{server}} stores/s"),
            query(rate("kvwatch_lmcache_store_starts_total"), "{{server}} stores begun/s"),
            query(rate("kvwatch_lmcache_retrieves_total"), "{{server}} retrieves/s"),
            query(
                rate("kvwatch_lmcache_stores_skipped_total", by="server, reason"), "{{server}} cut short/s: {{reason}}"
            ),
            query(rate("kvwatch_lmcache_load_failures_total"), "{{server}} loads failed/s"),
            description=(
                "Stores cut short or skipped: memory_pressure (LMCache's local CPU memory full; what it did not "
                "store cannot hit), unhealthy (its health check failed); loads completed only in part."
            ),
            width=12,
            no_value=IN_PROCESS_ONLY,
        )
    )

    d = d.with_row(db.Row("LMCache server (multiprocess mode)"))
    d = d.with_panel(
        series(
            "LMCache server process",
            "short",
            query(f'kvwatch_server_up{{{SERVERS}, process="lmcache"}}', "{{server}} up"),
            query(f'kvwatch_server_health_up{{{SERVERS}, process="lmcache"}}', "{{server}} healthy"),
            query(
                f'sum by (server) (increase(kvwatch_server_restarts_total{{{SERVERS}, process="lmcache"}}'
                "[$__rate_interval]))",
                "{{server}} restarts",
            ),
            description="The LMCache server kvwatch runs beside vLLM (launch = true): up, its /healthcheck, "
            "restarts (each one restarts vLLM too: its connector does not reconnect).",
            width=8,
            no_value=MP_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "LMCache server: prefetch hits",
            "short",
            query(
                f"sum by (server, tier) (rate(kvwatch_lmcache_prefetch_hit_keys_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} {{tier}} keys/s",
            ),
            query(rate("kvwatch_lmcache_prefetch_requested_keys_total"), "{{server}} keys asked for/s"),
            query(rate("kvwatch_lmcache_prefetches_total"), "{{server}} prefetches with a hit/s"),
            query(rate("kvwatch_lmcache_server_lookups_total"), "{{server}} lookups/s (hit-rate summaries)"),
            query(rate("kvwatch_lmcache_mp_lookups_total", by="server, result"), "{{server}} lookups {{result}}/s"),
            query(rate("kvwatch_lmcache_mp_lookup_found_chunks_total"), "{{server}} chunks found/s"),
            query(
                f"sum by (server) (increase(kvwatch_lmcache_server_starts_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} server starts",
            ),
            query(
                "sum by (server, change) "
                f"(increase(kvwatch_lmcache_engine_registrations_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} vLLM workers {{change}}",
            ),
            query(
                f"sum by (server) (kvwatch_lmcache_engines_registered{{{SERVERS}}})",
                "{{server}} vLLM workers registered now",
            ),
            query(
                "sum by (server, operation) "
                f"(increase(kvwatch_lmcache_unregistered_worker_requests_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} {{operation}} of a worker it does not hold",
            ),
            query(
                "sum by (server, operation) "
                f"(increase(kvwatch_lmcache_key_failures_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} {{operation}} failures",
            ),
            description="LMCache's multiprocess server (lmcache server): keys it found in L1 (memory) and L2 "
            "(storage); at INFO it logs nothing for a miss, at DEBUG every lookup's end, hit or miss, and the "
            "chunks it found.  Keys are chunks per KV group and rank, not tokens.  Its starts, and the vLLM workers "
            "that registered their KV cache with it, left it, or were reaped by it for their silence (one per "
            "tensor-parallel worker), how many it holds now, the lookups, stores and loads of workers it does "
            "not hold (reaped while their vLLM ran on), and its prefetches that found no room in L1 and store "
            "tasks to L2 that failed.",
            width=8,
            no_value=MP_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "LMCache server: lookup hit ratio",
            "percentunit",
            query(f"kvwatch_lmcache_server_lookup_hit_ratio{{{SERVERS}}}", "{{server}} {{plane}}"),
            description="The multiprocess server's own summary (at most one line every 30 s): the share of the "
            "tokens its lookups asked for that were found, weighted by tokens, over the lookups since its previous "
            "summary; non_prefix (outside the prefix) on a CacheBlend server.",
            width=8,
            no_value=MP_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "LMCache server: prefetch latency (p50, p99)",
            "s",
            *[
                query(
                    f"histogram_quantile({p}, sum by (le, server) "
                    f"(rate(kvwatch_lmcache_prefetch_duration_seconds_bucket{{{SERVERS}}}[$__rate_interval])))",
                    f"{{{{server}}}} p{int(p * 100)}",
                )
                for p in (0.5, 0.99)
            ],
            width=8,
            no_value=MP_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "LMCache server: L1 memory",
            "bytes",
            query(f"kvwatch_lmcache_l1_used_bytes{{{SERVERS}}}", "{{server}} used"),
            query(f"kvwatch_lmcache_l1_capacity_bytes{{{SERVERS}}}", "{{server}} size"),
            description="Printed by the multiprocess server with --enable-extra-logging.",
            width=8,
            no_value=MP_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "KV connector throughput",
            "Bps",
            query(
                f"sum by (server, direction) (rate(kvwatch_kv_transfer_bytes_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} {{direction}}",
            ),
            description="From vLLM's KV Transfer metrics line: load and store of the offloading connector, "
            "transfer of NIXL.",
            width=8,
        )
    )
    d = d.with_panel(
        series(
            "KV connector latency",
            "s",
            query(
                f"sum by (server, direction) (rate(kvwatch_kv_transfer_seconds_total{{{SERVERS}}}[$__rate_interval]))"
                f" / sum by (server, direction) "
                f"(rate(kvwatch_kv_transfer_operations_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} {{direction}} per transfer",
            ),
            query(
                f'sum by (server) (rate(kvwatch_kv_transfer_seconds_total{{{SERVERS}, direction="lookup"}}'
                f"[$__rate_interval])) / {rate('kvwatch_kv_transfer_lookups_total')}",
                "{{server}} LMCache MP lookup",
            ),
            width=8,
        )
    )
    d = d.with_panel(
        series(
            "KV connector operations",
            "ops",
            query(rate("kvwatch_kv_transfer_operations_total", by="server, direction"), "{{server}} {{direction}}"),
            query(
                f"sum by (server, direction) (rate(kvwatch_kv_transfer_failures_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} {{direction}} failed",
            ),
            query(rate("kvwatch_kv_transfer_lookups_total"), "{{server}} LMCache MP lookups"),
            query(rate("kvwatch_kv_transfer_expired_requests_total"), "{{server}} requests whose KV expired"),
            query(
                rate("kvwatch_kv_transfer_notifications_after_expiry_total"), "{{server}} notifications after expiry"
            ),
            query(rate("kvwatch_kv_transfer_lines_total"), "{{server}} report lines"),
            query(rate("kvwatch_kv_transfer_unknown_keys_total"), "{{server}} unknown keys"),
            description="Unknown keys: a connector or release kvwatch does not know yet.",
            width=8,
        )
    )

    d = d.with_panel(
        series(
            "Canary",
            "short",
            query(f"kvwatch_canary_ok{{{SERVERS}}}", "{{server}} ok ({{reason}})"),
            query(f"kvwatch_canary_last_hit_tokens{{{SERVERS}}}", "{{server}} hit tokens, last run"),
            query(f"kvwatch_canary_last_latency_seconds{{{SERVERS}}}", "{{server}} latency s, last run"),
            query(
                f"time() - kvwatch_canary_last_run_timestamp_seconds{{{SERVERS}}}",
                "{{server}} s since the last run",
            ),
            query(
                f"sum by (server, result) (increase(kvwatch_canary_runs_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} runs: {{result}}",
            ),
            description="kvwatch's canary: the same long prompt sent again and again (canary_interval); its "
            "requests are counted apart from the server's own.",
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Canary traffic",
            TOKENS_PER_SECOND,
            query(rate("kvwatch_canary_hit_tokens_total"), "{{server}} hit"),
            query(rate("kvwatch_canary_lookup_tokens_total"), "{{server}} looked up"),
            query(rate("kvwatch_canary_lookups_total"), "{{server}} lookups/s"),
            query(rate("kvwatch_canary_requests_total"), "{{server}} requests/s"),
            width=12,
        )
    )
    return d


def engine_row(d: db.Dashboard) -> db.Dashboard:
    """vLLM's own view: throughput, queues, KV cache, prefix cache."""
    d = d.with_row(db.Row("vLLM engine"))
    d = d.with_panel(
        series(
            "Prompt and generation throughput",
            TOKENS_PER_SECOND,
            query(f"kvwatch_vllm_prompt_throughput_tokens_per_second{{{ENGINES}}}", "{{server}}/{{engine}} prompt"),
            query(
                f"kvwatch_vllm_generation_throughput_tokens_per_second{{{ENGINES}}}",
                "{{server}}/{{engine}} generation",
            ),
            query(f"kvwatch_vllm_throughput_tokens_per_second{{{ENGINES}}}", "{{server}}/{{engine}} (2023 line)"),
            description="vLLM's own averages over its stats interval.",
        )
    )
    d = d.with_panel(
        series(
            "Requests running and waiting",
            "short",
            query(f"kvwatch_vllm_requests_running{{{ENGINES}}}", "{{server}}/{{engine}} running"),
            query(f"kvwatch_vllm_requests_waiting{{{ENGINES}}}", "{{server}}/{{engine}} waiting"),
            query(f"kvwatch_vllm_requests_swapped{{{ENGINES}}}", "{{server}}/{{engine}} swapped (V0)"),
            query(f"kvwatch_vllm_requests_deferred{{{ENGINES}}}", "{{server}}/{{engine}} deferred"),
            query(f"kvwatch_vllm_requests_kv_fetch{{{ENGINES}}}", "{{server}}/{{engine}} KV fetch {{stage}}"),
        )
    )
    d = d.with_panel(
        series(
            "KV-cache usage",
            "percentunit",
            query(f"kvwatch_vllm_kv_cache_usage_ratio{{{ENGINES}}}", "{{server}}/{{engine}}"),
            query(f"kvwatch_vllm_cpu_kv_cache_usage_ratio{{{ENGINES}}}", "{{server}}/{{engine}} CPU swap (V0)"),
        )
    )
    d = d.with_panel(
        series(
            "Prefix-cache hit ratios",
            "percentunit",
            query(f"kvwatch_vllm_prefix_cache_hit_ratio{{{ENGINES}}}", "{{server}}/{{engine}} prefix cache"),
            query(
                f"kvwatch_vllm_external_prefix_cache_hit_ratio{{{ENGINES}}}",
                "{{server}}/{{engine}} external (LMCache)",
            ),
            query(f"kvwatch_vllm_cpu_prefix_cache_hit_ratio{{{ENGINES}}}", "{{server}}/{{engine}} CPU (V0)"),
            query(f"kvwatch_vllm_mm_cache_hit_ratio{{{ENGINES}}}", "{{server}}/{{engine}} multimodal"),
            description="vLLM's windowed rates; external is the connector's (LMCache's) share.",
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Preemptions",
            "ops",
            query(f"sum by (server) (rate(kvwatch_vllm_preemptions_total{{{ENGINES}}}[$__rate_interval]))"),
            query(rate("kvwatch_vllm_preempted_requests_total", by="server"), "{{server}} named by LMCache"),
            query(rate("kvwatch_vllm_resumed_requests_total", by="server"), "{{server}} resumed"),
            query(rate("kvwatch_lmcache_resume_loads_total", by="server"), "{{server}} resumed from LMCache"),
            description="The stats line's count; LMCache's multiprocess connector names each preempted request "
            "(vLLM 0.32's stats line omits them) and each resume it loaded KV for.",
            width=6,
        )
    )
    d = d.with_panel(
        series(
            "Stats lines",
            "ops",
            query(f"sum by (server) (rate(kvwatch_vllm_stats_lines_total{{{ENGINES}}}[$__rate_interval]))"),
            query(
                f"time() - max by (server) (kvwatch_vllm_stats_last_seen_timestamp_seconds{{{ENGINES}}})",
                "{{server}} age s",
            ),
            description="vLLM prints none while idle: a gap here is an idle engine, not a broken kvwatch.",
            width=6,
        )
    )
    d = d.with_panel(
        series(
            "Corrupted requests",
            "ops",
            query(f"sum by (server) (rate(kvwatch_vllm_corrupted_requests_total{{{ENGINES}}}[$__rate_interval]))"),
            description="Requests vLLM reported corrupted (NaN logits).",
            width=6,
        )
    )
    d = d.with_panel(
        series(
            "Speculative decoding",
            "percentunit",
            query(
                f"kvwatch_vllm_spec_decode_draft_acceptance_ratio{{{ENGINES}}}",
                "{{server}}/{{engine}} acceptance",
            ),
            description="Drafted tokens accepted; the mean acceptance length is in the table beside.",
            width=6,
        )
    )
    steps = f"rate(kvwatch_vllm_iteration_seconds_bucket{{{ENGINES}}}[$__rate_interval])"
    d = d.with_panel(
        series(
            "Engine step time",
            "s",
            query(f"histogram_quantile(0.5, sum by (server, le) ({steps}))", "{{server}} p50"),
            query(f"histogram_quantile(0.99, sum by (server, le) ({steps}))", "{{server}} p99"),
            description="One line per engine step, printed only with --enable-logging-iteration-details.",
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Engine batch",
            "short",
            query(
                f"sum by (server, phase) (rate(kvwatch_vllm_scheduled_requests_total{{{ENGINES}}}[$__rate_interval]))"
                " / on (server) group_left sum by (server) "
                f"(rate(kvwatch_vllm_iteration_seconds_count{{{ENGINES}}}[$__rate_interval]))",
                "{{server}} {{phase}} requests per step",
            ),
            query(
                f"sum by (server, phase) (rate(kvwatch_vllm_scheduled_tokens_total{{{ENGINES}}}[$__rate_interval]))",
                "{{server}} {{phase}} tokens/s",
            ),
            query(
                "histogram_quantile(0.5, sum by (server, le) "
                f"(rate(kvwatch_vllm_iteration_tokens_bucket{{{ENGINES}}}[$__rate_interval])))",
                "{{server}} tokens per step p50",
            ),
            query(
                f"sum by (server) (rate(kvwatch_vllm_dummy_iterations_total{{{ENGINES}}}[$__rate_interval]))",
                "{{server}} dummy steps/s",
            ),
            description=(
                "Requests in a step (prefill and decode), the tokens steps computed, and a data-parallel rank's "
                "dummy steps, from the step lines."
            ),
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Sleep mode, pauses and waits",
            "short",
            query(f"max by (server, engine) (kvwatch_vllm_sleeping{{{ENGINES}}})", "{{server}}/{{engine}} asleep"),
            query(f"max by (server, engine) (kvwatch_vllm_paused{{{ENGINES}}})", "{{server}}/{{engine}} paused"),
            query(
                f"sum by (server) (increase(kvwatch_vllm_engine_stall_seconds_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} seconds its processes waited on each other",
            ),
            query(
                f"sum by (server, transition) (increase(kvwatch_vllm_sleep_transitions_total{{{ENGINES}}}"
                "[$__rate_interval]))",
                "{{server}} {{transition}}",
            ),
            description=(
                "1 while an engine is asleep (vLLM's sleep mode: weights and KV cache released, e.g. between "
                "training steps) or its scheduler paused (/pause); an engine at rest is not stalled. Bars: "
                "transitions, and the seconds vLLM's processes reported waiting on each other (No available shared "
                "memory broadcast block found: with requests in flight, a hang). What sleeping left in use on each "
                "device is in the table below."
            ),
            width=24,
        )
    )
    d = d.with_panel(
        listing(
            "Model, KV capacity, speculative decoding",
            "short",
            query(f"kvwatch_vllm_model_load_seconds{{{SERVERS}}}", "{{server}} model load s"),
            query(f"kvwatch_vllm_model_memory_bytes{{{SERVERS}}}", "{{server}} model bytes"),
            query(f"kvwatch_vllm_engine_init_seconds{{{SERVERS}}}", "{{server}} engine init s"),
            query(f"kvwatch_vllm_startup_phase_seconds{{{SERVERS}}}", "{{server}} {{phase}} s"),
            query(f"kvwatch_vllm_kv_cache_memory_bytes{{{SERVERS}}}", "{{server}} KV cache memory bytes"),
            query(f"kvwatch_vllm_kv_cache_capacity_tokens{{{SERVERS}}}", "{{server}} KV tokens"),
            query(f"kvwatch_vllm_data_parallel_size{{{SERVERS}}}", "{{server}} engines (data-parallel size)"),
            query(f"kvwatch_vllm_kv_cache_max_concurrency{{{SERVERS}}}", "{{server}} max concurrency"),
            query(f"kvwatch_vllm_kv_cache_blocks{{{SERVERS}}}", "{{server}} {{device}} blocks"),
            query(f"kvwatch_vllm_device_flops_per_second{{{ENGINES}}}", "{{server}}/{{engine}} FLOP/s per device"),
            query(
                f"kvwatch_vllm_device_memory_bytes_per_second{{{ENGINES}}}", "{{server}}/{{engine}} bytes/s per device"
            ),
            query(f"kvwatch_vllm_sleep_freed_bytes{{{SERVERS}}}", "{{server}} rank {{rank}} bytes sleep freed"),
            query(
                f"kvwatch_vllm_sleep_memory_in_use_bytes{{{SERVERS}}}", "{{server}} rank {{rank}} bytes in use asleep"
            ),
            query(
                f"sum by (server, transition) (increase(kvwatch_vllm_sleep_transition_seconds_total{{{ENGINES}}}"
                "[$__range])) / sum by (server, transition) (increase(kvwatch_vllm_sleep_transitions_total"
                f"{{{ENGINES}}}[$__range]))",
                "{{server}} {{transition}} mean s",
            ),
            query(
                f"kvwatch_vllm_spec_decode_mean_acceptance_length{{{ENGINES}}}",
                "{{server}} mean acceptance length",
            ),
            query(
                f"sum by (server) (increase(kvwatch_vllm_spec_decode_accepted_tokens_total{{{ENGINES}}}[$__range]))",
                "{{server}} accepted tokens",
            ),
            query(
                f"sum by (server) (increase(kvwatch_vllm_spec_decode_drafted_tokens_total{{{ENGINES}}}[$__range]))",
                "{{server}} drafted tokens",
            ),
            query(
                f"sum by (server) (kvwatch_vllm_diffusion_committed_throughput_tokens_per_second{{{ENGINES}}})",
                "{{server}} diffusion committed tokens/s",
            ),
            query(
                f"sum by (server) (increase(kvwatch_vllm_diffusion_committed_tokens_total{{{ENGINES}}}[$__range])) / "
                f"sum by (server) (increase(kvwatch_vllm_diffusion_denoising_steps_total{{{ENGINES}}}[$__range]))",
                "{{server}} diffusion tokens per denoising step",
            ),
            query(
                f"sum by (server) (increase(kvwatch_vllm_diffusion_canvas_positions_total{{{ENGINES}}}[$__range])) / "
                f"sum by (server) (increase(kvwatch_vllm_diffusion_committed_tokens_total{{{ENGINES}}}[$__range]))",
                "{{server}} diffusion denoising steps per canvas",
            ),
            description="What the start-up lines said, and speculative decoding's totals over the range.",
            width=24,
        )
    )
    return d


def requests_row(d: db.Dashboard) -> db.Dashboard:
    """Requests by outcome, HTTP responses, latency."""
    d = d.with_row(db.Row("Requests"))
    d = d.with_panel(
        series(
            "HTTP responses by status",
            "reqps",
            query(
                f'sum by (status) (rate(kvwatch_http_responses_total{{{SERVERS}, path!~"/health|/metrics|/ping"}}'
                "[$__rate_interval]))",
                "{{status}}",
            ),
        )
    )
    d = d.with_panel(
        series(
            "Request rate",
            "reqps",
            query(rate("kvwatch_vllm_requests_added_total"), "{{server}} added"),
            query(rate("kvwatch_vllm_requests_received_total"), "{{server}} received"),
            query(rate("kvwatch_vllm_requests_finished_total"), "{{server}} finished"),
        )
    )
    d = d.with_panel(
        series(
            "Aborted and failed",
            "reqps",
            query(rate("kvwatch_vllm_requests_aborted_total"), "{{server}} aborted"),
            query(rate("kvwatch_vllm_requests_cancelled_total"), "{{server}} cancelled (client gone)"),
            query(rate("kvwatch_vllm_requests_aborted_at_shutdown_total"), "{{server}} aborted by a stop"),
            query(rate("kvwatch_vllm_request_failures_total", by="server, reason"), "{{server}} failed: {{reason}}"),
        )
    )
    d = d.with_panel(
        series(
            "KV load failures",
            "short",
            query(
                rate("kvwatch_vllm_kv_load_failures_total", by="server, policy"), "{{server}} requests/s: {{policy}}"
            ),
            query(
                rate("kvwatch_vllm_kv_load_failed_tokens_total", by="server, policy"), "{{server}} tokens/s: {{policy}}"
            ),
            query(rate("kvwatch_lmcache_load_failed_tokens_total"), "{{server}} tokens/s LMCache failed to load"),
            query(rate("kvwatch_lmcache_loads_bypassed_total"), "{{server}} requests/s LMCache bypassed"),
            description=(
                "KV the connector (LMCache ...) promised and could not load: computed again (recompute) or the "
                "requests failed (fail), as vLLM's kv_load_failure_policy says; and as LMCache's adapter reports "
                "it (Request X failed to load N tokens, each tensor-parallel rank its own; its multiprocess "
                "connector: requests it bypassed after a failed load)."
            ),
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Errors by kind",
            "short",
            query(
                f"sum by (error) (increase(kvwatch_vllm_errors_total{{{SERVERS}}}[$__rate_interval]))",
                "{{error}}",
            ),
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Warnings and errors logged",
            "short",
            query(
                f"sum by (producer, level) (increase(kvwatch_log_problem_lines_total{{{SERVERS}}}[$__rate_interval]))",
                "{{producer}} {{level}}",
            ),
            description=(
                "WARNING, ERROR and CRITICAL lines of vLLM, LMCache, uvicorn and PyTorch that no other panel counts "
                "(each line of a traceback counts). LMCache errors mean stores or retrieves that did not happen."
            ),
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Traced requests",
            "short",
            query(f"sum by (server) (kvwatch_trace_open_requests{{{SERVERS}}})", "{{server}} open"),
            query(rate("kvwatch_trace_requests_total", by="server, outcome"), "{{server}} ended/s: {{outcome}}"),
            query(rate("kvwatch_trace_unmatched_ends_total"), "{{server}} ends of unseen requests/s"),
            query(
                rate("kvwatch_trace_requests_evicted_total", by="server, reason"), "{{server}} evicted/s: {{reason}}"
            ),
            description="Requests in the trace builder's table; evictions end a trace without its end.",
            width=12,
        )
    )
    return d


def benchmarks_row(d: db.Dashboard) -> db.Dashboard:
    """The last `kvwatch bench` results."""
    d = d.with_row(db.Row("Benchmarks"))
    d = d.with_panel(
        listing(
            "Last vllm bench throughput",
            "short",
            query(f"kvwatch_bench_requests_per_second{{{SERVERS}}}", "{{server}} {{benchmark}} req/s"),
            query(f"kvwatch_bench_tokens_per_second{{{SERVERS}}}", "{{server}} {{benchmark}} {{tokens}} tok/s"),
            query(f"kvwatch_bench_tokens{{{SERVERS}}}", "{{server}} {{benchmark}} {{tokens}} tokens"),
            query(f"kvwatch_bench_requests{{{SERVERS}}}", "{{server}} {{benchmark}} {{outcome}} requests"),
            query(f"kvwatch_bench_duration_seconds{{{SERVERS}}}", "{{server}} {{benchmark}} duration s"),
        )
    )
    d = d.with_panel(
        listing(
            "Last vllm bench latencies",
            "s",
            query(f"kvwatch_bench_latency_seconds{{{SERVERS}}}", "{{benchmark}} {{measure}} {{statistic}}"),
        )
    )

    d = d.with_panel(
        listing(
            "Recorded runs (kvwatch bench), last per parameter set",
            "short",
            query(
                'kvwatch_bench_last_result{instance=~"$instance"}',
                "{{benchmark}} {{model}} {{params}} {{result}}",
            ),
            query(
                'kvwatch_bench_last_run_timestamp_seconds{instance=~"$instance"} * 1000',
                "{{benchmark}} {{model}} {{params}} when",
            ),
            description="kvwatch bench -- vllm bench ... records each run; kvwatch bench --history compares them.",
            width=24,
        )
    )
    return d


def kvwatch_row(d: db.Dashboard) -> db.Dashboard:
    """kvwatch's own reading: lines, suspicious lines, tailing, traces."""
    d = d.with_row(db.Row("kvwatch itself"))
    d = d.with_panel(series("Lines read", "ops", query(rate("kvwatch_lines_total"))))
    d = d.with_panel(
        series(
            "Unparsed, suspicious and skipped lines",
            "ops",
            query(rate("kvwatch_lines_suspicious_total", by="server, family"), "{{server}} suspicious: {{family}}"),
            query(rate("kvwatch_lines_skipped_total", by="server, reason"), "{{server}} skipped: {{reason}}"),
            query(rate("kvwatch_lines_unparsed_total"), "{{server}} without an event"),
            query(rate("kvwatch_sink_errors_total", by="server, sink"), "{{server}} sink errors: {{sink}}"),
            description="Suspicious lines look like a known family but do not parse: a format change after an upgrade. "
            "Parser and sink errors are kvwatch bugs (logged with where they were raised): please report them.",
        )
    )
    d = d.with_panel(
        series(
            "Parse lag and unread bytes",
            "s",
            query(f"max by (server) (kvwatch_tail_lag_seconds{{{SERVERS}}})", "{{server}} lag"),
            description="Time from a followed file's last write to kvwatch having parsed it.",
        )
    )
    d = d.with_panel(
        series(
            "Unread bytes of followed files",
            "bytes",
            query(
                f"sum by (server) (kvwatch_tail_size_bytes{{{SERVERS}}} - kvwatch_tail_offset_bytes{{{SERVERS}}})",
                "{{server}}",
            ),
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Rotations, truncations, journal",
            "short",
            query(
                f"sum by (server) (increase(kvwatch_tail_rotations_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} rotations",
            ),
            query(
                f"sum by (server) (increase(kvwatch_tail_truncations_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} truncations",
            ),
            query(
                f"sum by (server) (increase(kvwatch_server_log_rotations_total{{{SERVERS}}}[$__rate_interval]))",
                "{{server}} raw-log rotations by kvwatch",
            ),
            query(f"kvwatch_journal_up{{{SERVERS}}}", "{{server}} journalctl up"),
            query(
                'sum by (instance) (increase(kvwatch_state_write_failures_total{instance=~"$instance"}'
                "[$__rate_interval]))",
                "{{instance}} failed writes of the state directory",
            ),
            description="A failed write of the state directory (full disk, lost permission) is retried; "
            "a restart meanwhile reads again what came since the last good save.",
            width=12,
        )
    )
    d = d.with_panel(
        listing(
            "kvwatch build and configuration",
            "short",
            query('kvwatch_build_info{instance=~"$instance"}', "{{instance}} {{version}} {{python_version}}"),
            query(
                'kvwatch_config_last_reload_successful{instance=~"$instance"}', "{{instance}} last reload applied (1)"
            ),
            query(
                'time() - kvwatch_config_last_reload_success_timestamp_seconds{instance=~"$instance"}',
                "{{instance}} s since the configuration was read",
            ),
            description="A reload (SIGHUP) whose file had an error is refused: 0 until a reload succeeds.",
            width=12,
        )
    )
    d = d.with_panel(
        series(
            "Spans exported and lost",
            "ops",
            query(
                'sum by (instance) (rate(kvwatch_trace_spans_exported_total{instance=~"$instance"}[$__rate_interval]))',
                "{{instance}} exported",
            ),
            query(
                'sum by (instance, reason) (rate(kvwatch_trace_spans_dropped_total{instance=~"$instance"}'
                "[$__rate_interval]))",
                "{{instance}} lost: {{reason}}",
            ),
            width=12,
        )
    )
    return d


# -- the fleet: many hosts at a glance ----------------------------------------------------------
FLEET_UID = "kvwatch-fleet"
HOSTS = 'job="kvwatch", instance=~"$instance"'  # Prometheus' own scrape health of each host's kvwatch


def fleet() -> db.Dashboard:
    """Many hosts: which report, which servers wait or fill up, whose cache hits less, where formats drift.

    Every query reads series a central Prometheus has by remote write, or by federation of the
    recording rules and the few series docs/dashboards.md lists."""
    d = (
        db.Dashboard("kvwatch / fleet")
        .uid(FLEET_UID)
        .description("Every host running kvwatch: up or down, servers by state, the busiest, cache hit ratios, "
                     "format drift and canaries.")
        .tags(["kvwatch", "vllm", "lmcache", "fleet"])
        .editable()
        .time("now-6h", "now")
        .refresh("1m")
        .tooltip(model.DashboardCursorSync.CROSSHAIR)
        .timezone("browser")
        .variables(variables())
        .link(
            db.DashboardLink("kvwatch / vLLM + LMCache").type(model.DashboardLinkType.DASHBOARDS).tags(["kvwatch"])
            .include_vars(True).keep_time(True)
        )
    )  # fmt: skip
    for row in (fleet_hosts_row, fleet_servers_row, fleet_cache_row, fleet_drift_row):
        d = row(d)
    return d


def fleet_hosts_row(d: db.Dashboard) -> db.Dashboard:
    d = d.with_row(db.Row("Hosts"))
    d = d.with_panel(
        single(
            "Hosts reporting",
            "short",
            query(f"count(up{{{HOSTS}}} == 1) or vector(0)", "up"),
            description="kvwatch instances Prometheus scraped successfully at the last scrape.",
        )
    )
    d = d.with_panel(
        single(
            "Hosts down",
            "short",
            query(f"count(up{{{HOSTS}}} == 0) or vector(0)", "down"),
            description="kvwatch instances whose last scrape failed (alert KvwatchDown after 5 minutes).",
        )
    )
    d = d.with_panel(
        listing(
            "Hosts",
            "short",
            query(f"up{{{HOSTS}}}", "{{instance}} up"),
            query('kvwatch_build_info{instance=~"$instance"}', "{{instance}} kvwatch {{version}}"),
            description="Each host: scraped (1) or not (0), and the kvwatch version it runs.",
            width=8,
        )
    )
    d = d.with_panel(
        listing(
            "GPUs missing per host",
            "short",
            query(
                'clamp_min(sum by (instance) (kvwatch_gpus_expected{instance=~"$instance"})'
                ' - sum by (instance) (kvwatch_gpus{instance=~"$instance"}), 0)'
                ' or sum by (instance) (kvwatch_gpus{instance=~"$instance"}) * 0',
                "{{instance}}",
            ),
            description="agent.expected_gpus minus the GPUs the host shows (0 where none is expected).",
            width=4,
        )
    )
    d = d.with_panel(
        listing(
            "kvwatch versions",
            "short",
            query('count by (version) (kvwatch_build_info{instance=~"$instance"})', "{{version}}"),
            description="How many hosts run each kvwatch version: an old one stands out.",
            width=4,
        )
    )
    return d


def fleet_servers_row(d: db.Dashboard) -> db.Dashboard:
    d = d.with_row(db.Row("Servers"))
    d = d.with_panel(
        listing(
            "Servers by state",
            "short",
            query(f'count by (state) (kvwatch_server_state{{{SERVERS}, process="vllm"}} == 1)', "{{state}}"),
            query(f"count(kvwatch_vllm_server_ready{{{SERVERS}}} == 1)", "serving (by its log)"),
            query(f"count(kvwatch_vllm_server_ready{{{SERVERS}}} == 0)", "not serving (by its log)"),
            query(f"count(max by (instance, server) (kvwatch_vllm_sleeping{{{SERVERS}}}) == 1)", "asleep"),
            query(f"count(max by (instance, server) (kvwatch_vllm_paused{{{SERVERS}}}) == 1)", "paused"),
            description="Supervised servers by state (starting, running, stalled, crash_loop ...); servers "
            "whose log says they serve or not (no start seen, or shut down), supervised or followed; and servers "
            "with an engine in vLLM's sleep mode or paused (between training steps: not serving, and not stalled).",
            width=6,
        )
    )  # fmt: skip
    d = d.with_panel(
        listing(
            "Most waiting requests",
            "short",
            query(f"topk(10, max by (instance, server) (kvwatch_vllm_requests_waiting{{{SERVERS}}}))",
                  "{{instance}} {{server}}"),
            description="The ten servers with the longest queues (last stats line).",
            width=6,
        )
    )  # fmt: skip
    d = d.with_panel(
        listing(
            "Fullest KV caches",
            "percentunit",
            query(f"topk(10, max by (instance, server) (kvwatch_vllm_kv_cache_usage_ratio{{{SERVERS}}}))",
                  "{{instance}} {{server}}"),
            description="The ten servers using most of their KV cache (last stats line).",
            width=6,
        )
    )  # fmt: skip
    d = d.with_panel(
        listing(
            "vLLM and LMCache versions",
            "short",
            query(f"count by (vllm_version, lmcache_version) (kvwatch_server_info{{{SERVERS}}})",
                  "{{vllm_version}} {{lmcache_version}}"),
            description="Servers per vLLM and LMCache version: hosts left on an old release stand out.",
            width=6,
        )
    )  # fmt: skip
    d = d.with_panel(
        series(
            "Generation throughput per host",
            TOKENS_PER_SECOND,
            query(
                f"sum by (instance) (kvwatch_vllm_generation_throughput_tokens_per_second{{{SERVERS}}})",
                "{{instance}}",
            ),
            description="Sum over the host's servers of the last stats line's generation throughput.",
            width=24,
        )
    )
    return d


def fleet_cache_row(d: db.Dashboard) -> db.Dashboard:
    d = d.with_row(db.Row("Cache and errors"))
    d = d.with_panel(
        series(
            "LMCache hit ratio per host",
            "percentunit",
            query(
                f"sum by (instance) (server:kvwatch_lmcache_hit_tokens:rate5m{{{SERVERS}}})"
                f" / (sum by (instance) (server:kvwatch_lmcache_lookup_tokens:rate5m{{{SERVERS}}}) > 0)",
                "{{instance}}",
            ),
            description="Hit tokens over looked-up tokens of the host's in-process LMCache connectors, over 5 "
            "minutes (recording rules).",
            no_value=IN_PROCESS_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "LMCache (multiprocess) lookups that hit",
            "percentunit",
            query(f"server:kvwatch_lmcache_mp_hit_ratio:rate5m{{{SERVERS}}}", "{{instance}} {{server}}"),
            description="Share of the MP connector's lookups that found something, per server (recording rule).",
            no_value=MP_ONLY,
        )
    )
    d = d.with_panel(
        series(
            "HTTP 5xx ratio",
            "percentunit",
            query(f"server:kvwatch_http_server_error_ratio:rate5m{{{SERVERS}}}", "{{instance}} {{server}}"),
            description="Share of API responses with a 5xx status, per server, over 5 minutes (recording rule).",
        )
    )
    d = d.with_panel(
        listing(
            "Error lines logged per host (30 m)",
            "short",
            query(
                f"sum by (instance, producer) (server:kvwatch_log_error_lines:increase30m{{{SERVERS}}}) > 0",
                "{{instance}} {{producer}}",
            ),
            description="ERROR and CRITICAL lines of vLLM, LMCache, uvicorn and PyTorch that no other panel counts "
            "(recording rule): a host whose LMCache cannot reach its backend shows up here (alert "
            "KvwatchLmcacheErrors), one whose GPUs' processes timed out waiting for each other as `torch` (alert "
            "KvwatchTorchErrors).",
            width=24,
        )
    )
    return d


def fleet_drift_row(d: db.Dashboard) -> db.Dashboard:
    d = d.with_row(db.Row("Format drift and canaries"))
    d = d.with_panel(
        listing(
            "Suspicious lines per host (30 m)",
            "short",
            query(f"sum by (instance, family) (server:kvwatch_lines_suspicious:increase30m{{{SERVERS}}})",
                  "{{instance}} {{family}}"),
            description="Lines that start like a known family but do not parse: a format change after an upgrade "
            "shows up host by host.",
        )
    )  # fmt: skip
    d = d.with_panel(
        single(
            "Canaries failing",
            "short",
            query(f"count(kvwatch_canary_ok{{{SERVERS}}} == 0) or vector(0)", "failing"),
            description="Servers whose last periodic canary did not hit (alert KvwatchCanaryFailing).",
            width=4,
        )
    )
    d = d.with_panel(
        listing(
            "Failing canaries",
            "short",
            query(f"kvwatch_canary_ok{{{SERVERS}}} == 0", "{{instance}} {{server}} {{reason}}"),
            description="Each failing canary with its reason (not_loaded, degraded, short_prompt ...).",
            width=4,
        )
    )
    return d


DASHBOARDS = {"kvwatch-overview.json": overview, "kvwatch-fleet.json": fleet}


def render(builder: db.Dashboard) -> str:
    return json.dumps(builder.build(), cls=JSONEncoder, indent=2, sort_keys=True) + "\n"


# -- the Kubernetes recipe's copies of the rules and dashboards -------------------------------
KUBERNETES = HERE.parent / "deploy" / "kubernetes"
NAMESPACE = "monitoring"
LABELS = {"app.kubernetes.io/name": "kvwatch", "app.kubernetes.io/part-of": "kvwatch"}
GENERATED = "# Generated by python -m dashboards.build from dashboards/: change it there.\n"


def _yaml(documents: list[dict]) -> str:
    import yaml  # a build-time need, as the SDK is

    class Literal(yaml.SafeDumper):
        pass

    def text(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
        style = "|" if "\n" in value else None
        return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)

    Literal.add_representer(str, text)
    return GENERATED + "---\n".join(
        yaml.dump(d, Dumper=Literal, sort_keys=False, width=120, allow_unicode=True) for d in documents
    )


def prometheus_rule() -> str:
    """``dashboards/alerts.yml`` as a PrometheusRule of the Prometheus Operator."""
    import yaml

    groups = yaml.safe_load((HERE / "alerts.yml").read_text(encoding="utf-8"))["groups"]
    return _yaml(
        [
            {
                "apiVersion": "monitoring.coreos.com/v1",
                "kind": "PrometheusRule",
                "metadata": {"name": "kvwatch", "namespace": NAMESPACE, "labels": LABELS},
                "spec": {"groups": groups},
            }
        ]
    )


def dashboard_config_maps() -> str:
    """Each dashboard as a ConfigMap that Grafana's dashboard sidecar loads (label ``grafana_dashboard``)."""
    return _yaml(
        [
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {
                    "name": name.removesuffix(".json"),
                    "namespace": NAMESPACE,
                    "labels": {**LABELS, "grafana_dashboard": "1"},
                    "annotations": {"grafana_folder": "kvwatch"},
                },
                "data": {name: render(make())},
            }
            for name, make in DASHBOARDS.items()
        ]
    )


def outputs() -> dict[Path, str]:
    """Every file this module writes, with its text."""
    files = {HERE / name: render(make()) for name, make in DASHBOARDS.items()}
    files[KUBERNETES / "prometheusrule.yaml"] = prometheus_rule()
    files[KUBERNETES / "dashboards.yaml"] = dashboard_config_maps()
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="compare with the files instead of writing them")
    args = parser.parse_args(argv)
    stale = []
    for path, text in outputs().items():
        name = str(path.relative_to(HERE.parent))
        if args.check:
            if not path.exists() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if stale:
        print(f"out of date (run python -m dashboards.build): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
