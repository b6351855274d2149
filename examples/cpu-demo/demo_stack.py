#!/usr/bin/env python3
"""``make demo-stack``: the CPU demo with a local Prometheus scraping it, kvwatch's rules loaded.

    .venv/bin/python examples/cpu-demo/demo_stack.py [--config FILE] [--prometheus-port 9090]

Starts Debian's ``prometheus`` (the package ``make test`` installs) on loopback,
scraping the kvwatch of ``--config`` (default: the CPU demo, examples/cpu-demo/
kvwatch.toml) every 5 s with ``dashboards/alerts.yml`` loaded, then ``kvwatch run``
on that configuration.  Prints Prometheus' address and how to point a Grafana at
it and load the dashboards.  Ctrl-C (or SIGTERM) stops kvwatch -- and the servers
it supervises -- and then Prometheus.  Everything Prometheus keeps is under
``.cache/demo-stack/``.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
WORK = REPO / ".cache" / "demo-stack"
RULES = REPO / "dashboards" / "alerts.yml"
KVWATCH = [sys.executable, "-m", "agent"]


def kvwatch_target(config: Path) -> str:
    """host:port of the kvwatch the configuration serves (loopback for a wildcard address)."""
    metrics = tomllib.loads(config.read_text(encoding="utf-8")).get("metrics", {})
    address = metrics.get("address", "0.0.0.0")
    host = {"": "127.0.0.1", "0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(address, address)
    return f"{host}:{metrics.get('port', 10067)}"


def prometheus_config(target: str) -> str:
    return (
        "global:\n  scrape_interval: 5s\n  evaluation_interval: 5s\n"
        f"rule_files: ['{RULES}']\n"
        "scrape_configs:\n  - job_name: kvwatch\n    static_configs:\n"
        f"      - targets: ['{target}']\n"
    )


def ready(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/-/ready", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", type=Path, default=HERE / "kvwatch.toml", help="kvwatch's configuration")
    parser.add_argument("--prometheus-port", type=int, default=9090)
    parser.add_argument("--work", type=Path, default=WORK, help="Prometheus' configuration and data")
    args = parser.parse_args()
    binary = shutil.which("prometheus")
    if binary is None:
        print("demo-stack: prometheus is missing (Debian package prometheus; `make test` installs it)", file=sys.stderr)
        return 2
    args.work.mkdir(parents=True, exist_ok=True)
    config = args.work / "prometheus.yml"
    config.write_text(prometheus_config(kvwatch_target(args.config)), encoding="utf-8")
    check = subprocess.run(["promtool", "check", "config", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        print(f"demo-stack: {config} is not valid:\n{check.stdout}{check.stderr}", file=sys.stderr)
        return 2
    with open(args.work / "prometheus.log", "ab") as log:
        prometheus = subprocess.Popen(
            [binary, f"--config.file={config}", f"--storage.tsdb.path={args.work / 'data'}",
             f"--web.listen-address=127.0.0.1:{args.prometheus_port}"],
            stdout=log, stderr=subprocess.STDOUT,
        )  # fmt: skip
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
    kvwatch = None
    try:
        deadline = time.monotonic() + 30
        while not ready(args.prometheus_port):
            if prometheus.poll() is not None or time.monotonic() > deadline:
                print(f"demo-stack: prometheus did not start; see {args.work / 'prometheus.log'}", file=sys.stderr)
                return 1
            time.sleep(0.2)
        url = f"http://127.0.0.1:{args.prometheus_port}"
        print(f"demo-stack: Prometheus on {url} (scraping kvwatch at {kvwatch_target(args.config)}, rules loaded)")
        print("demo-stack: to see the dashboards, point a Grafana at it and push them:")
        print(f"  .venv/bin/kvwatch dashboards push --grafana-url http://GRAFANA:3000 --prometheus-url {url}")
        print("  (a Grafana API token in $GRAFANA_TOKEN; on another host, the Prometheus URL as that host sees it)")
        print("demo-stack: Ctrl-C stops kvwatch, its servers, and Prometheus", flush=True)
        kvwatch = subprocess.Popen([*KVWATCH, "run", "--config", str(args.config)], cwd=REPO)
        while kvwatch.poll() is None and not stop:
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    finally:
        if kvwatch is not None and kvwatch.poll() is None:
            kvwatch.send_signal(signal.SIGTERM)  # kvwatch stops its servers, then itself
            kvwatch.wait()
        prometheus.terminate()
        prometheus.wait(timeout=30)
    return 0


if __name__ == "__main__":
    sys.exit(main())
