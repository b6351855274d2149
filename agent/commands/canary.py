"""``kvwatch canary``: prove the KV cache works by sending the same long prompt again and again.

The user's own check, automated: N identical requests through the server's
OpenAI-compatible API, each with a request id kvwatch recognises
(``X-Request-Id: kvwatch-canary-<run>-<n>``; vLLM names the request
``chatcmpl-kvwatch-canary-<run>-<n>``), then the server's log is read from
where it stood before the first request, and each request's LMCache lookup
(hit tokens, and vLLM's own prefix-cache hit, ``Inference Engine computed
tokens``) is matched to its response.  The cache works when every request
from the second on hits; otherwise the verdict says the likeliest reason.

Canary requests are kept out of a server's main LMCache numbers (see
:func:`is_canary`): they are counted under ``kvwatch_canary_*`` instead, so an
alert on the hit ratio sees real traffic only.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.core import Metric

from agent.commands import EXIT_FAILED, EXIT_OK, CommandError, add_config_option, load_config, positive_int
from agent.exposition import families
from agent.families import computed, counter, gauge, keyed, value_of
from agent.periodic import Periodic
from agent.sources.lines import LineSplitter
from parsers import LogStream
from parsers import events as ev
from parsers.ids import CANARY_MARK, is_canary

log = logging.getLogger("kvwatch.canary")

DEFAULT_PROMPT = (
    "You are checking whether a key-value cache is working. Repeat this sentence back. "
    "The cache should find this prompt again on the second request and on every one after it. "
) * 12
DEFAULT_CHUNK = 256  # LMCache's default chunk_size


def canary_key(request_id: str) -> str:
    """``kvwatch-canary-<run>-<n>`` from any form vLLM and LMCache log it in
    (``chatcmpl-`` or ``cmpl-`` before it; a prompt index and the engine's suffix after)."""
    rest = request_id[request_id.index(CANARY_MARK) + len(CANARY_MARK) :].split("-")
    return f"{CANARY_MARK}{rest[0]}-{rest[1]}" if len(rest) > 1 else request_id


@dataclass
class CanaryRequest:
    request_id: str
    latency: float | None = None
    prompt_tokens: int | None = None
    error: str | None = None
    lookups: list[ev.LmcacheLookup] = field(default_factory=list)  # the in-process connector's
    prefetches: list[ev.LmcachePrefetch] = field(default_factory=list)  # LMCache's multiprocess server's
    stored_tokens: int = 0
    lookup_given_up_after: int | None = None  # LMCache's asynchronous lookup gave up after these seconds
    tokens_per_key: int = DEFAULT_CHUNK  # a multiprocess server's key: one chunk (one KV group, one rank)

    @property
    def looked_up(self) -> bool:
        return bool(self.lookups or self.prefetches)

    @property
    def hit_tokens(self) -> int | None:
        """What LMCache found: the lookup's hit tokens, or a prefetch's keys in tokens."""
        if self.lookups:
            return self.lookups[0].hit_tokens
        return self.prefetches[0].hit_keys * self.tokens_per_key if self.prefetches else None

    @property
    def prefix_cache_tokens(self) -> int | None:
        return self.lookups[0].engine_computed_tokens if self.lookups else None


@dataclass
class LogFindings:
    """What the logs said beside the canary's own requests."""

    degraded: bool = False  # LMCache said it runs without a connector
    unhealthy: bool = False  # its health monitor held it unhealthy (its degraded mode: lookups skipped)
    mp_lookups: int = 0  # lookups LMCache's MP connector reported (vLLM's KV Transfer metrics lines)
    mp_stored_tokens: int = 0  # tokens a multiprocess server stored (its lines name no request)

    @property
    def mp(self) -> bool:
        """The multiprocess connector is at work: a miss there logs no line of its own."""
        return bool(self.mp_lookups or self.mp_stored_tokens)


@dataclass
class CanaryResult:
    requests: list[CanaryRequest]
    ok: bool
    verdict: str
    reason: str = "works"  # a short code for metrics: see :func:`judge`
    degraded: bool = False

    @property
    def hit_tokens(self) -> int:
        """The least LMCache found for a request after the first (0 if any missed)."""
        later = [r.hit_tokens or 0 for r in self.requests[1:]]
        return min(later) if later else 0

    @property
    def latency(self) -> float | None:
        times = [r.latency for r in self.requests if r.latency is not None]
        return sum(times) / len(times) if times else None

    def table(self) -> str:
        rows = [f"{'request':44} {'prompt':>7} {'LMCache hit':>12} {'vLLM prefix':>12} {'latency':>9}"]
        for r in self.requests:

            def show(value) -> str:
                return "-" if value is None else str(value)

            latency = f"{r.latency * 1000:.0f} ms" if r.latency is not None else (r.error or "-")
            rows.append(
                f"{r.request_id:44} {show(r.prompt_tokens):>7} {show(r.hit_tokens):>12} "
                f"{show(r.prefix_cache_tokens):>12} {latency:>9}"
            )
        return "\n".join(rows)


class CanaryError(Exception):
    """The canary could not run at all (no server, no log); the message says which."""


def _post(url: str, body: dict, headers: dict, timeout: float) -> dict:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json", **headers})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return json.loads(response.read())


def _get(url: str, headers: dict, timeout: float) -> dict:
    with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
        return json.loads(response.read())


def served_model(base_url: str, headers: dict, timeout: float) -> str:
    try:
        models = _get(f"{base_url}/v1/models", headers, timeout)["data"]
    except urllib.error.HTTPError as exc:
        hint = " (API key?)" if exc.code == 401 else ""
        raise CanaryError(f"{base_url}/v1/models answered {exc.code}{hint}") from None
    except (OSError, ValueError, KeyError) as exc:
        raise CanaryError(f"cannot reach the server at {base_url}: {exc}") from None
    if not models:
        raise CanaryError(f"{base_url} serves no model")
    return models[0]["id"]


def run(
    base_url: str,
    log_paths: list[str],
    requests: int = 3,
    prompt: str = DEFAULT_PROMPT,
    model: str | None = None,
    api_key: str | None = None,
    endpoint: str = "chat",
    chunk_size: int = DEFAULT_CHUNK,
    timeout: float = 120.0,
    settle: float = 10.0,
) -> CanaryResult:
    """Send the canary and judge it from the logs at ``log_paths`` (the server's raw log; in LMCache's
    multiprocess mode, the LMCache server's log too)."""
    base_url = base_url.rstrip("/")
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    starts = {}
    for path in log_paths:
        try:
            starts[path] = os.path.getsize(path)
        except OSError as exc:
            raise CanaryError(f"cannot read the server's log {path}: {exc.strerror or exc}") from None
    model = model or served_model(base_url, headers, timeout)
    run_id = secrets.token_hex(4)
    sent: list[CanaryRequest] = []
    for n in range(1, requests + 1):
        canary = CanaryRequest(f"{CANARY_MARK}{run_id}-{n}")
        if endpoint == "chat":
            url = f"{base_url}/v1/chat/completions"
            body = {"model": model, "messages": [{"role": "user", "content": prompt}], "max_tokens": 4}
        else:
            url = f"{base_url}/v1/completions"
            body = {"model": model, "prompt": prompt, "max_tokens": 4}
        began = time.monotonic()
        try:
            answer = _post(url, body, {**headers, "X-Request-Id": canary.request_id}, timeout)
            canary.latency = time.monotonic() - began
            canary.prompt_tokens = (answer.get("usage") or {}).get("prompt_tokens")
        except urllib.error.HTTPError as exc:
            canary.error = f"HTTP {exc.code}"
        except (OSError, ValueError) as exc:
            canary.error = str(exc)
        sent.append(canary)
    for canary in sent:
        canary.tokens_per_key = chunk_size
    findings = _read_logs(starts, sent, settle)
    ok, reason, verdict = judge(sent, findings, chunk_size)
    return CanaryResult(sent, ok, verdict, reason, findings.degraded)


class _LogReader:
    """One log read on from an offset, split and parsed as every reader of kvwatch does."""

    def __init__(self, path: str, start: int) -> None:
        self.path = path
        self.offset = start
        self.splitter = LineSplitter()  # bad lines skipped, never guessed at
        self.stream = LogStream()

    def events(self) -> Iterator[ev.Event]:
        with open(self.path, "rb") as handle:
            handle.seek(self.offset)
            data = handle.read()
        self.offset += len(data)
        for line in self.splitter.feed(data):
            if line is not None:
                yield from self.stream.feed(line)
        yield from self.stream.settle()  # what is written so far is all there is for now


def _read_logs(starts: dict[str, int], sent: list[CanaryRequest], settle: float) -> LogFindings:
    """Attach each request's lookup, prefetch and store lines, until every answered request has its
    own (a multiprocess server's miss has none: then from the second request on) or ``settle`` ends."""
    by_id = {c.request_id: c for c in sent}
    findings = LogFindings()
    readers = [_LogReader(path, start) for path, start in starts.items()]
    deadline = time.monotonic() + settle
    while True:
        for reader in readers:
            for event in reader.events():
                _note(event, by_id, findings)
        answered = [c for c in sent if c.error is None]
        done = all(c.lookups for c in answered) or (findings.mp and all(c.prefetches for c in answered[1:]))
        if done or time.monotonic() >= deadline:
            return findings
        time.sleep(0.2)


def _note(event: ev.Event, by_id: dict[str, CanaryRequest], findings: LogFindings) -> None:
    if isinstance(event, ev.LmcacheDegraded) or (
        isinstance(event, ev.LmcacheLookupTimeout) and event.request_id is None
    ):
        findings.degraded = True  # its start failed, or a lookup RPC timed out: no request's own lookup
    elif isinstance(event, ev.LmcacheUnhealthySkip) or (isinstance(event, ev.LmcacheHealth) and not event.healthy):
        findings.unhealthy = True
    elif isinstance(event, ev.KvTransferStats) and event.values:
        findings.mp_lookups += int(event.values.get("LMCache MP lookup count", 0))
    request_id = getattr(event, "request_id", None)
    if request_id is None and isinstance(event, ev.LmcacheStore):
        findings.mp_stored_tokens += event.stored_tokens  # the multiprocess server's "Stored N tokens in S seconds"
    if not is_canary(request_id):
        return
    canary = by_id.get(canary_key(request_id))
    if canary is None:
        return
    if isinstance(event, ev.LmcacheLookup):
        canary.lookups.append(event)
    elif isinstance(event, ev.LmcachePrefetch):
        canary.prefetches.append(event)
    elif isinstance(event, ev.LmcacheStore):
        canary.stored_tokens += event.stored_tokens
    elif isinstance(event, ev.LmcacheLookupTimeout):
        canary.lookup_given_up_after = event.timeout_seconds


REASONS = (
    "works",
    "too_few",
    "no_answer",
    "degraded",
    "not_loaded",
    "lookup_timeout",
    "short_prompt",
    "hash_seed",
    "no_hits",
)


def judge(sent: list[CanaryRequest], findings: LogFindings, chunk_size: int) -> tuple[bool, str, str]:
    """(ok, a reason of :data:`REASONS`, the verdict in one or two sentences)."""
    answered = [c for c in sent if c.error is None]
    if len(sent) < 2:
        return False, "too_few", "send at least two requests: the first one fills the cache, the next ones find it"
    if not answered:
        return False, "no_answer", f"the server answered none of the canary's requests ({sent[0].error})"
    looked_up = [c for c in answered if c.looked_up]
    if findings.unhealthy and not any(c.hit_tokens for c in looked_up):
        return (
            False,
            "degraded",
            (
                "LMCache's health monitor holds it unhealthy (its degraded mode: 'HealthMonitor: System unhealthy'): "
                "it skips lookups, loads and stores until its remote backend passes its health checks again"
            ),
        )
    if findings.degraded and not any(c.hit_tokens for c in looked_up):
        return (
            False,
            "degraded",
            (
                "LMCache runs degraded: it could not start its connector (its log says so, e.g. 'No supported ... "
                "connector found', and lookups time out), so every lookup is a miss"
            ),
        )
    if not looked_up and not findings.mp:
        return (
            False,
            "not_loaded",
            (
                "the LMCache connector is not loaded: no LMCache lookup line names the canary's requests (start vLLM "
                'with --kv-transfer-config \'{"kv_connector":"LMCacheConnectorV1","kv_role":"kv_both"}\', and '
                "keep LMCache's log level at INFO; in multiprocess mode give the LMCache server's log too)"
            ),
        )
    later = answered[1:]
    if all(c.hit_tokens for c in later):
        if any(c.prefetches for c in later):
            keys = ", ".join(str(c.prefetches[0].hit_keys) for c in later)
            found = f"LMCache's server found {keys} keys (chunks of {chunk_size} tokens)"
        else:
            found = "LMCache found " + ", ".join(str(c.hit_tokens) for c in later) + " tokens"
        return True, "works", f"the cache works: {found} of the repeated prompt from the second request on"
    given_up = [c for c in later if c.lookup_given_up_after is not None and not c.hit_tokens]
    if given_up:
        return (
            False,
            "lookup_timeout",
            (
                f"LMCache gave up on the lookup of {len(given_up)} of the {len(later)} later requests after "
                f"{given_up[0].lookup_given_up_after} s (its lookup_timeout_ms) and reported no hit, so vLLM computed "
                "the prompt: is its storage backend slow or unreachable, or lookup_timeout_ms too short for it?"
            ),
        )
    tokens = next((c.lookups[0].total_tokens for c in looked_up if c.lookups), None) or answered[0].prompt_tokens or 0
    if tokens and tokens < chunk_size:
        return (
            False,
            "short_prompt",
            (
                f"the prompt ({tokens} tokens) is shorter than LMCache's chunk size ({chunk_size}): nothing is stored "
                "whole, so nothing can hit; use a longer prompt (--prompt-file) or a smaller LMCACHE_CHUNK_SIZE"
            ),
        )
    if findings.mp:
        return (
            False,
            "no_hits",
            (
                "LMCache's multiprocess server found nothing of the repeated prompt (no 'Prefetch request completed' "
                f"line for a later request{'; it stored the first' if findings.mp_stored_tokens else ''}): "
                "is its L1 large enough (--l1-size-gb), and does vLLM reach it (lmcache.mp.host and port)?"
            ),
        )
    if answered[0].stored_tokens and not any(c.hit_tokens for c in later):
        return (
            False,
            "hash_seed",
            (
                "LMCache stored the first request but later lookups found nothing: the scheduler and the workers hash "
                "tokens differently (start the server with PYTHONHASHSEED=0), or the cache was evicted at once "
                "(max_local_cpu_size too small)"
            ),
        )
    return (
        False,
        "no_hits",
        "LMCache looked the requests up but found nothing of the repeated prompt (was anything stored?)",
    )


class PeriodicCanary:
    """``kvwatch run``'s canary for one server: every ``interval`` while the server is running.

    Runs in its own thread, so a slow server never holds up supervision; the
    first run comes as soon as the server is running.  ``last`` and the run
    counts feed the ``kvwatch_canary_*`` series."""

    def __init__(self, name: str, settings, running) -> None:
        self.name = name
        self.settings = settings  # the server's ServerConfig
        self.running = running  # () -> bool
        self.last: CanaryResult | None = None
        self.last_time: float | None = None
        self.runs = dict.fromkeys(("ok", "failed", "error"), 0)
        self.error: str | None = None
        self._loop = Periodic(f"kvwatch-canary {name}", self._turn)

    def start(self) -> None:
        self._loop.start()

    def stop(self) -> None:
        self._loop.stop()

    def _turn(self) -> float:
        """One canary run, as soon as the server is running; returns the wait before the next."""
        if not self.running():
            return 1.0
        server = self.settings
        try:
            api_key = server.api_key.read() if server.api_key is not None else None
            result = run(
                server.base_url(),
                server_logs(server),
                requests=server.canary_requests,
                api_key=api_key,
                chunk_size=server.chunk_size(),
            )
        except (CanaryError, OSError, KeyError) as exc:
            self.runs["error"] += 1
            self.error = str(exc)
            self.last = None
            log.warning("canary of %s could not run: %s", self.name, exc)
        else:
            self.runs["ok" if result.ok else "failed"] += 1
            self.last, self.error = result, None
            if not result.ok:
                log.warning("canary of %s failed: %s", self.name, result.verdict)
        self.last_time = time.time()
        return server.canary_interval

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [([self.name], self)])


def _verdict(canary: PeriodicCanary, labels: tuple[str, ...]) -> Iterable:
    if canary.last_time is None:
        return []
    last = canary.last
    reason = last.reason if last is not None else "error"
    return [((reason,), 1 if last is not None and last.ok else 0)]


def _of_last(attribute: str):
    def value(canary: PeriodicCanary):
        return getattr(canary.last, attribute) if canary.last is not None and canary.last_time is not None else None

    return computed(value)


SPECS = (
    gauge(
        "kvwatch_canary_ok",
        "1 when the last periodic canary found the repeated prompt from the second request on; reason: works, "
        "not_loaded, degraded, lookup_timeout, short_prompt, hash_seed, no_hits, no_answer, error.",
        _verdict,
        labels="reason",
        doc=(
            "1 when the last periodic canary found the repeated prompt from the second request on; `reason`: "
            "`works`, `not_loaded`, `degraded`, `lookup_timeout` (LMCache gave up on a later request's lookup), "
            "`short_prompt`, `hash_seed`, `no_hits`, `no_answer`, `error` (could not run)"
        ),
    ),
    counter(
        "kvwatch_canary_runs_total",
        "Periodic canary runs: ok, failed (the cache did not hit), error (it could not run).",
        keyed("runs"),
        labels="result",
        doc="periodic canary runs: `ok`, `failed`, `error`",
    ),
    gauge(
        "kvwatch_canary_last_run_timestamp_seconds",
        "When the last periodic canary ran.",
        value_of("last_time"),
        doc="when the last canary ran",
    ),
    gauge(
        "kvwatch_canary_last_hit_tokens",
        "LMCache hit tokens of the last canary: the least of any request after the first.",
        _of_last("hit_tokens"),
        doc="LMCache hit tokens of the last canary (the least of any request after the first)",
        native="`LMCache hit tokens` of the canary's lookups",
    ),
    gauge("kvwatch_canary_last_latency_seconds", "Mean latency of the last canary's requests.", _of_last("latency")),
)


# -- the command ----------------------------------------------------------------------------


def add_parser(commands: argparse._SubParsersAction) -> None:
    canary = commands.add_parser(
        "canary",
        help="send the same long prompt N times and check that LMCache finds it from the second on",
        description="Send a long prompt N times (request ids kvwatch-canary-...), read each request's LMCache "
        "lookup from the server's log, and report prompt tokens, LMCache hit tokens, vLLM prefix-cache hit and "
        "latency.  Exit 0 when every request from the second on hits, 1 with the likely reason otherwise, 2 when "
        "the canary cannot run.",
    )
    add_config_option(canary, "take URL, log, API key and chunk size from here", default=False)
    canary.add_argument("--server", metavar="NAME", help="the [[server]] of --config (default: the only one)")
    canary.add_argument("--url", metavar="URL", help="the server's base URL, e.g. http://127.0.0.1:8000")
    canary.add_argument(
        "--log",
        metavar="FILE",
        action="append",
        help="the server's log file (its raw log under kvwatch); again for the LMCache server's log in "
        "multiprocess mode",
    )
    canary.add_argument("--requests", "-n", type=positive_int, default=3, metavar="N", help="default 3")
    canary.add_argument("--prompt-file", metavar="FILE", help="the prompt (default: a built-in one of ~400 tokens)")
    canary.add_argument("--model", metavar="NAME", help="default: the first model the server lists")
    canary.add_argument("--api-key-file", metavar="FILE", help="the server's API key (default: $VLLM_API_KEY)")
    canary.add_argument(
        "--endpoint",
        choices=("chat", "completions"),
        default="chat",
        help="the API the prompt goes to: /v1/chat/completions (default) or /v1/completions",
    )
    canary.add_argument("--chunk-size", type=positive_int, metavar="TOKENS", help="LMCache's chunk size (default 256)")
    canary.add_argument("--timeout", type=float, default=120.0, metavar="SECONDS", help="per request (default 120)")
    canary.set_defaults(handler=main)


def server_logs(server) -> list[str]:
    """The logs a configured server's LMCache lines are in: its raw log, and its LMCache server's."""
    lmcache_log = server.lmcache_log()
    return [str(server.log_file), *((str(lmcache_log),) if lmcache_log is not None else ())]


def _target(args: argparse.Namespace) -> tuple[str | None, list[str] | None, int | None, str | None]:
    """URL, logs, chunk size and API key: from the options, else from the configured server."""
    url, log_paths, chunk, api_key = args.url, args.log, args.chunk_size, os.environ.get("VLLM_API_KEY")
    if args.config:
        loaded = load_config(args.config)
        servers = [s for s in loaded.servers if args.server in (None, s.name)]
        if len(servers) != 1:
            names = ", ".join(s.name for s in loaded.servers) or "none"
            raise CommandError(f"name one --server of {args.config} (servers: {names})")
        server = servers[0]
        url = url or server.base_url()
        log_paths = log_paths or server_logs(server)
        chunk = chunk or server.chunk_size()
        if server.api_key is not None:
            try:
                api_key = server.api_key.read()
            except (OSError, KeyError) as exc:
                raise CommandError(f"api_key of {server.name}: {exc}") from None
    return url, log_paths, chunk, api_key


def main(args: argparse.Namespace) -> int:
    url, log_paths, chunk, api_key = _target(args)
    if not url or not log_paths:
        raise CommandError("canary needs --url and --log, or --config (and --server)")
    prompt = DEFAULT_PROMPT
    try:
        if args.prompt_file:
            prompt = Path(args.prompt_file).read_text(encoding="utf-8")
        if args.api_key_file:
            api_key = Path(args.api_key_file).read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise CommandError(f"{exc.filename}: {exc.strerror}") from None
    try:
        result = run(
            url,
            log_paths,
            requests=args.requests,
            prompt=prompt,
            model=args.model,
            api_key=api_key,
            endpoint=args.endpoint,
            chunk_size=chunk or DEFAULT_CHUNK,
            timeout=args.timeout,
        )
    except CanaryError as exc:
        raise CommandError(f"canary: {exc}") from None
    print(result.table())
    print(("ok: " if result.ok else "FAILED: ") + result.verdict)
    return EXIT_OK if result.ok else EXIT_FAILED
