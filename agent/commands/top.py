"""``kvwatch top``: a live terminal view of each server -- state, throughput, queues, KV usage, cache hits.

It reads kvwatch's own ``/metrics`` (``--url``, or the address ``--config``
names, with that file's TLS and basic-auth settings), or follows log files
itself (``--log FILE``, no daemon needed: the same parsers and numbers, in this
process).  ``--once`` prints one reading as text and ``--json`` as JSON, for
scripts and bug reports.  Drawn with ``rich``; ``q`` (or Ctrl-C) quits; without
colour where ``NO_COLOR`` is set or the output is not a terminal.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from agent.commands import EXIT_OK, CommandError, add_config_option, load_config
from agent.config import DEFAULT_PORT

if TYPE_CHECKING:
    from agent.sinks.status import Snapshot

DEFAULT_URL = f"http://127.0.0.1:{DEFAULT_PORT}"


def add_parser(commands: argparse._SubParsersAction) -> None:
    top = commands.add_parser(
        "top",
        help="a live terminal view of the servers: state, throughput, queues, KV usage, cache hits",
        description="Show each server kvwatch watches, refreshed every --interval seconds: state, uptime and "
        "restarts, model and versions, requests/s, prompt and generation throughput, running and waiting, KV "
        "cache usage, vLLM's prefix-cache and LMCache hit ratios, errors and what the alert rules would fire "
        "on, with sparklines.  Reads a running kvwatch's /metrics, or follows log files itself (--log).",
    )
    where = top.add_mutually_exclusive_group()
    where.add_argument("--url", metavar="URL", help=f"a running kvwatch (default {DEFAULT_URL})")
    add_config_option(where, "the running kvwatch's configuration: its address, TLS and basic auth", default=False)
    where.add_argument(
        "--log", metavar="FILE", action="append", help="follow this log file (again for more), no daemon needed"
    )
    top.add_argument("--user", metavar="NAME", help="basic-auth user for --url (password from $KVWATCH_PASSWORD)")
    top.add_argument("--interval", type=float, default=1.0, metavar="SECONDS", help="refresh period (default 1)")
    top.add_argument("--once", action="store_true", help="print one reading as text and exit")
    top.add_argument("--json", action="store_true", help="print one reading as JSON and exit")
    top.set_defaults(handler=main)


# -- where the readings come from --------------------------------------------------------------


Reading = Callable[[], "Snapshot"]


def _fetcher(url: str, user: str | None, password: str | None, context: ssl.SSLContext | None) -> Reading:
    from agent.sinks.status import read_snapshot

    base = url.rstrip("/").removesuffix("/metrics")
    headers = {"Accept": "text/plain"}
    if user is not None:
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password or ''}".encode()).decode()

    def get(path: str, missing_ok: bool = False) -> str | None:
        target = base + path
        request = urllib.request.Request(target, headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=10, context=context) as response:
                return response.read().decode()
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None  # a kvwatch from before /api/requests
            raise CommandError(f"{target}: HTTP {exc.code} {exc.reason}") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CommandError(f"{target}: cannot reach kvwatch ({reason}); is `kvwatch run` running?") from None

    def read():
        metrics = get("/metrics") or ""
        requests = get("/api/requests", missing_ok=True)
        return read_snapshot(metrics, json.loads(requests)["servers"] if requests else None)

    return read


def _from_config(path: str) -> Reading:
    config = load_config(path)
    metrics = config.metrics
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "::1"}.get(metrics.address, metrics.address)
    host = f"[{host}]" if ":" in host else host
    context = None
    if metrics.tls is not None:
        context = ssl.create_default_context(cafile=str(metrics.tls.cert_file))
        context.check_hostname = False  # the certificate names the host, not the loopback address read here
    user = password = None
    if metrics.basic_auth:
        user, secret = next(iter(metrics.basic_auth.items()))
        try:
            password = secret.read()
        except (OSError, KeyError) as exc:
            raise CommandError(f"{config.path}: metrics.basic_auth.{user}: cannot read the password: {exc}") from None
    scheme = "https" if context is not None else "http"
    return _fetcher(f"{scheme}://{host}:{metrics.port}", user, password, context)


class _FollowedLogs:
    """``--log``: the files followed in this process (from their start), read into kvwatch's own numbers."""

    def __init__(self, paths: list[str]) -> None:
        from datetime import UTC

        from agent.pipeline import SourcePipeline
        from agent.sinks.prometheus import registry_for
        from agent.sinks.recent import REQUESTS_SINK, joined
        from agent.sources.positions import PositionStore
        from agent.sources.tail import Source, Tailer

        for path in paths:
            if not Path(path).is_file():
                raise CommandError(f"{path}: no such file")
        self.pipelines = {}
        stems = [Path(path).name.split(".log")[0] or Path(path).name for path in paths]
        for path, stem in zip(paths, stems, strict=True):
            # A file's name, or its folder's too where two files share one (vllm-a/server.log, vllm-b/server.log).
            name = stem if stems.count(stem) == 1 else f"{Path(path).resolve().parent.name}/{stem}"
            self.pipelines[name] = SourcePipeline(name, _local_zone() or UTC, 4 * 1024 * 1024, tell_lmcache_server=True)
        self.recent = {}
        for name, pipeline in self.pipelines.items():  # each request's lines joined, for the request rows
            self.recent[name], joiner = joined(pipeline.stats)
            pipeline.listen(REQUESTS_SINK, joiner.observe)
        self.tailer = Tailer(
            lambda source, files: self.pipelines[source].feed_files(files),
            PositionStore(None),
            poll_interval=0.25,
        )
        for (name, pipeline), path in zip(self.pipelines.items(), paths, strict=True):
            self.tailer.add(Source(name, (str(Path(path).resolve()),), pipeline.stats.skipped, start_at_end=False))
        self.registry = registry_for(lambda: [p.stats for p in self.pipelines.values()])
        self.following = False

    def follow(self) -> None:
        """Keep reading in the tailer's own thread (the live view)."""
        self.tailer.start()
        self.following = True

    def read(self):
        from prometheus_client import generate_latest

        from agent.sinks.status import read_snapshot

        for pipeline in self.pipelines.values():
            pipeline.lock.acquire()
        try:
            text = generate_latest(self.registry).decode()
            requests = {name: recent.as_list() for name, recent in self.recent.items()}
        finally:
            for pipeline in self.pipelines.values():
                pipeline.lock.release()
        return read_snapshot(text, requests)

    def settle(self) -> None:
        """Read the files to their current end, in this thread (--once, --json: no reading thread runs)."""
        while self.tailer.cycle():
            pass

    def stop(self) -> None:
        if self.following:
            self.tailer.stop()


def _local_zone():
    from agent.timezones import resolve_timezone

    return resolve_timezone(None)


def kvwatch_reader(url: str | None, config: str | None, user: str | None = None) -> Reading:
    """How to read a running kvwatch: at ``url``, else where ``config`` serves, else the default address."""
    if url is None and config is not None:
        return _from_config(config)
    return _fetcher(url or DEFAULT_URL, user, os.environ.get("KVWATCH_PASSWORD"), None)


# -- the command -------------------------------------------------------------------------------


def main(args: argparse.Namespace) -> int:
    from agent.sinks import terminal
    from agent.sinks.status import Trend

    if args.interval <= 0:
        raise CommandError("--interval must be positive")
    followed = None
    if args.log:
        followed = _FollowedLogs(args.log)
        read = followed.read
    else:
        read = kvwatch_reader(args.url, args.config, args.user)
    trend = Trend()
    try:
        if args.once or args.json:
            if followed is not None:
                followed.settle()
            trend.add(time.time(), read())
            if args.json:
                json.dump(trend.latest.as_dict(), sys.stdout, indent=1)
                sys.stdout.write("\n")
            else:
                terminal.print_once(trend)
            return EXIT_OK
        if followed is not None:
            followed.follow()
        terminal.live(trend, read, args.interval)
        return EXIT_OK
    finally:
        if followed is not None:
            followed.stop()
