"""Kubernetes pod logs on this node, found from the kubelet's directory layout.

The kubelet keeps each container's output in
``/var/log/pods/NAMESPACE_POD_UID/CONTAINER/N.log`` (N: the restart count), as
CRI records, which the parsers already unwrap.  Neither a namespace nor a pod
name may hold ``_`` (they are DNS labels and subdomains), so the directory name
splits into its three parts.  :func:`discover` lists the containers a
``[[pods]]`` table picks and names each the server its lines belong to; the
agent follows what appears and forgets what goes (``agent.commands.run``).
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass

from agent.config import PodsConfig
from agent.sources import listed


@dataclass(frozen=True)
class PodContainer:
    namespace: str
    pod: str
    container: str
    directory: str  # LOG_DIR/NAMESPACE_POD_UID/CONTAINER


def containers(log_dir: str) -> list[PodContainer]:
    """Every container directory under ``log_dir`` (none when it cannot be read)."""
    found = []
    for entry in listed(log_dir, "pods", "pod"):
        parts = entry.name.split("_")
        if len(parts) != 3 or not all(parts):
            continue  # not a pod's directory
        try:
            inner = sorted(os.scandir(entry.path), key=lambda e: e.name)
        except OSError:
            continue  # removed meanwhile, or unreadable
        found += [PodContainer(parts[0], parts[1], c.name, c.path) for c in inner if c.is_dir()]
    return found


def discover(config: PodsConfig) -> dict[str, tuple[str, ...]]:
    """Server name -> the log-file globs of the containers ``config`` picks that exist now."""
    servers: dict[str, list[str]] = {}
    for found in containers(config.log_dir):
        if not (
            fnmatch.fnmatchcase(found.namespace, config.namespace)
            and fnmatch.fnmatchcase(found.pod, config.pod)
            and fnmatch.fnmatchcase(found.container, config.container)
        ):
            continue
        name = config.name.format(namespace=found.namespace, pod=found.pod, container=found.container)
        servers.setdefault(name, []).append(os.path.join(found.directory, "*.log"))
    return {name: tuple(patterns) for name, patterns in servers.items()}
