"""The ``kvwatch`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.sources.lines import DEFAULT_MAX_LINE, InputError, open_input

EXIT_OK = 0
EXIT_USAGE = 2  # bad arguments or inputs, as argparse does


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be positive: {text!r}")
    return value


def _default_jobs() -> int:
    try:
        cpus = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cpus = os.cpu_count() or 1
    return max(1, min(cpus, 8))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="kvwatch",
        description="Observe vLLM + LMCache servers: parse their logs into metrics.",
    )
    parser.add_argument("--version", action="version", version=f"kvwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.required = True

    replay = commands.add_parser(
        "replay",
        help="parse old logs and print metrics, events or a summary",
        description="Parse vLLM/LMCache logs (plain, .gz, or - for stdin) and print the result.",
    )
    replay.add_argument("inputs", nargs="+", metavar="FILE", help="log files, plain or gzip; - reads stdin")
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
        "--timezone",
        metavar="ZONE",
        help="IANA zone of the server's local timestamps (default: this host's zone)",
    )
    replay.add_argument(
        "--max-line-length",
        type=_positive_int,
        default=DEFAULT_MAX_LINE,
        metavar="CHARS",
        help=f"skip (and count) longer lines (default {DEFAULT_MAX_LINE})",
    )
    replay.add_argument(
        "--jobs",
        "-j",
        type=_positive_int,
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
    traces.add_argument("--traces-protocol", choices=("http/protobuf", "grpc"), help="OTLP protocol (implies --traces)")
    traces.add_argument(
        "--traces-file",
        metavar="FILE",
        help="write the traces to FILE as OTLP JSON, one export request per line, instead of sending them",
    )
    replay.set_defaults(handler=_replay)

    from agent.config import DEFAULT_PATH

    run = commands.add_parser(
        "run",
        help="supervise the configured servers, follow logs, serve /metrics",
        description="Run the agent: start (or adopt) every [[server]], follow every [[follow]], serve /metrics. "
        "SIGTERM/SIGINT stop the servers and exit; SIGHUP reloads the configuration; SIGUSR2 exits (status 75) "
        "leaving the servers running for the next kvwatch to adopt.",
    )
    run.add_argument("--config", "-c", default=DEFAULT_PATH, metavar="FILE", help=f"default {DEFAULT_PATH}")
    run.set_defaults(handler=_run)

    check = commands.add_parser(
        "check",
        help="validate a configuration and show what each server will be started with",
        description="Validate the configuration; print it resolved, with each server's exact command line and "
        "environment (secrets named, never shown).  Exit 2 on any problem.",
    )
    check.add_argument("--config", "-c", default=DEFAULT_PATH, metavar="FILE", help=f"default {DEFAULT_PATH}")
    check.set_defaults(handler=_check)

    canary = commands.add_parser(
        "canary",
        help="send the same long prompt N times and check that LMCache finds it from the second on",
        description="Send a long prompt N times (request ids kvwatch-canary-...), read each request's LMCache "
        "lookup from the server's log, and report prompt tokens, LMCache hit tokens, vLLM prefix-cache hit and "
        "latency.  Exit 0 when every request from the second on hits, 1 with the likely reason otherwise, 2 when "
        "the canary cannot run.",
    )
    canary.add_argument("--config", "-c", metavar="FILE", help="take URL, log, API key and chunk size from here")
    canary.add_argument("--server", metavar="NAME", help="the [[server]] of --config (default: the only one)")
    canary.add_argument("--url", metavar="URL", help="the server's base URL, e.g. http://127.0.0.1:8000")
    canary.add_argument("--log", metavar="FILE", help="the server's log file (its raw log under kvwatch)")
    canary.add_argument("--requests", "-n", type=_positive_int, default=3, metavar="N", help="default 3")
    canary.add_argument("--prompt-file", metavar="FILE", help="the prompt (default: a built-in one of ~400 tokens)")
    canary.add_argument("--model", metavar="NAME", help="default: the first model the server lists")
    canary.add_argument("--api-key-file", metavar="FILE", help="the server's API key (default: $VLLM_API_KEY)")
    canary.add_argument("--endpoint", choices=("chat", "completions"), default="chat")
    canary.add_argument("--chunk-size", type=_positive_int, metavar="TOKENS", help="LMCache's chunk size (default 256)")
    canary.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="per request (default 120)")
    canary.set_defaults(handler=_canary)

    bench = commands.add_parser(
        "bench",
        help="run a vllm bench command, record its results, compare with earlier runs",
        description="Run `vllm bench throughput|latency|serve ...` (after --), stream its output, and append its "
        "results and parameters to the history in the state directory, where a running kvwatch shows the last "
        "run of each parameter set on /metrics.  --history prints the history, newest first.",
        usage="kvwatch bench [options] -- vllm bench MODE [ARGS...]\n       kvwatch bench --history [options]",
    )
    bench.add_argument("--history", action="store_true", help="print the recorded runs instead of running one")
    bench.add_argument("--config", "-c", metavar="FILE", help="use this configuration's agent.state_dir")
    bench.add_argument("--history-file", metavar="FILE", help=f"default: STATE_DIR/{'bench-history.jsonl'}")
    bench.add_argument("--grafana-url", metavar="URL", help="also mark the run as a Grafana annotation")
    bench.add_argument("--token-file", metavar="FILE", help="Grafana API token (default $GRAFANA_TOKEN)")
    bench.add_argument("command", nargs=argparse.REMAINDER, help="the benchmark command, after --")
    bench.set_defaults(handler=_bench)

    boards = commands.add_parser(
        "dashboards",
        help="export the Grafana dashboards and Prometheus rules, or push them to Grafana",
        description="The Grafana dashboards, the Prometheus rule file and the provisioning files kvwatch ships.",
    )
    actions = boards.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    listing = actions.add_parser("list", help="name the shipped files")
    listing.set_defaults(handler=_dashboards_list)
    exporting = actions.add_parser(
        "export",
        help="write the dashboards, alerts.yml and provisioning files into DIR",
        description="Write the dashboards (for file provisioning or manual import), alerts.yml and the "
        "provisioning files into DIR.",
    )
    exporting.add_argument("directory", metavar="DIR")
    exporting.add_argument(
        "--datasource",
        metavar="UID",
        help="preset the dashboards' datasource variable to this Prometheus datasource uid (for a manual import)",
    )
    exporting.set_defaults(handler=_dashboards_export)
    pushing = actions.add_parser(
        "push",
        help="upload the dashboards to Grafana through its HTTP API (idempotent)",
        description="Create the folder if needed and save every dashboard under its fixed uid, overwriting the "
        "previous version.  The token is read from --token-file or $GRAFANA_TOKEN (a service-account token with "
        "the Editor role); user:password in the URL works too.",
    )
    pushing.add_argument("--grafana-url", required=True, metavar="URL", help="e.g. https://grafana.example:3000")
    pushing.add_argument("--token-file", metavar="FILE", help="file holding the Grafana API token")
    pushing.add_argument("--folder", default="kvwatch", metavar="TITLE", help="dashboard folder (default kvwatch)")
    pushing.add_argument(
        "--prometheus-url",
        metavar="URL",
        help="also create or update the 'kvwatch Prometheus' datasource for this URL and preset the dashboards to it",
    )
    pushing.add_argument(
        "--trace-datasource",
        metavar="UID",
        help="with --prometheus-url: link exemplars (trace_id) to this Tempo or Jaeger datasource",
    )
    pushing.add_argument("--timeout", type=float, default=10.0, metavar="SECONDS", help="per request (default 10)")
    pushing.set_defaults(handler=_dashboards_push)
    return parser


def _canary(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent import config
    from agent.commands import canary

    url, log_path, chunk, api_key = args.url, args.log, args.chunk_size, os.environ.get("VLLM_API_KEY")
    if args.config:
        try:
            loaded = config.load(args.config)
        except config.ConfigError as exc:
            print(f"kvwatch: {exc}", file=sys.stderr)
            return EXIT_USAGE
        servers = [s for s in loaded.servers if args.server in (None, s.name)]
        if len(servers) != 1:
            names = ", ".join(s.name for s in loaded.servers) or "none"
            print(f"kvwatch: name one --server of {args.config} (servers: {names})", file=sys.stderr)
            return EXIT_USAGE
        server = servers[0]
        url = url or server.base_url()
        log_path = log_path or str(server.log_file)
        chunk = chunk or server.chunk_size()
        if server.api_key is not None:
            try:
                api_key = server.api_key.read()
            except (OSError, KeyError) as exc:
                print(f"kvwatch: api_key of {server.name}: {exc}", file=sys.stderr)
                return EXIT_USAGE
    if not url or not log_path:
        print("kvwatch: canary needs --url and --log, or --config (and --server)", file=sys.stderr)
        return EXIT_USAGE
    prompt = canary.DEFAULT_PROMPT
    try:
        if args.prompt_file:
            prompt = Path(args.prompt_file).read_text(encoding="utf-8")
        if args.api_key_file:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        print(f"kvwatch: {exc.filename}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        result = canary.run(
            url,
            log_path,
            requests=args.requests,
            prompt=prompt,
            model=args.model,
            api_key=api_key,
            endpoint=args.endpoint,
            chunk_size=chunk or canary.DEFAULT_CHUNK,
            timeout=args.timeout,
        )
    except canary.CanaryError as exc:
        print(f"kvwatch: canary: {exc}", file=sys.stderr)
        return EXIT_USAGE
    print(result.table())
    print(("ok: " if result.ok else "FAILED: ") + result.verdict)
    return EXIT_OK if result.ok else 1


def _bench(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent import config
    from agent.commands import bench

    history = Path(args.history_file) if args.history_file else None
    if history is None:
        state_dir = Path(config.DEFAULT_STATE_DIR)
        if args.config:
            try:
                state_dir = config.load(args.config).agent.state_dir
            except config.ConfigError as exc:
                print(f"kvwatch: {exc}", file=sys.stderr)
                return EXIT_USAGE
        history = state_dir / bench.HISTORY
    if args.history:
        print(bench.history_table(bench.read_history(history)))
        return EXIT_OK
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        print("kvwatch: bench needs a command after --, e.g. kvwatch bench -- vllm bench latency ...", file=sys.stderr)
        return EXIT_USAGE
    token = _grafana_token(args.token_file) if args.grafana_url else None
    if token is False:
        return EXIT_USAGE
    try:
        code, entry = bench.run(command, history)
    except bench.BenchError as exc:
        print(f"kvwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        print(f"kvwatch: cannot record the run in {history}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    print(f"kvwatch: recorded {entry['mode'] or 'benchmark'} run in {history}: {len(entry['results'])} results")
    if args.grafana_url:
        from agent.commands import dashboards as grafana

        text = f"vllm bench {entry['mode']} {entry['model']} ({bench.params_key(entry['params'])}): " + ", ".join(
            f"{k} {v:g}" for k, v in sorted(entry["results"].items())[:6]
        )
        try:
            grafana.annotate(
                args.grafana_url, token, text, ["kvwatch", "bench", entry["mode"] or "bench"], entry["time"]
            )
        except grafana.PushError as exc:
            print(f"kvwatch: annotation: {exc}", file=sys.stderr)
    return code


def _grafana_token(path: str | None):
    """The Grafana token from ``path`` or $GRAFANA_TOKEN; False (reported) when the file cannot be read."""
    token = os.environ.get("GRAFANA_TOKEN") or None
    if path:
        try:
            with open(path, encoding="utf-8") as handle:
                token = handle.read().strip()
        except OSError as exc:
            print(f"kvwatch: --token-file {path}: {exc.strerror or exc}", file=sys.stderr)
            return False
        if not token:
            print(f"kvwatch: --token-file {path} is empty", file=sys.stderr)
            return False
    return token


def _dashboards_list(args: argparse.Namespace) -> int:
    from agent.commands import dashboards as grafana

    for name, dashboard in grafana.dashboards():
        print(f"{name}\t{dashboard['uid']}\t{dashboard['title']}")
    print("alerts.yml\tPrometheus recording and alerting rules")
    print("provisioning/dashboards.yaml, provisioning/datasources.yaml\tGrafana provisioning")
    return EXIT_OK


def _dashboards_export(args: argparse.Namespace) -> int:
    from pathlib import Path

    from agent.commands import dashboards as grafana

    try:
        written = grafana.export(Path(args.directory), args.datasource)
    except OSError as exc:
        print(f"kvwatch: cannot write {args.directory}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    for path in written:
        print(path)
    return EXIT_OK


def _dashboards_push(args: argparse.Namespace) -> int:
    from agent.commands import dashboards as grafana

    token = _grafana_token(args.token_file)
    if token is False:
        return EXIT_USAGE
    if not args.grafana_url.startswith(("http://", "https://")):
        print(f"kvwatch: --grafana-url must be an http:// or https:// URL, got {args.grafana_url!r}", file=sys.stderr)
        return EXIT_USAGE
    try:
        done = grafana.push(
            args.grafana_url, token, args.folder, args.prometheus_url, args.trace_datasource, timeout=args.timeout
        )
    except grafana.PushError as exc:
        print(f"kvwatch: {exc}", file=sys.stderr)
        return 1
    for line in done:
        print(line)
    return EXIT_OK


def _check(args: argparse.Namespace) -> int:
    from agent import config

    try:
        loaded = config.load(args.config)
    except config.ConfigError as exc:
        print(f"kvwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    sys.stdout.write(config.render(loaded))
    return EXIT_OK


def _setup_logging(level: str) -> None:
    import logging

    # Under systemd the journal adds time and unit; elsewhere the time helps.
    fmt = (
        "%(levelname)s %(name)s: %(message)s"
        if os.environ.get("JOURNAL_STREAM")
        else ("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    logging.basicConfig(level=getattr(logging, level.upper()), format=fmt, stream=sys.stderr)


def _run(args: argparse.Namespace) -> int:
    from agent import config
    from agent.commands.run import Daemon

    try:
        loaded = config.load(args.config)
    except config.ConfigError as exc:
        print(f"kvwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    _setup_logging(loaded.agent.log_level)
    try:
        daemon = Daemon(loaded)
    except config.ConfigError as exc:
        print(f"kvwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except OSError as exc:
        where = f"{loaded.metrics.address or '*'}:{loaded.metrics.port}"
        print(f"kvwatch: cannot serve metrics on {where} or use {loaded.agent.state_dir}: {exc}", file=sys.stderr)
        return 1
    return daemon.run()


def _replay(args: argparse.Namespace) -> int:
    # Imported here so that --help and --version do not load prometheus_client and the parsers.
    from agent.commands.replay import Replay, event_writer, server_name_for
    from agent.sinks import prometheus as metrics
    from agent.sinks import summary
    from agent.timezones import resolve_timezone

    try:
        tz = resolve_timezone(args.timezone)
    except ValueError as exc:
        print(f"kvwatch: --timezone: {exc}", file=sys.stderr)
        return EXIT_USAGE
    # Open every input first, so that a bad name fails before any output.
    opened = []
    try:
        for name in args.inputs:
            opened.append(open_input(name))
    except InputError as exc:
        for source in opened:
            source.close()
        print(f"kvwatch: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if sum(1 for source in opened if source.name == "-") > 1:
        print("kvwatch: stdin (-) given more than once", file=sys.stderr)
        return EXIT_USAGE

    tracing = None
    if args.traces or args.traces_endpoint or args.traces_protocol or args.traces_file:
        try:
            tracing = _replay_tracing(args)
        except (ValueError, OSError) as exc:
            for source in opened:
                source.close()
            print(f"kvwatch: traces: {exc}", file=sys.stderr)
            return EXIT_USAGE

    if args.format == "unmatched":
        return _replay_unmatched(opened, args.max_line_length)

    replay = Replay(tz, args.max_line_length)
    out = sys.stdout
    builders = []
    for source in opened:
        server = args.server or server_name_for(source.name)
        on_event = event_writer(out, source.name) if args.format == "events" else None
        if tracing is not None:
            builder = _trace_builder(tracing, replay.stats_for(server), tz)
            builders.append(builder)
            on_event = _traced(builder, on_event)
        try:
            result = replay.run(
                source,
                server,
                on_event,
                track_time=args.format == "summary",
                jobs=args.jobs if on_event is None else 1,
            )
        finally:
            source.close()
        if result.error:
            print(f"kvwatch: {source.name}: read stopped early: {result.error}", file=sys.stderr)

    status = EXIT_OK
    if tracing is not None:
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
        if lost:
            status = 1

    servers = list(replay.servers.values())
    if args.format == "prometheus":
        from prometheus_client.exposition import generate_latest

        from agent.families import RenderedAtScrape
        from agent.sinks.otlp import trace_families

        extra = [RenderedAtScrape(lambda: trace_families(tracing, builders))] if tracing is not None else []
        out.write(generate_latest(metrics.registry_for(lambda: servers, *extra)).decode("utf-8"))
    elif args.format == "summary":
        out.write(summary.render(servers))
    out.flush()
    return status


def _replay_unmatched(opened: list, max_line: int) -> int:
    from agent.commands.replay import UnmatchedShapes

    shapes = UnmatchedShapes()
    for source in opened:
        try:
            _lines, error = shapes.read(source.stream, max_line)
        finally:
            source.close()
        if error:
            print(f"kvwatch: {source.name}: read stopped early: {error}", file=sys.stderr)
    shapes.render(sys.stdout)
    sys.stdout.flush()
    return EXIT_OK


def _replay_tracing(args: argparse.Namespace):
    from agent.sinks import otlp as otel

    if args.traces_file:
        exporter = otel.OtlpJsonFileExporter(open(args.traces_file, "w", encoding="utf-8"))  # noqa: SIM115
    else:
        exporter = otel.make_exporter(args.traces_protocol, args.traces_endpoint)
    # A replay has all the time it needs: it waits for the exporter rather than drop spans.
    return otel.Tracing(exporter, wait_when_full=True)


def _trace_builder(tracing, stats, tz):
    from datetime import UTC, datetime

    from agent.sinks.traces import TraceBuilder
    from parsers import Clock

    # The replay gives each input its clock; the first event hands it over.
    return TraceBuilder(
        stats, Clock(tz, datetime.now(UTC)), tracing.writer(stats.server, lambda: stats.model), sampled=tracing.sampled
    )


def _traced(builder, then):
    def on_event(event, line, clock):
        if builder.clock is not clock:
            builder.clock = clock
        builder.observe(event)
        if then is not None:
            then(event, line, clock)

    return on_event


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.handler(args)
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly, as other filters do.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
