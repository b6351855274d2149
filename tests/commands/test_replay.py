"""``kvwatch replay`` run as a real process on real files, stdin, compressed files and bad input."""

from __future__ import annotations

import bz2
import codecs
import gzip
import io
import json
import lzma
import os
import re
import select
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
import zipfile
import zlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.commands.replay import server_name_for
from agent.sources.lines import InputError, codec_of, zstd_module
from tests.benchmarks.gen_log import generate
from tests.support.harness import STATS, as_nobody
from tests.support.harness import kvwatch as run_kvwatch
from tests.support.lines import SAMPLES, WRAPPED_PASTE, line_cases
from tests.support.logrotate import logrotate, needs_logrotate
from tests.support.schema import validate_record

ROOT = Path(__file__).parents[2]
LMCACHE_LOG = SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6.log"


def kvwatch(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """``kvwatch ARGS`` in UTC, its output as bytes."""
    return run_kvwatch(*args, stdin=stdin, cwd=cwd, text=False, env={**os.environ, "TZ": "UTC"})


def metric(text: str, name: str, **labels: str) -> float:
    total = 0.0
    found = False
    for line in text.splitlines():
        m = re.match(rf"^{name}(?:{{([^}}]*)}})? (\S+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
            found = True
    assert found, f"{name} {labels} not in output"
    return total


@pytest.fixture
def lmcache_copy(tmp_path: Path) -> Path:
    """The LMCache sample with a known modification time (the reference for year-less stamps)."""
    path = tmp_path / "vllm.log"
    shutil.copy(LMCACHE_LOG, path)
    stamp = datetime(2026, 11, 26, tzinfo=UTC).timestamp()
    os.utime(path, (stamp, stamp))
    return path


def test_summary_is_the_default(lmcache_copy: Path) -> None:
    result = kvwatch("replay", str(lmcache_copy))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "server vllm" in text
    assert "5 lookups, 1,024 of 2,465 tokens hit (41.5%)" in text
    assert "vLLM 0.32.0, LMCache 0.5.6-g3e11e108" in text
    assert "prefix cache hit 62.3%" in text


def test_summary_and_events_of_a_unit_s_journal_show_what_systemd_said_of_the_unit(tmp_path: Path) -> None:
    """``journalctl -u vllm > vllm.log``: systemd's lines about the unit, beside the server's, in its short framing
    (a message alone there takes the framing's time)."""
    log = tmp_path / "vllm.log"
    log.write_text(
        "Dec 14 17:13:12 gpu-1 systemd[1]: vllm.service: A process of this unit has been killed by the OOM killer.\n"
        "Dec 14 17:13:12 gpu-1 systemd[1]: vllm.service: Main process exited, code=killed, status=9/KILL\n"
        "Dec 14 17:13:12 gpu-1 systemd[1]: vllm.service: Failed with result 'oom-kill'.\n"
        "Dec 14 17:13:17 gpu-1 systemd[1]: vllm.service: Scheduled restart job, restart counter is at 1.\n",
        encoding="utf-8",
    )
    result = kvwatch("replay", "--timezone", "UTC", str(log))
    assert result.returncode == 0, result.stderr
    assert (
        "systemd      vllm.service: main process killed 1; last signal 9; failed oom-kill 1; OOM-killed processes 1; "
        "restarts 1"
    ) in result.stdout.decode()
    result = kvwatch("replay", "--timezone", "UTC", "-f", "events", str(log))
    events = [json.loads(line) for line in result.stdout.decode().splitlines()]
    assert [(e["kind"], e["unit"], e["time"][5:19]) for e in events] == [
        ("service_oom_kill", "vllm.service", "12-14T17:13:12"),
        ("service_exited", "vllm.service", "12-14T17:13:12"),
        ("service_failed", "vllm.service", "12-14T17:13:12"),
        ("service_restart_scheduled", "vllm.service", "12-14T17:13:17"),
    ]


def test_summary_says_what_lmcache_failed_to_store_or_load_and_how_long_vllm_s_processes_waited(
    tmp_path: Path,
) -> None:
    log = tmp_path / "vllm.log"
    tail = "(cache_engine.py:380:lmcache.v1.cache_engine)"
    log.write_text(
        "(EngineCore_DP0 pid=7) [2026-01-27 01:40:09,300] LMCache INFO: Reqid: chatcmpl-a, Total tokens 600, LMCache "
        "hit tokens: 512, need to load: 512 (vllm_v1_adapter.py:1550:lmcache.integration.vllm.x)\n"
        "(EngineCore_DP0 pid=7) [2026-01-27 01:40:09,403] LMCache WARNING: Request chatcmpl-a failed to load 256 "
        "tokens across 16 blocks (vllm_v1_adapter.py:1125:lmcache.integration.vllm.vllm_v1_adapter)\n"
        + 2
        * "(EngineCore_DP0 pid=7) [2026-01-27 01:40:09,923] LMCache WARNING: Local cpu memory under pressure so "
        f"choosing to store only  0 total chunks of KV cache. {tail}\n"
        + 3
        * "(EngineCore_DP0 pid=7) INFO 01-27 01:41:41 [shm_broadcast.py:542] No available shared memory broadcast "
        "block found in 60 seconds. This typically happens when some processes are hanging or doing some "
        "time-consuming work (e.g. compilation, weight/kv cache quantization).\n"
        "(EngineCore_DP0 pid=7) [2026-01-27 01:42:00,000] LMCache INFO: StorageManager: Backend RemoteBackend is now "
        "bypassed (storage_manager.py:899:lmcache.v1.storage_backend.storage_manager)\n"
        "(EngineCore_DP0 pid=7) [2026-01-27 01:42:00,001] LMCache WARNING: HealthMonitor: System unhealthy, entering "
        "degraded mode (base.py:281:lmcache.v1.health_monitor.base)\n"
        + 2
        * f"(EngineCore_DP0 pid=7) [2026-01-27 01:42:01,000] LMCache WARNING: LMCache is unhealthy, skipping lookup "
        f"operation {tail}\n",
        encoding="utf-8",
    )
    result = kvwatch("replay", str(log))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert "; stores cut short: memory_pressure 2; 1 loads failed (256 tokens)" in text
    assert "; skipped while unhealthy: lookup 2" in text
    assert "; UNHEALTHY at the end (its health monitor's degraded mode); bypassing RemoteBackend at the end" in text
    assert "waits        vLLM's processes waited on each other 180 s" in text


def test_summary_shows_the_multiprocess_servers_prefetches_and_hit_rate_summaries(tmp_path: Path) -> None:
    """The LMCache server's own log (lmcache 0.5.6, two prefetches with a hit) and, after it, the hit-rate
    summary a later server prints and three lookups' ends at DEBUG: the summary's "LMCache MP" line has them all."""
    log = tmp_path / "lmcache-server.log"
    summary = (
        "[2026-09-11 10:00:30,512] LMCache INFO: lookup hit rate (over 41 lookup(s)): prefix=62.5% "
        "(mp_server_logging.py:112:lmcache.v1.mp_observability.logging.mp_server)\n"
    )
    ends = "".join(
        f"[2026-09-11 10:00:3{n},100] LMCache DEBUG: MP lookup/prefetch end: session=chatcmpl-{n} found_count={found} "
        "(mp_server.py:74:lmcache.v1.mp_observability.subscribers.logging.mp_server)\n"
        for n, found in enumerate((0, 11, 11))
    )
    sample = (SAMPLES / "lmcache-0.5.6-mp-server.log").read_text(encoding="utf-8")
    log.write_text(sample + summary + ends, encoding="utf-8")
    result = kvwatch("replay", str(log))
    assert result.returncode == 0, result.stderr
    assert (
        "LMCache MP   2 prefetches with a hit, 22 of 22 keys found; lookups ended: hit 2, miss 1; 41 lookups in its "
        "hit-rate summaries, last 62.5% of the tokens asked for"
    ) in result.stdout.decode()
    text = kvwatch("replay", "-f", "prometheus", str(log)).stdout.decode()
    assert metric(text, "kvwatch_lmcache_mp_lookups_total", result="miss") == 1
    assert metric(text, "kvwatch_lmcache_mp_lookups_total", result="hit") == 2
    assert metric(text, "kvwatch_lmcache_mp_lookup_found_chunks_total") == 22


def test_prometheus_format(lmcache_copy: Path) -> None:
    result = kvwatch("replay", "--format", "prometheus", str(lmcache_copy))
    assert result.returncode == 0, result.stderr
    text = result.stdout.decode()
    assert metric(text, "kvwatch_lmcache_hit_tokens_total", server="vllm") == 1024
    assert metric(text, "kvwatch_lmcache_lookup_tokens_total") == 2465
    assert metric(text, "kvwatch_vllm_requests_added_total") == 5
    assert metric(text, "kvwatch_http_responses_total", path="/v1/chat/completions", status="200") == 5
    assert metric(text, "kvwatch_vllm_prefix_cache_hit_ratio", engine="0") == 0.623
    assert metric(text, "kvwatch_lines_total") == 278
    # The last stats line's log time: 11-25 05:41:15, year from the LMCache lines, UTC.
    assert (
        metric(text, "kvwatch_vllm_stats_last_seen_timestamp_seconds")
        == datetime(2026, 11, 25, 5, 41, 15, tzinfo=UTC).timestamp()
    )


def test_events_format_follows_the_schema_with_true_line_numbers(lmcache_copy: Path) -> None:
    result = kvwatch("replay", "--format", "events", "--timezone", "Asia/Taipei", str(lmcache_copy))
    assert result.returncode == 0, result.stderr
    records = [json.loads(line) for line in result.stdout.decode().splitlines()]
    raw = lmcache_copy.read_text(encoding="utf-8").split("\n")
    for record in records:
        validate_record(record)
        assert record["file"] == str(lmcache_copy)
        if "request_id" in record:
            assert record["request_id"] in raw[record["line"] - 1]
    lookups = [r for r in records if r["kind"] == "lmcache_lookup"]
    assert [r["hit_tokens"] for r in lookups] == [0, 256, 256, 256, 256]
    assert lookups[0]["time"] == "2026-11-25T05:40:55.453+08:00"
    first = records[0]
    assert (first["kind"], first["time"], first["version"]) == (
        "server_starting",
        "2026-11-25T05:40:26+08:00",
        "0.32.0",
    )
    assert all("prompt" not in r for r in records)


MP_VLLM_LOG = SAMPLES / "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log"
MP_SERVER_LOG = SAMPLES / "lmcache-0.5.6-mp-server.log"


def test_an_lmcache_servers_log_named_so_counts_none_of_its_http_servers_lines_as_vllms() -> None:
    """The real MP run's two logs: the LMCache server's own uvicorn lines (its start, a scrape of its /metrics, its
    shutdown) are none of vLLM's given as --lmcache-server-log, which is read as part of the first FILE's server."""
    named = kvwatch("replay", str(MP_VLLM_LOG), "--lmcache-server-log", str(MP_SERVER_LOG))
    assert named.returncode == 0, named.stderr
    text = named.stdout.decode()
    assert "server vllm-0.32.0-cpu-lmcache-0.5.6-mp\n" in text and text.count("\nserver ") == 0
    assert "1 shutdown(s)" in text and "HTTP 2xx 3" in text
    assert "2 prefetches with a hit, 22 of 22 keys found" in text  # its LMCache lines count as before
    events = kvwatch("replay", "-f", "events", str(MP_VLLM_LOG), "--lmcache-server-log", str(MP_SERVER_LOG))
    read = [json.loads(line) for line in events.stdout.decode().splitlines()]
    kinds = {event["kind"] for event in read if event["file"] == str(MP_SERVER_LOG)}
    assert {"lmcache_server_started", "lmcache_store", "lmcache_prefetch"} <= kinds
    assert not kinds & {"http_access", "server_ready", "server_shutdown"}


def test_an_lmcache_servers_log_given_as_a_file_is_told_by_its_first_lines(tmp_path: Path) -> None:
    """The same log as one more FILE, before vLLM's or after it, plain or compressed, alone or on a pipe: its first
    lines show the LMCache server's start and nothing of vLLM's, and its HTTP server's lines count as none of
    vLLM's (its shutdown ends nothing of vLLM's).  Both logs in one file (vLLM's lines in its first block) are read
    as before: each uvicorn line is vLLM's."""
    after = kvwatch("replay", "--server", "mp", str(MP_VLLM_LOG), str(MP_SERVER_LOG)).stdout.decode()
    before = kvwatch("replay", "--server", "mp", str(MP_SERVER_LOG), str(MP_VLLM_LOG)).stdout.decode()
    packed = tmp_path / "lmcache-server.log.gz"
    packed.write_bytes(gzip.compress(MP_SERVER_LOG.read_bytes()))
    zipped = kvwatch("replay", "--server", "mp", str(MP_VLLM_LOG), str(packed)).stdout.decode()
    for text in (after, before, zipped):
        assert "1 shutdown(s)" in text and "HTTP 2xx 3" in text, text
        assert "2 prefetches with a hit, 22 of 22 keys found" in text
    # On a pipe, its first lines as a file's first block holds them (they come in small batches).
    piped = kvwatch("replay", "-f", "prometheus", "-", stdin=MP_SERVER_LOG.read_bytes()).stdout.decode()
    assert "kvwatch_http_responses_total{" not in piped and "kvwatch_lmcache_prefetches_total" in piped
    alone = kvwatch("replay", "-f", "events", str(MP_SERVER_LOG)).stdout.decode()
    kinds = {json.loads(line)["kind"] for line in alone.splitlines()}
    assert {"lmcache_server_started", "lmcache_store", "lmcache_prefetch"} <= kinds
    assert not kinds & {"http_access", "server_ready", "server_shutdown"}
    both = tmp_path / "both.log"
    both.write_bytes(MP_SERVER_LOG.read_bytes() + MP_VLLM_LOG.read_bytes())
    text = kvwatch("replay", str(both)).stdout.decode()
    assert "2 shutdown(s)" in text and "HTTP 2xx 4" in text, text


def test_an_lmcache_servers_log_in_which_vllms_output_begins_after_its_first_block_counts_vllms_from_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both servers writing one file, vLLM's output begun after the first block (which told an LMCache server's log):
    the server's uvicorn lines before it count as none of vLLM's, and vLLM's own after it count but for the health
    checks of the LMCache server, as with the two logs apart; read by one process or offered to several, as one
    events stream."""
    from agent.sources.lines import BLOCK

    both = tmp_path / "both.log"
    copies = BLOCK // len(MP_SERVER_LOG.read_bytes()) + 1
    health_check = b'INFO:     127.0.0.1:60220 - "GET /healthcheck HTTP/1.1" 200 OK\n'
    both.write_bytes(MP_SERVER_LOG.read_bytes() * copies + MP_VLLM_LOG.read_bytes() + health_check * 2)
    text = kvwatch("replay", "--server", "mp", str(both)).stdout.decode()
    assert "1 shutdown(s)" in text and "HTTP 2xx 3" in text, text
    assert f"{2 * copies} prefetches with a hit" in text
    events = kvwatch("replay", "-f", "events", str(both)).stdout.decode()
    assert sum(json.loads(line)["kind"] == "http_access" for line in events.splitlines()) == 3
    stats = _offered_to_two_processes(both, None, monkeypatch)
    assert sum(stats.http.values()) == 3 and stats.shutdowns == 1


def test_an_lmcache_servers_log_whose_start_is_gone_is_told_by_what_only_that_server_writes(tmp_path: Path) -> None:
    """A copy another tool rotated, beginning after the server's start: its prefetches tell, as its start would."""
    rotated = tmp_path / "lmcache-server.log.1"
    rotated.write_text("".join(MP_SERVER_LOG.read_text(encoding="utf-8").splitlines(keepends=True)[62:]))
    text = kvwatch("replay", "--server", "mp", str(MP_VLLM_LOG), str(rotated)).stdout.decode()
    assert "1 shutdown(s)" in text and "HTTP 2xx 3" in text, text
    assert "2 prefetches with a hit, 22 of 22 keys found" in text


def test_an_lmcache_servers_log_on_a_pipe_whose_events_are_written_as_they_come_is_told_by_its_first_lines() -> None:
    """Its first lines tell one by one (nothing is held back): its start comes before its HTTP server's lines."""
    piped = kvwatch("replay", "-f", "events", "-", stdin=MP_SERVER_LOG.read_bytes()).stdout.decode()
    kinds = {json.loads(line)["kind"] for line in piped.splitlines()}
    assert {"lmcache_server_started", "lmcache_store", "lmcache_prefetch"} <= kinds
    assert not kinds & {"http_access", "server_ready", "server_shutdown"}
    vllm = kvwatch("replay", "-f", "events", "-", stdin=MP_VLLM_LOG.read_bytes()).stdout.decode()
    assert sum(json.loads(line)["kind"] == "http_access" for line in vllm.splitlines()) == 3


@pytest.mark.parametrize("told", [True, None])
def test_an_lmcache_servers_log_read_in_slices_counts_none_of_its_http_servers_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, told: bool | None
) -> None:
    """The same in each slice of a large log read by several processes (the threshold lowered to make it large),
    named so; told so by its first block of lines (which the slices after the first do not hold), it is read whole
    (it stays one only until vLLM's output shows in it, which a later slice could not know)."""
    log = tmp_path / "lmcache-server.log"
    log.write_text(MP_SERVER_LOG.read_text(encoding="utf-8") * 40, encoding="utf-8")
    stats = _offered_to_two_processes(log, told, monkeypatch)
    assert stats.http == {} and stats.shutdowns == 0 and stats.prefetches == 80


def _offered_to_two_processes(log: Path, told: bool | None, monkeypatch: pytest.MonkeyPatch):
    """The stats of ``log`` replayed with two jobs as server ``mp``, made large enough to be read in two slices."""
    from agent.commands import replay as command
    from agent.sources.lines import open_input

    monkeypatch.setattr(command, "PARALLEL_MIN_BYTES", 1)
    replay = command.Replay(UTC)
    source = open_input(str(log))
    try:
        assert len(command.slices_of(source, 2)) == 2
        replay.run(source, "mp", jobs=2, lmcache_server=told)
    finally:
        source.close()
    return replay.servers["mp"]


def test_stdin_and_gzip_give_the_same_numbers(lmcache_copy: Path, tmp_path: Path) -> None:
    packed = tmp_path / "vllm.log.1.gz"
    packed.write_bytes(gzip.compress(lmcache_copy.read_bytes()))
    plain = kvwatch("replay", "-f", "prometheus", str(lmcache_copy)).stdout.decode()
    from_gzip = kvwatch("replay", "-f", "prometheus", str(packed)).stdout.decode()
    from_stdin = kvwatch("replay", "-f", "prometheus", "-", stdin=lmcache_copy.read_bytes()).stdout.decode()
    zipped_stdin = kvwatch("replay", "-f", "prometheus", "-", stdin=packed.read_bytes()).stdout.decode()
    assert from_gzip == plain  # the file's server label is "vllm" in both
    assert from_stdin.replace('server="stdin"', 'server="vllm"') == plain
    assert zipped_stdin == from_stdin
    events = kvwatch("replay", "-f", "events", "-", stdin=lmcache_copy.read_bytes()).stdout.decode()
    assert json.loads(events.splitlines()[0])["file"] == "-"


CONTAINER_ID = "0f1e2d3c4b5a" + "9" * 52


@pytest.mark.parametrize(
    ("name", "label"),
    [
        ("vllm.log", "vllm"),
        ("logs/vllm.log.1", "vllm"),
        ("vllm.log.2.gz", "vllm"),
        ("vllm.log-20261204", "vllm"),  # logrotate's dateext
        ("vllm.log-20261204.xz", "vllm"),
        ("vllm.log.2026-12-04_14-00-00", "vllm"),  # Python's TimedRotatingFileHandler
        ("vllm-20261204.log.zst", "vllm"),  # logrotate's "extension .log"
        ("vllm-0.32.0.log", "vllm-0.32.0"),  # a version is part of the name
        ("gpu0.jsonl", "gpu0"),
        ("/var/log/pods/llm_vllm-0_7f0c5a8e-1111-2222-3333-444455556666/vllm/0.log", "llm/vllm-0/vllm"),
        ("/var/log/pods/llm_vllm-0_7f0c5a8e-1111/vllm/2.log.20261204-101010.gz", "llm/vllm-0/vllm"),
        (f"/var/log/containers/vllm-0_llm_vllm-{'a' * 64}.log", "llm/vllm-0/vllm"),
        (
            "/tmp/must-gather.local.5/quay-io-image/namespaces/llm/pods/vllm-0/vllm/vllm/logs/previous.log",
            "llm/vllm-0/vllm",
        ),
        (f"/var/lib/docker/containers/{CONTAINER_ID}/{CONTAINER_ID}-json.log.1", "0f1e2d3c4b5a"),
        ("-", "stdin"),
    ],
)
def test_a_file_is_labelled_with_the_server_its_name_or_path_tells(name: str, label: str) -> None:
    assert server_name_for(name) == label


def test_a_docker_log_beside_its_container_s_settings_is_labelled_with_the_container_s_name(tmp_path: Path) -> None:
    """As a [[containers]] table labels it (the engine's directory layout, written here as Docker writes it)."""
    directory = tmp_path / "containers" / CONTAINER_ID
    directory.mkdir(parents=True)
    (directory / "config.v2.json").write_text(json.dumps({"ID": CONTAINER_ID, "Name": "/vllm-gpu3", "Config": {}}))
    assert server_name_for(str(directory / f"{CONTAINER_ID}-json.log")) == "vllm-gpu3"
    assert server_name_for(str(directory / f"{CONTAINER_ID}-json.log.2")) == "vllm-gpu3"
    (directory / "config.v2.json").write_text("{")  # being written: the short id
    assert server_name_for(str(directory / f"{CONTAINER_ID}-json.log")) == CONTAINER_ID[:12]


def test_a_pod_s_logs_under_the_kubelet_s_layout_are_one_server(tmp_path: Path) -> None:
    """The kubelet names a container's log by its restart count: ``0.log``, ``1.log`` are one pod's."""
    container = tmp_path / "var" / "log" / "pods" / "llm_vllm-0_7f0c5a8e-1111" / "vllm"
    container.mkdir(parents=True)
    shutil.copy(LMCACHE_LOG, container / "0.log")
    (container / "1.log.20261204-101010.gz").write_bytes(gzip.compress(LMCACHE_LOG.read_bytes()))
    text = kvwatch("replay", "-f", "prometheus", str(container / "0.log"), str(container / "1.log.20261204-101010.gz"))
    assert metric(text.stdout.decode(), "kvwatch_lmcache_lookups_total", server="llm/vllm-0/vllm") == 10


def test_a_log_saved_as_utf_16_gives_the_numbers_of_its_utf_8_copy(lmcache_copy: Path, tmp_path: Path) -> None:
    """Windows PowerShell 5's ``kubectl logs pod > vllm.log`` writes UTF-16 with a byte order mark
    (little-endian, CRLF line ends); a big-endian copy and stdin are read the same way."""
    text = lmcache_copy.read_text(encoding="utf-8")
    little = tmp_path / "vllm.log"
    little.write_bytes(codecs.BOM_UTF16_LE + text.replace("\n", "\r\n").encode("utf-16-le"))
    plain = kvwatch("replay", "-f", "prometheus", str(lmcache_copy)).stdout.decode()
    assert kvwatch("replay", "-f", "prometheus", str(little)).stdout.decode() == plain
    big = tmp_path / "big-endian" / "vllm.log"
    big.parent.mkdir()
    big.write_bytes(codecs.BOM_UTF16_BE + text.encode("utf-16-be"))
    assert kvwatch("replay", "-f", "prometheus", str(big)).stdout.decode() == plain
    from_stdin = kvwatch("replay", "-f", "prometheus", "-", stdin=little.read_bytes()).stdout.decode()
    assert from_stdin.replace('server="stdin"', 'server="vllm"') == plain
    # A code unit that is no character (a lone surrogate) costs its line only.
    broken = tmp_path / "broken" / "vllm.log"
    broken.parent.mkdir()
    broken.write_bytes(codecs.BOM_UTF16_LE + b"\x00\xd8x\x00\n\x00" + text.encode("utf-16-le"))
    result = kvwatch("replay", "-f", "prometheus", str(broken)).stdout.decode()
    assert metric(result, "kvwatch_lines_skipped_total", reason="invalid_utf8") == 1
    assert metric(result, "kvwatch_lmcache_lookups_total") == metric(plain, "kvwatch_lmcache_lookups_total") == 5


def test_several_files_one_server(tmp_path: Path) -> None:
    result = kvwatch("replay", "-f", "prometheus", "--server", "gpu0", str(LMCACHE_LOG), str(LMCACHE_LOG))
    assert metric(result.stdout.decode(), "kvwatch_lmcache_lookups_total", server="gpu0") == 10


@pytest.mark.parametrize(
    ("name", "message"),
    [("missing.log", "no such file"), (".", "is a directory (give the logs in it: ./*.log)")],
)
def test_unreadable_inputs_exit_2_with_one_line(tmp_path: Path, name: str, message: str) -> None:
    result = kvwatch("replay", str(LMCACHE_LOG), name, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stdout == b""
    assert result.stderr.decode() == f"kvwatch: {name}: {message}\n"


def test_permission_denied_exits_2(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    secret = tmp_path / "secret.log"
    shutil.copy(LMCACHE_LOG, secret)
    secret.chmod(0)
    if os.geteuid() != 0:
        prefix, env, cwd = [], {}, ROOT
    else:  # root reads anything: drop to nobody, with a copy of kvwatch it can read
        work = Path(tempfile.mkdtemp(prefix="kvwatch-perm-"))
        request.addfinalizer(lambda: shutil.rmtree(work, ignore_errors=True))
        prefix, env = as_nobody(work)
        cwd = work
        secret = work / "secret.log"
        shutil.copy(LMCACHE_LOG, secret)
        secret.chmod(0)
    argv = [*prefix, sys.executable, "-m", "agent", "replay", str(secret)]
    result = subprocess.run(argv, capture_output=True, cwd=cwd, env={**os.environ, **env}, timeout=60)
    assert result.returncode == 2
    assert result.stderr.decode() == f"kvwatch: {secret}: permission denied\n"


def test_bad_timezone_exits_2() -> None:
    result = kvwatch("replay", "--timezone", "Mars/Olympus", str(LMCACHE_LOG))
    assert result.returncode == 2
    assert b"Mars/Olympus" in result.stderr


def test_junk_is_counted_and_skipped_never_raised(tmp_path: Path) -> None:
    good = b"INFO 12-14 16:18:24 [async_llm.py:270] Added request chatcmpl-%d.\n"
    path = tmp_path / "junk.log"
    path.write_bytes(
        good % 1
        + bytes(range(256)).replace(b"\n", b"")
        + b"\n"  # binary junk: invalid UTF-8
        + b"INFO 12-14 16:18:24 [x.py:1] Added request bad\x00id.\n"  # NUL byte
        + b"\xff\xfe\xfa invalid utf-8\n"
        + b"A" * (10 * 1024 * 1024)
        + b"\n"  # a 10 MB line
        + b"a line\rwith a bare CR inside "
        + good % 2  # one line: \r does not end it
        + good % 3
        + b"INFO 12-14 16:18:24 [async_llm.py:270] Added request cut-off-mid-wr"  # no newline at the end
    )
    result = kvwatch("replay", "-f", "prometheus", str(path))
    assert result.returncode == 0, result.stderr
    assert b"Traceback" not in result.stderr
    text = result.stdout.decode()
    assert metric(text, "kvwatch_lines_total") == 8
    assert metric(text, "kvwatch_vllm_requests_added_total") == 2  # 1 and 3; 2 is behind text on its line
    assert metric(text, "kvwatch_lines_skipped_total", reason="invalid_utf8") == 2
    assert metric(text, "kvwatch_lines_skipped_total", reason="nul") == 1
    assert metric(text, "kvwatch_lines_skipped_total", reason="too_long") == 1
    assert metric(text, "kvwatch_lines_skipped_total", reason="partial") == 1
    events = [json.loads(x) for x in kvwatch("replay", "-f", "events", str(path)).stdout.decode().splitlines()]
    assert [(e["line"], e["request_id"]) for e in events] == [(1, "chatcmpl-1"), (7, "chatcmpl-3")]


def test_a_record_a_terminal_wrapped_is_numbered_with_its_last_line(tmp_path: Path) -> None:
    """A paste wrapped at a terminal's width (LMCache/LMCache#2061's): each record's event carries the
    number of the line it ends on, also where it is given only when the next line does not continue it."""
    path = tmp_path / "pasted.log"
    path.write_text(WRAPPED_PASTE + "INFO 10-02 10:00:00 async_llm_engine.py:120] Finished request cmpl-1a2\n" + STATS)
    result = kvwatch("replay", "-f", "events", str(path))
    assert result.returncode == 0, result.stderr
    got = [(e["line"], e["kind"]) for e in map(json.loads, result.stdout.decode().splitlines())]
    assert got == [
        (1, "server_ready"),
        (4, "lmcache_lookup"),
        (9, "lmcache_store_start"),
        (12, "lmcache_store"),
        (14, "http_access"),  # its reason phrase wrapped: "200 O" / "K"
        (17, "engine_stats"),
        (18, "suspicious_line"),  # cut short: its period lost, and no line after it continues it
        (19, "engine_stats"),
    ]
    text = kvwatch("replay", "-f", "prometheus", str(path)).stdout.decode()
    assert metric(text, "kvwatch_lmcache_lookups_total") == 1
    assert metric(text, "kvwatch_lines_total") == 19


def test_a_line_longer_than_the_limit_is_skipped_at_any_size(tmp_path: Path) -> None:
    path = tmp_path / "long.log"
    path.write_bytes(b"x" * 3000 + b"\nINFO 12-14 16:18:24 [async_llm.py:270] Added request r.\n")
    text = kvwatch("replay", "-f", "prometheus", "--max-line-length", "1000", str(path)).stdout.decode()
    assert metric(text, "kvwatch_lines_skipped_total", reason="too_long") == 1
    assert metric(text, "kvwatch_vllm_requests_added_total") == 1


def test_truncated_gzip_keeps_every_line_it_holds(tmp_path: Path) -> None:
    packed = gzip.compress(LMCACHE_LOG.read_bytes())
    cut = packed[: len(packed) // 2]
    path = tmp_path / "cut.log.gz"
    path.write_bytes(cut)
    held = zlib.decompressobj(zlib.MAX_WBITS | 16).decompress(cut)  # what the cut file still holds
    result = kvwatch("replay", "-f", "prometheus", str(path))
    assert result.returncode == 0
    assert "read stopped early: gzip data cut short" in result.stderr.decode()
    text = result.stdout.decode()
    assert metric(text, "kvwatch_lines_total") == held.count(b"\n") + 1  # + the cut last line
    assert metric(text, "kvwatch_lines_skipped_total", reason="partial") == 1


def test_concatenated_gzip_members_are_all_read(tmp_path: Path) -> None:
    path = tmp_path / "two.log.gz"
    path.write_bytes(gzip.compress(LMCACHE_LOG.read_bytes()) * 2)
    assert (
        metric(kvwatch("replay", "-f", "prometheus", str(path)).stdout.decode(), "kvwatch_lmcache_lookups_total") == 10
    )


# What logrotate's ``compresscmd`` may be, each with its compressor and a decompressor of what a cut file holds.
COMPRESSORS = {
    "gz": (gzip.compress, lambda: zlib.decompressobj(zlib.MAX_WBITS | 16)),
    "bz2": (bz2.compress, bz2.BZ2Decompressor),
    "xz": (lzma.compress, lzma.LZMADecompressor),
    "zst": (lambda data: zstd_module().compress(data), lambda: zstd_module().ZstdDecompressor()),
}


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_a_compressed_log_gives_the_numbers_of_the_plain_one(lmcache_copy: Path, tmp_path: Path, suffix: str) -> None:
    compress, _ = COMPRESSORS[suffix]
    packed = tmp_path / f"vllm.log.2.{suffix}"
    packed.write_bytes(compress(lmcache_copy.read_bytes()))
    os.utime(packed, (lmcache_copy.stat().st_mtime,) * 2)
    plain = kvwatch("replay", "-f", "prometheus", str(lmcache_copy)).stdout.decode()
    assert metric(plain, "kvwatch_lmcache_lookups_total") == 5
    result = kvwatch("replay", "-f", "prometheus", str(packed))
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout.decode() == plain  # the server label "vllm" too: the compressor's suffix is no name
    from_stdin = kvwatch("replay", "-f", "prometheus", "-", stdin=packed.read_bytes()).stdout.decode()
    assert from_stdin == kvwatch("replay", "-f", "prometheus", "-", stdin=lmcache_copy.read_bytes()).stdout.decode()


# logrotate's compresscmd -> the extension it is given.
LOGROTATE_COMPRESSORS = {"gzip": ".gz", "bzip2": ".bz2", "xz": ".xz", "zstd": ".zst"}


@needs_logrotate
@pytest.mark.parametrize(("command", "naming"), [*((c, "numbered") for c in LOGROTATE_COMPRESSORS), ("xz", "dateext")])
def test_a_log_rotated_and_compressed_by_logrotate_is_read_whole_as_one_server(
    tmp_path: Path, command: str, naming: str
) -> None:
    """The real logrotate, with each compressor it may be told to use: the rotated copies and the live file
    together are the one server's lines."""
    compressor = shutil.which(command)
    if compressor is None:
        pytest.skip(f"{command} is missing (make test installs it)")
    log = tmp_path / "vllm.log"
    # dateformat with seconds: two rotations a second apart get two names.
    dated = "dateext\ndateformat -%Y%m%d-%s" if naming == "dateext" else ""
    options = (
        f"compress\nnodelaycompress\ncompresscmd {compressor}\ncompressext {LOGROTATE_COMPRESSORS[command]}\n{dated}"
    )
    for rotation in range(2):
        if rotation:
            time.sleep(1.1)
        shutil.copy(LMCACHE_LOG, log)
        logrotate(log, options, tmp_path / "state")
    shutil.copy(LMCACHE_LOG, log)  # written on after the rotations
    files = sorted(tmp_path.glob("vllm.log*"))
    rotated = [f for f in files if f != log]
    assert len(rotated) == 2 and all(f.name.endswith(LOGROTATE_COMPRESSORS[command]) for f in rotated), files
    result = kvwatch("replay", "-f", "prometheus", *map(str, files))
    assert result.returncode == 0 and result.stderr == b""
    assert metric(result.stdout.decode(), "kvwatch_lmcache_lookups_total", server="vllm") == 15
    assert "server=" not in result.stdout.decode().replace('server="vllm"', "")


@pytest.mark.parametrize("suffix", sorted(COMPRESSORS))
def test_concatenated_compressed_logs_are_all_read(tmp_path: Path, suffix: str) -> None:
    compress, _ = COMPRESSORS[suffix]
    path = tmp_path / f"two.log.{suffix}"
    path.write_bytes(compress(LMCACHE_LOG.read_bytes()) * 2)  # cat vllm.log.1.xz vllm.log.2.xz
    text = kvwatch("replay", "-f", "prometheus", str(path)).stdout.decode()
    assert metric(text, "kvwatch_lmcache_lookups_total") == 10


@pytest.mark.parametrize("suffix", ["xz", "zst"])
def test_a_cut_compressed_log_keeps_every_line_it_holds(tmp_path: Path, suffix: str) -> None:
    compress, decompressor = COMPRESSORS[suffix]
    log = tmp_path / "whole.log"
    generate(log, 20_000, style="current")  # many of the compressor's blocks: half the file holds lines
    packed = compress(log.read_bytes())
    cut = packed[: len(packed) // 2]
    path = tmp_path / f"cut.log.{suffix}"
    path.write_bytes(cut)
    held = decompressor().decompress(cut)  # what the cut file still holds
    assert held.count(b"\n") > 100
    result = kvwatch("replay", "-f", "prometheus", str(path))
    assert result.returncode == 0
    name = {"xz": "xz", "zst": "zstd"}[suffix]
    assert f"read stopped early: {name} data cut short" in result.stderr.decode()
    text = result.stdout.decode()
    assert metric(text, "kvwatch_lines_total") == held.count(b"\n") + (not held.endswith(b"\n"))


def test_data_that_is_not_what_its_opening_says_stops_the_read_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "vllm.log.xz"
    path.write_bytes(b"\xfd7zXZ\x00" + b"not xz at all\n" * 10)
    result = kvwatch("replay", str(path))
    assert result.returncode == 0
    assert "read stopped early: cannot decompress its xz data" in result.stderr.decode()


def _zip_archive(path: Path) -> None:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.write(LMCACHE_LOG, "vllm.log")


def _tar_archive(mode: str) -> Callable[[Path], None]:
    """A support bundle: logs in a tar archive, compressed or not."""

    def write(path: Path) -> None:
        with tarfile.open(path, mode) as archive:
            archive.add(LMCACHE_LOG, "logs/vllm.log")
            archive.add(LMCACHE_LOG, "logs/vllm.log.1")

    return write


def _opening_only(opening: bytes) -> Callable[[Path], None]:
    """A stand-in where no tool here writes the format (lz4, a journal file): its opening, then bytes."""
    return lambda path: path.write_bytes(opening + os.urandom(200))


def test_an_xz_file_that_needs_more_memory_than_its_presets_is_refused(tmp_path: Path) -> None:
    """A 256 MiB dictionary (xz's presets use at most 64 MiB), which the output would fill.  Compressed in a
    process of its own: the compressor's memory would stay in this one's, and in the peak RSS its children
    inherit at their start."""
    path = tmp_path / "vllm.log.xz"
    compress = (
        "import lzma, sys; filters = [{'id': lzma.FILTER_LZMA2, 'dict_size': 256 << 20}]; "
        "sys.stdout.buffer.write(lzma.compress(sys.stdin.buffer.read(), format=lzma.FORMAT_XZ, filters=filters))"
    )
    packed = subprocess.run([sys.executable, "-c", compress], input=LMCACHE_LOG.read_bytes(), capture_output=True)
    path.write_bytes(packed.stdout)
    result = kvwatch("replay", str(path))
    assert result.returncode == 0
    assert "read stopped early: cannot decompress its xz data: Memory usage limit" in result.stderr.decode()


@pytest.mark.parametrize(
    ("write", "told"),
    [
        (_zip_archive, "a zip archive"),
        (_tar_archive("w"), "a tar archive"),
        (_tar_archive("w:gz"), "a tar archive"),
        (_tar_archive("w:xz"), "a tar archive"),
        (_opening_only(b"\x04\x22\x4d\x18"), "lz4-compressed"),
        (_opening_only(b"LPKSHHRH"), "a systemd journal file"),
    ],
)
def test_a_format_kvwatch_does_not_unpack_is_refused_with_what_to_do(
    tmp_path: Path, write: Callable[[Path], None], told: str
) -> None:
    path = tmp_path / "vllm.log.packed"
    write(path)
    result = kvwatch("replay", str(path))
    assert result.returncode == 2 and result.stdout == b""
    assert f"{path}: {told}" in result.stderr.decode()
    assert "| kvwatch replay -" in result.stderr.decode()
    from_stdin = kvwatch("replay", "-", stdin=path.read_bytes())
    assert from_stdin.returncode == 2 and f"-: {told}" in from_stdin.stderr.decode()


def test_zstd_without_a_zstd_module_is_refused_with_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where neither Python's own module (3.14 on) nor its backport can be imported: a stand-in for such an
    environment, since this one has the backport installed."""
    import agent.sources.lines as lines

    def missing() -> None:
        raise ImportError("no zstd here")

    monkeypatch.setattr(lines, "zstd_module", missing)
    with pytest.raises(InputError, match=r"zstd-compressed, .*pip install backports\.zstd.*zstd -dc FILE"):
        codec_of(b"\x28\xb5\x2f\xfd" + b"\x00" * 6)


def test_a_log_that_begins_like_a_compressor_s_magic_is_read_as_text(tmp_path: Path) -> None:
    path = tmp_path / "vllm.log"
    path.write_bytes(b"BZh9 is not bzip2\n" + LMCACHE_LOG.read_bytes())
    text = kvwatch("replay", "-f", "prometheus", str(path)).stdout.decode()
    assert metric(text, "kvwatch_lmcache_lookups_total") == 5


def test_parallel_slices_give_the_numbers_of_one_pass(tmp_path: Path) -> None:
    log = tmp_path / "big.log"
    generate(log, 150_000, style="current")
    assert log.stat().st_size > 16 << 20  # large enough to be read in slices
    one = kvwatch("replay", "-f", "prometheus", "--jobs", "1", str(log)).stdout.decode()
    three = kvwatch("replay", "-f", "prometheus", "--jobs", "3", str(log)).stdout.decode()
    a, b = (
        dict(pair(line) for line in one.splitlines() if line[0] != "#"),
        dict(pair(line) for line in three.splitlines() if line[0] != "#"),
    )
    assert a.keys() == b.keys()
    for key, value in a.items():
        assert b[key] == pytest.approx(value, rel=1e-12), key
    truth = json.loads(Path(str(log) + ".truth.json").read_text())
    assert a['kvwatch_lmcache_hit_tokens_total{server="big"}'] == truth["lmcache_hit_tokens"]


def pair(line: str) -> tuple[str, float]:
    name, value = line.rsplit(" ", 1)
    return name, float(value)


def test_a_closed_pipe_ends_quietly() -> None:
    proc = subprocess.Popen(
        f"{sys.executable} -m agent replay -f events {LMCACHE_LOG} {LMCACHE_LOG} | head -n 1",
        shell=True,
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0
    assert len(out.splitlines()) == 1
    assert b"Traceback" not in err and b"BrokenPipe" not in err


def test_unmatched_lists_unknown_shapes_masked_most_frequent_first(tmp_path: Path) -> None:
    secret = "my secret prompt about the merger"
    log = tmp_path / "vllm.log"
    log.write_text(
        # Three of one new message (a changed release), one another, read lines and noise.
        "".join(
            f"(APIServer pid=7) INFO 12-01 10:00:0{i} [scheduler.py:99] Scheduled {i + 10} requests in batch "
            f"chatcmpl-9f{i}a7c3e1d2b4c5a6.\n"
            for i in range(3)
        )
        + f"(APIServer pid=7) INFO 12-01 10:00:05 [serving.py:12] Rejected request: prompt: '{secret}', len 9\n"
        + f'[2026-12-01 10:00:06,000] LMCache INFO: New thing happened to "{secret}" (x.py:1:lmcache.x)\n'
        + "(APIServer pid=7) INFO 12-01 10:00:07 [async_llm.py:382] Added request chatcmpl-1.\n"
        + "Traceback (most recent call last):\n"
        + "just some text\n",
        encoding="utf-8",
    )
    result = kvwatch("replay", "--format", "unmatched", str(log))
    assert result.returncode == 0, result.stderr
    out = result.stdout.decode()
    assert secret not in out and "9fa7" not in out and "chatcmpl-9f" not in out
    lines = out.splitlines()
    assert lines[0].startswith("# 5 lines") and "in 3 shapes" in lines[0]
    assert re.match(r"^\s+3  \(APIServer pid=N\) INFO N-N N:N:N \[scheduler\.py:N\] Scheduled N requests", lines[1])
    assert "prompt: …" in out and "'…'" in out
    assert "Added request" not in out and "Traceback" not in out and "just some text" not in out


def test_events_stream_from_a_pipe_as_the_lines_come() -> None:
    """``tail -f server.log | kvwatch replay -f events -``: each event is printed before the input ends."""
    process = subprocess.Popen(
        [sys.executable, "-m", "agent", "replay", "-f", "events", "-"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        cwd=ROOT,
    )
    assert process.stdin is not None and process.stdout is not None
    try:
        for _ in range(2):  # the first line, then one more while the pipe stays open
            process.stdin.write(STATS.encode())
            process.stdin.flush()
            assert select.select([process.stdout], [], [], 60)[0], "no event while the input is open"
            assert json.loads(process.stdout.readline())["kind"] == "engine_stats"
    finally:
        process.stdin.close()
        process.wait(timeout=60)
    assert process.returncode == 0


# Runs a command and writes its peak RSS (KiB; of it and its workers) to a file.  A small process of its own
# starts it: a process started from this one (the test runner, hundreds of MiB into a suite) would count this
# one's resident pages as its own, which Linux carries into the peak RSS of the program it then executes.
_PEAK_RSS = (
    "import resource, subprocess, sys\n"
    "status = subprocess.call(sys.argv[2:])\n"
    "with open(sys.argv[1], 'w') as report: report.write(str(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss))\n"
    "sys.exit(status)\n"
)


def _peak_rss_mib(*args: str) -> tuple[int, float, bytes]:
    """Run ``kvwatch`` and return (exit status, peak RSS of it and its workers in MiB, stdout)."""
    with tempfile.TemporaryFile() as out, tempfile.NamedTemporaryFile("r") as report:
        argv = [sys.executable, "-c", _PEAK_RSS, report.name, sys.executable, "-m", "agent", *args]
        status = subprocess.run(argv, stdout=out, stderr=subprocess.DEVNULL, cwd=ROOT, timeout=300).returncode
        out.seek(0)
        return status, int(report.read()) / 1024, out.read()


def test_a_huge_line_where_a_parallel_slice_is_cut_is_never_held_whole(tmp_path: Path) -> None:
    """A 512 MiB line (a letter, then a sparse file's hole: NULs, no newline) between ordinary lines, read
    with --jobs.  (A hole where a line begins would be no line at all: dropped as it comes.)"""
    log = tmp_path / "huge.log"
    with open(log, "wb") as handle:
        handle.write(STATS.encode() * 3 + b"x")
        handle.truncate(handle.tell() + (512 << 20))  # a hole: no disk used
        handle.seek(0, os.SEEK_END)
        handle.write(b"\n" + STATS.encode() * 2)
    status, peak, out = _peak_rss_mib("replay", "-f", "prometheus", "--jobs", "4", str(log))
    assert status == 0
    text = out.decode()
    assert 'kvwatch_vllm_stats_lines_total{engine="0",server="huge"} 5.0' in text
    assert 'kvwatch_lines_skipped_total{reason="too_long",server="huge"} 1.0' in text
    assert peak < 200, f"peak RSS {peak:.0f} MiB"


def _gzip_packer() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    packer = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    return packer.compress, lambda data: packer.compress(data) + packer.flush()


def _zstd_packer() -> tuple[Callable[[bytes], bytes], Callable[[bytes], bytes]]:
    packer = zstd_module().ZstdCompressor()
    return packer.compress, lambda data: packer.compress(data, packer.FLUSH_FRAME)


@pytest.mark.parametrize("suffix", ["gz", "zst"])
def test_a_compression_bomb_is_read_in_bounded_pieces(tmp_path: Path, suffix: str) -> None:
    """1 MiB that inflates to a 1 GiB line of one byte: counted as one line too long, in bounded memory, in
    gzip and in zstd (whose decompressor keeps what it has not yet handed out).  (A run of NUL bytes would be
    no line at all: a hole, dropped as it comes.)"""
    compress, finish = {"gz": _gzip_packer, "zst": _zstd_packer}[suffix]()
    bomb = tmp_path / f"bomb.log.{suffix}"
    zeros = b"x" * (1 << 20)
    with open(bomb, "wb") as handle:
        handle.write(compress(STATS.encode()))
        for _ in range(1024):
            handle.write(compress(zeros))
        handle.write(finish(b"\n" + STATS.encode()))
    assert bomb.stat().st_size < 2 << 20
    status, peak, out = _peak_rss_mib("replay", "-f", "prometheus", str(bomb))
    assert status == 0
    text = out.decode()
    assert 'kvwatch_vllm_stats_lines_total{engine="0",server="bomb"} 2.0' in text
    assert 'kvwatch_lines_skipped_total{reason="too_long",server="bomb"} 1.0' in text
    assert peak < 200, f"peak RSS {peak:.0f} MiB"


def test_version_is_the_installed_one_and_no_command_loads_the_package_metadata() -> None:
    from importlib import metadata

    shown = kvwatch("--version")
    assert shown.returncode == 0, shown.stderr
    # pyproject.toml reads the version from agent/__init__.py: what pip installed is what kvwatch says.
    assert shown.stdout.decode() == f"kvwatch {metadata.version('kvwatch')}\n"
    # Neither a replay nor the daemon's module (which serves the version at once) loads importlib.metadata.
    probe = (
        "import sys; from agent.cli import main; main(['replay', '-f', 'prometheus', '/dev/null']); "
        "import agent.commands.run; print(agent.commands.run.__version__, file=sys.stderr); "
        "print('importlib.metadata' in sys.modules, file=sys.stderr)"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, cwd=ROOT, timeout=60)
    assert loaded.returncode == 0, loaded.stderr
    assert loaded.stderr.decode().strip().splitlines()[-2:] == [metadata.version("kvwatch"), "False"]


def test_a_summary_or_the_events_load_no_prometheus_client(tmp_path: Path) -> None:
    """The client library (8 MiB of a replay's 28 with it) is loaded only where metrics are written; the
    summary reads the same counts without it."""
    samples = ROOT / "tests" / "fixtures" / "samples"
    # The LMCache server's log of a real run, and two of its lookups' ends at DEBUG (recorded on another run).
    server_log = tmp_path / "lmcache-server.log"
    ends = [case["line"] for case in line_cases("lmcache") if "MP lookup/prefetch end: session=" in case["line"]]
    server_log.write_text((samples / "lmcache-0.5.6-mp-server.log").read_text() + "\n".join(ends[:2]) + "\n")
    logs = [str(samples / "vllm-0.32.0-cpu-lmcache-0.5.6-mp.log"), "--lmcache-server-log", str(server_log)]
    probe = (
        "import contextlib, io, json, sys; from agent.cli import main\n"
        "for fmt in ('summary', 'events', 'prometheus', 'summary'):\n"
        "    out = io.StringIO()\n"
        "    with contextlib.redirect_stdout(out): main(['replay', '-f', fmt, *sys.argv[1:]])\n"
        "    print(json.dumps([fmt, 'prometheus_client' in sys.modules, out.getvalue()]), file=sys.stderr)\n"
    )
    run = subprocess.run([sys.executable, "-c", probe, *logs], capture_output=True, cwd=ROOT, timeout=60)
    assert run.returncode == 0, run.stderr
    shown = [json.loads(line) for line in run.stderr.decode().splitlines()]
    assert [(fmt, loaded) for fmt, loaded, _ in shown] == [
        ("summary", False),
        ("events", False),
        ("prometheus", True),
        ("summary", True),
    ]
    # The lookups' ends are a count their metric declares (kept from events alone): the summary shows it all the same.
    assert shown[0][2] == shown[3][2] and "lookups ended: hit 1, miss 1" in shown[0][2]


def test_events_reach_a_pipe_in_blocks_also_where_python_writes_unbuffered(monkeypatch) -> None:
    """PYTHONUNBUFFERED (container images often set it) makes standard output write each event alone: a
    third of ``-f events``' time through a pipe.  Events of a file are written in blocks all the same;
    those of a live input at once."""
    from agent.commands import replay

    read_end, write_end = os.pipe()
    unbuffered = io.TextIOWrapper(io.FileIO(write_end, "w"), write_through=True)  # what -u gives
    monkeypatch.setattr(sys, "stdout", unbuffered)
    try:
        out = replay._events_output(live=False)
        out.write(STATS * 100)
        assert select.select([read_end], [], [], 0)[0] == []  # nothing written yet
        out.flush()
        assert len(os.read(read_end, 1 << 20)) == len(STATS.encode()) * 100
        out = replay._events_output(live=True)
        out.write(STATS)
        assert os.read(read_end, 1 << 20) == STATS.encode()  # at once
    finally:
        unbuffered.close()
        os.close(read_end)


def _multiplexed(tmp_path: Path, frames: tuple, lines: int) -> tuple[Path, list[Path]]:
    """Two generated logs interleaved line by line, each line in its writer's frame (a prefix as ``kubectl
    logs --prefix`` or ``docker compose logs`` writes it, or a collector's record naming the pod), a run of
    one writer's lines, then of the other's ...; also each writer's framed lines alone."""
    logs = []
    for index, frame in enumerate(frames):
        source = tmp_path / f"source-{index}.log"
        generate(source, lines, seed=100 + index, style=("classic", "current")[index])
        framed = frame if callable(frame) else (lambda line, prefix=frame: f"{prefix}{line}\n")
        logs.append([framed(line) for line in source.read_text(encoding="utf-8").splitlines()])
    alone = []
    for index, framed_lines in enumerate(logs):
        alone.append(tmp_path / f"alone-{index}.log")
        alone[-1].write_text("".join(framed_lines), encoding="utf-8")
    mixed = []
    for start in range(0, max(map(len, logs)), 7):  # runs of 7 lines, as concurrent readers interleave them
        for framed_lines in logs:
            mixed.extend(framed_lines[start : start + 7])
    combined = tmp_path / "all.log"
    combined.write_text("".join(mixed), encoding="utf-8")
    return combined, alone


def _fluent_bit(pod: str) -> Callable[[str], str]:
    """A line as Fluent Bit's Kubernetes filter ships it: the line and its pod's metadata."""
    metadata = {"pod_name": pod, "namespace_name": "inference", "labels": {"app": "vllm"}, "container_name": "vllm"}
    return lambda line: json.dumps({"date": 1765728000.5, "log": line, "kubernetes": metadata}) + "\n"


def _stern_json(pod: str) -> Callable[[str], str]:
    """A line as ``stern --output json`` prints it."""
    names = {"nodeName": "gpu-node-1", "namespace": "inference", "podName": pod, "containerName": "vllm"}
    return lambda line: json.dumps({"message": line, **names}) + "\n"


def _samples(exposition: str) -> dict[str, float]:
    return dict(pair(line) for line in exposition.splitlines() if line and line[0] != "#")


@pytest.mark.parametrize(
    ("frames", "servers"),
    [
        (("[pod/vllm-0/vllm] ", "[pod/vllm-7d9f8-x2k4p/vllm] "), ("vllm-0/vllm", "vllm-7d9f8-x2k4p/vllm")),
        (("vllm-a-1  | ", "\x1b[36mvllm-b-1  | \x1b[0m"), ("vllm-a-1", "vllm-b-1")),
        ((_fluent_bit("vllm-0"), _fluent_bit("vllm-1")), ("inference/vllm-0/vllm", "inference/vllm-1/vllm")),
        (
            ("vllm-7d9f8-x2k4p vllm ", "\x1b[33mml\x1b[0m \x1b[33mvllm-0\x1b[0m \x1b[34mvllm\x1b[0m "),
            ("vllm-7d9f8-x2k4p/vllm", "ml/vllm-0/vllm"),
        ),
        ((_stern_json("vllm-0"), _stern_json("vllm-1")), ("inference/vllm-0/vllm", "inference/vllm-1/vllm")),
    ],
    ids=["kubectl-prefix", "compose", "collector-records", "stern", "stern-json"],
)
def test_a_log_several_containers_wrote_gives_each_writer_as_a_server(
    tmp_path: Path, frames: tuple, servers: tuple[str, str]
) -> None:
    combined, alone = _multiplexed(tmp_path, frames, 4_000)
    both = _samples(kvwatch("replay", "-f", "prometheus", str(combined)).stdout.decode())
    assert 'kvwatch_lines_total{server="all"}' not in both  # every line named its writer
    for path, server in zip(alone, servers, strict=True):
        single = _samples(kvwatch("replay", "-f", "prometheus", "--server", server, str(path)).stdout.decode())
        mine = {key: value for key, value in both.items() if f'server="{server}"' in key}
        assert mine == single
        assert single[f'kvwatch_lines_total{{server="{server}"}}'] == 4_000
    # --server names one server for the whole input, as before.
    one = _samples(kvwatch("replay", "-f", "prometheus", "--server", "x", str(combined)).stdout.decode())
    assert one['kvwatch_lines_total{server="x"}'] == 8_000


def test_a_multiplexed_log_s_unnamed_lines_stay_with_the_input(tmp_path: Path) -> None:
    path = tmp_path / "pods.log"
    path.write_text(
        "[pod/vllm-0/vllm] (APIServer pid=1) INFO 12-14 16:00:00 [async_llm.py:578] Added request chatcmpl-1.\n"
        "error: container vllm in pod vllm-1 is waiting to start: ContainerCreating\n"
        "[pod/vllm-1/vllm] (APIServer pid=1) INFO 12-14 16:00:01 [async_llm.py:578] Added request chatcmpl-2.\n"
        "[pod/vllm-1/vllm] (APIServer pid=1) INFO 12-14 16:00:02 [async_llm.py:578] Added request chatcmpl-3.\n",
        encoding="utf-8",
    )
    text = kvwatch("replay", "-f", "prometheus", str(path)).stdout.decode()
    assert metric(text, "kvwatch_vllm_requests_added_total", server="vllm-0/vllm") == 1
    assert metric(text, "kvwatch_vllm_requests_added_total", server="vllm-1/vllm") == 2
    assert metric(text, "kvwatch_lines_total", server="pods") == 1  # kubectl's own line
    # Most of a log's first lines name no writer: it is read as one server, whatever a few lines say.
    plain = "(APIServer pid=1) INFO 12-14 16:00:00 [loggers.py:118] Engine 000: Running: 0 reqs\n" * 4
    path.write_text(plain + path.read_text(encoding="utf-8"), encoding="utf-8")
    text = kvwatch("replay", "-f", "prometheus", str(path)).stdout.decode()
    assert metric(text, "kvwatch_vllm_requests_added_total", server="pods") == 3


def test_the_events_of_a_multiplexed_log_name_their_writer(tmp_path: Path) -> None:
    path = tmp_path / "pods.log"
    added = "(APIServer pid=1) INFO 12-14 16:00:0{} [async_llm.py:578] Added request chatcmpl-{}.\n"
    path.write_text(
        f"[pod/vllm-0/vllm] {added.format(0, 0)}error: a line of kubectl's own\n[pod/vllm-1/vllm] {added.format(1, 1)}",
        encoding="utf-8",
    )
    records = [json.loads(line) for line in kvwatch("replay", "-f", "events", str(path)).stdout.decode().splitlines()]
    for record in records:
        validate_record(record)
    assert [(r["line"], r.get("server"), r["request_id"]) for r in records] == [
        (1, "vllm-0/vllm", "chatcmpl-0"),
        (3, "vllm-1/vllm", "chatcmpl-1"),
    ]
    # One server for the whole input: no event names another.
    records = kvwatch("replay", "-f", "events", "--server", "x", str(path)).stdout.decode()
    assert '"server"' not in records and records.count("request_added") == 2


def test_docker_compose_up_s_own_first_lines_do_not_hide_its_services(tmp_path: Path) -> None:
    path = tmp_path / "up.log"
    added = "(APIServer pid=1) INFO 12-14 16:00:0{} [async_llm.py:578] Added request chatcmpl-{}.\n"
    path.write_text(
        "Attaching to lmcache-1, vllm-a-1, vllm-b-1\n"
        + "".join(f"vllm-a-1    | {added.format(i, i)}vllm-b-1    | {added.format(i, 10 + i)}" for i in range(3))
        + "lmcache-1   | [2025-12-14 16:00:09,000] LMCache INFO: Starting LMCache server (server.py:1:lmcache)\n",
        encoding="utf-8",
    )
    text = kvwatch("replay", "-f", "prometheus", str(path)).stdout.decode()
    assert metric(text, "kvwatch_vllm_requests_added_total", server="vllm-a-1") == 3
    assert metric(text, "kvwatch_vllm_requests_added_total", server="vllm-b-1") == 3
    assert metric(text, "kvwatch_lines_total", server="up") == 1  # compose's own line


def test_a_multiplexed_log_read_in_parallel_slices_gives_the_numbers_of_one_pass(tmp_path: Path) -> None:
    combined, _ = _multiplexed(tmp_path, ("[pod/vllm-0/vllm] ", "[pod/vllm-1/vllm] "), 50_000)
    assert combined.stat().st_size > 16 << 20  # read in slices
    one = _samples(kvwatch("replay", "-f", "prometheus", "--jobs", "1", str(combined)).stdout.decode())
    three = _samples(kvwatch("replay", "-f", "prometheus", "--jobs", "3", str(combined)).stdout.decode())
    assert one.keys() == three.keys()
    for key, value in one.items():
        assert three[key] == pytest.approx(value, rel=1e-12), key
    assert one['kvwatch_lines_total{server="vllm-1/vllm"}'] == 50_000
    truth = json.loads((combined.parent / "source-0.log.truth.json").read_text())
    assert one['kvwatch_lmcache_hit_tokens_total{server="vllm-0/vllm"}'] == truth["lmcache_hit_tokens"]
