"""Helpers for tests that run kvwatch and its servers as real processes: ports, waiting, a kvwatch on a config."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).parents[2]
FAKE = str(REPO / "tests" / "support" / "fakeserver.py")


# One vLLM stats line, as every test agent can be fed it.
STATS = (
    "INFO 11-25 10:00:00 [loggers.py:1] Engine 000: Avg prompt throughput: 10.0 tokens/s, Avg generation throughput: "
    "5.0 tokens/s, Running: 1 reqs, Waiting: 0 reqs, GPU KV cache usage: 1.0%, Prefix cache hit rate: 50.0%\n"
)


def stats_lines(agent: Agent, server: str) -> float:
    """Stats lines of ``server``'s engine 0 counted so far (0 before the first)."""
    return agent.value("kvwatch_vllm_stats_lines_total", server=server, engine="0") or 0.0


# Running kvwatch as nobody: the user id, and the command that switches to it.
NOBODY = 65534
AS_NOBODY = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]


def as_nobody(directory: Path) -> tuple[list[str], dict[str, str]]:
    """What runs ``python -m agent`` as an unprivileged user: (argv prefix, environment), or skips.

    The checkout (and its .venv) may sit under a directory only root may enter, as /root is, so
    kvwatch's code and the packages it imports are copied into ``directory`` (made world-readable)
    and found through PYTHONPATH from there."""
    if os.geteuid() != 0:
        pytest.skip("needs root to switch to an unprivileged user")
    if shutil.which("setpriv") is None:
        pytest.skip("needs setpriv (util-linux) to switch to an unprivileged user")
    import prometheus_client
    import watchdog

    code = directory / "code"
    for package in ("agent", "parsers", "dashboards"):
        shutil.copytree(REPO / package, code / package, ignore=shutil.ignore_patterns("__pycache__"))
    for module in (prometheus_client, watchdog):
        source = Path(module.__path__[0])
        shutil.copytree(source, code / source.name, ignore=shutil.ignore_patterns("__pycache__"))
    for path in [directory, *directory.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
    env = {"PYTHONPATH": str(code), "PYTHONDONTWRITEBYTECODE": "1"}
    probe = subprocess.run(
        [*AS_NOBODY, sys.executable, "-c", "import agent.cli"],
        cwd=directory,
        env={**os.environ, **env},
        capture_output=True,
        timeout=60,
    )
    if probe.returncode != 0:
        pytest.skip(f"the Python interpreter cannot run as an unprivileged user here: {probe.stderr.decode()[-200:]}")
    return AS_NOBODY, env


def live_members(group: int) -> list[int]:
    """Processes of a process group that have not exited (zombies waiting for a reaper do not count)."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            data = Path(f"/proc/{entry}/stat").read_bytes()
        except OSError:
            continue
        fields = data[data.rfind(b")") + 2 :].split()
        if int(fields[2]) == group and fields[0] != b"Z":
            members.append(int(entry))
    return members


def self_signed_certificate(directory: Path) -> tuple[Path, Path]:
    """A key and a certificate for 127.0.0.1 (openssl), valid for a day: (key, cert)."""
    key, cert = directory / "key.pem", directory / "cert.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert, "-days", "1",
         "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    return key, cert


def kvwatch(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: bytes | None = None,
    cwd: Path | None = None,
    text: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """``kvwatch ARGS`` as a user runs it from a checkout (this interpreter, the repository's code), its output
    captured (as text unless told otherwise).  ``env``: its whole environment (None: this process's)."""
    return subprocess.run(
        [sys.executable, "-m", "agent", *args],
        input=stdin,
        capture_output=True,
        text=text,
        cwd=cwd or REPO,
        env=env,
        timeout=timeout,
    )


def check(config: Path) -> subprocess.CompletedProcess:
    """``kvwatch check`` of a configuration file, its output as text."""
    return kvwatch("check", "--config", str(config))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(check: Callable[[], object], timeout: float = 20.0, what: str = "condition") -> object:
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = check()
            if value:
                return value
        except (OSError, KeyError, AssertionError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}" + (f" (last error: {last_error})" if last_error else ""))


class Agent:
    """One kvwatch process on a config written into ``directory``."""

    def __init__(
        self,
        directory: Path,
        body: str,
        env: dict | None = None,
        prefix: list[str] | None = None,
        cwd: Path = REPO,
    ) -> None:
        self.directory = directory
        self.port = free_port()
        self.config = directory / "kvwatch.toml"
        self.config.write_text(
            f'[agent]\nstate_dir = "state"\nlog_dir = "logs"\npoll_interval = "200ms"\n\n'
            f'[metrics]\naddress = "127.0.0.1"\nport = {self.port}\n\n{body}'
        )
        self.env = {**os.environ, **(env or {})}
        self.cwd = cwd
        self.prefix = prefix or []
        self.process: subprocess.Popen | None = None
        self.stderr = directory / "kvwatch.err"

    def start(self, wait: bool = True) -> Agent:
        err = open(self.stderr, "ab")  # noqa: SIM115 - kept open by the child
        self.process = subprocess.Popen(
            [*self.prefix, sys.executable, "-m", "agent", "run", "--config", str(self.config)],
            cwd=self.cwd,
            env=self.env,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        err.close()
        if wait:
            wait_for(lambda: self.get("/healthz")[0] == 200, what="kvwatch to serve /healthz")
        return self

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def get(self, path: str) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(self.url(path), timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read().decode()

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.get("/metrics")
        assert status == 200
        out = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
        return out

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics().get((name, tuple(sorted(labels.items()))))

    def servers(self) -> set[str]:
        """The ``server`` labels /metrics shows now (of the lines read)."""
        return {dict(labels)["server"] for name, labels in self.metrics() if name == "kvwatch_lines_total"}

    def signal(self, sig: int) -> None:
        assert self.process is not None
        self.process.send_signal(sig)

    def wait(self, timeout: float = 30.0) -> int:
        assert self.process is not None
        return self.process.wait(timeout=timeout)

    def log(self) -> str:
        return self.stderr.read_text(errors="replace")

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def kill_servers(self) -> None:
        """SIGKILL the process groups of the servers its state directory records (they outlive kvwatch)."""
        for record in self.directory.rglob("servers/*.json"):
            with contextlib.suppress(OSError, ValueError, KeyError):
                os.killpg(json.loads(record.read_text())["pid"], signal.SIGKILL)


def fake_server(name: str, *args: str, port: int | None = None, **settings: str) -> str:
    """A [[server]] table running tests/support/fakeserver.py."""
    argv = [sys.executable, FAKE, *args]
    extra = ""
    if port is not None:
        argv += ["--port", str(port)]
        extra += f'health_url = "http://127.0.0.1:{port}/health"\nhealth_interval = "200ms"\n'
    else:
        extra += 'health_url = ""\n'
    for key, value in settings.items():
        extra += f"{key} = {value}\n"
    command = ", ".join(f'"{a}"' for a in argv)
    return f'[[server]]\nname = "{name}"\ncommand = [{command}]\nbackoff_initial = 0.1\nbackoff_max = 0.5\n{extra}\n'
