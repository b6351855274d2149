"""The status page at ``/`` in a real headless browser (Debian's chromium): it loads with no console
error, shows the numbers ``/metrics`` shows and the recent requests, and a screenshot is kept
(``.cache/test-artifacts/status-page.png``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.support.harness import REPO, wait_for

SAMPLE = REPO / "tests" / "fixtures" / "samples" / "vllm-0.32.0-cpu-lmcache-0.5.6.log"
ARTIFACTS = REPO / ".cache" / "test-artifacts"
CHROMIUM = shutil.which("chromium")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="Debian's chromium is not installed (make test installs it)"
)


def browser(*args: str) -> subprocess.CompletedProcess:
    assert CHROMIUM is not None, "chromium is missing: make test installs Debian's chromium"
    common = ["--headless", "--no-sandbox", "--disable-gpu", "--enable-logging=stderr", "--v=0"]
    return subprocess.run([CHROMIUM, *common, *args], capture_output=True, text=True, timeout=120)


def test_the_status_page_in_a_headless_browser(agents, tmp_path: Path) -> None:
    log = tmp_path / "tiny-llama.log"
    shutil.copy(SAMPLE, log)
    (tmp_path / "state").mkdir()
    run = {"time": 1764680000.0, "mode": "latency", "model": "tiny-llama", "params": {"batch_size": "2"}}
    run |= {"exit_code": 0, "results": {"avg_latency_seconds": 0.25}, "cache": {}}
    (tmp_path / "state" / "bench-history.jsonl").write_text(json.dumps(run) + "\n")  # a kvwatch bench run
    agent = agents(f'[[follow]]\nname = "tiny-llama"\npaths = ["{log}"]\nstart_at = "beginning"\n').start()
    wait_for(lambda: agent.value("kvwatch_lmcache_lookups_total", server="tiny-llama") == 5, what="five lookups")
    hits = agent.value("kvwatch_lmcache_hit_tokens_total", server="tiny-llama")
    looked_up = agent.value("kvwatch_lmcache_lookup_tokens_total", server="tiny-llama")
    prefix = agent.value("kvwatch_vllm_prefix_cache_hit_ratio", server="tiny-llama", engine="0")
    status, page = agent.get("/")
    assert status == 200 and "<script" not in page and "http://" not in page.split("</head>")[0]

    shown = browser("--dump-dom", agent.url("/"))
    assert shown.returncode == 0, shown.stderr[-2000:]
    console = [line for line in shown.stderr.splitlines() if ":CONSOLE" in line]
    assert console == []
    dom = shown.stdout
    assert "tiny-llama" in dom and "0.32.0" in dom
    assert f"{hits / looked_up * 100:.1f}%" in dom  # LMCache's hit ratio since start, as /metrics counts it
    assert f"{prefix * 100:.1f}%" in dom  # vLLM's prefix-cache hit rate of the last stats line
    assert dom.count("not seen before") == 1 and dom.count("vLLM's own prefix cache already held it") == 4
    assert "0.46 s" in dom  # the first request's latency, from its lines' own times (the log is old)
    assert "avg_latency_seconds 0.25" in dom and "batch_size=2" in dom  # the last benchmark

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "status-page.png"
    shot.unlink(missing_ok=True)
    taken = browser(f"--screenshot={shot}", "--window-size=1400,800", agent.url("/"))
    assert taken.returncode == 0, taken.stderr[-2000:]
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
