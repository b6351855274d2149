"""Count the GPUs this host exposes, so a host that boots with 4 of its 8 is flagged.

NVIDIA's driver lists one directory per GPU in ``/proc/driver/nvidia/gpus``.
AMD's ``amdgpu`` exposes the KFD topology: every node under
``/sys/class/kfd/kfd/topology/nodes`` with a non-zero ``simd_count`` is a GPU
(CPU nodes have none); without KFD, render nodes in ``/dev/dri`` are counted,
only those whose PCI vendor in ``/sys/class/drm`` is AMD's where sysfs tells
(an Intel iGPU or an NVIDIA card also has a render node).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterable, Iterator

from prometheus_client.core import Metric

from agent.exposition import families
from agent.families import computed, gauge

log = logging.getLogger("kvwatch.gpus")

REFRESH = 60.0  # seconds between counts: a GPU that falls off the bus shows within a minute


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


class HostGpus:
    """The host's GPUs, counted again every ``REFRESH`` seconds, against how many it should have."""

    def __init__(self, root: str = "/", expected: int | None = None) -> None:
        self.root = root
        self.expected = expected
        self.by_vendor: dict[str, int] = {}
        self.checked: float | None = None  # monotonic time of the last count
        self.reported_missing: int | None = None

    def refresh(self, now: float | None = None) -> None:
        """Count again if the last count is older than ``REFRESH``; warn once per change of what is missing."""
        now = time.monotonic() if now is None else now
        if self.checked is not None and now - self.checked < REFRESH:
            return
        self.by_vendor = count_gpus(self.root)
        self.checked = now
        missing = self.missing()
        if missing and missing != self.reported_missing:
            log.warning("only %d of the %d expected GPUs are visible", sum(self.by_vendor.values()), self.expected)
        self.reported_missing = missing

    def missing(self) -> int | None:
        return None if self.expected is None else max(0, self.expected - sum(self.by_vendor.values()))

    def families(self) -> Iterator[Metric]:
        return families(SPECS, [([], self)])


def _by_vendor(gpus: HostGpus, labels: tuple[str, ...]) -> Iterable:
    if not gpus.by_vendor:
        return [(("none",), 0)]
    return [((vendor,), count) for vendor, count in sorted(gpus.by_vendor.items())]


SPECS = (
    gauge(
        "kvwatch_gpus",
        "GPUs the host exposes, by vendor (vendor=none: 0 when none is seen).",
        _by_vendor,
        labels="vendor",
        per_server=False,
        doc="GPUs the host exposes (`nvidia`, `amd`; `none` = 0 when none is seen)",
        native="dcgm-exporter / AMD device-metrics-exporter device counts",
    ),
    gauge(
        "kvwatch_gpus_expected",
        "GPUs the host should expose (agent.expected_gpus).",
        computed(lambda gpus: gpus.expected),
        per_server=False,
        doc="`agent.expected_gpus`, when set",
    ),
    gauge(
        "kvwatch_gpus_missing",
        "Expected GPUs the host does not expose (0 when all are visible).",
        computed(HostGpus.missing),
        per_server=False,
        doc=(
            "expected GPUs not visible (0 when all are), when `agent.expected_gpus` is set: a host that came up with "
            "4 of its 8 shows 4"
        ),
    ),
)
