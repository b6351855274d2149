"""``[[containers]]``: Docker containers' logs, in a directory tree shaped like the engine's
``/var/lib/docker/containers`` (``ID/config.v2.json`` with the name, image and Compose labels,
``ID/hostconfig.json`` with the log driver, ``ID/ID-json.log`` in Docker's JSON records).  No Docker
engine runs here: the tree is written as the engine writes it, and real kvwatch processes follow it."""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

from tests.sources.test_pods import counted, sample_lines
from tests.support.harness import Agent, check, wait_for

CONTAINERS = """[[containers]]
root = "{root}"
container = "vllm-*"
image = "vllm/*"
start_at = "beginning"
scan_interval = "200ms"
"""


def json_records(lines: list[str]) -> str:
    """``lines`` as Docker's json-file driver writes them."""
    stamp = "2025-12-14T16:00:{:02d}.{:09d}Z"
    return "".join(
        json.dumps({"log": line + "\n", "stream": "stdout", "time": stamp.format(i % 60, i)}, separators=(",", ":"))
        + "\n"
        for i, line in enumerate(lines)
    )


def container(root: Path, name: str, image: str, driver: str = "json-file", service: str = "") -> Path:
    """A container's directory as the engine makes it at ``docker create``; returns its log file's path."""
    container_id = hashlib.sha256(f"{name}-{len(list(root.glob('*')))}".encode()).hexdigest()
    directory = root / container_id
    directory.mkdir(parents=True)
    labels = {"com.docker.compose.project": "inference", "com.docker.compose.service": service} if service else {}
    settings = {
        "ID": container_id,
        "Name": f"/{name}",
        "Config": {"Image": image, "Labels": labels},
        "LogPath": str(directory / f"{container_id}-json.log"),
        "State": {"Running": True},
    }
    (directory / "config.v2.json").write_text(json.dumps(settings))
    (directory / "hostconfig.json").write_text(json.dumps({"LogConfig": {"Type": driver, "Config": {}}}))
    return directory / f"{container_id}-json.log"


def test_containers_appear_and_go_each_a_server_named_by_its_name(tmp_path: Path) -> None:
    root = tmp_path / "containers"
    lines = sample_lines()
    lookups = counted(lines)["lmcache_lookup"]
    first = container(root, "vllm-gpu0", "vllm/vllm-openai:v0.11.0")
    first.write_text(json_records(lines))
    # Not picked: another image under a matching name, a matching one logging to journald, a sidecar.
    container(root, "vllm-exporter", "prom/node-exporter:v1.8.0").write_text(json_records(lines[:10]))
    container(root, "vllm-gpu7", "vllm/vllm-openai:v0.11.0", driver="journald")
    container(root, "grafana", "grafana/grafana:11.0.0").write_text(json_records(lines[:10]))
    (root / "not-a-container").mkdir()  # a directory without the engine's settings is passed over

    agent = Agent(tmp_path, CONTAINERS.format(root=root)).start()
    try:
        wait_for(
            lambda: agent.value("kvwatch_lmcache_lookups_total", server="vllm-gpu0") == lookups,
            what="the first container's lookups",
        )
        assert agent.servers() == {"vllm-gpu0"}
        assert "containers: vllm-gpu7 logs through Docker's journald driver: no file to follow" in agent.log()

        # A container started later is read from its first line.
        later = lines[len(lines) // 2 :]
        second = container(root, "vllm-gpu1", "vllm/vllm-openai:v0.11.0")
        second.write_text(json_records(later))
        half = counted(later)["lmcache_lookup"]
        wait_for(
            lambda: agent.value("kvwatch_lmcache_lookups_total", server="vllm-gpu1") == half,
            what="the new container's lookups",
        )
        assert agent.value("kvwatch_container_running", server="vllm-gpu1") == 1

        # docker stop: the engine writes the settings anew, State.Running false; the series stay.
        settings = second.parent / "config.v2.json"
        stopped = json.loads(settings.read_text()) | {"State": {"Running": False, "ExitCode": 137}}
        (second.parent / "config.v2.json.tmp").write_text(json.dumps(stopped))
        (second.parent / "config.v2.json.tmp").replace(settings)
        wait_for(lambda: agent.value("kvwatch_container_running", server="vllm-gpu1") == 0, what="the stop")
        assert agent.value("kvwatch_lmcache_lookups_total", server="vllm-gpu1") == half

        # docker rm of the first: its series go; then a container made anew under its name (compose up
        # --force-recreate: a new id) is followed from its first line, its counters going on from the old
        # one's under the same name (one series per name: no reset for Prometheus to see).
        shutil.rmtree(first.parent)
        wait_for(lambda: agent.value("kvwatch_lines_total", server="vllm-gpu0") is None, what="its series gone")
        assert "containers: vllm-gpu0 is gone" in agent.log()
        assert agent.value("kvwatch_lmcache_lookups_total", server="vllm-gpu1") == half
        container(root, "vllm-gpu0", "vllm/vllm-openai:v0.11.0").write_text(json_records(later))
        wait_for(
            lambda: agent.value("kvwatch_lmcache_lookups_total", server="vllm-gpu0") == lookups + half,
            what="the new container's lookups under the old name",
        )
    finally:
        agent.kill()


def test_a_name_made_of_compose_s_labels(tmp_path: Path) -> None:
    from agent.config import ContainersConfig
    from agent.sources.containers import discover

    root = tmp_path / "containers"
    log = container(root, "inference-vllm-1", "vllm/vllm-openai:v0.11.0", service="vllm")
    table = ContainersConfig(root=str(root), name="{project}/{service}/{id}")
    assert discover(table) == {f"inference/vllm/{log.parent.name[:12]}": (str(log),)}


def test_the_check_shows_the_containers_table_and_a_bad_one_is_named(tmp_path: Path) -> None:
    config = tmp_path / "kvwatch.toml"
    config.write_text(CONTAINERS.format(root=tmp_path))
    shown = check(config)
    assert shown.returncode == 0, shown.stderr
    assert "[[containers]]" in shown.stdout and 'name = "{container}"' in shown.stdout
    assert "# containers[0] picks nothing now (it will as they come)" in shown.stdout
    log = container(tmp_path, "vllm-gpu0", "vllm/vllm-openai:v0.11.0")
    shown = check(config)
    assert f"# containers[0] picks vllm-gpu0: {log}" in shown.stdout
    config.write_text(CONTAINERS.format(root=tmp_path) + 'name = "{service}"\n')
    bad = check(config)
    assert bad.returncode == 2
    assert f"{config}: containers[0].name: two containers could be one server" in bad.stderr
    config.write_text(CONTAINERS.format(root=tmp_path) + 'name = "{pod}"\n')
    bad = check(config)
    assert bad.returncode == 2
    assert f"{config}: containers[0].name: only {{container}}, {{id}}, {{image}}, {{project}} and" in bad.stderr


def test_a_container_whose_settings_this_user_may_not_read_is_said_once(tmp_path: Path, monkeypatch, caplog) -> None:
    """(A stand-in for the permission: these tests run as root, who reads any file; the engine writes
    config.v2.json readable by root alone, so a kvwatch user without an ACL on it finds no container.)"""
    import logging
    import os

    from agent.sources import containers

    root = tmp_path / "containers"
    log = container(root, "vllm-gpu0", "vllm/vllm-openai:v0.11.0")
    settings = str(log.parent / "config.v2.json")
    real_open, real_access = open, os.access

    def refusing_open(path, *args, **kwargs):
        if str(path) == settings:
            raise PermissionError(13, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr("builtins.open", refusing_open)
    monkeypatch.setattr(containers.os, "access", lambda path, mode: str(path) != settings and real_access(path, mode))
    with caplog.at_level(logging.WARNING, logger="kvwatch.containers"):
        assert containers.containers(str(root)) == [] and containers.containers(str(root)) == []
    said = [record.getMessage() for record in caplog.records]
    assert said == [f"containers: cannot read {settings} (will retry): permission denied"]


def test_settings_are_read_again_only_once_the_engine_writes_them_anew(tmp_path: Path, monkeypatch) -> None:
    from agent.config import ContainersConfig
    from agent.sources import containers

    root = tmp_path / "containers"
    log = container(root, "vllm-gpu0", "vllm/vllm-openai:v0.11.0")
    reads = []
    read_json = containers._read_json
    monkeypatch.setattr(containers, "_read_json", lambda path: reads.append(path) or read_json(path))
    table = ContainersConfig(root=str(root))
    assert containers.discover(table) == {"vllm-gpu0": (str(log),)}
    assert len(reads) == 2  # config.v2.json and hostconfig.json
    assert containers.discover(table) == {"vllm-gpu0": (str(log),)}
    assert len(reads) == 2  # nothing written since: nothing read
    # docker rename: the engine writes config.v2.json anew (a new file renamed over the old one).
    settings = log.parent / "config.v2.json"
    renamed = json.loads(settings.read_text()) | {"Name": "/vllm-a"}
    (log.parent / "config.v2.json.tmp").write_text(json.dumps(renamed))
    (log.parent / "config.v2.json.tmp").replace(settings)
    assert containers.discover(table) == {"vllm-a": (str(log),)}
    assert len(reads) == 4
