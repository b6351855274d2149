"""The tailer on real files: every file event, named as mtail's integration tests name them.

Each test drives :meth:`Tailer.cycle` by hand (no thread, no timing) except
the inotify test, which checks that a write wakes the running tailer.
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from agent.sources import tail as tail_module
from agent.sources.positions import PositionStore
from agent.sources.tail import Source, Tailer
from agent.supervise import rawlog
from tests.support.harness import wait_for


class Collected:
    """The tailer's deliveries; ``arrived`` is set at each."""

    def __init__(self) -> None:
        self.lines: list[str | None] = []
        self.arrived = threading.Event()

    def __call__(self, source: str, lines: list) -> None:
        self.lines.extend(lines)
        self.arrived.set()

    @property
    def text(self) -> list[str]:
        return [line for line in self.lines if line is not None]


def make_tailer(tmp_path: Path, *patterns: str, start_at_end: bool = False, **source_kw) -> tuple[Tailer, Collected]:
    got = Collected()
    tailer = Tailer(got, PositionStore(str(tmp_path / "positions.json")), poll_interval=0.05, use_inotify=False)
    tailer.add(Source("s", tuple(patterns), {}, start_at_end=start_at_end, **source_kw))
    return tailer, got


def append(path: Path, text: str) -> None:
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(text)


def lines(prefix: str, n: int, start: int = 0) -> str:
    return "".join(f"{prefix} {i}\n" for i in range(start, start + n))


def test_growth_is_read_line_by_line(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(log))
    append(log, lines("x", 3))
    tailer.cycle()
    append(log, lines("x", 2, 3))
    tailer.cycle()
    assert got.text == [f"x {i}" for i in range(5)]


def test_partial_line_written_in_pieces(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(log))
    for piece in ("INFO 12-14 ", "16:18:29 [x] par", "tial line\nnext", " one\n"):
        append(log, piece)
        tailer.cycle()
    assert got.text == ["INFO 12-14 16:18:29 [x] partial line", "next one"]


def test_existing_file_starts_at_its_end_unless_told(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(lines("old", 3))
    tailer, got = make_tailer(tmp_path, str(log), start_at_end=True)
    append(log, "new\n")
    tailer.cycle()
    assert got.text == ["new"]
    (tmp_path / "other").mkdir()
    tailer2, got2 = make_tailer(tmp_path / "other", str(log), start_at_end=False)
    tailer2.cycle()
    assert got2.text == ["old 0", "old 1", "old 2", "new"]


def test_rename_rotation_loses_no_line(tmp_path: Path) -> None:
    """logrotate's default: rename, create anew; the writer keeps writing the old file until it reopens."""
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(log))
    writer = open(log, "a", encoding="utf-8")  # noqa: SIM115 - the writer outlives the rotation
    writer.write(lines("before", 3))
    writer.flush()
    tailer.cycle()
    os.rename(log, tmp_path / "a.log.1")
    writer.write(lines("late", 2))  # still to the old inode
    writer.flush()
    log.write_text(lines("new", 2))
    tailer.cycle()
    writer.write("later\n")
    writer.flush()
    tailer.cycle()
    writer.close()
    assert got.text == [*(f"before {i}" for i in range(3)), "late 0", "late 1", "new 0", "new 1", "later"]
    assert tailer.snapshot()["s"][str(log)].rotations == 1


def test_copytruncate(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(log))
    append(log, lines("a", 5))
    tailer.cycle()
    with open(log, "r+") as handle:  # what copytruncate does after copying
        handle.truncate(0)
    append(log, lines("b", 2))
    tailer.cycle()
    assert got.text == [*(f"a {i}" for i in range(5)), "b 0", "b 1"]
    assert tailer.snapshot()["s"][str(log)].truncations == 1


def test_copytruncate_then_growth_past_the_old_offset_before_the_next_read(tmp_path: Path) -> None:
    """The size alone cannot tell: the rewritten file is already longer than what was read."""
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(log))
    append(log, lines("a", 3))
    tailer.cycle()
    with open(log, "r+") as handle:
        handle.truncate(0)
    append(log, lines("b", 9))
    tailer.cycle()
    assert got.text == [*(f"a {i}" for i in range(3)), *(f"b {i}" for i in range(9))]
    assert tailer.snapshot()["s"][str(log)].truncations == 1
    append(log, lines("c", 2))
    tailer.cycle()
    assert got.text[-2:] == ["c 0", "c 1"]
    assert tailer.snapshot()["s"][str(log)].truncations == 1


def test_delete_and_recreate(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(log))
    append(log, "one\n")
    tailer.cycle()
    log.unlink()
    tailer.cycle()
    tailer.cycle()
    log.write_text("two\n")
    tailer.cycle()
    assert got.text == ["one", "two"]


def test_symlink_switch(tmp_path: Path) -> None:
    first, second, link = tmp_path / "run1.log", tmp_path / "run2.log", tmp_path / "current.log"
    first.write_text("")
    link.symlink_to(first)
    tailer, got = make_tailer(tmp_path, str(link))
    append(first, "from first\n")
    tailer.cycle()
    second.write_text("from second\n")
    tmp = tmp_path / "tmp-link"
    tmp.symlink_to(second)
    os.replace(tmp, link)  # an atomic switch, as deploy tools do
    append(first, "first's last\n")
    tailer.cycle()
    assert got.text == ["from first", "first's last", "from second"]


def test_files_that_appear_after_start_are_read_from_their_beginning(tmp_path: Path) -> None:
    tailer, got = make_tailer(tmp_path, str(tmp_path / "logs" / "*.log"), start_at_end=True)
    tailer.cycle()
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "b.log").write_text("b1\n")
    tailer.rescan = True
    tailer.cycle()
    (tmp_path / "logs" / "c.log").write_text("c1\nc2\n")
    tailer.rescan = True
    tailer.cycle()
    assert sorted(got.text) == ["b1", "c1", "c2"]


def test_glob_skips_rotated_copies_of_a_followed_file(tmp_path: Path) -> None:
    (tmp_path / "a.log").write_text("live\n")
    (tmp_path / "a.log.1").write_text("rotated\n")
    tailer, got = make_tailer(tmp_path, str(tmp_path / "a.log*"), start_at_end=False)
    tailer.cycle()
    assert got.text == ["live"]


def test_permission_denied_is_reported_and_retried(tmp_path: Path) -> None:
    """(As root the file stays readable; tests/agent runs kvwatch as an unprivileged user for this.)"""
    log = tmp_path / "secret.log"
    log.write_text("hidden\n")
    log.chmod(0o000)
    if os.access(log, os.R_OK):
        pytest.skip("root reads a 0000 file; tests/commands/test_run.py covers this with an unprivileged kvwatch")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    assert tailer.errors() == {"s": {str(log): "permission_denied"}}
    log.chmod(0o640)
    tailer.cycle()
    assert got.text == ["hidden"]
    assert tailer.errors() == {}


def test_invalid_utf8_nul_and_huge_lines_are_counted_and_skipped(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    got = Collected()
    skipped: dict[str, int] = {}
    tailer = Tailer(got, PositionStore(None), use_inotify=False, max_line=100)
    tailer.add(Source("s", (str(log),), skipped, start_at_end=False))
    with open(log, "ab") as handle:
        handle.write(b"good\n\xff\xfe bad\nnul\x00here\n" + b"y" * 5000 + b"\nafter\n")
    tailer.cycle()
    assert got.text == ["good", "after"]
    assert skipped == {"invalid_utf8": 1, "nul": 1, "too_long": 1}


def test_restart_resumes_at_the_saved_position(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(lines("x", 3))
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    assert len(got.text) == 3
    append(log, lines("x", 2, 3))  # written while kvwatch is down
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got_again.text == ["x 3", "x 4"]


def test_restart_finishes_a_file_rotated_while_down(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(lines("x", 3))
    tailer, _got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    append(log, "unread before rotation\n")
    os.rename(log, tmp_path / "a.log.1")
    log.write_text("in the new file\n")
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got_again.text == ["unread before rotation", "in the new file"]


def test_restart_after_truncation_while_down(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(lines("x", 30))
    tailer, _ = make_tailer(tmp_path, str(log))
    tailer.cycle()
    log.write_text("short\n")  # truncated and rewritten: same inode, another head
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got_again.text == ["short"]


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


# -- raw log rotation by kvwatch -----------------------------------------------------


def test_raw_log_rotation_keeps_every_line_while_the_writer_appends(tmp_path: Path) -> None:
    """A writer appends through its own O_APPEND descriptor (as a server does) while the log rotates."""
    log = tmp_path / "server.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    tailer, got = make_tailer(tmp_path, str(log), rotate_bytes=64 * 1024, backups=3)
    total = 20000
    done = threading.Event()

    def write() -> None:
        for i in range(total):
            os.write(fd, f"line {i:08d} {'p' * 40}\n".encode())
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    while not done.is_set():
        tailer.cycle()
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
    tailer, got = make_tailer(tmp_path, str(log), rotate_bytes=16384, backups=2)
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


def test_raw_log_rotation_falls_back_to_truncation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Filesystems without FALLOC_FL_COLLAPSE_RANGE (tmpfs, NFS): simulated here, since this disk has it."""
    monkeypatch.setattr(rawlog, "_collapse", lambda fd, length: False)
    log = tmp_path / "server.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    tailer, got = make_tailer(tmp_path, str(log), rotate_bytes=8192, backups=1)
    for i in range(1000):
        os.write(fd, f"line {i}\n".encode())
        if i % 100 == 0:
            tailer.cycle()
    tailer.cycle()
    os.close(fd)
    assert got.text == [f"line {i}" for i in range(1000)]
    assert tailer.snapshot()["s"][str(log)].log_rotations >= 1


def test_a_kill_during_rotation_resumes_without_rereading(tmp_path: Path) -> None:
    """The position after the collapse is saved before the collapse happens."""
    log = tmp_path / "server.log"
    log.write_text(lines("x", 2000))
    tailer, got = make_tailer(tmp_path, str(log), rotate_bytes=1 << 30, backups=1)
    tailer.cycle()
    tailed = tailer.sources["s"].paths[str(log)]
    saved_before_collapse = {}

    def snapshot_positions() -> None:
        tailer.save_positions()
        saved_before_collapse.update(json.loads((tmp_path / "positions.json").read_text()))

    tailed.save_hook = snapshot_positions
    tailed.rotate(got)
    # The process "dies" now: only what was saved before the collapse survives.
    (tmp_path / "positions.json").write_text(json.dumps(saved_before_collapse))
    append(log, "after the kill\n")
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got_again.text == ["after the kill"]


def inotify_tailer(got: Collected, path: Path) -> Tailer:
    """A running tailer polling once a minute: within a test, only inotify can wake it."""
    tailer = Tailer(got, PositionStore(None), poll_interval=60.0, use_inotify=True)
    tailer.add(Source("s", (str(path),), {}, start_at_end=True))
    tailer.start()
    time.sleep(0.2)
    return tailer


def test_inotify_wakes_the_tailer_at_once(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("")
    got = Collected()
    tailer = inotify_tailer(got, log)
    try:
        append(log, "woken\n")
        assert got.arrived.wait(5.0)
        assert got.text == ["woken"]
    finally:
        tailer.stop()


def test_inotify_goes_quiet_while_lines_flow_and_rearms_once_caught_up(tmp_path: Path) -> None:
    """Bursts of writes with gaps between them: every line arrives, through inotify alone."""
    log = tmp_path / "a.log"
    log.write_text("")
    got = Collected()
    tailer = inotify_tailer(got, log)
    watcher = tailer._watcher
    assert watcher is not None and watcher.armed
    written = 0
    try:
        with open(log, "a", encoding="utf-8") as handle:
            for burst in range(20):
                for _ in range(200):
                    handle.write(f"line {written}\n")
                    handle.flush()
                    written += 1
                time.sleep(0.001 * (burst % 4))  # gaps of 0-3 ms: some shorter than a re-arm takes
        wait_for(lambda: len(got.text) >= written, what="every line")
        assert got.text == [f"line {i}" for i in range(written)]
        # Caught up and idle again: the watch asks for writes once more, and the next one arrives.
        wait_for(lambda: watcher.armed, what="the watch armed again")
        append(log, "after a pause\n")
        wait_for(lambda: got.text[-1] == "after a pause", what="the line after the pause")
    finally:
        tailer.stop()


def test_a_file_in_a_symlinked_directory_elsewhere_is_watched_too(tmp_path: Path) -> None:
    """The link lives in one directory, the file it names in another: writes there must wake the tailer."""
    real = tmp_path / "releases"
    real.mkdir()
    (real / "run.log").write_text("")
    links = tmp_path / "links"
    links.mkdir()
    (links / "current.log").symlink_to(real / "run.log")
    got = Collected()
    tailer = inotify_tailer(got, links / "current.log")
    try:
        append(real / "run.log", "through the link\n")
        assert got.arrived.wait(5.0)
        assert got.text == ["through the link"]
    finally:
        tailer.stop()


def _watches(watcher) -> int:
    """The watches the kernel holds for the watcher's inotify instance (one fdinfo line each)."""
    with open(f"/proc/self/fdinfo/{watcher._fd}", encoding="utf-8") as info:
        return sum(1 for line in info if line.startswith("inotify wd:"))


def test_while_lines_flow_no_inotify_watch_is_left(tmp_path: Path) -> None:
    from agent.sources.inotify import DirectoryWatcher

    wakes: list[bool] = []
    woke = threading.Event()

    def wake(rescan: bool) -> None:
        wakes.append(rescan)
        woke.set()

    watcher = DirectoryWatcher(wake)
    watcher.start()
    try:
        assert watcher.watch(str(tmp_path))
        assert _watches(watcher) == 1 and watcher.armed
        log = tmp_path / "a.log"
        log.write_text("first\n")  # created (a rescan), then written (growth)
        woke.wait(5)
        wait_for(lambda: not watcher.armed, what="the first write to disarm the watcher")
        time.sleep(0.2)
        first = len(wakes)
        # Removed, not made quiet: a watch of any mask slows every write of the writer.
        assert _watches(watcher) == 0
        for _ in range(100):
            append(log, "more\n")  # no watch: nothing to report
        time.sleep(0.3)
        calls = len(wakes)
        assert calls == first, "with no watch the writes wake nothing, and our own removal is no news"
        watcher.arm()
        assert _watches(watcher) == 1 and watcher.armed
        append(log, "again\n")
        wait_for(lambda: len(wakes) > calls, what="the next write to wake the tailer")
    finally:
        watcher.stop()
