"""Docker containers on this host, found from the engine's own directory layout.

Docker keeps each container in ``/var/lib/docker/containers/ID/``: its settings
in ``config.v2.json`` (the name, the image, the labels Compose adds) and
``hostconfig.json`` (the log driver) and, with the default ``json-file`` driver, its output in
``ID-json.log`` as Docker's JSON records, which the parsers already unwrap (and
rotated beside it as ``ID-json.log.1`` ..., which the tailer follows).
:func:`discover` lists the containers a ``[[containers]]`` table picks and
names each the server its lines belong to; the agent follows what appears and
forgets what goes (``agent.commands.run``), as it does the pods of ``[[pods]]``.
No Docker API is asked: kvwatch needs the right to read that directory, not
the Docker socket's root-equivalent one.
"""

from __future__ import annotations

import fnmatch
import json
import logging
import os
from dataclasses import dataclass

from agent.config import ContainersConfig
from agent.families import flag, gauge
from agent.sources import listed

log = logging.getLogger("kvwatch.containers")
# Containers whose log driver writes no file, or whose settings this user may not read, said once each
# (forgotten past this many: a host running short-lived containers makes new ones all the time).
_SAID: set[str] = set()
_SAID_KEPT = 4096
# The container each directory's settings gave when last read, and which files (inode, time) they were.
_KNOWN: dict[str, tuple[tuple[tuple[int, int], ...] | None, DockerContainer]] = {}


@dataclass(frozen=True)
class DockerContainer:
    id: str
    name: str  # without Docker's leading "/"
    image: str
    project: str  # Compose's project and service labels ("" for a container Compose did not make)
    service: str
    log_file: str  # ROOT/ID/ID-json.log
    running: bool  # the engine's State.Running: false once it stopped (its directory stays until docker rm)


def containers(root: str) -> list[DockerContainer]:
    """Every container under ``root`` whose settings can be read (none when ``root`` cannot be listed).

    A container's settings are read again only when the engine has written them anew (a scan every few
    seconds of a host with a hundred containers would otherwise parse a megabyte of JSON each time); a
    container they did not give is looked at again at every scan."""
    found, seen = [], set()
    for entry in listed(root, "containers", "container"):
        seen.add(entry.path)
        try:
            written = tuple((st.st_ino, st.st_mtime_ns) for st in map(os.stat, _settings_files(entry.path)))
        except OSError:
            written = None
        known = _KNOWN.get(entry.path)
        if known is None or written is None or known[0] != written:
            container = _container(entry)
            if container is None:
                _KNOWN.pop(entry.path, None)
                continue
            known = _KNOWN[entry.path] = (written, container)
        found.append(known[1])
    for path in [path for path in _KNOWN if os.path.dirname(path) == root and path not in seen]:
        del _KNOWN[path]  # removed containers
    return found


def _settings_files(directory: str) -> tuple[str, str]:
    return os.path.join(directory, "config.v2.json"), os.path.join(directory, "hostconfig.json")


def _container(entry: os.DirEntry) -> DockerContainer | None:
    settings = _settings(entry.path)
    settings_file, host_file = _settings_files(entry.path)
    if settings is None:
        # Not a container's directory, being written or removed, or one this user may not read.
        if os.path.exists(settings_file) and not os.access(settings_file, os.R_OK):
            _say_once(entry.name, "containers: cannot read %s (will retry): permission denied", settings_file)
        return None
    name, config, state = settings
    labels = config.get("Labels")
    if not isinstance(labels, dict):
        labels = {}
    try:
        driver = (_read_json(host_file).get("LogConfig") or {}).get("Type")
    except (OSError, ValueError, AttributeError):
        driver = None  # (the engine's default: json-file)
    if driver not in (None, "", "json-file"):
        _say_once(entry.name, "containers: %s logs through Docker's %s driver: no file to follow", name, driver)
        return None
    return DockerContainer(
        entry.name,
        name,
        str(config.get("Image", "")),
        str(labels.get("com.docker.compose.project", "")),
        str(labels.get("com.docker.compose.service", "")),
        os.path.join(entry.path, f"{entry.name}-json.log"),
        state.get("Running") is True,
    )


def _say_once(container_id: str, message: str, *args: str) -> None:
    if container_id in _SAID:
        return
    log.warning(message, *args)
    if len(_SAID) >= _SAID_KEPT:
        _SAID.clear()
    _SAID.add(container_id)


def name_of(directory: str) -> str | None:
    """The name Docker gave the container whose directory this is (without its leading ``/``); None where
    the directory holds no container's settings."""
    settings = _settings(directory)
    return None if settings is None else settings[0]


def _settings(directory: str) -> tuple[str, dict, dict] | None:
    """A container directory's name, ``Config`` (image, labels) and ``State``, from ``config.v2.json``."""
    try:
        settings = _read_json(_settings_files(directory)[0])
        config, state = settings.get("Config") or {}, settings.get("State") or {}
        if not isinstance(config, dict) or not isinstance(state, dict):
            return None
        return settings["Name"].lstrip("/"), config, state
    except (OSError, ValueError, KeyError, AttributeError, TypeError):
        return None


def _read_json(path: str) -> dict:
    with open(path, encoding="utf-8") as file:
        return json.load(file)


def discover(config: ContainersConfig) -> dict[str, tuple[str, ...]]:
    """Server name -> the log file of the container ``config`` picks that exists now (the first container
    a name is made of, where a name format makes two containers one)."""
    return {name: (found.log_file,) for name, found in picked(config).items()}


def picked(config: ContainersConfig) -> dict[str, DockerContainer]:
    """Server name -> the container ``config`` picks under that name now."""
    servers: dict[str, DockerContainer] = {}
    for found in containers(config.root):
        if not (fnmatch.fnmatchcase(found.name, config.container) and fnmatch.fnmatchcase(found.image, config.image)):
            continue
        name = config.name.format(
            container=found.name, id=found.id[:12], image=found.image, project=found.project, service=found.service
        )
        servers.setdefault(name, found)
    return servers


# Each followed container's state, read with its settings at every scan (the source: True or False).
SPECS = (
    gauge(
        "kvwatch_container_running",
        "1 while the Docker container a [[containers]] table follows runs, 0 once it stopped.",
        flag(lambda running: running),
        doc="1 while the Docker container a `[[containers]]` table follows runs, 0 once it stopped: its other "
        "series stay, with their last values, until `docker rm` takes its directory",
        native="Docker's `State.Running` (`docker inspect`)",
    ),
)
