"""``kvwatch top``'s screen: one table of the servers and their sparklines, drawn with ``rich``.

``live`` redraws it every interval until ``q`` (or Ctrl-C); ``print_once`` prints
one reading.  Colour follows ``rich``'s rules: none where ``NO_COLOR`` is set or
the output is not a terminal.  On a narrow terminal the sparklines go first,
then the less needed columns, and below ``NARROW`` columns each server is one
line of its key numbers; on a short one the request list keeps the rows that
fit (one line each), and goes when none does.
"""

from __future__ import annotations

import contextlib
import io
import os
import select
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from agent.sinks.status import Snapshot, Trend, number, percent, sparkline

WIDE = 150  # from here on, sparklines are shown
NARROW = 64  # below this, a server is a line of text rather than a table row
REPORT_WIDTH = 120  # --once into a file or pipe: the requests' every column, the servers' all but rates and uptime


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    seconds = int(seconds)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    return f"{days}d{hours:02d}h" if days else (f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{seconds:02d}s")


def _bar(ratio: float | None, width: int = 10) -> Text:
    if ratio is None:
        return Text("—")
    filled = round(max(0.0, min(ratio, 1.0)) * width)
    style = "red" if ratio >= 0.9 else ("yellow" if ratio >= 0.7 else "green")
    return Text("█" * filled, style=style) + Text("░" * (width - filled), style="dim") + Text(f" {ratio * 100:.0f}%")


def _state(server) -> Text:
    state = server.shown_state
    style = {"running": "green", "ready": "green", "starting": "yellow", "waiting": "yellow"}.get(state, "red")
    if state in ("following", "stopped"):
        style = "dim"
    text = Text(state, style=style)
    if server.at_rest is not None:
        text += Text(f" ({server.at_rest})", style="cyan")
    if server.lmcache_state is not None:
        text += Text(f" / lmcache {server.lmcache_state}", style="dim")
    return text


# (title, width it needs, justification, rank: the columns of the lowest ranks go first on a narrow screen)
COLUMNS = (
    ("server", 12, "left", 0),
    ("state", 10, "left", 0),
    ("up", 7, "right", 3),
    ("restarts", 8, "right", 3),
    ("req/s", 7, "right", 2),
    ("prompt tok/s", 12, "right", 2),
    ("gen tok/s", 10, "right", 2),
    ("run", 5, "right", 1),
    ("wait", 5, "right", 0),
    ("KV cache", 16, "left", 0),
    ("prefix hit", 10, "right", 1),
    ("LMCache hit now / all", 21, "right", 0),
    ("attention", 14, "left", 1),
)


def _columns(width: int) -> list[tuple[str, int, str, int]]:
    """The columns that fit, dropping the least needed first."""
    shown = list(COLUMNS)
    for rank in (3, 2, 1):
        if sum(c[1] + 3 for c in shown) <= width:
            break
        shown = [c for c in shown if c[3] != rank]
    return shown


def table(trend: Trend, width: int) -> Table:
    """The servers of the latest reading, one row each (and a row of sparklines on a wide screen)."""
    snapshot = trend.latest
    columns = _columns(width)
    grid = Table(expand=True, header_style="bold", pad_edge=False)
    for title, least, justify, _ in columns:
        grid.add_column(title, justify=justify, overflow="fold", min_width=min(least, 8))
    if snapshot is None:
        return grid
    titles = [c[0] for c in columns]
    for name, server in snapshot.servers.items():
        cells = {
            "server": Text(name, style="bold"),
            "state": _state(server),
            "up": _duration(server.uptime_seconds),
            "restarts": number(server.restarts, 0),
            "req/s": number(trend.requests_per_second(name), 2),
            "prompt tok/s": number(server.prompt_throughput),
            "gen tok/s": number(server.generation_throughput),
            "run": number(server.running, 0),
            "wait": number(server.waiting, 0),
            "KV cache": _bar(server.kv_cache_usage),
            "prefix hit": percent(server.prefix_cache_hit_ratio),
            "LMCache hit now / all": f"{percent(trend.recent_lmcache_hit_ratio(name))} / "
            f"{percent(server.lmcache_hit_ratio)}",
            "attention": Text(", ".join(server.conditions()) or "—", style="red" if server.conditions() else "dim"),
        }
        grid.add_row(*(cells[t] for t in titles))
        if width >= WIDE and len(titles) == len(COLUMNS):
            about = f"{server.model or ''} {'vLLM ' + server.version if server.version else ''}"
            sparks = {
                "state": Text(about, style="dim"),
                "prompt tok/s": Text(sparkline([_sum(a, b) for a, b in _pairs(trend, name)], 12), style="cyan"),
                "wait": Text(sparkline(trend.series(name, "waiting"), 5), style="yellow"),
                "KV cache": Text(sparkline(trend.series(name, "kv_cache_usage"), 16, top=1.0), style="magenta"),
                "LMCache hit now / all": Text(
                    sparkline(trend.lmcache_hit_ratio_series(name), 21, top=1.0), style="green"
                ),
            }
            grid.add_row(*(sparks.get(t, "") for t in titles))
    return grid


def server_lines(trend: Trend) -> Group:
    """The narrow screen's servers: ``name state · wait 3 · KV 41% · LMCache 12% / 62.8% · attention``."""
    snapshot = trend.latest
    lines = []
    for name, server in snapshot.servers.items() if snapshot is not None else ():
        line = Text(name, style="bold") + " " + _state(server)
        line += f" · wait {number(server.waiting, 0)} · KV {percent(server.kv_cache_usage)}"
        line += f" · LMCache {percent(trend.recent_lmcache_hit_ratio(name))} / {percent(server.lmcache_hit_ratio)}"
        if server.conditions():
            line += Text(" · " + ", ".join(server.conditions()), style="red")
        lines.append(line)
    return Group(*lines)


def _sum(a: float | None, b: float | None) -> float | None:
    return None if a is None and b is None else (a or 0.0) + (b or 0.0)


def _pairs(trend: Trend, name: str) -> Iterator[tuple[float | None, float | None]]:
    return zip(trend.series(name, "prompt_throughput"), trend.series(name, "generation_throughput"), strict=True)


def _loading(server) -> bool:
    """A supervised server still starting, or waiting for what it needs (its LMCache server)."""
    return server.state in ("starting", "waiting")


def startup_line(server) -> Text:
    """``name starting: weights 2.2 s · torch.compile 7.4 s · ...``: the start-up steps vLLM has timed so far."""
    phases = server.startup_phases.items()
    steps = " · ".join(f"{phase.replace('_', ' ')} {seconds:,.1f} s" for phase, seconds in phases)
    return Text(f"{server.name} {server.state}: ", style="yellow") + Text(steps or "no step timed yet", style="dim")


REQUEST_ROWS = 12  # the newest requests shown


def _tokens(value: int | None) -> str:
    return "—" if value is None else f"{value:,}"


# The orders the request list cycles through (key ``o``): a title and how a row sorts (largest first).
ORDERS = (
    ("newest", None),
    ("slowest", lambda row: row.get("latency_seconds") or 0.0),
    ("longest prompt", lambda row: row.get("prompt_tokens") or 0),
    ("most LMCache hit", lambda row: row.get("lmcache_hit_tokens") or 0),
)


@dataclass
class View:
    """What the reader picked: one server (key ``s`` cycles; None: all) and the request order (key ``o``)."""

    server: str | None = None
    order: int = 0

    def press(self, key: str, servers: list[str]) -> None:
        if key == "s":
            choices: list[str | None] = [None, *servers]
            self.server = choices[(choices.index(self.server) + 1) % len(choices)] if self.server in choices else None
        elif key == "o":
            self.order = (self.order + 1) % len(ORDERS)


def requests_table(
    snapshot: Snapshot, width: int, rows: int = REQUEST_ROWS, view: View | None = None, one_line: bool = False
) -> Table:
    """The requests of every server (or the picked one), newest first or in the picked order: the seed's
    ``LMCache hit tokens: 256``, live.  ``one_line``: a row never takes more than a line (what does not
    fit is cut), as the live view counts its rows; else long cells fold (a printed snapshot keeps all)."""
    view = view or View()
    title, key = ORDERS[view.order]
    caption = f"recent requests of {view.server or 'every server'}, {title} first (s: server, o: order)"
    if len(caption) > width:
        caption = f"requests, {title} first"
    # Names and ids from the log are Text: a plain string would be read as rich's markup (``[/]`` in an id a
    # client chose, or in a log file's name, would stop the view).
    grid = Table(
        expand=True, header_style="bold", pad_edge=False, title=Text(caption, style="table.title"), title_justify="left"
    )
    columns = [("server", "left"), ("request", "left"), ("status", "left"), ("latency", "right")]
    columns += [("prompt", "right"), ("LMCache hit", "right"), ("loaded", "right"), ("vLLM cached", "right")]
    columns += [("why not all", "left")]
    if width < 110:  # the request id and the loading detail go first
        columns = [c for c in columns if c[0] not in ("request", "loaded", "vLLM cached")]
    if width < NARROW:  # then all but the outcome and the hit
        columns = [c for c in columns if c[0] in ("status", "LMCache hit", "why not all")]
    for title, justify in columns:
        if not one_line:
            grid.add_column(title, justify=justify, overflow="fold")
            continue
        last = title == "why not all"  # it takes what the others leave, and is cut to it
        grid.add_column(
            title,
            justify=justify,
            overflow="ellipsis",
            no_wrap=True,
            min_width=None if last else len(title),
            ratio=last or None,
        )
    picked = [
        (name, row)
        for name, listed in snapshot.requests.items()
        if view.server in (None, name)
        for row in (listed if key is not None else listed[-rows:])
    ][::-1]
    if key is not None:
        picked.sort(key=lambda item: key(item[1]), reverse=True)
    titles = [c[0] for c in columns]
    for name, row in picked[:rows]:
        latency = row.get("latency_seconds")
        status = row.get("status") or row.get("outcome") or "—"
        cells = {
            "server": Text(name),
            "request": Text(row.get("id") or ""),
            "status": Text(str(status), style="red" if str(status)[:1] in ("4", "5") else ""),
            "latency": _latency(latency, row.get("preemptions") or 0),
            "prompt": _tokens(row.get("prompt_tokens")),
            "LMCache hit": Text(
                _tokens(row.get("lmcache_hit_tokens")), style="green" if row.get("lmcache_hit_tokens") else ""
            ),
            "loaded": _tokens(row.get("loaded_from_lmcache")),
            "vLLM cached": _tokens(row.get("vllm_cached_tokens")),
            "why not all": Text(row.get("reason") or "—", style="yellow" if row.get("reason") else "dim"),
        }
        grid.add_row(*(cells[t] for t in titles))
    return grid


def _latency(seconds: float | None, preemptions: int) -> str:
    """The request's latency, and how often it was preempted meanwhile (which explains a long one)."""
    shown = "—" if seconds is None else f"{seconds:.2f} s"
    return f"{shown}, preempted {preemptions}×" if preemptions else shown


HINT = "  q quits, s picks a server, o orders the requests"
# The request list's lines besides its rows: caption, header (3 lines with its rules), bottom rule.
REQUEST_CHROME = 5


def screen(trend: Trend, width: int, note: str = "", view: View | None = None, height: int | None = None) -> Group:
    """The whole picture for a ``width`` x ``height`` terminal (no height: every request row, for ``--once``)."""
    snapshot: Snapshot | None = trend.latest
    head = Text("kvwatch top", style="bold")
    if snapshot is not None:
        head += Text(f"  {len(snapshot.servers)} server(s)", style="dim")
        if snapshot.gpus_missing:
            head += Text(f"  {snapshot.gpus_missing:.0f} GPU(s) missing", style="bold red")
    head += Text(f"  {time.strftime('%H:%M:%S')}", style="dim")
    if len(head) + len(HINT) <= width:
        head += Text(HINT, style="dim")
    parts = [head, table(trend, width) if width >= NARROW else server_lines(trend)]
    if snapshot is not None:
        parts += [startup_line(server) for server in snapshot.servers.values() if _loading(server)]
    if note:
        parts.append(Text(note, style="red"))
    if snapshot is not None and any(snapshot.requests.values()):
        rows = REQUEST_ROWS if height is None else min(REQUEST_ROWS, height - _lines(parts, width) - REQUEST_CHROME)
        if rows > 0:
            listed = requests_table(snapshot, width, rows, view, one_line=height is not None)
            parts.insert(len(parts) - bool(note), listed)
    return Group(*parts)


def _lines(parts: list, width: int) -> int:
    """How many terminal lines ``parts`` take at ``width``."""
    console = Console(width=width, color_system=None, file=io.StringIO())  # measures, prints nothing
    return len(console.render_lines(Group(*parts), console.options.update(width=width), pad=False))


def print_once(trend: Trend) -> None:
    """One reading as text.  Into a file or a pipe (a bug report) :data:`REPORT_WIDTH` columns wide rather than
    the 80 assumed without a terminal, unless COLUMNS says otherwise."""
    console = Console()
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console = Console(width=REPORT_WIDTH)
    console.print(screen(trend, console.width))


@contextlib.contextmanager
def _keys() -> Iterator[Callable[[], str]]:
    """Single key presses from the terminal (none when stdin is not one)."""
    if not sys.stdin.isatty():
        yield lambda: ""
        return
    import termios
    import tty

    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def read() -> str:
        return os.read(fd, 1).decode(errors="replace") if select.select([fd], [], [], 0)[0] else ""

    try:
        yield read
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def live(trend: Trend, read: Callable[[], Snapshot], interval: float) -> None:
    """Redraw every ``interval`` seconds until ``q``; a failed reading is shown, and the next one tried."""
    console = Console()
    note = ""
    picked = View()
    with _keys() as key, Live(console=console, auto_refresh=False, screen=console.is_terminal) as shown:
        next_reading = 0.0
        while True:
            now = time.monotonic()
            pressed = key()
            if pressed in ("q", "Q"):
                return
            if pressed and trend.latest is not None:
                picked.press(pressed.lower(), list(trend.latest.servers))
                shown.update(screen(trend, console.width, note, picked, console.height), refresh=True)
            if now >= next_reading:
                try:
                    trend.add(time.time(), read())
                    note = ""
                except Exception as exc:  # kvwatch restarting, say: keep the last picture, say why
                    note = str(exc)
                shown.update(screen(trend, console.width, note, picked, console.height), refresh=True)
                next_reading = now + interval
            time.sleep(0.05)
