"""``kvwatch replay``: old logs through the same parsers and stats as the live agent.

Each input is read in blocks, split into lines, parsed by a per-input
:class:`parsers.LogStream`, and its events fed to the :class:`ServerStats` of
its server (:func:`agent.pipeline.read_into`).  A large plain file is read in
slices by several processes whose stats are merged.
"""

from __future__ import annotations

import argparse
import itertools
import math
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, tzinfo
from typing import TYPE_CHECKING, BinaryIO, TextIO

from agent.commands import EXIT_FAILED, EXIT_OK, CommandError, positive_int
from agent.config import TRACE_PROTOCOLS, PodsConfig
from agent.pipeline import OnEvent, head_is_lmcache_server_log, read_into, read_unmatched
from agent.sinks import summary
from agent.sinks.events_json import event_writer
from agent.sinks.stats import ServerStats
from agent.sinks.unmatched import UnmatchedShapes
from agent.sources.lines import BLOCK, DEFAULT_MAX_LINE, Input, InputError, open_input
from agent.sources.names import COMPRESSED_SUFFIXES, ROTATION_COUNT, ROTATION_DATE
from agent.timezones import resolve_timezone
from parsers import Clock
from parsers.events import Event

if TYPE_CHECKING:
    from agent.sinks.otlp import Tracing
    from agent.sinks.traces import TraceBuilder

# ``vllm.log``, ``vllm.log.1``, ``vllm.log-20261204.xz``, ``vllm-20261204.log``, ``vllm.jsonl``: the log
# suffixes, a rotation's and a compressor's; dots elsewhere (``vllm-0.32.0.log``) belong to the name.
_EXTENSION = r"\.(?:log|txt|out|err|json|jsonl)"
_DATE = rf"[-_.](?:{ROTATION_DATE.pattern})"
_COMPRESSED = "|".join(re.escape(suffix) for suffix in COMPRESSED_SUFFIXES)
_LOG_SUFFIX = re.compile(
    rf"(?:{_EXTENSION}(?:\.{ROTATION_COUNT.pattern}|{_DATE})?|{_DATE}{_EXTENSION})?(?:{_COMPRESSED})?$"
)
# Where the kubelet (/var/log/pods, and its links in /var/log/containers) and OpenShift's must-gather keep a
# container's log, the file is named by a restart count or ``current``: the path names the pod, and the
# label is the one a [[pods]] table gives.
_POD_LOG_PATHS = (
    re.compile(r"/(?P<namespace>[^/_]+)_(?P<pod>[^/_]+)_[^/_]+/(?P<container>[^/]+)/\d+\.log[^/]*$"),
    re.compile(r"/(?P<pod>[^/_]+)_(?P<namespace>[^/_]+)_(?P<container>[^/_]+)-[0-9a-f]{64}\.log[^/]*$"),
    re.compile(r"/namespaces/(?P<namespace>[^/]+)/pods/(?P<pod>[^/]+)/(?P<container>[^/]+)/[^/]+/logs/[^/]+$"),
)
# Docker's json-file driver (/var/lib/docker/containers/ID/ID-json.log): the container's name, as a
# [[containers]] table labels it, where its settings are beside the log; else the short id ``docker ps`` shows.
_DOCKER_LOG = re.compile(r"(?:^|/)(?P<id>[0-9a-f]{12})[0-9a-f]{52}-json\.log[^/]*$")


# Bytes of events gathered before a write to a file or pipe.
EVENTS_BUFFER = 1 << 16


def server_name_for(input_name: str) -> str:
    """The ``server`` label a replayed file gets by default: its name without log, rotation and compression
    suffixes, or what a container runtime's path says of it."""
    if input_name == "-":
        return "stdin"
    path = os.path.abspath(input_name)
    for layout in _POD_LOG_PATHS:
        m = layout.search(path)
        if m is not None:
            return PodsConfig.name.format(**m.groupdict())
    m = _DOCKER_LOG.search(path)
    if m is not None:
        from agent.sources.containers import name_of  # (only for a Docker log)

        return name_of(os.path.dirname(path)) or m.group("id")
    base = _LOG_SUFFIX.sub("", os.path.basename(input_name))
    return base or "replay"


@dataclass
class InputResult:
    name: str
    server: str
    lines: int = 0
    error: str | None = None


@dataclass
class Replay:
    """Reads inputs into per-server stats; optional per-event callback for the events format."""

    timezone: tzinfo
    max_line: int = DEFAULT_MAX_LINE
    servers: dict[str, ServerStats] = field(default_factory=dict)

    def stats_for(self, server: str) -> ServerStats:
        stats = self.servers.get(server)
        if stats is None:
            stats = self.servers[server] = ServerStats(server)
        return stats

    def run(
        self,
        source: Input,
        server: str,
        on_event: OnEvent | None = None,
        track_time: bool = False,
        jobs: int = 1,
        by_writer: bool = False,
        lmcache_server: bool | None = False,
    ) -> InputResult:
        """Read one input to its end.  ``on_event`` sees every event with its line number;
        ``track_time`` records the span of log time (for the summary).  With ``jobs`` > 1
        a large plain file is read in slices by as many processes (not with ``on_event``).
        With ``by_writer``, each writer of a log several containers wrote is a server of its own
        (:mod:`agent.sources.origins`).  ``lmcache_server``: the input is an LMCache server's own log; None: told
        by its first lines."""
        fresh = server not in self.servers
        stats = self.stats_for(server)
        stats.clock = Clock(self.timezone, source.modified)
        writers: list[str] = []

        def stats_of(writer: str) -> ServerStats:
            found = self.stats_for(writer)
            found.clock = Clock(self.timezone, source.modified)
            writers.append(writer)
            return found

        routing = stats_of if by_writer and not lmcache_server else None
        if jobs > 1 and on_event is None and source.path is not None:
            parts = slices_of(source, jobs)
            # The slices after the first begin in the middle: the file's first lines tell for them.  Where those show
            # an LMCache server's log, it is one only until vLLM's output shows in it, which a later slice cannot
            # know: such a log (a small one) is read whole.
            if len(parts) > 1 and (
                lmcache_server is not None or not head_is_lmcache_server_log(source.path, self.max_line)
            ):
                lines, error = self._run_parallel(source, server, parts, track_time, routing, bool(lmcache_server))
                self._drop_if_unused(server, fresh, writers)
                return InputResult(source.name, server, lines, error)
        lines, error = read_into(
            stats,
            source.stream,
            self.max_line,
            on_event=on_event,
            track_time=track_time,
            live=source.live,
            stats_of=routing,
            lmcache_server=lmcache_server,
        )
        self._drop_if_unused(server, fresh, writers)
        return InputResult(source.name, server, lines, error)

    def _drop_if_unused(self, server: str, fresh: bool, writers: list[str]) -> None:
        """An input whose every line went to its writers' servers is no server of its own."""
        stats = self.servers[server]
        if fresh and writers and server not in writers and not stats.lines and not stats.skipped:
            del self.servers[server]

    def _run_parallel(
        self,
        source: Input,
        server: str,
        parts: list[tuple[int, int]],
        track_time: bool,
        stats_of: Callable[[str], ServerStats] | None,
        lmcache_server: bool,
    ) -> tuple[int, str | None]:
        # Loaded only for a file large enough to be read in parallel.
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        by_writer = stats_of is not None
        args = (
            source.path,
            server,
            self.timezone,
            source.modified,
            self.max_line,
            track_time,
            by_writer,
            lmcache_server,
        )
        context = multiprocessing.get_context("fork")
        with ProcessPoolExecutor(max_workers=len(parts) - 1, mp_context=context) as pool:
            later = [pool.submit(_read_slice, *args, start, end) for start, end in parts[1:]]
            # This process reads the first slice while the others read theirs.
            results = [_read_slice(*args, *parts[0])] + [future.result() for future in later]
        stats = self.stats_for(server)
        lines, error = 0, None
        for part, writers, part_lines, part_error in results:
            stats.merge(part)
            for writer, writer_part in writers.items():
                assert stats_of is not None
                stats_of(writer).merge(writer_part)
            lines += part_lines
            error = error or part_error
        return lines, error


# Below this size a file is read by one process: forking costs more than it saves.
PARALLEL_MIN_BYTES = 16 << 20


def slices_of(source: Input, jobs: int) -> list[tuple[int, int]]:
    """Byte ranges of a plain file, each ending just after a newline, for ``jobs`` readers.

    One range when the file is small, or holds Docker/CRI records (whose long
    lines come in pieces that must be joined in order)."""
    size = os.path.getsize(source.path)
    if size < PARALLEL_MIN_BYTES or jobs < 2:
        return [(0, size)]
    with open(source.path, "rb") as raw:
        if raw.read(1) in (b"{", *(str(d).encode() for d in range(10))):
            return [(0, size)]
        bounds = [0]
        for part in range(1, jobs):
            cut = _next_line_start(raw, max(size * part // jobs, bounds[-1]), size)
            if cut >= size:
                break
            if bounds[-1] < cut:
                bounds.append(cut)
    bounds.append(size)
    return list(itertools.pairwise(bounds))


def _next_line_start(raw: BinaryIO, offset: int, size: int) -> int:
    """Where the line after the one at ``offset`` begins (``size`` if none), found block by block:
    the line a cut falls into may be gigabytes long and is never held whole."""
    raw.seek(offset)
    while block := raw.read(BLOCK):
        newline = block.find(b"\n")
        if newline != -1:
            return raw.tell() - len(block) + newline + 1
    return size


def _read_slice(
    path: str,
    server: str,
    timezone: tzinfo,
    modified,
    max_line: int,
    track_time: bool,
    by_writer: bool,
    lmcache_server: bool,
    start: int,
    end: int,
) -> tuple[ServerStats, dict[str, ServerStats], int, str | None]:
    """One slice's stats, and with ``by_writer`` those of each writer it names."""
    stats = ServerStats(server, Clock(timezone, modified))
    writers: dict[str, ServerStats] = {}

    def stats_of(writer: str) -> ServerStats:
        found = writers[writer] = ServerStats(writer, Clock(timezone, modified))
        return found

    with open(path, "rb") as raw:
        raw.seek(start)
        lines, error = read_into(
            stats,
            raw,
            max_line,
            limit=end - start,
            track_time=track_time,
            stats_of=stats_of if by_writer else None,
            lmcache_server=lmcache_server,
        )
    return stats, writers, lines, error


# -- the command ----------------------------------------------------------------------------


def _default_jobs() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def add_parser(commands: argparse._SubParsersAction) -> None:
    replay = commands.add_parser(
        "replay",
        help="parse old logs and print metrics, events or a summary",
        description="Parse vLLM/LMCache logs (plain, gzip, bzip2, xz or zstd, or - for stdin) and print the result.",
    )
    replay.add_argument(
        "inputs",
        nargs="+",
        metavar="FILE",
        help="log files, plain or compressed (gzip, bzip2, xz, zstd); - reads stdin",
    )
    replay.add_argument(
        "--format",
        "-f",
        choices=("summary", "prometheus", "events", "unmatched"),
        default="summary",
        help="summary: a short report (default); prometheus: the metrics exposition after the whole "
        "input; events: one JSON object per event; unmatched: the lines that look like vLLM, LMCache or "
        "uvicorn lines but gave no event, by shape, masked for a bug report",
    )
    replay.add_argument(
        "--server",
        metavar="NAME",
        help="the server label for every input (default: each file's name without log/rotation "
        "suffixes; stdin: 'stdin')",
    )
    replay.add_argument(
        "--lmcache-server-log",
        action="append",
        default=[],
        metavar="FILE",
        help="an LMCache multiprocess server's own log, read after the FILEs as part of the first one's server "
        "(or --server's): its HTTP server's uvicorn lines (health checks, /metrics scrapes, its shutdown) count as "
        "none of vLLM's; a FILE whose first lines show such a server's start and none of vLLM's is read as one too "
        "(a server of its own unless --server names one)",
    )
    replay.add_argument(
        "--timezone",
        metavar="ZONE",
        help="IANA zone of the server's local timestamps (default: this host's zone)",
    )
    replay.add_argument(
        "--max-line-length",
        type=positive_int,
        default=DEFAULT_MAX_LINE,
        metavar="CHARS",
        help=f"skip (and count) longer lines (default {DEFAULT_MAX_LINE})",
    )
    replay.add_argument(
        "--jobs",
        "-j",
        type=positive_int,
        default=_default_jobs(),
        metavar="N",
        help="processes reading slices of a large plain file in parallel for the prometheus and "
        "summary formats (default: the CPUs available, at most 8)",
    )
    traces = replay.add_argument_group(
        "traces",
        "one OpenTelemetry trace per request; the exporter also reads the standard OTEL_EXPORTER_OTLP_* "
        "variables (endpoint, headers, protocol)",
    )
    traces.add_argument("--traces", action="store_true", help="export every request's trace over OTLP")
    traces.add_argument(
        "--traces-endpoint", metavar="URL", help="OTLP endpoint (implies --traces; default from OTEL_*, else localhost)"
    )
    traces.add_argument("--traces-protocol", choices=TRACE_PROTOCOLS, help="OTLP protocol (implies --traces)")
    traces.add_argument(
        "--traces-file",
        metavar="FILE",
        help="write the traces to FILE as OTLP JSON, one export request per line, instead of sending them",
    )
    replay.set_defaults(handler=main)


def main(args: argparse.Namespace) -> int:
    try:
        timezone = resolve_timezone(args.timezone)
    except ValueError as exc:
        raise CommandError(f"--timezone: {exc}") from None
    opened = _open_all([*args.inputs, *args.lmcache_server_log])
    wants_traces = args.traces or args.traces_endpoint or args.traces_protocol or args.traces_file
    try:
        tracing = _tracing(args) if wants_traces else None
    except (ValueError, OSError) as exc:
        for source in opened:
            source.close()
        raise CommandError(f"traces: {exc}") from None
    if args.format == "unmatched":
        return _unmatched(opened, args.max_line_length)

    replay = Replay(timezone, args.max_line_length)
    out = _events_output(any(source.live for source in opened)) if args.format == "events" else sys.stdout
    builders = _read_all(replay, opened, args, tracing, out)
    status = _finish_traces(tracing, builders) if tracing is not None else EXIT_OK
    servers = list(replay.servers.values())
    if args.format == "prometheus":
        # The client library is loaded only for this output (a summary needs none of it).
        from agent.exposition import RenderedAtScrape, exposition
        from agent.sinks.prometheus import registry_for

        extra = []
        if tracing is not None:
            from agent.sinks.otlp import trace_families

            extra.append(RenderedAtScrape(lambda: trace_families(tracing, builders)))
        out.write(exposition(registry_for(lambda: servers, *extra))[0].decode("utf-8"))
    elif args.format == "summary":
        out.write(summary.render(servers))
    out.flush()
    return status


def _events_output(live: bool) -> TextIO:
    """Standard output for the events: from a live input line by line (`tail -f log | kvwatch replay -f events
    -`: each event at once); else in blocks, also where PYTHONUNBUFFERED (which container images often set)
    would make each event a write of its own (a third of the time, through a pipe)."""
    if live:
        sys.stdout.reconfigure(line_buffering=True)
        return sys.stdout
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # not a file (an embedding program's stream)
        return sys.stdout
    return open(fd, "w", encoding="utf-8", buffering=EVENTS_BUFFER, closefd=False)  # flushed at the end


def _read_all(replay: Replay, opened: list[Input], args: argparse.Namespace, tracing, out: TextIO) -> list:
    """Read every input into the replay's stats (and traces, and the events output); returns the trace builders."""
    builders: dict[str, TraceBuilder] = {}
    own = [args.server or server_name_for(source.name) for source in opened[: len(args.inputs)]]
    servers = own + [own[0]] * len(args.lmcache_server_log)  # an LMCache server's log: the first input's server's
    for number, (source, server) in enumerate(zip(opened, servers, strict=True)):
        on_event = event_writer(out, source.name, server) if args.format == "events" else None
        if tracing is not None:
            builder = builders.get(server)
            if builder is None:
                builder = builders[server] = _builder(tracing, replay, server, servers.count(server) > 1)
            on_event = _traced(builder, on_event)
        try:
            result = replay.run(
                source,
                server,
                on_event,
                track_time=args.format == "summary",
                jobs=args.jobs if on_event is None else 1,
                by_writer=args.server is None,
                # (A FILE may be an LMCache server's log too, told by its first lines.)
                lmcache_server=True if number >= len(args.inputs) else None,
            )
        finally:
            source.close()
        if result.error:
            print(f"kvwatch: {source.name}: read stopped early: {result.error}", file=sys.stderr)
    return list(builders.values())


def _builder(tracing: Tracing, replay: Replay, server: str, several_inputs: bool) -> TraceBuilder:
    """The trace builder of one server.  A server read from several inputs (vLLM's log and its LMCache server's,
    or a log and its rotated part) has one: its ended requests wait until every input is read for the pieces a
    later one holds, and none is ended for idleness meanwhile (each input's times begin again); both tables
    stay bounded by the builder's ``max_open``."""
    clock = Clock(replay.timezone, datetime.now(UTC))
    if not several_inputs:
        return tracing.builder(replay.stats_for(server), clock)
    return tracing.builder(replay.stats_for(server), clock, linger=math.inf, idle_timeout=math.inf)


def _open_all(names: list[str]) -> list[Input]:
    """Every input opened first, so that a bad name fails before any output."""
    opened: list[Input] = []
    try:
        for name in names:
            opened.append(open_input(name))
    except InputError as exc:
        for source in opened:
            source.close()
        raise CommandError(str(exc)) from None
    if sum(1 for source in opened if source.name == "-") > 1:
        raise CommandError("stdin (-) given more than once")
    return opened


def _tracing(args: argparse.Namespace) -> Tracing:
    # Imported only when asked for: OpenTelemetry's SDK takes longer to load than a small replay.
    from agent.sinks.otlp import OtlpJsonFileExporter, Tracing, make_exporter

    if args.traces_file:
        exporter = OtlpJsonFileExporter(open(args.traces_file, "w", encoding="utf-8"))  # noqa: SIM115
    else:
        exporter = make_exporter(args.traces_protocol, args.traces_endpoint)
    # A replay has all the time it needs: it waits for the exporter rather than drop spans.
    return Tracing(exporter, wait_when_full=True)


def _traced(builder: TraceBuilder, then: OnEvent | None):
    """Show each event to the trace builder (on the input's clock), then to ``then``."""

    def on_event(event: Event, line: int, clock: Clock, server: str) -> None:
        if builder.clock is not clock:
            builder.clock = clock  # the replay gives each input its clock; the first event hands it over
        builder.observe(event)
        if then is not None:
            then(event, line, clock, server)

    return on_event


def _finish_traces(tracing: Tracing, builders: list[TraceBuilder]) -> int:
    for builder in builders:
        builder.close("log_ended")
    tracing.shutdown(timeout=60.0)
    lost = sum(tracing.dropped.values())
    print(
        f"kvwatch: traces: {sum(sum(b.ended_by.values()) for b in builders)} requests, "
        f"{tracing.counts['exported']} spans sent, {lost} lost"
        + (f" ({', '.join(f'{k}: {v}' for k, v in tracing.dropped.items() if v)})" if lost else ""),
        file=sys.stderr,
    )
    return EXIT_FAILED if lost else EXIT_OK


def _unmatched(opened: list[Input], max_line: int) -> int:
    shapes = UnmatchedShapes()
    for source in opened:
        try:
            _lines, error = read_unmatched(source.stream, max_line, shapes.note)
        finally:
            source.close()
        if error:
            print(f"kvwatch: {source.name}: read stopped early: {error}", file=sys.stderr)
    shapes.render(sys.stdout)
    sys.stdout.flush()
    return EXIT_OK
