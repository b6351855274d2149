"""A real Prometheus server (the Debian ``prometheus`` binary) on loopback, for tests that scrape kvwatch."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.support.harness import free_port, wait_for


def prometheus_binary() -> str:
    binary = shutil.which("prometheus")
    if binary is None:
        if os.environ.get("CI"):
            pytest.fail("prometheus is not installed: `make test` installs the Debian package")
        pytest.skip("prometheus not installed (Debian package prometheus; `make test` installs it)")
    return binary


class Prometheus:
    """Scrapes ``targets`` every ``interval``; ``features`` go to ``--enable-feature``.

    ``config`` replaces the generated configuration (JSON is YAML: a dict is written as it is), and
    ``flags`` are added to the command line; ``port`` is the one to listen on (default: a free one)."""

    def __init__(
        self,
        directory: Path,
        targets: list[str],
        interval: str = "1s",
        features: tuple[str, ...] = (),
        rule_files: list[Path] | None = None,
        config: dict | None = None,
        flags: tuple[str, ...] = (),
        port: int | None = None,
    ):
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.port = port or free_port()
        written = directory / "prometheus.yml"
        if config is None:
            config = {
                "global": {"scrape_interval": interval, "evaluation_interval": interval},
                "scrape_configs": [{"job_name": "kvwatch", "static_configs": [{"targets": targets}]}],
            }
            if rule_files:
                config["rule_files"] = [str(p) for p in rule_files]
        written.write_text(json.dumps(config, indent=1) + "\n")
        agent = "agent" in features
        argv = [
            prometheus_binary(),
            f"--config.file={written}",
            f"--storage.{'agent' if agent else 'tsdb'}.path={directory / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            *flags,
        ]
        if features:
            argv.append(f"--enable-feature={','.join(features)}")
        self.log = directory / "prometheus.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
        wait_for(self.ready, timeout=30, what="prometheus to be ready")

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def api(self, path: str, **params: str) -> dict:
        url = f"http://127.0.0.1:{self.port}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        return body["data"]

    def query(self, expr: str) -> list[dict]:
        return self.api("query", query=expr)["result"]

    def exemplars(self, expr: str, start: float | None = None) -> list[dict]:
        """Exemplars of ``expr`` from ``start`` (default: ten minutes ago) to now."""
        now = time.time()
        since = start if start is not None else now - 600
        return self.api("query_exemplars", query=expr, start=str(since), end=str(now + 60))

    def close(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
