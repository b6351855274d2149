"""The last requests of a server (kvwatch top's rows) and the reason each hit fell short."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sinks.recent import RecentRequests
from agent.sinks.traces import TraceBuilder
from parsers import LogStream
from tests.support.lines import fresh, mp_connector_line

SAMPLES = Path(__file__).resolve().parents[1] / "fixtures" / "samples"


def rows(lines: list[str], chunk: int = 256) -> list[dict]:
    stats = fresh("demo")
    recent = RecentRequests(stats, chunk)
    builder = TraceBuilder(stats, stats.clock, recent.add, sampled=lambda _: False)
    stream = LogStream()
    for line in lines:
        for event in stream.feed(line.rstrip("\n")):
            stats.observe(event)
            builder.observe(event)
    builder.release_held(0.0, everything=True)
    return recent.as_list()


def lookup(rid: str, total: int, hit: int, need: int = 0, computed: int = 0, tail: str = "") -> str:
    return (
        f"[2026-11-25 05:40:56,500] LMCache INFO: Reqid: {rid}, Total tokens {total}, Inference Engine computed "
        f"tokens: {computed}, LMCache hit tokens: {hit}, need to load: {need}{tail} "
        "(vllm_v1_adapter.py:1476:lmcache.integration.vllm.x)"
    )


def one(*lines: str, chunk: int = 256) -> dict:
    added = "(APIServer pid=1) INFO 11-25 05:40:55 [async_llm.py:578] Added request chatcmpl-a-11111111."
    access = 'INFO:     127.0.0.1:2 - "POST /v1/chat/completions HTTP/1.1" 200 OK'
    (row,) = rows([added, *lines, access], chunk)
    return row


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (lookup("chatcmpl-a-11111111", 600, 512, 512), None),  # every whole chunk found
        (lookup("chatcmpl-a-11111111", 600, 0), "not seen before"),
        (lookup("chatcmpl-a-11111111", 900, 256, 256), "partial: the first 256 of 900 tokens seen before"),
        (lookup("chatcmpl-a-11111111", 600, 256, 0, 384), "vLLM's own prefix cache already held it"),
        (lookup("chatcmpl-a-11111111", 100, 0), "prompt shorter than LMCache's chunk (256 tokens)"),
    ],
)
def test_the_reason_a_hit_fell_short(line: str, reason: str | None) -> None:
    row = one(line)
    assert row["reason"] == reason
    assert (row["id"], row["status"], row["outcome"]) == ("chatcmpl-a-11111111", 200, "responded")


def test_a_hit_lmcache_failed_to_load_says_how_much_of_it() -> None:
    failed = (
        "(Worker_TP{rank} pid=9) [2026-01-27 01:40:09,403] LMCache WARNING: Request chatcmpl-a-11111111 failed to "
        "load 256 tokens across 16 blocks (vllm_v1_adapter.py:1125:lmcache.integration.vllm.vllm_v1_adapter)"
    )
    row = one(lookup("chatcmpl-a-11111111", 600, 512, 512), failed.format(rank=0), failed.format(rank=1))
    assert row["reason"] == "LMCache failed to load 256 tokens of its hit"


def test_a_lookup_lmcache_gave_up_on_is_the_reason_not_a_miss() -> None:
    """After its asynchronous lookup's timeout LMCache reports 0 hit tokens: that is no prompt it never saw."""
    timed_out = (
        "[2026-11-25 05:40:56,400] LMCache WARNING: Request chatcmpl-a-11111111 is still waiting for async lookup "
        "after 3 seconds, returning 0 lmcache cached tokens so vllm can recompute "
        "(lmcache_async_lookup_client.py:178:lmcache.v1.lookup_client.lmcache_async_lookup_client)"
    )
    row = one(timed_out, lookup("chatcmpl-a-11111111", 600, 0))
    assert (row["lmcache_hit_tokens"], row["reason"]) == (0, "LMCache's lookup timed out: computed again")


def test_a_miss_while_lmcache_is_unhealthy_is_its_degraded_mode_not_a_prompt_never_seen() -> None:
    """Its health monitor's degraded mode: LMCache skips the lookup, which reports no hit."""
    unhealthy = (
        "[2026-11-25 05:40:56,400] LMCache WARNING: HealthMonitor: System unhealthy, entering degraded mode "
        "(base.py:281:lmcache.v1.health_monitor.base)"
    )
    recovered = unhealthy.replace("WARNING", "INFO").replace(
        "unhealthy, entering degraded mode", "recovered, restoring normal operations"
    )
    miss = lookup("chatcmpl-a-11111111", 600, 0)
    assert one(unhealthy, miss)["reason"] == "LMCache degraded"
    assert one(unhealthy, recovered, miss)["reason"] == "not seen before"


def test_a_lookup_that_never_finished_and_a_server_without_lmcache() -> None:
    pending = "[2026-11-25 05:40:56,000] LMCache INFO: Reqid: chatcmpl-a-11111111, Total tokens 600, LMCache hit "
    pending += "tokens: None. (vllm_v1_adapter.py:1:lmcache.integration.vllm.x)"
    assert one(pending)["reason"] == "lookup pending or timed out"
    assert one()["reason"] == "LMCache connector not loaded"


def test_the_multiprocess_servers_lookup_end_gives_the_hit_and_the_miss() -> None:
    """LMCache's MP server at DEBUG: its lookup's end names the request and the chunks found (0: a miss)."""

    def end(found: int) -> str:
        return (
            "[2026-12-06 14:07:34,441] LMCache DEBUG: MP lookup/prefetch end: session=chatcmpl-a-11111111 "
            f"found_count={found} (mp_server.py:73:lmcache.v1.mp_observability.subscribers.logging.mp_server)"
        )

    hit, miss = one(end(11)), one(end(0))
    assert (hit["lmcache_hit_tokens"], hit["reason"]) == (11 * 256, None)
    assert (miss["lmcache_hit_tokens"], miss["reason"]) == (0, "not seen before")
    assert one(end(3), chunk=1024)["lmcache_hit_tokens"] == 3 * 1024  # the server's chunk size


def test_real_logs_rows_and_reasons() -> None:
    """The seed's set-up, live: each request with LMCache's hit tokens; a degraded LMCache says so."""
    served = rows((SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6.log").read_text().splitlines())
    assert [r["lmcache_hit_tokens"] for r in served] == [0, 256, 256, 256, 256]
    assert served[0]["reason"] == "not seen before" and served[0]["prompt_tokens"] == 493
    assert all(r["status"] == 200 and r["latency_seconds"] is not None for r in served)
    degraded = rows((SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6-degraded.log").read_text().splitlines())
    assert degraded and {r["reason"] for r in degraded} == {"LMCache degraded"}


def test_a_row_says_how_often_its_request_was_preempted() -> None:
    """LMCache's multiprocess connector names the request it saw preempted and resumed (lmcache 0.5.6's lines)."""

    stamp = "2026-12-06 16:03:12,875"
    preempted = mp_connector_line(stamp, "<preempted> by preempted requests: {'chatcmpl-a-11111111'}")
    resumed = mp_connector_line(stamp, "<preempted> by resumed requests: {'chatcmpl-a-11111111'}")
    assert one(preempted, resumed, preempted, resumed)["preemptions"] == 2
    assert one(lookup("chatcmpl-a-11111111", 600, 512, 512))["preemptions"] == 0


def test_a_load_the_multiprocess_connector_gave_up_is_the_reason() -> None:
    bypassed = mp_connector_line(
        "2026-12-06 16:03:20,337",
        "Bypassing LMCache for request chatcmpl-a-11111111 after a failed async KV load; "
        "the prompt will be recomputed locally.",
    )
    assert one(bypassed)["reason"] == "LMCache failed to load its hit: computed again"
