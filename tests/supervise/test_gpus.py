"""GPU inventory.  No GPU can be attached here, so the driver trees are built in a temporary root
with the layout the kernel drivers create (directory and file names as on real hosts)."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import generate_latest

from agent import config as configuration
from agent.commands.run import Daemon
from agent.supervise.gpus import count_gpus


def kfd_node(root: Path, number: int, simd_count: int) -> None:
    node = root / "sys/class/kfd/kfd/topology/nodes" / str(number)
    node.mkdir(parents=True)
    # Shortened from a real MI300-class node's properties file.
    node.joinpath("properties").write_text(
        f"cpu_cores_count {0 if simd_count else 96}\nsimd_count {simd_count}\nmem_banks_count 1\n"
    )


def test_amd_gpus_are_the_kfd_nodes_with_simds(tmp_path: Path) -> None:
    kfd_node(tmp_path, 0, 0)  # the CPU node
    for n in range(1, 9):
        kfd_node(tmp_path, n, 304)
    assert count_gpus(str(tmp_path)) == {"amd": 8}


def test_nvidia_gpus_are_the_driver_entries(tmp_path: Path) -> None:
    gpus = tmp_path / "proc/driver/nvidia/gpus"
    for bus in ("0000:17:00.0", "0000:65:00.0"):
        (gpus / bus).mkdir(parents=True)
    assert count_gpus(str(tmp_path)) == {"nvidia": 2}


def test_render_nodes_count_only_amd_devices_where_sysfs_says(tmp_path: Path) -> None:
    for n, vendor in ((128, "0x1002"), (129, "0x1002"), (130, "0x8086")):  # two AMD, one Intel iGPU
        (tmp_path / "dev/dri").mkdir(parents=True, exist_ok=True)
        (tmp_path / f"dev/dri/renderD{n}").write_text("")
        device = tmp_path / f"sys/class/drm/renderD{n}/device"
        device.mkdir(parents=True)
        device.joinpath("vendor").write_text(vendor + "\n")
    assert count_gpus(str(tmp_path)) == {"amd": 2}


def test_no_gpu_tree_counts_nothing(tmp_path: Path) -> None:
    assert count_gpus(str(tmp_path)) == {}


def test_this_machine_has_no_gpu_and_says_so() -> None:
    # CI's machine has no GPU: the real tree under / gives nothing, never an error.
    assert sum(count_gpus("/").values()) == 0


def test_fewer_gpus_than_expected_are_flagged_on_metrics(tmp_path: Path) -> None:
    root = tmp_path / "root"
    for n in range(1, 5):  # 4 of 8 came up
        kfd_node(root, n, 304)
    cfg = configuration.parse(
        {
            "agent": {"state_dir": str(tmp_path / "state"), "log_dir": str(tmp_path / "logs"), "expected_gpus": 8},
            "metrics": {"address": "127.0.0.1", "port": 0},
        },
        str(tmp_path / "kvwatch.toml"),
    )
    daemon = Daemon(cfg, gpu_root=str(root))
    try:
        daemon.tick()
        text = generate_latest(daemon.registry).decode()
    finally:
        daemon.http.stop()
    assert 'kvwatch_gpus{vendor="amd"} 4.0' in text
    assert "kvwatch_gpus_expected 8.0" in text
    assert "kvwatch_gpus_missing 4.0" in text
