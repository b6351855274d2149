"""``make demo-stack``: a real Prometheus (Debian's) scraping a real kvwatch, kvwatch's rules loaded, both
stopped by one signal.  The kvwatch here follows a real sample log instead of supervising the CPU demo's
vLLM (the end-to-end tests run that one)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.harness import REPO, free_port, wait_for
from tests.support.prometheus import prometheus_binary

SAMPLE = REPO / "tests" / "fixtures" / "samples" / "vllm-0.32.0-cpu-lmcache-0.5.6.log"


def api(port: int, path: str, **params: str) -> dict:
    query = urllib.parse.urlencode(params)
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v1/{path}?{query}", timeout=10) as response:
        return json.load(response)["data"]


def test_the_demo_stack_scrapes_kvwatch_with_the_rules_and_stops_on_one_signal(tmp_path: Path) -> None:
    prometheus_binary()  # skips (or fails under CI) when Debian's prometheus is missing
    metrics_port, prometheus_port = free_port(), free_port()
    config = tmp_path / "kvwatch.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{tmp_path / "state"}"\nlog_dir = "{tmp_path / "logs"}"\n\n'
        f'[metrics]\naddress = "127.0.0.1"\nport = {metrics_port}\n\n'
        f'[[follow]]\nname = "tiny-llama"\npaths = ["{SAMPLE}"]\nstart_at = "beginning"\n'
    )
    stack = subprocess.Popen(
        [sys.executable, str(REPO / "examples" / "cpu-demo" / "demo_stack.py"), "--config", str(config),
         "--prometheus-port", str(prometheus_port), "--work", str(tmp_path / "stack")],
        cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:

        def lookups() -> float | None:
            result = api(prometheus_port, "query", query='kvwatch_lmcache_lookups_total{server="tiny-llama"}')["result"]
            return float(result[0]["value"][1]) if result else None

        assert wait_for(lookups, timeout=60, what="Prometheus to scrape kvwatch") == 5
        groups = api(prometheus_port, "rules")["groups"]
        assert groups and any(rule["type"] == "alerting" for group in groups for rule in group["rules"])
    finally:
        stack.send_signal(signal.SIGTERM)
        out, _ = stack.communicate(timeout=60)
    assert stack.returncode == 0, out
    assert f"Prometheus on http://127.0.0.1:{prometheus_port}" in out and "dashboards push" in out
    with pytest.raises(OSError):  # both stopped
        urllib.request.urlopen(f"http://127.0.0.1:{prometheus_port}/-/ready", timeout=2)
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=2)
