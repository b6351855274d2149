"""A ``[[follow]]`` of a systemd unit's journal, through ``journalctl --follow`` run by kvwatch."""

from __future__ import annotations

import json
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tests.support.harness import STATS, Agent, stats_lines, wait_for


def printing_journalctl(tmp_path: Path, record: dict | list[dict], count: int = 1) -> Path:
    """A stand-in journalctl (no journald runs here) that notes its arguments in ``args``, prints ``count``
    copies of a journal JSON record (or of each of a list of them), and follows on until kvwatch is gone (the
    test kills it), then ends, as journalctl does on a closed pipe."""
    records = "\n".join(json.dumps(one) for one in (record if isinstance(record, list) else [record]))
    stand_in = tmp_path / "journalctl"
    stand_in.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        f"if sys.argv[1:] == ['--version']: sys.exit(print('systemd 252 (252.38-1~deb12u1)'))\n"
        f"open({str(tmp_path / 'args')!r}, 'w').write(' '.join(sys.argv[1:]))\n"
        f"for _ in range({count}): print({records!r}, flush=True)\n"
        "parent = os.getppid()\n"
        "while os.getppid() == parent: time.sleep(0.1)\n"
    )
    stand_in.chmod(0o755)
    return stand_in


def test_journal_follow_runs_journalctl_from_the_end_the_first_time(agents, tmp_path: Path) -> None:
    """No journald runs here, so a stand-in journalctl prints journal JSON records and its arguments."""
    record = {"MESSAGE": STATS.strip(), "_SYSTEMD_UNIT": "vllm.service", "__REALTIME_TIMESTAMP": "1"}
    stand_in = printing_journalctl(tmp_path, record, 5)
    agent = agents('[[follow]]\nname = "j"\njournal_unit = "vllm.service"\n', env={"KVWATCH_JOURNALCTL": str(stand_in)})
    agent.start()
    wait_for(lambda: stats_lines(agent, "j") == 5, what="the journal's records")
    assert agent.value("kvwatch_journal_up", server="j") == 1
    args = (tmp_path / "args").read_text()
    assert "--follow" in args and "--output=json" in args and "--unit=vllm.service" in args
    assert "--lines=0" in args and "cursor" not in args
    assert "--output-fields=MESSAGE" in args  # systemd 236+: the message, not every field


def test_systemd_s_records_about_the_unit_tell_how_the_server_ended(agents, tmp_path: Path) -> None:
    """(journalctl is a stand-in: no journald runs here.)  A unit's journal holds systemd's own records about
    it beside the server's: the kernel's OOM killer took the server, systemd logged how its main process ended
    and restarted it; the server itself wrote nothing of it."""
    messages = [
        STATS.strip(),
        "INFO:     Application startup complete.",
        "vllm.service: A process of this unit has been killed by the OOM killer.",
        "vllm.service: Main process exited, code=killed, status=9/KILL",
        "vllm.service: Failed with result 'oom-kill'.",
        "vllm.service: Scheduled restart job, restart counter is at 1.",
    ]
    records = [{"MESSAGE": message, "__REALTIME_TIMESTAMP": "1765700309123456"} for message in messages]
    stand_in = printing_journalctl(tmp_path, records)
    agent = agents('[[follow]]\nname = "j"\njournal_unit = "vllm.service"\n', env={"KVWATCH_JOURNALCTL": str(stand_in)})
    agent.start()
    unit = "vllm.service"
    wait_for(lambda: agent.value("kvwatch_service_restarts_total", server="j", unit=unit) == 1, what="the restart")
    assert agent.value("kvwatch_service_oom_kills_total", server="j", unit=unit) == 1
    assert agent.value("kvwatch_service_exits_total", server="j", unit=unit, how="killed") == 1
    assert agent.value("kvwatch_service_failures_total", server="j", unit=unit, result="oom-kill") == 1
    assert agent.value("kvwatch_service_last_exit_signal", server="j", unit=unit) == 9
    assert agent.value("kvwatch_vllm_server_stopped", server="j") == 1
    assert agent.value("kvwatch_vllm_server_ready", server="j") == 0


def test_the_unit_a_journal_follow_reads_is_named_as_systemd_names_it() -> None:
    from agent.config import FollowConfig
    from agent.sources.journal import followed_unit

    for given, named in (("vllm", "vllm.service"), ("vllm.service", "vllm.service"), ("vllm@*", "vllm@*.service")):
        assert followed_unit(FollowConfig("j", journal_unit=given)) == named
    assert followed_unit(FollowConfig("j", journal_unit="run-u7.scope")) == "run-u7.scope"
    assert followed_unit(FollowConfig("j", journal_match=("CONTAINER_NAME=vllm",))) is None


def test_a_journalctl_older_than_systemd_236_is_run_without_output_fields(tmp_path: Path) -> None:
    from agent.sources.journal import _takes_output_fields

    for shown, takes in (("systemd 219\n+PAM +AUDIT", False), ("systemd 236 (236)", True), ("", False)):
        stand_in = tmp_path / f"journalctl-{takes}-{len(shown)}"
        stand_in.write_text(f"#!/bin/sh\nprintf '%s' {shlex.quote(shown)}\n")
        stand_in.chmod(0o755)
        assert _takes_output_fields(str(stand_in)) is takes, shown
    assert _takes_output_fields(str(tmp_path / "missing")) is False


# A journalctl stand-in over a file of records (one JSON object per line, each with its cursor): it
# prints those after --after-cursor (or the last --lines), then follows the file, as journalctl does.
JOURNALCTL = """
import json, os, sys, time
args = sys.argv[1:]
if args == ["--version"]:
    sys.exit(print("systemd 252 (252.38-1~deb12u1)"))
open(os.environ["ARGS_LOG"], "a").write(" ".join(args) + "\\n")
after = next((a.split("=", 1)[1] for a in args if a.startswith("--after-cursor=")), None)
source = open(os.environ["RECORDS"])
skipping = after is not None or "--lines=0" in args
parent = os.getppid()
while os.getppid() == parent:
    line = source.readline()
    if not line.endswith("\\n"):
        source.seek(source.tell() - len(line))
        time.sleep(0.02)
        continue
    if skipping:
        skipping = after is not None and json.loads(line)["__CURSOR"] != after
        continue
    sys.stdout.write(line)
    sys.stdout.flush()
"""


def counted_past(agent: Agent, count: int) -> Callable[[], bool]:
    """Whether ``agent`` has counted more than ``count`` of the follow ``j``'s records."""
    return lambda: stats_lines(agent, "j") > count


def test_a_journal_follow_counts_every_record_once_across_sigkills(agents, tmp_path: Path) -> None:
    records = tmp_path / "records.jsonl"
    records.write_text("")
    stand_in = tmp_path / "journalctl"
    stand_in.write_text(f"#!{sys.executable}\n{JOURNALCTL}")
    stand_in.chmod(0o755)
    env = {"KVWATCH_JOURNALCTL": str(stand_in), "RECORDS": str(records), "ARGS_LOG": str(tmp_path / "args")}
    body = '[[follow]]\nname = "j"\njournal_unit = "vllm.service"\nstart_at = "beginning"\n'
    agent = agents(body, env=env).start()
    checkpoint = agent.directory / "state" / "journal-j.json"
    total = 0
    with open(records, "a") as out:
        for turn in range(4):
            for _ in range(300):
                total += 1
                record = {"__CURSOR": f"s=x;i={total:x}", "MESSAGE": STATS.strip(), "_SYSTEMD_UNIT": "vllm.service"}
                out.write(json.dumps(record) + "\n")
                out.flush()
                if total % 50 == 0:
                    time.sleep(0.05)
            # Each kvwatch reads some of this round's records before it is killed (on a loaded machine it may not
            # have begun yet), and the first has saved its place: the kills then fall mid-stream, after a save.
            wait_for(counted_past(agent, total - 300), what="some of this round's records")
            if turn == 0:
                wait_for(lambda: "s=x;i=" in checkpoint.read_text(), what="a saved place")
            agent.process.kill()  # mid-stream, without a goodbye
            agent.process.wait()
            agent = agents(body, env=env).start()
    wait_for(lambda: stats_lines(agent, "j") == total, what=f"the {total} records, each once")
    time.sleep(1.0)
    assert stats_lines(agent, "j") == total
    assert "--after-cursor=s=x;i=" in (tmp_path / "args").read_text()


def test_a_flowing_journal_is_read_in_batches_not_once_per_record(tmp_path: Path) -> None:
    """journalctl writes each record as it follows: 5,000 a second for a second here, in that many writes.  They
    all arrive, in a few dozen hand-overs rather than thousands (each wake-up costs what a hundred lines do)."""
    from agent.config import FollowConfig
    from agent.sources.journal import JournalSource

    stand_in = tmp_path / "journalctl"
    stand_in.write_text(
        f"#!{sys.executable}\nimport json, os, sys, time\n"
        "if sys.argv[1:] == ['--version']: sys.exit(print('systemd 252 (252.38-1~deb12u1)'))\n"
        "began, sent = time.monotonic(), 0\n"
        "while sent < 5000:\n"
        "    while sent < min(5000, int((time.monotonic() - began) * 5000)):\n"
        "        sent += 1\n"
        "        record = {'__CURSOR': f's=x;i={sent:x}', 'MESSAGE': f'line {sent}', '_SYSTEMD_UNIT': 'vllm.service'}\n"
        "        sys.stdout.write(json.dumps(record) + '\\n')\n"
        "        sys.stdout.flush()\n"
        "    time.sleep(0.001)\n"
        "parent = os.getppid()\n"
        "while os.getppid() == parent: time.sleep(0.1)\n"
    )
    stand_in.chmod(0o755)
    batches: list[int] = []
    lines: list[str] = []

    def deliver(name: str, files: list[tuple[list[str | None], str]]) -> None:
        [(got, _origin)] = files
        batches.append(len(got))
        lines.extend(line for line in got if line is not None)

    follow = FollowConfig("j", journal_unit="vllm.service")
    source = JournalSource(follow, tmp_path, 1 << 20, {}, deliver, journalctl=str(stand_in))
    source.start()
    try:
        wait_for(lambda: len(lines) == 5000, timeout=60, what="the 5,000 records")
    finally:
        source.stop()
    assert [json.loads(line)["MESSAGE"] for line in lines] == [f"line {n}" for n in range(1, 5001)]
    # Read as they came, it took 1,199 and 1,381 hand-overs here; paced, 17.
    assert len(batches) < 100, len(batches)
    assert source.cursor == "s=x;i=1388"


def test_a_journal_place_the_state_directory_refused_is_saved_once_it_can_be_while_the_journal_is_quiet(
    tmp_path: Path, monkeypatch
) -> None:
    """(journalctl is a stand-in: no journald runs here.)  Ten records come, then nothing: the save made with
    them fails (a directory where the file goes), and is made once the way is clear, by the daemon's periodic
    retry, without another record."""
    import agent.sources.journal as journal
    from agent.config import FollowConfig
    from agent.sources.journal import JournalSource

    monkeypatch.setattr(journal, "SAVE_INTERVAL", 0.0)
    stand_in = tmp_path / "journalctl"
    stand_in.write_text(
        f"#!{sys.executable}\nimport json, os, sys, time\n"
        "if sys.argv[1:] == ['--version']: sys.exit(print('systemd 252 (252.38-1~deb12u1)'))\n"
        "for n in range(1, 11):\n"
        "    record = {'__CURSOR': f's=x;i={n:x}', 'MESSAGE': f'line {n}', '_SYSTEMD_UNIT': 'vllm.service'}\n"
        "    print(json.dumps(record), flush=True)\n"
        "parent = os.getppid()\n"
        "while os.getppid() == parent: time.sleep(0.1)\n"
    )
    stand_in.chmod(0o755)
    blocked = tmp_path / "journal-j.json"
    blocked.mkdir()
    (blocked / "x").write_text("")
    got: list[str] = []
    follow = FollowConfig("j", journal_unit="vllm.service")
    source = JournalSource(
        follow,
        tmp_path,
        1 << 20,
        {},
        lambda name, files: got.extend(files[0][0]),
        str(stand_in),
        save_numbers=lambda: {},
    )
    source.start()
    try:
        wait_for(lambda: source.cursor == "s=x;i=a", what="the ten records")
        wait_for(lambda: source._checkpoint.failing is not None, what="the refused save")
        (blocked / "x").unlink()
        blocked.rmdir()
        source.retry_save()
        assert json.loads(blocked.read_text())["cursor"] == "s=x;i=a"
        assert source._checkpoint.failing is None
    finally:
        source.stop()


def test_what_a_following_journalctl_says_is_logged_while_it_follows(tmp_path: Path, caplog) -> None:
    """(journalctl is a stand-in: no journald runs here.)  A journalctl that may not read the system journal
    says so on its standard error and follows on, finding nothing: that is logged at once, not only when it
    exits (it never does); past the first lines of a run, only the last reach the line that says it exited."""
    from agent.config import FollowConfig
    from agent.sources import journal
    from agent.sources.journal import JournalSource

    hint = "Hint: You are currently not seeing messages from other users and the system."
    stand_in = tmp_path / "journalctl"
    stand_in.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        "if sys.argv[1:] == ['--version']: sys.exit(print('systemd 252 (252.38-1~deb12u1)'))\n"
        f"print({hint!r}, file=sys.stderr, flush=True)\n"
        "print(\"      Users in groups 'adm', 'systemd-journal' can see all messages.\", file=sys.stderr)\n"
        f"if os.path.exists({str(tmp_path / 'noisy')!r}):\n"
        "    for n in range(40): print(f'Journal file {n}.journal is truncated, ignoring file.', file=sys.stderr)\n"
        "    sys.exit(1)\n"
        "parent = os.getppid()\n"
        "while os.getppid() == parent: time.sleep(0.1)\n"
    )
    stand_in.chmod(0o755)
    caplog.set_level("WARNING", logger="kvwatch.journal")
    follow = FollowConfig("j", journal_unit="vllm.service")
    source = JournalSource(follow, tmp_path, 1 << 20, {}, lambda name, files: None, str(stand_in))
    source.start()
    try:
        wait_for(lambda: hint in caplog.text, what="journalctl's hint in the log")
        assert "can see all messages" in caplog.text
        assert source.running  # it follows on
    finally:
        source.stop()
    caplog.clear()
    (tmp_path / "noisy").touch()
    source = JournalSource(follow, tmp_path, 1 << 20, {}, lambda name, files: None, str(stand_in))
    source.start()
    try:
        wait_for(lambda: "exited with 1" in caplog.text, what="journalctl's exit in the log")
    finally:
        source.stop()
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("journalctl for vllm.service: Journal")]
    assert len(said) == journal.STDERR_LOGGED - 2  # its first lines each (the hint's two among them) ...
    exit_line = next(r.getMessage() for r in caplog.records if "exited with 1" in r.getMessage())
    assert "39.journal" in exit_line and "36.journal" not in exit_line  # ... and the last of the others


def test_a_journalctl_that_fails_again_and_again_is_said_once_until_it_follows(
    tmp_path: Path, caplog, monkeypatch
) -> None:
    """(journalctl is a stand-in: no journald runs here.)  A journalctl that exits at once with an error, run
    again every pause: its failure is said once, not at every run; once it hands on a record that is said, and
    a failure after it is said again."""
    from agent.config import FollowConfig
    from agent.sources import journal
    from agent.sources.journal import JournalSource

    monkeypatch.setattr(journal, "RESTART_PAUSE", 0.05)
    runs, works = tmp_path / "runs", tmp_path / "works"
    record = json.dumps({"MESSAGE": STATS.format(n=1).rstrip("\n"), "__CURSOR": "s=1", "__REALTIME_TIMESTAMP": "1"})
    stand_in = tmp_path / "journalctl"
    stand_in.write_text(
        f"#!{sys.executable}\nimport os, sys, time\n"
        "if sys.argv[1:] == ['--version']: sys.exit(print('systemd 252 (252.38-1~deb12u1)'))\n"
        f"open({str(runs)!r}, 'a').write('.')\n"
        f"if os.path.exists({str(works)!r}):\n"
        f"    print({record!r}, flush=True)\n"
        "    sys.exit(0)\n"
        "print('Failed to add match: Invalid argument', file=sys.stderr)\n"
        "sys.exit(1)\n"
    )
    stand_in.chmod(0o755)
    caplog.set_level("INFO", logger="kvwatch.journal")
    got: list[str] = []
    follow = FollowConfig("j", journal_unit="vllm.service")
    source = JournalSource(follow, tmp_path, 1 << 20, {}, lambda name, files: got.extend(files[0][0]), str(stand_in))
    source.start()
    try:
        wait_for(lambda: runs.exists() and len(runs.read_text()) >= 10, what="ten runs of journalctl")
        said = [r.getMessage() for r in caplog.records]
        assert len(said) == 2, said  # what it said on its standard error at its first run, and its exit
        assert said[1].startswith("journalctl for vllm.service exited with 1: Failed to add match")
        works.touch()
        wait_for(lambda: got, what="a record handed on")
        works.unlink()
        wait_for(lambda: len(caplog.records) >= 4, what="the next failure said")
    finally:
        source.stop()
    said = [r.getMessage() for r in caplog.records]
    assert said[2] == "journalctl for vllm.service follows again"
    assert said[3].startswith("journalctl for vllm.service exited with 0")  # (it ended after its record)
    assert len([m for m in said if "exited with 1" in m]) <= 2


def test_a_container_logging_through_journald_is_followed_by_its_journal_match(agents, tmp_path: Path) -> None:
    """(journalctl is a stand-in: no journald runs here.)  Docker's and Podman's journald drivers name each
    record's container in CONTAINER_NAME: journalctl is given the match, and no unit."""
    record = {"MESSAGE": STATS.strip(), "CONTAINER_NAME": "vllm-gpu0", "__REALTIME_TIMESTAMP": "1"}
    stand_in = printing_journalctl(tmp_path, record, 3)
    config = '[[follow]]\nname = "gpu0"\njournal_match = ["CONTAINER_NAME=vllm-gpu0", "_TRANSPORT=journal"]\n'
    agent = agents(config, env={"KVWATCH_JOURNALCTL": str(stand_in)})
    agent.start()
    wait_for(lambda: stats_lines(agent, "gpu0") == 3, what="the container's records")
    args = (tmp_path / "args").read_text().split()
    assert "CONTAINER_NAME=vllm-gpu0" in args and "_TRANSPORT=journal" in args
    assert not any(arg.startswith("--unit") for arg in args)
