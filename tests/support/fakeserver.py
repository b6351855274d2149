"""A stand-in for a vLLM server in supervision tests: a real process that behaves as told.

    python fakeserver.py [--port P] [--lines N] [--rate R] [--exit-after S] [--exit-code C]
                         [--ignore-term] [--stall] [--oom] [--term-delay S] [--health-path PATH] [--quiet]

It prints vLLM-format lines to stdout (the supervisor points it at the raw
log): a start-up line, one stats line per tick, an access line per request,
and serves ``/health`` on ``--port`` when given.  ``--stall`` keeps reporting
waiting requests with zero throughput (an engine alive but not moving).
"""

from __future__ import annotations

import argparse
import http.server
import os
import signal
import sys
import threading
import time


def stamp() -> str:
    return time.strftime("%m-%d %H:%M:%S")


QUIET = "--quiet" in sys.argv  # prints nothing: a stand-in whose lines do not matter (an LMCache server's)


def say(text: str) -> None:
    if QUIET:
        return
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int)
    parser.add_argument("--health-path", default="/health", help="/healthcheck stands for an LMCache server")
    parser.add_argument("--quiet", action="store_true", help="print nothing")
    parser.add_argument("--lines", type=int, default=0, help="stats lines to print (0: until stopped)")
    parser.add_argument("--rate", type=float, default=20.0, help="stats lines per second")
    parser.add_argument("--exit-after", type=float)
    parser.add_argument("--exit-code", type=int, default=1)
    parser.add_argument("--ignore-term", action="store_true")
    parser.add_argument("--term-delay", type=float, default=0.0)
    parser.add_argument("--stall", action="store_true")
    parser.add_argument("--oom", action="store_true", help="log a CUDA OOM before exiting")
    parser.add_argument(
        "--load-seconds", type=float, default=0.0, help="answer /health 503 this long, as a loading model"
    )
    args = parser.parse_args()

    stopping = threading.Event()

    def on_term(_signum, _frame) -> None:
        if args.ignore_term:
            say(f"INFO {stamp()} [fake.py:1] ignoring SIGTERM")
            return
        time.sleep(args.term_delay)
        say(f"INFO {stamp()} [launcher.py:1] Shutting down FastAPI HTTP server.")
        stopping.set()

    signal.signal(signal.SIGTERM, on_term)
    say(f"INFO {stamp()} [api_server.py:1] vLLM API server version 0.32.0")
    say(f"(APIServer pid={os.getpid()}) INFO {stamp()} [api_server.py:2] args: fake")
    loaded = threading.Event()
    if args.port:

        class Health(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if self.path == args.health_path:
                    self.send_response(200 if loaded.is_set() else 503)
                else:
                    self.send_response(404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a) -> None:
                pass

        httpd = http.server.ThreadingHTTPServer(("127.0.0.1", args.port), Health)
        threading.Thread(target=httpd.serve_forever, daemon=True).start()
    time.sleep(args.load_seconds)
    say(
        f"(EngineCore pid={os.getpid()}) INFO {stamp()} [kv_cache_utils.py:1] GPU KV cache size: 65,536 tokens, "
        "Maximum concurrency for 2,048 tokens per request: 32.00x"
    )
    loaded.set()
    say("INFO:     Application startup complete.")
    began = time.monotonic()
    printed = 0
    while not stopping.is_set():
        if args.exit_after is not None and time.monotonic() - began >= args.exit_after:
            if args.oom:
                oom = "torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB"
                say(f"ERROR {stamp()} [core.py:1] {oom}")
            return args.exit_code
        if args.lines and printed >= args.lines:
            stopping.wait(0.05)
            continue
        if args.stall:
            line = (
                f"INFO {stamp()} [loggers.py:1] Engine 000: Avg prompt throughput: 0.0 tokens/s, Avg generation "
                "throughput: 0.0 tokens/s, Running: 0 reqs, Waiting: 3 reqs, GPU KV cache usage: 0.0%, "
                "Prefix cache hit rate: 0.0%"
            )
        else:
            line = (
                f"INFO {stamp()} [loggers.py:1] Engine 000: Avg prompt throughput: 10.0 tokens/s, Avg generation "
                f"throughput: 5.0 tokens/s, Running: 1 reqs, Waiting: 0 reqs, GPU KV cache usage: 1.0%, "
                f"Prefix cache hit rate: 50.0%"
            )
        say(line)
        printed += 1
        stopping.wait(1.0 / args.rate)
    return 0


if __name__ == "__main__":
    sys.exit(main())
