"""kvwatch restarted under a writer -- SIGTERM, the SIGUSR2 hand-over, SIGKILL at any moment: its
counters go on where they were, and no line is lost or counted twice (they are saved with the read
positions, in one write)."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from tests.support.harness import wait_for

# An LMCache lookup line as LMCache 0.5.6 prints it (placeholder request id); the hit tokens vary.
LOOKUP = (
    "[2026-11-25 05:40:57,687] LMCache INFO: Reqid: chatcmpl-{n:016x}, Total tokens 1216, "
    "Inference Engine computed tokens: 0, LMCache hit tokens: {hit}, need to load: {hit} "
    "(vllm_v1_adapter.py:1476:lmcache.integration.vllm.vllm_v1_adapter)\n"
)

# Writes ``count`` lookup lines, rotating the file by rename (a.log -> a.log.1 -> a.log.2 ...,
# as logrotate does) every ``every`` lines, in bursts.  Prints the hit tokens written.
WRITER = """
import os, sys, time
path, count, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
line = sys.argv[4]
hits = 0
out = open(path, "a")
for n in range(count):
    hit = 256 * (n % 5)
    hits += hit
    out.write(line.format(n=n, hit=hit))
    if n % 20 == 19:
        out.flush()
        time.sleep(0.02)
    if n % every == every - 1:
        out.close()
        for k in range(8, 0, -1):
            if os.path.exists(f"{path}.{k}"):
                os.rename(f"{path}.{k}", f"{path}.{k + 1}")
        os.rename(path, f"{path}.1")
        out = open(path, "a")
out.close()
print(hits)
"""


def _totals(agent) -> tuple[float, float]:
    return (
        agent.value("kvwatch_lmcache_lookups_total", server="f") or 0.0,
        agent.value("kvwatch_lmcache_hit_tokens_total", server="f") or 0.0,
    )


def test_sigkill_at_random_moments_under_a_rotating_writer_counts_every_line_once(agents, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    body = f'[[follow]]\nname = "f"\npaths = ["{log}"]\nstart_at = "beginning"\n'
    count = 12000
    agent = agents(body).start()
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(log), str(count), "700", LOOKUP], stdout=subprocess.PIPE, text=True
    )
    chance = random.Random(20261202)
    kills = 0
    while writer.poll() is None and kills < 12:
        time.sleep(chance.uniform(0.1, 0.9))
        agent.process.kill()  # SIGKILL: no save, no goodbye
        agent.process.wait()
        kills += 1
        agent = agents(body).start()
    hits = int(writer.communicate(timeout=120)[0])
    assert kills >= 3, "the writer ended before kvwatch was killed a few times; write more lines"
    wait_for(lambda: _totals(agent) == (count, hits), timeout=60, what=f"{count} lookups and {hits} hit tokens")
    time.sleep(1.0)  # and nothing more comes: no line counted twice
    assert _totals(agent) == (count, hits)
    assert agent.value("kvwatch_lines_total", server="f") == count


STOPS = [signal.SIGTERM, signal.SIGUSR2, signal.SIGKILL]


@pytest.mark.parametrize("stop", STOPS, ids=["sigterm", "hand-over", "sigkill"])
def test_a_line_half_written_at_a_restart_is_counted_once_it_ends(agents, tmp_path: Path, stop: int) -> None:
    log = tmp_path / "a.log"
    log.write_text(LOOKUP.format(n=1, hit=256))
    body = f'[[follow]]\nname = "f"\npaths = ["{log}"]\nstart_at = "beginning"\n'
    agent = agents(body).start()
    wait_for(lambda: _totals(agent) == (1, 256), what="the first lookup")
    second = LOOKUP.format(n=2, hit=512)
    with open(log, "a") as handle:
        handle.write(second[:70])
    size = log.stat().st_size
    offset = lambda: agent.value("kvwatch_tail_offset_bytes", server="f", path=str(log))  # noqa: E731
    wait_for(lambda: offset() == size, what="the half line read")
    time.sleep(0.3)  # a save of the positions happens when reading pauses
    agent.signal(stop)
    agent.wait()
    with open(log, "a") as handle:
        handle.write(second[70:])
    again = agents(body).start()
    wait_for(lambda: _totals(again) == (2, 768), what="the second lookup, whole")
    assert again.value("kvwatch_lines_skipped_total", server="f", reason="partial") is None


def test_counters_carry_created_timestamps_in_openmetrics_only(agents, tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(LOOKUP.format(n=1, hit=256))
    body = f'[[follow]]\nname = "f"\npaths = ["{log}"]\nstart_at = "beginning"\n'
    agent = agents(body).start()
    wait_for(lambda: _totals(agent) == (1, 256), what="the lookup")
    text = agent.get("/metrics")[1]
    assert "kvwatch_lmcache_lookups_created" not in text
    assert "process_start_time_seconds " in text
    request = agent.url("/metrics")
    accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
    with urllib.request.urlopen(urllib.request.Request(request, headers=accept), timeout=5) as response:
        openmetrics = response.read().decode()
    series = 'kvwatch_lmcache_lookups_created{server="f"}'
    created = [line for line in openmetrics.splitlines() if line.startswith(series)]
    assert len(created) == 1
    first = float(created[0].split()[-1])
    assert abs(first - time.time()) < 60
    agent.signal(signal.SIGTERM)
    agent.wait()
    again = agents(body).start()
    with urllib.request.urlopen(urllib.request.Request(again.url("/metrics"), headers=accept), timeout=5) as response:
        after = response.read().decode()
    assert f'kvwatch_lmcache_lookups_created{{server="f"}} {created[0].split()[-1]}' in after  # kept across the restart
    assert 'kvwatch_lmcache_lookups_total{server="f"} 1.0' in after
