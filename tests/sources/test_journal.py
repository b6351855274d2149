"""A ``[[follow]]`` of a systemd unit's journal, through ``journalctl --follow`` run by kvwatch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from tests.support.harness import STATS, stats_lines, wait_for


def test_journal_follow_runs_journalctl_with_a_cursor_file(agents, tmp_path: Path) -> None:
    """No journald runs here, so a stand-in journalctl prints journal JSON records and its arguments."""
    stand_in = tmp_path / "journalctl"
    record = json.dumps({"MESSAGE": STATS.strip(), "_SYSTEMD_UNIT": "vllm.service", "__REALTIME_TIMESTAMP": "1"})
    stand_in.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        f"open({str(tmp_path / 'args')!r}, 'w').write(' '.join(sys.argv[1:]))\n"
        f"for _ in range(5): print({record!r}, flush=True)\n"
        # Follow on until kvwatch is gone (the test kills it), then end, as journalctl does on a closed pipe.
        "parent = os.getppid()\n"
        "while os.getppid() == parent: time.sleep(0.1)\n"
    )
    stand_in.chmod(0o755)
    agent = agents('[[follow]]\nname = "j"\njournal_unit = "vllm.service"\n', env={"KVWATCH_JOURNALCTL": str(stand_in)})
    agent.start()
    wait_for(lambda: stats_lines(agent, "j") == 5, what="the journal's records")
    assert agent.value("kvwatch_journal_up", server="j") == 1
    args = (tmp_path / "args").read_text()
    assert "--follow" in args and "--output=json" in args and "--unit=vllm.service" in args
    assert f"--cursor-file={tmp_path / 'state' / 'journal-j.cursor'}" in args and "--lines=0" in args
