"""The status page at ``/``: ``kvwatch top``'s picture for a browser, rendered on the server -- the servers
(their last canary among them), their last requests, and the last ``kvwatch bench`` run of each parameter set.

One HTML document with its style inline and no script, image or font from
anywhere (many GPU hosts reach no CDN); it reloads itself every few seconds.
Every text that comes from a log (names, models, ids, reasons) is escaped.
"""

from __future__ import annotations

import html
import time

from agent import __version__
from agent.sinks.status import ServerStatus, Snapshot, number, percent

REFRESH_SECONDS = 5
REQUEST_ROWS = 20

STYLE = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #1d1d1f; background: #fff; }
h1 { font-size: 1.3em; margin: 0 0 .2em; } h2 { font-size: 1.1em; margin: 1.5em 0 .4em; }
.muted { color: #6e6e73; } .bad { color: #b00020; font-weight: 600; } .ok { color: #1b7f3b; }
table { border-collapse: collapse; width: 100%; } th, td { padding: .3em .6em; border-bottom: 1px solid #e5e5ea; }
th { text-align: left; background: #f5f5f7; } td.n { text-align: right; font-variant-numeric: tabular-nums; }
.bar { display: inline-block; width: 6em; height: .8em; background: #e5e5ea; vertical-align: middle; }
.bar span { display: block; height: 100%; background: #1b7f3b; } .bar span.high { background: #b00020; }
@media (prefers-color-scheme: dark) {
  body { background: #111; color: #eee; } th { background: #222; } th, td { border-color: #333; }
  .bar { background: #333; } .muted { color: #999; }
}
"""


def _e(value: object) -> str:
    return html.escape("" if value is None else str(value))


def _bar(ratio: float | None) -> str:
    if ratio is None:
        return "—"
    width = max(0.0, min(ratio, 1.0)) * 100
    high = ' class="high"' if ratio >= 0.9 else ""
    return f'<span class="bar"><span{high} style="width:{width:.0f}%"></span></span> {ratio * 100:.0f}%'


def _state(server: ServerStatus) -> str:
    state = server.shown_state
    good = state in ("running", "ready", "following")
    text = f'<span class="{"ok" if good else "bad"}">{_e(state)}</span>'
    if server.at_rest is not None:
        text += f' <span class="muted">({server.at_rest})</span>'
    if server.lmcache_state is not None:
        text += f' <span class="muted">/ LMCache server {_e(server.lmcache_state)}</span>'
    return text


def _lmcache_hit(server: ServerStatus) -> str:
    """Since kvwatch started reading; in LMCache's multiprocess mode (no lookup line in vLLM's log) the
    LMCache server's last hit-rate summary, marked as such."""
    if server.lmcache_hit_ratio is None and server.lmcache_server_hit_ratio is not None:
        return f'{percent(server.lmcache_server_hit_ratio)} <span class="muted">(server, last)</span>'
    return percent(server.lmcache_hit_ratio)


def _servers(snapshot: Snapshot) -> str:
    head = (
        "<tr><th>server</th><th>state</th><th>model, vLLM</th><th>up</th><th>restarts</th><th>prompt tok/s</th>"
        "<th>gen tok/s</th><th>running</th><th>waiting</th><th>KV cache</th><th>prefix-cache hit</th>"
        "<th>LMCache hit (since start)</th><th>canary</th><th>needs attention</th></tr>"
    )
    rows = []
    for server in snapshot.servers.values():
        conditions = server.conditions()
        uptime = "—" if server.uptime_seconds is None else f"{server.uptime_seconds / 60:,.0f} min"
        rows.append(
            f"<tr><td><b>{_e(server.name)}</b></td><td>{_state(server)}</td>"
            f'<td class="muted">{_e(server.model)} {_e(server.version)}</td>'
            f'<td class="n">{uptime}</td><td class="n">{number(server.restarts, 0)}</td>'
            f'<td class="n">{number(server.prompt_throughput)}</td>'
            f'<td class="n">{number(server.generation_throughput)}</td>'
            f'<td class="n">{number(server.running, 0)}</td><td class="n">{number(server.waiting, 0)}</td>'
            f'<td>{_bar(server.kv_cache_usage)}</td><td class="n">{percent(server.prefix_cache_hit_ratio)}</td>'
            f'<td class="n">{_lmcache_hit(server)}</td><td>{_e(server.canary or "—")}</td>'
            f'<td class="{"bad" if conditions else "muted"}">{_e(", ".join(conditions) or "—")}</td></tr>'
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _requests(snapshot: Snapshot) -> str:
    newest = [(name, row) for name, listed in snapshot.requests.items() for row in listed]
    if not newest:
        return '<p class="muted">No request has ended since kvwatch started reading.</p>'
    head = (
        "<tr><th>server</th><th>request</th><th>status</th><th>latency</th><th>prompt tokens</th>"
        "<th>LMCache hit tokens</th><th>loaded from LMCache</th><th>vLLM prefix cache</th><th>why not all</th></tr>"
    )
    rows = []
    for name, row in newest[::-1][:REQUEST_ROWS]:
        latency = row.get("latency_seconds")

        def tokens(key: str, row: dict = row) -> str:
            value = row.get(key)
            return "—" if value is None else f"{value:,}"

        rows.append(
            f"<tr><td>{_e(name)}</td><td>{_e(row.get('id'))}</td>"
            f"<td>{_e(row.get('status') or row.get('outcome') or '—')}</td>"
            f'<td class="n">{"—" if latency is None else f"{latency:.2f} s"}</td>'
            f'<td class="n">{tokens("prompt_tokens")}</td><td class="n">{tokens("lmcache_hit_tokens")}</td>'
            f'<td class="n">{tokens("loaded_from_lmcache")}</td><td class="n">{tokens("vllm_cached_tokens")}</td>'
            f"<td>{_e(row.get('reason') or '—')}</td></tr>"
        )
    return f"<table>{head}{''.join(rows)}</table>"


def _benchmarks(snapshot: Snapshot) -> str:
    if not snapshot.benchmarks:
        return '<p class="muted">No <code>kvwatch bench</code> run recorded in this state directory.</p>'
    rows = []
    for (benchmark, model, params), run in sorted(
        snapshot.benchmarks.items(), key=lambda item: -(item[1]["time"] or 0)
    ):
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(run["time"])) if run["time"] else "—"
        results = ", ".join(f"{name} {value:g}" for name, value in sorted(run["results"].items())[:6])
        rows.append(
            f"<tr><td>{when}</td><td>{_e(benchmark)}</td><td>{_e(model)}</td><td>{_e(params)}</td>"
            f"<td>{_e(results)}</td></tr>"
        )
    head = "<tr><th>run</th><th>benchmark</th><th>model</th><th>parameters</th><th>results</th></tr>"
    return f"<table>{head}{''.join(rows)}</table>"


def render_page(snapshot: Snapshot) -> str:
    """The whole page for one reading."""
    gpus = f' <span class="bad">{snapshot.gpus_missing:.0f} GPU(s) missing</span>' if snapshot.gpus_missing else ""
    return (
        "<!doctype html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        f'<meta http-equiv="refresh" content="{REFRESH_SECONDS}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>kvwatch</title><style>{STYLE}</style></head><body>"
        f"<h1>kvwatch {_e(__version__)}</h1>"
        f'<p class="muted">{len(snapshot.servers)} server(s), {time.strftime("%Y-%m-%d %H:%M:%S %Z")}; '
        f"this page reloads every {REFRESH_SECONDS} s.{gpus} "
        '<a href="metrics">/metrics</a> · <a href="healthz">/healthz</a> · '
        '<a href="api/requests">/api/requests</a></p>'
        f"<h2>Servers</h2>{_servers(snapshot)}"
        f"<h2>Recent requests</h2>{_requests(snapshot)}"
        f"<h2>Last benchmarks</h2>{_benchmarks(snapshot)}"
        "</body></html>\n"
    )
