"""Count the GPUs this host exposes, so a host that boots with 4 of its 8 is flagged.

NVIDIA's driver lists one directory per GPU in ``/proc/driver/nvidia/gpus``.
AMD's ``amdgpu`` exposes the KFD topology: every node under
``/sys/class/kfd/kfd/topology/nodes`` with a non-zero ``simd_count`` is a GPU
(CPU nodes have none); without KFD, render nodes in ``/dev/dri`` are counted,
only those whose PCI vendor in ``/sys/class/drm`` is AMD's where sysfs tells
(an Intel iGPU or an NVIDIA card also has a render node).
"""

from __future__ import annotations

import os


def count_gpus(root: str = "/") -> dict[str, int]:
    """GPUs by vendor (``nvidia``, ``amd``); a vendor with none is left out."""
    found: dict[str, int] = {}
    nvidia = _count_entries(os.path.join(root, "proc/driver/nvidia/gpus"))
    if nvidia:
        found["nvidia"] = nvidia
    amd = _count_kfd(os.path.join(root, "sys/class/kfd/kfd/topology/nodes"))
    if amd is None:  # no KFD: fall back to the render nodes
        amd = _count_amd_render_nodes(root, nvidia)
    if amd:
        found["amd"] = amd
    return found


AMD_PCI_VENDOR = "0x1002"


def _count_amd_render_nodes(root: str, nvidia: int) -> int:
    try:
        renders = [name for name in os.listdir(os.path.join(root, "dev/dri")) if name.startswith("renderD")]
    except OSError:
        return 0
    amd = unknown = 0
    for name in renders:
        try:
            with open(os.path.join(root, "sys/class/drm", name, "device/vendor"), encoding="ascii") as handle:
                amd += handle.read().strip().lower() == AMD_PCI_VENDOR
        except OSError:
            unknown += 1
    # Without sysfs, every render node not already counted as NVIDIA's is taken for AMD's.
    return amd + max(0, unknown - nvidia)


def _count_entries(path: str) -> int:
    try:
        return len(os.listdir(path))
    except OSError:
        return 0


def _count_kfd(path: str) -> int | None:
    try:
        nodes = os.listdir(path)
    except OSError:
        return None
    gpus = 0
    for node in nodes:
        try:
            with open(os.path.join(path, node, "properties"), encoding="ascii", errors="replace") as handle:
                for line in handle:
                    key, _, value = line.partition(" ")
                    if key == "simd_count":
                        gpus += int(value.strip() or 0) > 0
                        break
        except (OSError, ValueError):
            continue
    return gpus
