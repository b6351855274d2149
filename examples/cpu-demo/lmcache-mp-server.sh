#!/usr/bin/env bash
# LMCache's multiprocess server for the CPU demo in MP mode (kvwatch-mp.toml), from the demo's venv.
# kvwatch does not start it yet: run this first, then `kvwatch run --config examples/cpu-demo/kvwatch-mp.toml`.
#
#   examples/cpu-demo/lmcache-mp-server.sh [CACHE_DIR]     (default: .cache/ in the repository)
#
# --supported-transfer-mode auto: on a CPU there is no IPC path for LMCache to move KV itself, so the
# connector moves it (engine-driven); the server's default refuses that connector's registration.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
cache="${1:-$(cd "$here/../.." && pwd)/.cache}"
mkdir -p "$cache/demo-mp/logs"
exec "$cache/vllm-cpu-venv/bin/lmcache" server \
    --host 127.0.0.1 --port 5555 --http-host 127.0.0.1 --http-port 8080 \
    --chunk-size 256 --l1-size-gb 1 --eviction-policy LRU --supported-transfer-mode auto \
    >>"$cache/demo-mp/logs/lmcache-server.log" 2>&1
