"""``[[pods]]``: Kubernetes pod logs, in a directory tree shaped like the kubelet's ``/var/log/pods``
(``NAMESPACE_POD_UID/CONTAINER/N.log``, CRI records as containerd writes them, long lines split in
``P`` pieces).  A pod's container is a server named from its path; pods that appear are read from
their first line, a restarted container's new file adds to its server, and a pod that goes takes its
series with it.  Real kvwatch processes, real files."""

from __future__ import annotations

import shutil
from pathlib import Path

from parsers import LogStream
from tests.support.harness import REPO, Agent, check, wait_for

SAMPLE = REPO / "tests" / "fixtures" / "samples" / "vllm-0.32.0-cpu-lmcache-0.5.6.log"
PIECE = 200  # containerd splits a line longer than its buffer; shorter here, so that the sample has splits


def cri_records(lines: list[str], start: int = 0) -> str:
    """``lines`` as a container runtime writes them: a stamp, the stream, P for each piece of a split
    line but the last, F for the last."""
    out = []
    for i, line in enumerate(lines):
        stamp = f"2025-12-14T16:{(start + i) // 60 % 60:02d}:{(start + i) % 60:02d}.{i:06d}000Z"
        pieces = [line[j : j + PIECE] for j in range(0, len(line), PIECE)] or [""]
        out += [f"{stamp} stdout P {piece}" for piece in pieces[:-1]] + [f"{stamp} stdout F {pieces[-1]}"]
    return "\n".join(out) + "\n"


def sample_lines() -> list[str]:
    return SAMPLE.read_text(encoding="utf-8").splitlines()


def counted(lines: list[str]) -> dict[str, int]:
    """What the sample holds, as the parsers read it line by line (the follow must find the same)."""
    stream = LogStream()
    kinds: dict[str, int] = {}
    for line in lines:
        for event in stream.feed(line):
            kinds[event.kind] = kinds.get(event.kind, 0) + 1
    return kinds


def pod_dir(root: Path, namespace: str, pod: str, uid: str, container: str) -> Path:
    directory = root / f"{namespace}_{pod}_{uid}" / container
    directory.mkdir(parents=True)
    return directory


PODS = """[[pods]]
log_dir = "{root}"
namespace = "llm"
container = "vllm"
name = "{{namespace}}/{{pod}}"
start_at = "beginning"
scan_interval = "200ms"
"""


def test_pods_appear_restart_and_go_each_a_server_named_from_its_path(tmp_path: Path) -> None:
    root = tmp_path / "pods"
    lines = sample_lines()
    assert any(len(line) > PIECE for line in lines)  # the sample has lines containerd would split
    lookups = counted(lines)["lmcache_lookup"]
    first = pod_dir(root, "llm", "vllm-0", "6f1c6b1e-0d6a-4e2b-9a55-3c1f0b7c2d11", "vllm")
    (first / "0.log").write_text(cri_records(lines))
    # Not picked: a sidecar of the same pod, and a vLLM pod of another namespace.
    sidecar = pod_dir(root, "llm", "vllm-0", "6f1c6b1e-0d6a-4e2b-9a55-3c1f0b7c2d11", "istio-proxy")
    (sidecar / "0.log").write_text(cri_records(lines[:20]))
    other = pod_dir(root, "batch", "vllm-9", "0b0e2a39-9c7e-4a43-8d0e-5a4f3b7e1c22", "vllm")
    (other / "0.log").write_text(cri_records(lines))
    (root / "not-a-pod").mkdir()  # the kubelet's tree holds only pod directories; anything else is passed over

    agent = Agent(tmp_path, PODS.format(root=root)).start()
    try:
        wait_for(
            lambda: agent.value("kvwatch_lmcache_lookups_total", server="llm/vllm-0") == lookups,
            what="the first pod's lookups",
        )
        assert agent.servers() == {"llm/vllm-0"}  # neither the sidecar nor the other namespace's pod

        # A pod that appears later is read from its first line.
        second = pod_dir(root, "llm", "vllm-1", "9d2f7a10-5b3c-4f1e-8e21-7c9d4b1a0f33", "vllm")
        later = lines[len(lines) // 2 :]
        (second / "0.log").write_text(cri_records(later))
        half = counted(later)["lmcache_lookup"]
        wait_for(
            lambda: agent.value("kvwatch_lmcache_lookups_total", server="llm/vllm-1") == half,
            what="the new pod's lookups",
        )

        # The first pod's container restarts: the kubelet writes 1.log beside 0.log.
        (first / "1.log").write_text(cri_records(lines, start=300))
        wait_for(
            lambda: agent.value("kvwatch_lmcache_lookups_total", server="llm/vllm-0") == 2 * lookups,
            what="the restarted container's lines, added",
        )

        # The first pod goes: its series go with it; the other pod's stay.
        shutil.rmtree(first.parent)
        wait_for(lambda: agent.value("kvwatch_lines_total", server="llm/vllm-0") is None, what="the pod's series gone")
        assert agent.value("kvwatch_lmcache_lookups_total", server="llm/vllm-1") == half
        assert "pods: llm/vllm-0 is gone" in agent.log()
    finally:
        agent.kill()


def test_the_check_shows_the_pods_table_and_a_bad_one_is_named(tmp_path: Path) -> None:
    config = tmp_path / "kvwatch.toml"
    config.write_text(PODS.format(root=tmp_path))
    shown = check(config)
    assert shown.returncode == 0, shown.stderr
    assert "[[pods]]" in shown.stdout and 'name = "{namespace}/{pod}"' in shown.stdout
    config.write_text(PODS.format(root=tmp_path).replace('container = "vllm"', 'container = "*"'))
    bad = check(config)
    assert bad.returncode != 0
    assert f"{config}: pods[0].name: two containers of a pod would be one server" in bad.stderr


def test_a_pods_directory_this_user_may_not_list_is_said_once_and_again_when_it_can_be(
    tmp_path: Path, monkeypatch, caplog
) -> None:
    """(A stand-in for the permission: these tests run as root, who lists any directory; an unprivileged
    kvwatch check of the same directory is in tests/config/test_config.py.)"""
    import logging
    import os

    from agent.sources import pods

    listing = os.scandir
    denied = {str(tmp_path)}

    def scandir(path):
        if str(path) in denied:
            raise PermissionError(13, "Permission denied", str(path))
        return listing(path)

    monkeypatch.setattr(pods.os, "scandir", scandir)
    with caplog.at_level(logging.INFO, logger="kvwatch.sources"):
        assert pods.containers(str(tmp_path)) == [] and pods.containers(str(tmp_path)) == []
        denied.clear()
        assert pods.containers(str(tmp_path)) == []
    said = [record.getMessage() for record in caplog.records]
    assert said == [
        f"pods: cannot list {tmp_path} (will retry): permission denied: no pod is found",
        f"pods: {tmp_path} can be listed again",
    ]
