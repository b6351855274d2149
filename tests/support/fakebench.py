"""A stand-in for `vllm bench`: prints a run's progress and its result lines as vLLM 0.32 does.

    python fakebench.py bench latency|throughput|serve [--scale X] [--exit-code C] [--server-log FILE]
        [vllm bench flags...]

The result lines are the formats of vLLM's benchmark commands (see the
parser fixtures); ``--scale`` multiplies the figures so that runs differ.
``--server-log`` appends to FILE what a served benchmark's requests would make
the server log (three LMCache lookups of 600 tokens, 0, 512 and 512 hit, and a
stats line at 30% KV usage), then waits for a follower to read it.
"""

from __future__ import annotations

import sys
import time


def main() -> int:
    argv = sys.argv[1:]
    mode = argv[1] if len(argv) > 1 and argv[0] == "bench" else "latency"
    scale = float(argv[argv.index("--scale") + 1]) if "--scale" in argv else 1.0
    code = int(argv[argv.index("--exit-code") + 1]) if "--exit-code" in argv else 0
    print(f"INFO 12-01 10:00:00 [__init__.py:1] running the {mode} benchmark with {argv}", flush=True)
    time.sleep(0.1)
    if "--server-log" in argv:
        with open(argv[argv.index("--server-log") + 1], "a", encoding="utf-8") as log:
            for n, hit in enumerate((0, 512, 512)):
                log.write(
                    f"[2026-12-01 10:00:0{n},000] LMCache INFO: Reqid: cmpl-bench-{n}, Total tokens 600, LMCache hit "
                    f"tokens: {hit}, need to load: {hit} (vllm_v1_adapter.py:1:lmcache.integration.vllm.x)\n"
                )
            log.write(
                "INFO 12-01 10:00:04 [loggers.py:1] Engine 000: Avg prompt throughput: 10.0 tokens/s, Avg generation "
                "throughput: 5.0 tokens/s, Running: 3 reqs, Waiting: 0 reqs, GPU KV cache usage: 30.0%, Prefix cache "
                "hit rate: 40.0%\n"
            )
        time.sleep(1.5)
    if mode == "latency":
        print("Warmup iterations: 100%|##########| 1/1", flush=True)
        print(f"Avg latency: {1.475279240796808 * scale} seconds")
        for p in (10, 25, 50, 75, 90, 99):
            print(f"{p}% percentile latency: {1.47 * scale + p / 10000} seconds")
    elif mode == "throughput":
        print(
            f"Throughput: {34.14 * scale:.2f} requests/s, {17466.30 * scale:.2f} total tokens/s, "
            f"{8739.16 * scale:.2f} output tokens/s"
        )
        print("Total num prompt tokens:  255648")
        print("Total num output tokens:  256000")
    else:
        print("============ Serving Benchmark Result ============")
        print("Successful requests:                     1000      ")
        print("Failed requests:                         0         ")
        print(f"Benchmark duration (s):                  {23.73 / scale:.2f}     ")
        print(f"Request throughput (req/s):              {42.15 * scale:.2f}     ")
        print(f"Output token throughput (tok/s):         {10777.64 * scale:.2f}  ")
        print(f"Mean TTFT (ms):                          {9408.20 / scale:.2f}   ")
        print(f"P99 TTFT (ms):                           {18164.16 / scale:.2f}  ")
        print("==================================================")
    return code


if __name__ == "__main__":
    sys.exit(main())
