"""``kvwatch top`` in a real terminal multiplexer (tmux): what the screen shows (``tmux capture-pane``)
is what ``/metrics`` shows, at every size the window is resized to; ``q`` quits; ``NO_COLOR`` draws
without colour; a log with no LMCache line says why no request hit.

The kvwatch under it follows a real sample log (vLLM 0.32.0 with LMCache 0.5.6, kept by the
compatibility run) and supervises a stand-in server (a real process printing vLLM's stats lines:
no vLLM is needed to test a terminal view)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from agent.sinks.status import percent
from tests.support.harness import REPO, fake_server, free_port, wait_for

TMUX = shutil.which("tmux")
pytestmark = pytest.mark.skipif(
    TMUX is None and not os.environ.get("CI"), reason="tmux is not installed (make test installs it)"
)
LMCACHE_LOG = REPO / "tests" / "fixtures" / "releases" / "0.32.0-lmcache-0.5.6" / "server.log"
NO_LMCACHE_LOG = REPO / "tests" / "fixtures" / "releases" / "0.32.0" / "server.log"
# An SGR sequence that sets a foreground colour (30-38, 90-97), alone or among other attributes.
COLOUR = re.compile(r"\x1b\[(?:[0-9]+;)*(?:3[0-8]|9[0-7])[;m]")


class Tmux:
    """One tmux server of its own (``-L``, no user configuration) running ``kvwatch top ARGS``; when the
    command ends, the pane says ``EXIT=<status>`` and stays, so a test can read how it ended."""

    def __init__(self, *args: str, width: int, height: int, env: dict[str, str] | None = None) -> None:
        assert TMUX is not None, "tmux is missing: make test installs it"
        self.name = f"kvwatch-test-{uuid.uuid4().hex[:8]}"
        # Without COLUMNS and LINES (pytest sets them): the size is the pane's, as it is resized.
        top = " ".join(["env -u COLUMNS -u LINES", sys.executable, "-m", "agent", "top", *args])
        settings = [f"-e{key}={value}" for key, value in (env or {}).items()]
        self.tmux("new-session", "-d", "-x", str(width), "-y", str(height), *settings, "-c", str(REPO),
                  f"{top}; echo EXIT=$?; sleep 600")  # fmt: skip

    def tmux(self, *args: str) -> str:
        done = subprocess.run(
            [TMUX or "tmux", "-L", self.name, "-f", os.devnull, *args], capture_output=True, text=True, timeout=30
        )
        assert done.returncode == 0, f"tmux {args[0]}: {done.stderr}"
        return done.stdout

    def screen(self, colours: bool = False) -> str:
        return self.tmux("capture-pane", "-p", *(["-e"] if colours else []))

    def until(self, check, what: str, timeout: float = 60) -> str:
        """The screen once ``check(screen)`` holds for it (the view redraws about every interval)."""
        deadline = time.monotonic() + timeout
        while True:
            shown = self.screen()
            if check(shown):
                return shown
            assert time.monotonic() < deadline, f"timed out waiting for {what}; the screen:\n{shown}"
            time.sleep(0.1)

    def resize(self, width: int, height: int) -> None:
        self.tmux("resize-window", "-x", str(width), "-y", str(height))

    def close(self) -> None:
        subprocess.run([TMUX or "tmux", "-L", self.name, "kill-server"], capture_output=True, timeout=30)


def row(screen: str, name: str) -> str:
    """The screen line of server ``name`` (its first table row, or its line on a narrow screen)."""
    found = [line for line in screen.splitlines() if re.search(rf"(^|│)\s*{re.escape(name)}\s", line)]
    assert found, f"no line for {name} on:\n{screen}"
    return found[0]


def test_the_screen_shows_what_metrics_shows_at_every_size_and_q_quits(agents, tmp_path: Path) -> None:
    log = tmp_path / "sample.log"
    shutil.copyfile(LMCACHE_LOG, log)
    port = free_port()
    agent = agents(
        fake_server("standin", "--lines", "3", port=port)
        + f'[[follow]]\nname = "sample"\npaths = ["{log}"]\nstart_at = "beginning"\n'
    ).start()
    wait_for(lambda: agent.value("kvwatch_lmcache_lookups_total", server="sample") == 8, what="the sample's lookups")
    wait_for(
        lambda: (
            agent.value("kvwatch_server_state", server="standin", process="vllm", state="running") == 1
            and agent.value("kvwatch_vllm_stats_lines_total", server="standin", engine="0") == 3
        ),
        what="the stand-in running, its three stats lines read",
    )
    # The numbers of this moment: nothing changes any more (the stand-in prints no more lines).
    hit = agent.value("kvwatch_lmcache_hit_tokens_total", server="sample")
    looked_up = agent.value("kvwatch_lmcache_lookup_tokens_total", server="sample")
    running = agent.value("kvwatch_vllm_requests_running", server="standin", engine="0")
    waiting = agent.value("kvwatch_vllm_requests_waiting", server="standin", engine="0")
    kv = agent.value("kvwatch_vllm_kv_cache_usage_ratio", server="standin", engine="0")
    prefix = agent.value("kvwatch_vllm_prefix_cache_hit_ratio", server="standin", engine="0")
    assert (running, waiting, kv, prefix) == (1, 0, 0.01, 0.5)  # what the stand-in printed

    terminal = Tmux("--url", agent.url(""), "--interval", "0.3", width=160, height=40, env={"TERM": "xterm-256color"})
    try:
        wide = terminal.until(lambda s: "standin" in s and "sample" in s and "chatcmpl" in s, "both servers, requests")
        cells = [c.strip() for c in row(wide, "standin").split("│")]
        assert cells[2].startswith("running")
        assert (cells[6], cells[7]) == (f"{running:.0f}", f"{waiting:.0f}")  # run, wait
        assert cells[8].endswith(f"{kv * 100:.0f}%") and cells[9] == percent(prefix)
        assert row(wide, "sample").split("│")[10].strip() == f"— / {percent(hit / looked_up)}"
        # Each request's LMCache hit tokens, as its lookup line said: together, the hit tokens on /metrics.
        requests = [line.split("│") for line in wide.splitlines() if "chatcmpl-compat-" in line]
        assert sum(int(cells[6].strip().replace(",", "")) for cells in requests) == hit > 0
        assert COLOUR.search(terminal.screen(colours=True)), "a terminal that has colour gets it"

        # Each size, with what must be on the screen once it is redrawn for it, and what must not.
        sizes = (
            (80, 16, ["LMCache hit now / all", "why not all"], ["chatcmpl-compat-", "prompt tok/s"]),
            (40, 10, [" · KV "], ["┃", "why not all"]),  # a line per server; no room for requests
            (120, 9, ["prefix hit", "attention"], ["why not all", "prompt tok/s"]),
            (160, 40, ["prompt tok/s", "chatcmpl-compat-long-0"], []),
        )
        for width, height, present, absent in sizes:
            terminal.resize(width, height)
            shown = terminal.until(
                lambda s, p=present, a=absent: all(t in s for t in p) and not any(t in s for t in a),
                f"the view redrawn for {width}x{height}",
            )
            lines = shown.rstrip("\n").splitlines()
            assert len(lines) <= height and max(len(line) for line in lines) <= width, shown
            assert lines[-1].strip() != "...", f"{width}x{height}: cut at the bottom:\n{shown}"
            assert "standin" in shown and "sample" in shown, f"{width}x{height}: a server went off screen:\n{shown}"
            assert percent(hit / looked_up) in shown, shown  # the LMCache ratio fits at every size
        terminal.tmux("send-keys", "q")
        terminal.until(lambda s: "EXIT=0" in s, "kvwatch top to quit on q", timeout=30)
    finally:
        terminal.close()


def test_no_colour_and_a_log_without_lmcache_lines(tmp_path: Path) -> None:
    log = tmp_path / "no-lmcache.log"
    shutil.copyfile(NO_LMCACHE_LOG, log)
    terminal = Tmux("--log", str(log), "--interval", "0.3", width=150, height=30, env={"NO_COLOR": "1"})
    try:
        shown = terminal.until(lambda s: "chatcmpl-compat-long-0" in s, "the log's requests")
        assert "— / —" in row(shown, "no-lmcache")  # no lookup: no ratio, not 0%
        requests = [line for line in shown.splitlines() if "chatcmpl-compat-" in line]
        assert len(requests) == 8 and all("LMCache connector not loaded" in line for line in requests), shown
        time.sleep(1)  # a few redraws
        assert not COLOUR.search(terminal.screen(colours=True)), "NO_COLOR: no colour"
        terminal.tmux("send-keys", "q")
        terminal.until(lambda s: "EXIT=0" in s, "kvwatch top to quit on q", timeout=30)
    finally:
        terminal.close()
