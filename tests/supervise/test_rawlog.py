"""The supervised server's raw log rotated by the reader, with a real writer appending through O_APPEND."""

from __future__ import annotations

import json
import logging
import os
import threading
from pathlib import Path

import pytest

from agent.sources import tail as tail_module
from agent.supervise import rawlog
from tests.support.tailing import append, lines, make_tailer


def test_raw_log_rotation_keeps_every_line_while_the_writer_appends(tmp_path: Path) -> None:
    """A writer appends through its own O_APPEND descriptor (as a server does) while the log rotates."""
    log = tmp_path / "server.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=64 * 1024, backups=3)
    total = 20000
    done = threading.Event()
    cycled = threading.Event()

    def write() -> None:
        for i in range(total):
            os.write(fd, f"line {i:08d} {'p' * 40}\n".encode())
            if i % 1000 == 999:
                # A pause, as a server's between bursts: the reader gets a turn even on a loaded machine
                # (a writer done before the first cycle left one rotation to see, not three).
                cycled.clear()
                cycled.wait(10)
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        tailer.cycle()
        cycled.set()
    writer.join()
    tailer.cycle()
    os.close(fd)
    assert got.text == [f"line {i:08d} {'p' * 40}" for i in range(total)]
    stats = tailer.snapshot()["s"][str(log)]
    assert stats.log_rotations >= 3
    assert os.path.getsize(log) < 64 * 1024 + 16 * 1024
    backups = sorted(p.name for p in tmp_path.glob("server.log.*"))
    assert backups == ["server.log.1", "server.log.2", "server.log.3"]
    assert all((p.stat().st_mode & 0o777) == 0o640 for p in tmp_path.glob("server.log.*"))
    # The archives and the live file, in order, are exactly the last part of what was written.
    text = b"".join((tmp_path / name).read_bytes() for name in ("server.log.3", "server.log.2", "server.log.1"))
    text += log.read_bytes()
    assert text.endswith(f"line {total - 1:08d} {'p' * 40}\n".encode())


def test_raw_log_rotation_waits_for_the_reader_to_catch_up(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Rotating makes the kernel write the unread part to disk while the server waits: not while far behind."""
    monkeypatch.setattr(tail_module, "READ_BLOCK", 4096)
    monkeypatch.setattr(tail_module, "MAX_READ_PER_CYCLE", 8192)  # a reader that lags
    monkeypatch.setattr(rawlog, "ROTATE_MAX_UNREAD", 4096)
    log = tmp_path / "server.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=16384, backups=2)
    line = "x" * 99 + "\n"
    os.write(fd, (line * 1000).encode())  # 100,000 bytes: behind, yet under 8 x the limit
    rotations = []
    for _ in range(14):
        tailer.cycle()
        rotations.append(tailer.snapshot()["s"][str(log)].log_rotations)
    assert len(got.text) == 1000
    assert rotations[-1] == 1 and rotations.count(0) >= 10, "one rotation, once caught up"
    # A flood the reader cannot catch up with: past 8 x the limit it rotates anyway.
    os.write(fd, (line * 2000).encode())
    rotated_while_behind = False
    while len(got.text) < 3000:
        tailer.cycle()
        rotated_while_behind |= tailer.snapshot()["s"][str(log)].log_rotations == 2 and len(got.text) < 2900
    os.close(fd)
    assert got.text == [line[:-1]] * 3000
    assert rotated_while_behind


def _write_while_reading(fd: int, tailer, lines: list[str], every: int = 100) -> None:
    """Each line appended through ``fd`` (as a server writes), the tailer reading after every ``every`` of them
    and at the end; ``fd`` is closed."""
    for i, line in enumerate(lines):
        os.write(fd, f"{line}\n".encode())
        if i % every == every - 1:
            tailer.cycle()
    tailer.cycle()
    os.close(fd)


def test_raw_log_rotation_falls_back_to_truncation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filesystems without FALLOC_FL_COLLAPSE_RANGE (tmpfs, NFS): simulated here, since this disk has it."""
    monkeypatch.setattr(rawlog, "_collapse", lambda fd, length: False)
    log = tmp_path / "server.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=8192, backups=1)
    _write_while_reading(fd, tailer, [f"line {i}" for i in range(1000)])
    assert got.text == [f"line {i}" for i in range(1000)]
    assert tailer.snapshot()["s"][str(log)].log_rotations >= 1


def _saved_in_rotation(tailer, log: str, positions: Path) -> dict:
    """What the save a rotation of ``log`` makes (before it cuts) writes to ``positions``: filled in when it is made."""
    saved: dict = {}

    def snapshot_positions() -> None:
        tailer.save_positions()
        saved.update(json.loads(positions.read_text()))

    tailer.sources["s"].paths[log].save_hook = snapshot_positions
    return saved


def test_a_kill_during_rotation_resumes_without_rereading(tmp_path: Path) -> None:
    """The position after the collapse is saved before the collapse happens."""
    log = tmp_path / "server.log"
    log.write_text(lines("x", 2000))
    tailer, _got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=1 << 30, backups=1)
    tailer.cycle()
    tailed = tailer.sources["s"].paths[str(log)]
    saved_before_collapse = _saved_in_rotation(tailer, str(log), tmp_path / "positions.json")
    tailed.rotate(tailer.hand_over)
    # The process "dies" now: only what was saved before the collapse survives.
    (tmp_path / "positions.json").write_text(json.dumps(saved_before_collapse))
    append(log, "after the kill\n")
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got_again.text == ["after the kill"]


def test_the_numbers_saved_during_a_rotation_count_the_lines_read_before_it(tmp_path: Path) -> None:
    """A rotation saves the positions in the middle of a cycle, while the lines the cycle read wait to be handed
    over with those of the cycle's other files: they are handed over first, so the numbers saved with the
    positions count them (else a kill after the save would lose them from the counts for good)."""
    log = tmp_path / "server.log"
    log.write_text(lines("x", 2000))
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=4096, backups=1)
    tailer.sources["s"].save_numbers = lambda: {"lines": len(got.lines)}
    saved_in_rotation = _saved_in_rotation(tailer, str(log), tmp_path / "positions.json")
    tailer.cycle()
    assert tailer.snapshot()["s"][str(log)].log_rotations == 1
    assert saved_in_rotation["counters"]["s"]["numbers"] == {"lines": 2000}
    # ... the lines before the position saved (the position the cut is about to make is its alternative).
    assert saved_in_rotation["positions"]["s"][str(log)]["offset"] == len(lines("x", 2000))


def test_without_room_for_the_copy_the_read_part_is_still_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A full disk: the copy of the part read fails with ENOSPC (written to /dev/full, which fails every write
    so, as a full filesystem does); the live log is cut all the same, so that the server's next lines have room."""
    real_open = os.open

    def full_copies(path, flags, mode=0o777):
        return real_open("/dev/full", os.O_WRONLY) if str(path).endswith(".1") else real_open(path, flags, mode)

    monkeypatch.setattr(rawlog.os, "open", full_copies)
    log = tmp_path / "server.log"
    fd = real_open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=8192, backups=2)
    _write_while_reading(fd, tailer, [f"line {i:05d}" for i in range(3000)])
    assert got.text == [f"line {i:05d}" for i in range(3000)]
    assert tailer.snapshot()["s"][str(log)].log_rotations >= 3
    assert os.path.getsize(log) < 8192 + 4096
    assert not list(tmp_path.glob("server.log.*"))  # no copy, not even a part of one
    said = [r for r in caplog.records if "no room for a copy" in r.getMessage()]
    assert len(said) == 1  # said once, not at every rotation


def test_a_rotation_that_fails_is_said_once_and_tried_again_a_minute_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="kvwatch.rawlog")
    clock = [1000.0]
    monkeypatch.setattr(rawlog.time, "monotonic", lambda: clock[0])
    attempts = []
    real_archive = rawlog.RawLog.archive

    def refused(self, fd: int, cut: int) -> None:
        attempts.append(clock[0])
        if clock[0] < 1100.0:
            raise PermissionError(13, "Permission denied")
        real_archive(self, fd, cut)

    monkeypatch.setattr(rawlog.RawLog, "archive", refused)
    log = tmp_path / "server.log"
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=4096, backups=1)
    for i in range(50):
        append(log, lines(f"burst {i}", 100))
        tailer.cycle()
    assert attempts == [1000.0]  # not at every read
    assert [r.getMessage() for r in caplog.records if "cannot rotate" in r.getMessage()] == [
        f"cannot rotate {log}: Permission denied (tried again every 60 s)"
    ]
    clock[0] += rawlog.RETRY_SECONDS
    append(log, lines("later", 10))
    tailer.cycle()
    assert attempts == [1000.0, 1060.0] and len(caplog.records) == 1  # the same failure is not said again
    clock[0] = 1200.0
    append(log, lines("later still", 10))
    tailer.cycle()
    assert tailer.snapshot()["s"][str(log)].log_rotations == 1
    assert "rotated again" in caplog.records[-1].getMessage()
    assert len(got.text) == 50 * 100 + 20


def test_a_line_begun_before_a_block_s_end_and_not_yet_ended_is_not_cut(tmp_path: Path) -> None:
    """Reading may stop inside a line that began before the last whole block read: the cut stays before it."""
    log = tmp_path / "server.log"
    block = os.statvfs(tmp_path).f_bsize or 4096
    whole = "x" * 99 + "\n"
    head = whole * ((3 * block - 50) // 100)
    head += "y" * (3 * block - 50 - len(head) - 1) + "\n"  # complete lines up to 50 bytes before a block's end
    log.write_text(head + "z" * 120)  # then a line not ended yet, across the block's end
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=block, backups=1)
    tailer.cycle()
    assert tailer.snapshot()["s"][str(log)].log_rotations == 1
    assert (tmp_path / "server.log.1").stat().st_size == 2 * block  # the whole blocks before the line's start
    append(log, "z" * 10 + "\nnext\n")
    tailer.cycle()
    assert got.text[-2:] == ["z" * 130, "next"]
    assert len(got.text) == head.count("\n") + 2


def test_a_raw_log_deleted_under_its_server_is_read_on_and_kept_small(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean-up of the log directory deletes the raw log while the server writes to it: the server writes on
    into the deleted file, which only kvwatch can still read and keep small; its next start makes a new one."""
    monkeypatch.setattr(tail_module, "ROTATE_WAIT", 0.0)  # (a followed file renamed away is finished at once)
    log = tmp_path / "server.log"
    fd = rawlog.open_raw_log(log)
    tailer, got = make_tailer(tmp_path, str(log), raw_logs=(str(log),), rotate_bytes=8192, backups=1)
    written = [f"line {i:05d}" for i in range(3000)]
    for i, line in enumerate(written):
        os.write(fd, f"{line}\n".encode())
        if i == 499:
            tailer.cycle()
            log.unlink()
        if i % 100 == 99:
            tailer.cycle()
    tailer.cycle()
    assert got.text == written  # nothing lost
    assert os.fstat(fd).st_size < 8192 + 4096  # the deleted file rotated all the same
    assert tailer.snapshot()["s"][str(log)].log_rotations >= 3
    assert (tmp_path / "server.log.1").exists()
    assert len([r for r in caplog.records if "was deleted while its server writes to it" in r.getMessage()]) == 1
    os.close(fd)  # the server starts again: a new file
    fd = rawlog.open_raw_log(log)
    os.write(fd, b"after the start\n")
    os.close(fd)
    tailer.cycle()
    assert got.text[-1] == "after the start"
    assert len(got.text) == len(written) + 1
