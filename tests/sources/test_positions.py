"""Read positions saved and resumed across a restart of the reader, and a damaged positions file."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from tests.support.tailing import make_tailer


def test_positions_file_records_device_inode_and_fingerprint(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("abc\n")
    tailer, _ = make_tailer(tmp_path, str(log))
    tailer.cycle()
    saved = json.loads((tmp_path / "positions.json").read_text())["positions"]["s"][str(log)]
    st = os.stat(log)
    assert (saved["dev"], saved["ino"], saved["offset"], saved["fp_len"]) == (st.st_dev, st.st_ino, 4, 4)


def test_a_corrupt_positions_file_is_ignored_not_fatal(tmp_path: Path) -> None:
    (tmp_path / "positions.json").write_text("{not json")
    log = tmp_path / "a.log"
    log.write_text("one\n")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    assert got.text == ["one"]


def test_a_damaged_position_record_is_ignored_not_fatal(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("one\n")
    damaged = {"version": 1, "positions": {"s": {str(log): {"dev": "x", "offset": 2}}}}
    (tmp_path / "positions.json").write_text(json.dumps(damaged))
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    assert got.text == ["one"]


def test_a_state_file_that_cannot_be_written_is_warned_about_once_counted_and_retried(tmp_path: Path, caplog) -> None:
    """Read positions are saved every second: a full disk must give one warning, not one a second."""
    from agent.statedir import StateFile, state_families

    missing = tmp_path / "gone"  # its directory is missing: every write fails, the same way
    file = StateFile.at(missing / "positions.json", "read positions")
    with caplog.at_level(logging.INFO, logger="kvwatch.state"):
        assert [file.save("{}") for _ in range(5)] == [False] * 5
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and str(missing / "positions.json") in warnings[0]
        series = {(s.name, s.labels["path"]): s.value for f in state_families() for s in f.samples}
        path = str(missing / "positions.json")
        assert series[("kvwatch_state_write_failures_total", path)] == 5
        assert series[("kvwatch_state_write_failing", path)] == 1
        missing.mkdir()
        assert file.save('{"a": 1}')
        assert (missing / "positions.json").read_text() == '{"a": 1}'
        assert any("saved to" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)
        series = {(s.name, s.labels["path"]): s.value for f in state_families() for s in f.samples}
        assert series[("kvwatch_state_write_failing", path)] == 0
        assert series[("kvwatch_state_write_failures_total", path)] == 5
        # A new reason is worth a new warning.
        (missing / "positions.json").unlink()
        (missing / "positions.json").mkdir()
        (missing / "positions.json" / "x").write_text("")
        assert not file.save("{}")
        assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 2


def test_positions_a_save_could_not_write_are_saved_once_it_can_without_more_lines(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk freed while the log is quiet: the positions read before are saved at the next interval
    (and the state file stops failing), not only when the next line comes."""
    import agent.sources.tail as tail

    monkeypatch.setattr(tail, "SAVE_INTERVAL", 0.0)
    blocked = tmp_path / "positions.json"
    blocked.mkdir()  # a directory where the file goes: every write fails
    (blocked / "x").write_text("")
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    assert got.text == ["one", "two"]
    (blocked / "x").unlink()
    blocked.rmdir()
    tailer.cycle()  # nothing more to read
    saved = json.loads(blocked.read_text())["positions"]["s"][str(log)]
    assert saved["offset"] == len("one\ntwo\n")


def test_a_failed_replace_leaves_no_temporary_file(tmp_path: Path) -> None:
    from agent.statedir import replace_file

    target = tmp_path / "positions.json"
    target.mkdir()  # a directory in the way: the temporary file is written, the rename fails
    (target / "x").write_text("")
    with pytest.raises(OSError):
        replace_file(target, "{}")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["positions.json"]


def test_the_owners_of_one_state_file_share_it_and_its_one_series(tmp_path: Path) -> None:
    """A server's record is written by the server object before a reload and by the one after it:
    one series per path (two would make the scrape invalid), its count going on."""
    import gc

    from agent.statedir import StateFile, state_families

    path = tmp_path / "gone" / "servers" / "a.json"
    before, after = StateFile.at(path, "server a's pid"), StateFile.at(path, "server a's pid")
    assert before is after
    before.save("{}")
    after.save("{}")
    samples = [s for f in state_families() for s in f.samples if s.labels["path"] == str(path)]
    assert [(s.name, s.value) for s in samples] == [
        ("kvwatch_state_write_failures_total", 2),
        ("kvwatch_state_write_failing", 1),
    ]
    del before, after
    gc.collect()
    assert not [s for f in state_families() for s in f.samples if s.labels["path"] == str(path)]


def test_a_state_directory_on_a_file_system_without_locks_is_used_with_a_warning(tmp_path: Path, caplog) -> None:
    """A stand-in for such a file system (some network ones answer ENOLCK): none can be mounted here."""
    import errno
    from unittest import mock

    from agent.statedir import hold

    with mock.patch("fcntl.flock", side_effect=OSError(errno.ENOLCK, "No locks available")):
        handle = hold(tmp_path)
    handle.close()
    assert "cannot be locked (No locks available): nothing stops a second kvwatch from using it" in caplog.text
