"""What may become a label value: a bounded set, so that no log content can grow the series.

A scanner probing random URLs, a client sending any method, a benchmark printing
any statistic: each is folded into a known value here before it is counted.
"""

from __future__ import annotations

from collections.abc import Callable, Container
from http import HTTPStatus
from typing import Any

from parsers import events as ev

# Routes vLLM serves (those of its API server's routers in 0.32, and older names); any other path is reported
# as "other" so that a scanner probing random URLs cannot grow the label set.
KNOWN_ROUTES = frozenset(
    (
        # OpenAI, Anthropic and Cohere APIs
        "/v1/chat/completions",
        "/v1/completions",
        "/v1/embeddings",
        "/v1/models",
        "/v1/responses",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/audio/transcriptions",
        "/v1/audio/translations",
        "/v1/realtime",
        "/v1/score",
        "/v1/rerank",
        "/v2/rerank",
        "/v2/embed",
        "/cohere/v2/chat",
        "/cohere/v2/chat/render",
        "/rerank",
        "/score",
        "/classify",
        "/pooling",
        "/invocations",
        "/generative_scoring",
        "/v1/systemone",
        "/v1/load_lora_adapter",
        "/v1/unload_lora_adapter",
        # rendering without generating, and disaggregated serving's token-in, token-out API
        "/v1/chat/completions/batch",
        "/v1/chat/completions/render",
        "/v1/chat/completions/derender",
        "/v1/completions/render",
        "/v1/completions/derender",
        "/v1/messages/render",
        "/v1/responses/render",
        "/inference/v1/generate",
        "/inference/v1/abort_requests",
        "/abort_requests",
        # health, readiness (the data-parallel supervisor's too) and what the server is
        "/health",
        "/ready",
        "/readyz",
        "/metrics",
        "/ping",
        "/version",
        "/load",
        "/server_info",
        "/kv_event_sources",
        "/tokenize",
        "/detokenize",
        "/tokenizer_info",
        "/get_tokenizer_info",
        "/openapi.json",
        "/docs",
        "/redoc",
        # operating it: sleep, caches, profiling, scaling, fault tolerance, weight updates of RL training
        "/is_sleeping",
        "/sleep",
        "/wake_up",
        "/reset_prefix_cache",
        "/reset_mm_cache",
        "/reset_encoder_cache",
        "/release_kv_cache_memory",
        "/start_profile",
        "/stop_profile",
        "/collective_rpc",
        "/scale_elastic_ep",
        "/is_scaling_elastic_ep",
        "/fault_tolerance/apply",
        "/fault_tolerance/status",
        "/pause",
        "/resume",
        "/is_paused",
        "/get_world_size",
        "/init_weight_transfer_engine",
        "/shutdown_weight_transfer_engine",
        "/start_weight_update",
        "/start_draft_weight_update",
        "/update_weights",
        "/finish_weight_update",
        "/update_weight_version",
        "/weight_checker",
        "/weight_info",
    )
)
_RESPONSE = "/v1/responses/"
KNOWN_METHODS = frozenset(("GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"))


def route_of(path: str) -> str:
    if path in KNOWN_ROUTES:
        return path
    if path.startswith(_RESPONSE):  # a stored response, by its id: fetched, deleted or cancelled
        return "/v1/responses/{response_id}/cancel" if path.endswith("/cancel") else "/v1/responses/{response_id}"
    # OpenAI routes mounted under a platform's prefix (``/openai/v1/chat/completions``).
    mounted = path.find("/v1/", 1)
    if mounted != -1 and path[mounted:] in KNOWN_ROUTES:
        return path[mounted:]
    return "other"


def method_of(method: str) -> str:
    return method if method in KNOWN_METHODS else "OTHER"


# Status codes HTTP defines; any other three digits fold into their class (``5xx``).
KNOWN_STATUSES = frozenset(str(status.value) for status in HTTPStatus)


def status_of(status: int) -> str:
    text = str(status)
    if text in KNOWN_STATUSES:
        return text
    return f"{status // 100}xx" if 100 <= status < 600 else "other"


# A host runs at most a few dozen engines; engine numbers past this many fold into "other".
MAX_ENGINES = 64


def engine_of(engine: int | None, aggregated: bool, known: Container[str], count: int) -> str:
    """The ``engine`` label of a stats line: its number, ``all`` for an aggregate, ``0`` when it names
    none; ``other`` for a new number once ``count`` engines are known."""
    if engine is None:
        return "all" if aggregated else "0"
    label = str(engine)
    return label if label in known or count < MAX_ENGINES else "other"


# systemd units whose lines a log names: a host runs a few hundred; a syslog file could name any number (a
# line may be forged), so past this many a new one folds into "other".
MAX_UNITS = 128


def unit_of(unit: str, known: Container[str], count: int) -> str:
    """The ``unit`` label of systemd's line about ``unit``: its name, or ``other`` for a new one once ``count``
    units are known."""
    return unit if unit in known or count < MAX_UNITS else "other"


# Statistics ``vllm bench`` prints (its --metric-percentiles choose among percentiles); others fold
# into "other".
BENCH_STATISTICS = frozenset(
    ("mean", "median", "std", "min", "max", *(f"p{p}" for p in (1, 5, 10, 25, 50, 75, 90, 95, 99, 99.9)))
)


def statistic_of(name: str) -> str:
    return name if name in BENCH_STATISTICS else "other"


# -- vllm bench results: the family and labels of each result line --------------------------

BenchKey = tuple[str, tuple[tuple[str, str], ...]]  # (family, sorted labels)


def _bench(family: str, **labels: str) -> BenchKey:
    return family, tuple(sorted(labels.items()))


# ``vllm bench serve`` result names (vLLM's own keys) -> (family, labels).
_SERVE: dict[str, BenchKey] = {
    "request_throughput": _bench("requests_per_second", benchmark="serve"),
    "output_throughput": _bench("tokens_per_second", benchmark="serve", tokens="output"),
    "total_token_throughput": _bench("tokens_per_second", benchmark="serve", tokens="total"),
    "total_input_tokens": _bench("tokens", benchmark="serve", tokens="prompt"),
    "total_output_tokens": _bench("tokens", benchmark="serve", tokens="output"),
    "duration": _bench("duration_seconds", benchmark="serve"),
    "completed": _bench("requests", benchmark="serve", outcome="completed"),
    "failed": _bench("requests", benchmark="serve", outcome="failed"),
}
_SERVE_MEASURES = ("ttft", "tpot", "itl", "e2el")


def bench_results(e: ev.Event) -> list[tuple[BenchKey, float]]:
    """The (family and labels, value) of each number a ``vllm bench`` result line gives."""
    reader = _BENCH_READERS.get(type(e))
    return reader(e) if reader is not None else []


def _throughput(e: ev.BenchThroughput) -> list[tuple[BenchKey, float]]:
    out = [(_bench("requests_per_second", benchmark="throughput"), e.requests_per_second)]
    if e.total_tokens_per_second is not None:
        out.append((_bench("tokens_per_second", benchmark="throughput", tokens="total"), e.total_tokens_per_second))
    if e.output_tokens_per_second is not None:
        out.append((_bench("tokens_per_second", benchmark="throughput", tokens="output"), e.output_tokens_per_second))
    return out


def _tokens(e: ev.BenchTokens) -> list[tuple[BenchKey, float]]:
    out = []
    if e.prompt_tokens is not None:
        out.append((_bench("tokens", benchmark="throughput", tokens="prompt"), e.prompt_tokens))
    if e.output_tokens is not None:
        out.append((_bench("tokens", benchmark="throughput", tokens="output"), e.output_tokens))
    return out


def _latency(e: ev.BenchLatency) -> list[tuple[BenchKey, float]]:
    if e.avg_seconds is not None:
        return [(_bench("latency_seconds", benchmark="latency", measure="batch", statistic="mean"), e.avg_seconds)]
    if e.percentile is not None and e.seconds is not None:
        statistic = statistic_of(f"p{e.percentile:g}")
        key = _bench("latency_seconds", benchmark="latency", measure="batch", statistic=statistic)
        return [(key, e.seconds)]
    return []


def _serve(e: ev.BenchServe) -> list[tuple[BenchKey, float]]:
    if e.value is None:
        return []
    known = _SERVE.get(e.name)
    if known is not None:
        return [(known, e.value)]
    statistic, _, rest = e.name.partition("_")
    measure, _, unit = rest.partition("_")
    if unit == "ms" and measure in _SERVE_MEASURES:
        key = _bench("latency_seconds", benchmark="serve", measure=measure, statistic=statistic_of(statistic))
        return [(key, e.value / 1000.0)]
    return []


_BENCH_READERS: dict[type, Callable[[Any], list[tuple[BenchKey, float]]]] = {
    ev.BenchThroughput: _throughput,
    ev.BenchTokens: _tokens,
    ev.BenchLatency: _latency,
    ev.BenchServe: _serve,
}
