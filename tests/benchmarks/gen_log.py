#!/usr/bin/env python3
"""Write a realistic vLLM + LMCache server log and the exact numbers it holds.

    python tests/benchmarks/gen_log.py OUT [--lines N] [--seed S] [--style classic|current]

The log is a simulated server under changing load: requests arrive, are added to
the engine, looked up in LMCache (a few twice, as preempted requests are),
retrieve what LMCache holds, store the rest, and end in a uvicorn access line
(200, some 400 and 500); health checks and scrapes come at fixed intervals and
an engine stats line every ten seconds of log time.  A third of the lines are
noise a correct parser must not count: other vLLM and LMCache lines, tracebacks
(one ends in an exception quoting a store line), and prompts echoed by request
logging whose text quotes lookup, stats and access lines.

``--style current`` writes what vLLM 0.32 / LMCache 0.5.6 print: process tags,
ANSI-coloured LMCache headers, ``[req_id=...]`` tags, the computed-tokens field,
``Preemptions`` and ``External prefix cache hit rate`` parts, and traceback
lines that repeat vLLM's header and end in a carriage return.

Next to OUT, ``OUT.truth.json`` holds the counts and sums, keyed by the
quantity they measure (see ``QUANTITIES`` in ``run_replay_bench.py``).  The same
seed, line count and style always give the same bytes.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from datetime import datetime, timedelta
from pathlib import Path

ADAPTER = "vllm_v1_adapter.py:1476:lmcache.integration.vllm.vllm_v1_adapter"
ENGINE = "cache_engine.py:588:lmcache.v1.cache_engine"
# Bumped whenever the output changes, so that cached logs are regenerated.
VERSION = 2
# What the bare-loop baseline counts: lines holding this text anywhere, and its number.
SUBSTRING = re.compile(r"LMCache hit tokens: (\d+)")
COLOURS = {"INFO": "\x1b[32;20m", "DEBUG": "\x1b[1m", "WARNING": "\x1b[33;20m", "ERROR": "\x1b[31;20m"}
REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 500: "Internal Server Error"}
# Prose of echoed prompts: each quotes something a careless parser would count.
PROMPTS = (
    "Why does the log say LMCache hit tokens: {n}, need to load: {n} for request {rid}?",
    'Explain: INFO:     127.0.0.1:5{n:04d} - "POST /v1/chat/completions HTTP/1.1" 500 Internal Server Error',
    "Is Avg prompt throughput: 9999.9 tokens/s, Running: 99 reqs, GPU KV cache usage: 99.9% too much?",
    "Summarise: Added request {rid}. Stored {n} out of total {n} tokens. Retrieved {n} out of {n} required tokens",
    "Write a short poem about caches.",
    "Translate to German: the engine printed Engine 000: Avg generation throughput: 1.0 tokens/s",
)
TRACEBACK = (
    "Traceback (most recent call last):",
    '  File "/opt/vllm/lib/python3.12/site-packages/vllm/v1/engine/core.py", line 712, in step',
    "    outputs = self.model_executor.execute_model(scheduler_output)",
    '  File "/opt/vllm/lib/python3.12/site-packages/lmcache/v1/cache_engine.py", line 512, in retrieve',
    '    raise RuntimeError(f"Stored {{stored}} out of total {{total}} tokens, lookup mismatch")',
    "RuntimeError: Stored {n} out of total {m} tokens, lookup mismatch",
)


class Simulation:
    def __init__(self, seed: int, lines: int, style: str, start: datetime) -> None:
        self.rng = random.Random(seed)
        self.limit = lines
        self.style = style
        self.start = start
        self.clock = 0.0  # seconds of log time
        self.out: list[str] = []
        self.count = 0
        self.active: list[dict] = []
        self.api = f"(APIServer pid={self.rng.randint(100, 999)}) "
        self.core = f"(EngineCore_DP0 pid={self.rng.randint(1000, 9999)}) "
        self.next_stats, self.next_health, self.next_scrape = 10.0, 2.5, 7.0
        self.window = {"prompt": 0, "generated": 0, "queried": 0, "hit": 0, "preempted": 0}
        self.truth: dict = {
            "lines": 0,
            "requests_added": 0,
            "requests_received": 0,
            "requests_aborted": 0,
            "lmcache_lookups": 0,
            "lmcache_lookup_tokens": 0,
            "lmcache_hit_tokens": 0,
            "lmcache_need_to_load_tokens": 0,
            "lmcache_stores": 0,
            "lmcache_stored_tokens": 0,
            "lmcache_retrieves": 0,
            "lmcache_retrieved_tokens": 0,
            "lmcache_store_starts": 0,
            "http_responses": {},
            "stats_lines": 0,
            "stats_last": {},
            "substring_lines": 0,
            "substring_hit_sum": 0,
        }

    # -- time and line formats ----------------------------------------------------------

    def now(self) -> datetime:
        return self.start + timedelta(seconds=self.clock)

    def vllm(self, level: str, where: str, message: str, engine_side: bool = False) -> str:
        text = f"{level} {self.now():%m-%d %H:%M:%S} [{where}] {message}"
        if self.style == "current":
            text = (self.core if engine_side else self.api) + text
        return text

    def lmcache(self, level: str, message: str, where: str) -> str:
        when = self.now()
        stamp = f"[{when:%Y-%m-%d %H:%M:%S},{when.microsecond // 1000:03d}]"
        if self.style == "current":
            return f"{COLOURS[level]}{stamp} LMCache {level}:\x1b[0m {message} \x1b[3m({where})\x1b[0m"
        return f"{stamp} LMCache {level}: {message} ({where})"

    def tagged(self, request: dict, message: str) -> str:
        """LMCache >= 0.3.15 tags store and retrieve lines with the request id."""
        return f"[req_id={request['id']}] {message}" if self.style == "current" else message

    def emit(self, line: str, counts: str | None = None) -> bool:
        if self.count >= self.limit:
            return False
        self.out.append(line)
        self.count += 1
        if "LMCache hit tokens" in line:
            self.truth["substring_lines"] += 1
            m = SUBSTRING.search(line)
            if m:
                self.truth["substring_hit_sum"] += int(m.group(1))
        self.clock += self.rng.expovariate(140.0)
        if counts:
            self.truth[counts] += 1
        return True

    # -- traffic ----------------------------------------------------------------------------

    def request_id(self) -> str:
        base = f"chatcmpl-{self.rng.getrandbits(64):016x}"
        return base + (f"-{self.rng.getrandbits(32):08x}" if self.style == "current" else "")

    def arrive(self) -> None:
        rng = self.rng
        total = max(16, min(16000, int(rng.lognormvariate(6.3, 0.9))))
        chunks = (total - 1) // 256
        hit = 256 * rng.randint(1, chunks) if chunks and rng.random() < 0.6 else 0
        local = 16 * rng.randint(0, (total - 1) // 16) if rng.random() < 0.5 else 0
        need = hit - local
        if self.style == "current":
            need = max(need, 0)
        request = {
            "id": self.request_id(),
            "total": total,
            "hit": hit,
            "local": local,
            "need": need,
            "lookups": 2 if rng.random() < 0.04 else 1,
            "step": 0,
            "status": 500 if rng.random() < 0.01 else 200,
            "generate": rng.choice((16, 64, 256)),
        }
        if rng.random() < 0.012:  # rejected before the engine sees it
            self.emit(self.vllm("ERROR", "serving_chat.py:222", "Error in preprocessing prompt inputs"))
            self.http("POST", "/v1/chat/completions", 400)
            return
        if rng.random() < 0.08:
            prose = rng.choice(PROMPTS).format(n=rng.randint(1, 9999), rid=self.request_id())
            self.emit(
                self.vllm(
                    "INFO",
                    "logger.py:43",
                    f"Received request {request['id']}: prompt: "
                    f"{prose!r}, params: SamplingParams(n=1, max_tokens={request['generate']}), "
                    "prompt_token_ids: None, lora_request: None.",
                ),
                "requests_received",
            )
        self.active.append(request)
        self.advance(request)

    def advance(self, request: dict) -> None:
        step = request["step"]
        request["step"] += 1
        truth = self.truth
        if step == 0:
            self.emit(self.vllm("INFO", "async_llm.py:578", f"Added request {request['id']}."), "requests_added")
        elif step == 1:
            computed = f"Inference Engine computed tokens: {request['local']}, " if self.style == "current" else ""
            message = (
                f"Reqid: {request['id']}, Total tokens {request['total']}, {computed}"
                f"LMCache hit tokens: {request['hit']}, need to load: {request['need']}"
            )
            if self.emit(self.lmcache("INFO", message, ADAPTER), "lmcache_lookups"):
                truth["lmcache_lookup_tokens"] += request["total"]
                truth["lmcache_hit_tokens"] += request["hit"]
                truth["lmcache_need_to_load_tokens"] += max(request["need"], 0)
                self.window["queried"] += request["total"]
                self.window["hit"] += request["local"]
            request["lookups"] -= 1
            if request["lookups"]:
                request["step"] = 1  # preempted: looked up again later
                self.window["preempted"] += 1
        elif step == 2 and request["need"] > 0:
            got = request["need"]
            size = got * 0.000122
            message = (
                f"Retrieved {got} out of {got} required tokens (from {request['total']} total tokens). "
                f"size: {size:.4f} gb, cost {size * 40:.4f} ms, throughput: {25.0:.4f} GB/s;"
            )
            if self.emit(self.lmcache("INFO", self.tagged(request, message), ENGINE), "lmcache_retrieves"):
                truth["lmcache_retrieved_tokens"] += got
        elif step == 3:
            store = request["total"] - request["hit"]
            if store > 0:
                self.emit(
                    self.lmcache(
                        "DEBUG" if self.style == "current" else "INFO",
                        f"Storing KV cache for {store} out of {request['total']} tokens "
                        f"(skip_leading_tokens={request['hit']}) for request {request['id']}",
                        "vllm_v1_adapter.py:1200:lmcache.integration.vllm.vllm_v1_adapter",
                    ),
                    "lmcache_store_starts",
                )
        elif step == 4:
            store = request["total"] - request["hit"]
            self.window["prompt"] += request["total"]
            if store > 0:
                size = store * 0.000122
                message = (
                    f"Stored {store} out of total {store} tokens. size: {size:.4f} GB, "
                    f"cost {size * 60:.4f} ms, throughput: {16.6667:.4f} GB/s; "
                    f"offload_time: {size * 50:.4f} ms, put_time: {size * 10:.4f} ms"
                )
                if self.emit(self.lmcache("INFO", self.tagged(request, message), ENGINE), "lmcache_stores"):
                    truth["lmcache_stored_tokens"] += store
        else:
            self.window["generated"] += request["generate"]
            if request["status"] == 500:
                self.traceback()
            self.http("POST", "/v1/chat/completions", request["status"])
            self.active.remove(request)

    def http(self, method: str, path: str, status: int) -> None:
        client = f"127.0.0.1:{self.rng.randint(30000, 60000)}"
        line = f'INFO:     {client} - "{method} {path} HTTP/1.1" {status} {REASONS[status]}'
        if self.emit(line):
            by_status = self.truth["http_responses"]
            by_status[str(status)] = by_status.get(str(status), 0) + 1

    def traceback(self) -> None:
        lines = [t.format(n=self.rng.randint(1, 999), m=self.rng.randint(1000, 9999)) for t in TRACEBACK]
        if self.style == "current":
            head = self.vllm("ERROR", "core.py:1100", "", engine_side=True)
            lines = [head + t + "\r" for t in lines[:-1]] + [head + lines[-1]]
        for line in lines:
            self.emit(line)

    def noise(self) -> None:
        rng = self.rng
        rid = rng.choice(self.active)["id"] if self.active else self.request_id()
        pick = rng.random()
        if pick < 0.35:
            self.emit(
                self.vllm(
                    "DEBUG", "core.py:690", f"EngineCore loop active, {rng.randint(1, 64)} requests.", engine_side=True
                )
            )
        elif pick < 0.55:
            self.emit(self.vllm("INFO", "launcher.py:195", "Route: /v1/chat/completions, Methods: POST"))
        elif pick < 0.65:
            self.emit(self.vllm("INFO", "async_llm.py:922", f"Aborted request(s) {rid}."), "requests_aborted")
        elif pick < 0.75:
            self.emit(
                self.vllm(
                    "WARNING",
                    "scheduler.py:1187",
                    f"Request {rid} is preempted by "
                    "PreemptionMode.RECOMPUTE mode because there is not enough KV cache space.",
                )
            )
        elif pick < 0.95:
            self.emit(
                self.lmcache(
                    "DEBUG",
                    f"Num tokens to save for request {rid}: {rng.randint(1, 4000)}",
                    "vllm_v1_adapter.py:1298:lmcache.integration.vllm.vllm_v1_adapter",
                )
            )
        else:
            self.emit(
                self.lmcache(
                    "WARNING",
                    "Local cpu memory under pressure, evicting chunks",
                    "local_cpu_backend.py:221:lmcache.v1.storage_backend.local_cpu_backend",
                )
            )

    def periodic(self) -> None:
        if self.clock >= self.next_health:
            self.next_health += 5.0
            self.http("GET", "/health", 200)
        if self.clock >= self.next_scrape:
            self.next_scrape += 15.0
            self.http("GET", "/metrics", 200)
        if self.clock >= self.next_stats:
            self.next_stats += 10.0
            self.stats()

    def stats(self) -> None:
        running = min(len(self.active), 64)
        waiting = len(self.active) - running
        w = self.window
        values = {
            "prompt_throughput": round(w["prompt"] / 10.0, 1),
            "generation_throughput": round(w["generated"] / 10.0, 1),
            "running": running,
            "waiting": waiting,
            "kv_cache_usage": round(min(99.9, running * 1.4), 1),
            "prefix_cache_hit_rate": round(100.0 * w["hit"] / w["queried"], 1) if w["queried"] else 0.0,
        }
        preempted = f"Preemptions: {w['preempted']}, " if self.style == "current" and w["preempted"] else ""
        external = ", External prefix cache hit rate: 12.5%" if self.style == "current" else ""
        message = (
            f"Engine 000: Avg prompt throughput: {values['prompt_throughput']:.1f} tokens/s, "
            f"Avg generation throughput: {values['generation_throughput']:.1f} tokens/s, "
            f"Running: {running} reqs, Waiting: {waiting} reqs, {preempted}"
            f"GPU KV cache usage: {values['kv_cache_usage']:.1f}%, "
            f"Prefix cache hit rate: {values['prefix_cache_hit_rate']:.1f}%{external}"
        )
        if self.emit(self.vllm("INFO", "loggers.py:335", message), "stats_lines"):
            # Percentages are reported as 0-1 ratios.
            values["kv_cache_usage"] = round(values["kv_cache_usage"] / 100.0, 6)
            values["prefix_cache_hit_rate"] = round(values["prefix_cache_hit_rate"] / 100.0, 6)
            self.truth["stats_last"] = values
        self.window = dict.fromkeys(self.window, 0)

    def run(self, out) -> None:
        rng = self.rng
        while self.count < self.limit:
            self.periodic()
            pick = rng.random()
            if pick < 0.25:
                self.noise()
            elif not self.active or (len(self.active) < 40 and pick < 0.55):
                self.arrive()
            else:
                self.advance(rng.choice(self.active))
            if len(self.out) >= 50_000:
                out.write("\n".join(self.out) + "\n")
                self.out.clear()
        if self.out:
            out.write("\n".join(self.out) + "\n")
        self.truth["lines"] = self.count


def generate(path: Path, lines: int, seed: int = 1214, style: str = "classic") -> dict:
    sim = Simulation(seed, lines, style, datetime(2025, 12, 14, 16, 0, 0))
    with path.open("w", encoding="utf-8", newline="\n") as out:
        sim.run(out)
    truth = {"generator": {"version": VERSION, "seed": seed, "lines": lines, "style": style}, **sim.truth}
    Path(str(path) + ".truth.json").write_text(json.dumps(truth, indent=1) + "\n")
    return truth


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--lines", type=int, default=2_000_000)
    parser.add_argument("--seed", type=int, default=1214)
    parser.add_argument("--style", choices=("classic", "current"), default="classic")
    args = parser.parse_args()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    generate(args.out, args.lines, args.seed, args.style)


if __name__ == "__main__":
    main()
