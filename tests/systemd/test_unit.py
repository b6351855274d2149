"""The shipped systemd unit: ``systemd-analyze verify`` accepts it, and it keeps the promises kvwatch relies on."""

from __future__ import annotations

import configparser
import shutil
import subprocess
from pathlib import Path

import pytest

from agent.commands.run import EXIT_HANDED_OVER

REPO = Path(__file__).parents[2]
UNIT = REPO / "systemd" / "kvwatch.service"


def service_section() -> dict[str, list[str]]:
    """The [Service] directives, each with every value it is given (a directive may repeat)."""
    values: dict[str, list[str]] = {}
    section = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            key, _, value = line.partition("=")
            values.setdefault(key, []).append(value)
    return values


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze missing (Debian package systemd)")
def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    # verify checks that ExecStart's program exists; this machine has kvwatch in
    # the project's venv, not in /opt/kvwatch, so only that path is pointed there.
    kvwatch = shutil.which("kvwatch") or str(REPO / ".venv" / "bin" / "kvwatch")
    assert Path(kvwatch).exists(), "kvwatch is installed in the test environment"
    unit = tmp_path / "kvwatch.service"
    text = UNIT.read_text()
    assert "ExecStart=/opt/kvwatch/bin/kvwatch run" in text
    unit.write_text(text.replace("ExecStart=/opt/kvwatch/bin/kvwatch", f"ExecStart={kvwatch}"))
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    problems = [line for line in result.stderr.splitlines() if "kvwatch.service" in line]
    assert problems == [], problems


def test_the_unit_keeps_servers_alive_across_kvwatch_restarts_and_hand_overs() -> None:
    service = service_section()
    assert service["Type"] == ["notify"]
    assert service["NotifyAccess"] == ["main"]
    assert service["KillMode"] == ["process"], "a restart of kvwatch must not kill its servers"
    assert service["OOMPolicy"] == ["continue"], "one server's OOM kill must not stop the unit"
    assert service["Restart"] == ["on-failure"]
    assert service["WatchdogSec"] and service["ExecReload"] == ["/bin/kill -HUP $MAINPID"]
    assert str(EXIT_HANDED_OVER) in service["RestartForceExitStatus"][0].split()
    assert str(EXIT_HANDED_OVER) in service["SuccessExitStatus"][0].split()
    assert service["User"] == ["kvwatch"] and service["NoNewPrivileges"] == ["true"]
    assert "EnvironmentFile" in service


def test_the_environment_file_names_what_the_unit_uses() -> None:
    env = configparser.ConfigParser()
    env.read_string("[env]\n" + (REPO / "systemd" / "kvwatch.env").read_text())
    assert env["env"]["KVWATCH_CONFIG"] == "/etc/kvwatch/kvwatch.toml"
    assert "KVWATCH_OPTS" in env["env"]
    exec_start = service_section()["ExecStart"][0]
    assert "${KVWATCH_CONFIG}" in exec_start and "$KVWATCH_OPTS" in exec_start
