"""The ``kvwatch`` command line."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from agent import __version__
from agent.reading import DEFAULT_MAX_LINE, InputError, open_input

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
        choices=("summary", "prometheus", "events"),
        default="summary",
        help="summary: a short report (default); prometheus: the metrics exposition after the whole "
        "input; events: one JSON object per event",
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
    return parser


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
    from agent.daemon import Daemon

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
    from agent import metrics, summary
    from agent.replay import Replay, event_writer, server_name_for
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

    replay = Replay(tz, args.max_line_length)
    out = sys.stdout
    for source in opened:
        server = args.server or server_name_for(source.name)
        on_event = event_writer(out, source.name) if args.format == "events" else None
        try:
            result = replay.run(
                source,
                server,
                on_event,
                track_time=args.format == "summary",
                jobs=args.jobs if args.format != "events" else 1,
            )
        finally:
            source.close()
        if result.error:
            print(f"kvwatch: {source.name}: read stopped early: {result.error}", file=sys.stderr)

    servers = list(replay.servers.values())
    if args.format == "prometheus":
        from prometheus_client.exposition import generate_latest

        out.write(generate_latest(metrics.registry_for(lambda: servers)).decode("utf-8"))
    elif args.format == "summary":
        out.write(summary.render(servers))
    out.flush()
    return EXIT_OK


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
