"""The tailer on real files: every file event, named as mtail's integration tests name them.

Each test drives :meth:`Tailer.cycle` by hand (no thread, no timing).
"""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.sources import tail as tail_module
from agent.sources.positions import PositionStore
from agent.sources.tail import Source, Tailer
from tests.support.logrotate import logrotate, needs_logrotate
from tests.support.tailing import Collected, append, lines, make_tailer


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


def test_growth_of_many_files_in_one_cycle_is_handed_over_at_once(tmp_path: Path) -> None:
    """A line or two in each of many files: one hand-over per source and cycle, each file's lines with its path,
    in the order read."""
    handed: list[tuple[str, list[tuple[list, str]]]] = []
    tailer = Tailer(lambda source, files: handed.append((source, files)), PositionStore(None), use_inotify=False)
    logs = {name: [tmp_path / f"{name}{n}.log" for n in range(3)] for name in ("a", "b")}
    for name, paths in logs.items():
        for path in paths:
            path.write_text("")
        tailer.add(Source(name, tuple(str(p) for p in paths), {}, start_at_end=False))
    tailer.cycle()
    for paths in logs.values():
        for path in paths:
            append(path, f"{path.name} 1\n{path.name} 2\n")
    tailer.cycle()
    assert handed == [(name, [([f"{p.name} 1", f"{p.name} 2"], str(p)) for p in paths]) for name, paths in logs.items()]
    tailer.cycle()
    assert len(handed) == 2  # nothing new: nothing handed over


def test_growth_of_two_sources_reaches_the_second_when_the_first_fails(tmp_path: Path, caplog) -> None:
    """A bug in one source's pipeline (its hand-over raises) loses nothing of another source read in that cycle."""
    got: list[str] = []

    def deliver(source: str, files: list[tuple[list, str]]) -> None:
        if source == "a":
            raise RuntimeError("a bug")
        got.extend(line for lines_read, _ in files for line in lines_read)

    tailer = Tailer(deliver, PositionStore(None), use_inotify=False)
    for name in ("a", "b"):
        (tmp_path / f"{name}.log").write_text("")
        tailer.add(Source(name, (str(tmp_path / f"{name}.log"),), {}, start_at_end=False))
    tailer.cycle()
    append(tmp_path / "a.log", "a 1\n")
    append(tmp_path / "b.log", "b 1\n")
    with caplog.at_level(logging.ERROR, logger="kvwatch.tail"):
        tailer.cycle()
    assert got == ["b 1"]
    assert "handing over the lines of a failed" in caplog.text


def test_growth_of_more_than_a_hand_over_is_handed_over_in_pieces(tmp_path: Path, monkeypatch) -> None:
    """What one cycle reads waits for the hand-over at most HAND_OVER_BYTES at a time: a flood's lines never all
    wait at once."""
    monkeypatch.setattr(tail_module, "HAND_OVER_BYTES", 4096)
    monkeypatch.setattr(tail_module, "READ_BLOCK", 1024)
    handed: list[list[tuple[list, str]]] = []
    tailer = Tailer(lambda source, files: handed.append(files), PositionStore(None), use_inotify=False)
    log = tmp_path / "a.log"
    log.write_text(lines("x", 3000))  # about 19 KiB
    tailer.add(Source("s", (str(log),), {}, start_at_end=False))
    tailer.cycle()
    assert [line for files in handed for lines_read, _ in files for line in lines_read] == [
        f"x {i}" for i in range(3000)
    ]
    assert len(handed) >= 4
    assert all(sum(len(line) + 1 for lines_read, _ in files for line in lines_read) < 4096 + 1024 for files in handed)


def _short_lines_tailer(tmp_path: Path) -> tuple[Path, Tailer, Collected, dict[str, int]]:
    """An empty file followed from its start with a line limit of 100 bytes, and its skip counts."""
    log = tmp_path / "a.log"
    log.write_bytes(b"")
    got = Collected()
    skipped: dict[str, int] = {}
    tailer = Tailer(got, PositionStore(None), use_inotify=False, max_line=100)
    tailer.add(Source("s", (str(log),), skipped, start_at_end=False))
    return log, tailer, got, skipped


def test_copytruncate_under_a_writer_without_o_append_reads_the_lines_after_the_hole(tmp_path: Path) -> None:
    """A writer that did not open its file with O_APPEND (systemd's ``StandardOutput=file:``) goes on at
    its old offset after a copytruncate: the file starts with a hole of NUL bytes, then its next lines.
    The lines are read; the hole, where the file system knows where it ends, is not."""
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(log))
    with open(log, "w") as writer:
        writer.write(lines("a", 3))
        writer.flush()
        tailer.cycle()
        writer.seek(64 << 20)  # as if 64 MiB had been written since, all of them copied away
        with open(log, "r+") as rotator:
            rotator.truncate(0)
        writer.write(lines("b", 2))
        writer.flush()
        read = sum(tailer.cycle() for _ in range(8))
    assert got.text == ["a 0", "a 1", "a 2", "b 0", "b 1"]
    assert tailer.snapshot()["s"][str(log)].truncations == 1
    descriptor = os.open(log, os.O_RDONLY)
    try:
        sparse = os.lseek(descriptor, 0, os.SEEK_DATA) > 0
    finally:
        os.close(descriptor)
    if sparse:  # tmpfs, ext4, xfs, btrfs: the hole is stepped over
        assert read < 1 << 20


def test_a_hole_of_nul_bytes_before_a_line_is_dropped_and_the_line_read(tmp_path: Path) -> None:
    """The same hole where the file system cannot step over it (written out, or in the middle of what is
    read): dropped however long it is and in however many reads it comes; a NUL inside a line still
    skips that line."""
    log, tailer, got, skipped = _short_lines_tailer(tmp_path)
    with open(log, "ab") as handle:
        handle.write(b"first\n" + b"\x00" * 300_000)
    tailer.cycle()
    with open(log, "ab") as handle:
        handle.write(b"\x00" * 1000 + b"after the hole\nnul\x00inside\n\x00\x00also after\n")
    tailer.cycle()
    assert got.text == ["first", "after the hole", "also after"]
    assert skipped == {"nul": 1}


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


def _rotated_under_glob(tmp_path: Path, pattern: str, rotate: Callable[[Path], None]) -> tuple[Tailer, Collected]:
    """``a.log`` followed through ``pattern`` from its end, one line read, ``rotate`` applied to it, a new line
    written to ``a.log``, and two rescans of the glob."""
    log = tmp_path / "a.log"
    log.write_text("one\ntwo\n")
    tailer, got = make_tailer(tmp_path, str(tmp_path / pattern), start_at_end=True)
    tailer.cycle()
    append(log, "three\n")
    tailer.cycle()
    rotate(log)
    append(log, "four\n")
    for _ in range(2):
        tailer.rescan = True
        tailer.cycle()
    return tailer, got


@pytest.mark.parametrize(
    "rotated",
    [
        "a.log.1",
        "a.log-20261204",  # logrotate's dateext, the default on RHEL and Fedora
        "a.log-2026-12-04",  # dateext with dateformat -%Y-%m-%d
        "a.log.2026-12-04_14-00-00",  # Python's TimedRotatingFileHandler
        "a-20261204.log",  # dateext with logrotate's "extension .log": the extension stays last
        "a.1.log",  # the same without dateext
        "a.2026-12-04_14-00-00_123456.log",  # loguru
    ],
)
def test_rename_to_a_rotated_name_under_a_glob_reads_each_line_once(tmp_path: Path, rotated: str) -> None:
    """The renamed file is read to its end as ``a.log``; the glob that also matches its new name must not
    follow it as a new file (a new file is read from its start: every line of the day again)."""
    tailer, got = _rotated_under_glob(tmp_path, "a*", lambda log: os.rename(log, tmp_path / rotated))
    assert got.text == ["three", "four"]
    assert list(tailer.snapshot()["s"]) == [str(tmp_path / "a.log")]


def test_copytruncate_to_a_dated_name_under_a_glob_reads_each_line_once(tmp_path: Path) -> None:
    """logrotate's ``copytruncate`` with ``dateext``: the copy is a new file the glob matches, holding lines
    already read; the truncated file goes on from its start."""

    def copytruncate(log: Path) -> None:
        shutil.copy(log, tmp_path / "a.log-20261204")
        os.truncate(log, 0)

    _tailer, got = _rotated_under_glob(tmp_path, "a.log*", copytruncate)
    assert got.text == ["three", "four"]


def test_a_glob_passes_compressed_files_over(tmp_path: Path) -> None:
    """Copies compressed by any of logrotate's tools, with or without their file beside them, are no
    text that grows: they are not followed (``kvwatch replay`` reads gzip'd ones)."""
    (tmp_path / "a.log").write_text("live\n")
    (tmp_path / "a.log.1.xz").write_bytes(b"\xfd7zXZ\x00 not read\n")
    (tmp_path / "a.log-20261203.zst").write_bytes(b"\x28\xb5\x2f\xfd not read\n")
    (tmp_path / "old.log.3.gz").write_bytes(b"\x1f\x8b not read\n")  # old.log itself is gone
    tailer, got = make_tailer(tmp_path, str(tmp_path / "*.log*"), start_at_end=False)
    tailer.cycle()
    assert got.text == ["live"]
    assert list(tailer.snapshot()["s"]) == [str(tmp_path / "a.log")]


def test_how_many_files_each_path_and_glob_names_is_kept_and_a_path_with_none_said_at_the_start(
    tmp_path: Path, caplog
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    for name in ("a.log", "b.log", "a.log.1", "a.log.2.gz"):  # two logs, two copies the glob passes over
        (logs / name).write_text("x\n")
    (logs / "sub.log").mkdir()  # a directory it passes over too
    typo = tmp_path / "vlm.log"
    with caplog.at_level(logging.INFO, logger="kvwatch.tail"):
        tailer, _ = make_tailer(tmp_path, str(logs / "*.log*"), str(typo), str(tmp_path / "empty" / "*.log"))
        tailer.cycle()
    assert tailer.sources["s"].files == {str(logs / "*.log*"): 2, str(typo): 0, str(tmp_path / "empty" / "*.log"): 0}
    said = [record.getMessage() for record in caplog.records]
    assert f"s: {typo} names no file yet; it is read once one appears" in said
    assert not any(str(logs) in message for message in said)
    typo.write_text("x\n")
    (logs / "c.log").write_text("x\n")
    tailer.rescan = True
    tailer.cycle()
    assert tailer.sources["s"].files[str(typo)] == 1
    assert tailer.sources["s"].files[str(logs / "*.log*")] == 3
    series = {
        (sample.labels["path"], sample.value)
        for family in tailer.families()
        if family.name == "kvwatch_tail_files"
        for sample in family.samples
    }
    assert (str(typo), 1) in series and (str(logs / "*.log*"), 3) in series


@pytest.mark.parametrize("noticed_first", [False, True], ids=["found-by-the-glob-first", "noticed-by-its-path-first"])
@pytest.mark.parametrize("renamed", ["old.log", "archive-a.log"])
def test_a_rename_to_any_name_the_glob_matches_carries_on_where_it_was_read(
    tmp_path: Path, renamed: str, noticed_first: bool
) -> None:
    """A rename by a tool or script of its own, to a name the glob matches but no rotated copy's name: the file
    goes on being read under its new name from where it was, whether the glob finds the new name before or
    after ``a.log`` notices it now names another file -- and what its writer adds through the old descriptor
    is read once."""
    log = tmp_path / "a.log"
    log.write_text("one\n")
    tailer, got = make_tailer(tmp_path, str(tmp_path / "*.log"), start_at_end=True)
    tailer.cycle()
    with open(log, "a", encoding="utf-8") as writer:  # the server's descriptor, still open after the rename
        writer.write("two\n")
        writer.flush()
        tailer.cycle()
        os.rename(log, tmp_path / renamed)
        writer.write("three\n")
        writer.flush()
        append(log, "four\n")  # the new a.log
        if noticed_first:
            tailer.rescan = False
            tailer.cycle()
        for _ in range(2):
            tailer.rescan = True
            tailer.cycle()
        writer.write("five\n")
    tailer.rescan = True
    tailer.cycle()
    assert sorted(got.text) == ["five", "four", "three", "two"]
    assert sorted(tailer.snapshot()["s"]) == sorted([str(log), str(tmp_path / renamed)])


def test_a_file_and_a_link_to_it_both_matched_by_the_glob_are_read_once(tmp_path: Path) -> None:
    """``latest.log`` pointing at the day's file, both matched by ``*.log``: one file, read once.  When the
    link moves on to a new file, the old file is carried on under its own name, and the new one read once."""
    first, second, link = tmp_path / "vllm-1.log", tmp_path / "vllm-2.log", tmp_path / "latest.log"
    first.write_text("one\n")
    link.symlink_to(first.name)
    tailer, got = make_tailer(tmp_path, str(tmp_path / "*.log"))
    tailer.cycle()
    append(first, "two\n")
    tailer.cycle()
    assert got.text == ["one", "two"]
    second.write_text("three\n")
    switch = tmp_path / "switch"
    switch.symlink_to(second.name)
    os.replace(switch, link)
    append(first, "two and a half\n")
    for _ in range(2):
        tailer.rescan = True
        tailer.cycle()
    append(second, "four\n")
    append(first, "late\n")
    tailer.cycle()
    assert sorted(got.text) == ["four", "late", "one", "three", "two", "two and a half"]


def test_a_hard_link_matched_by_the_glob_is_read_once_also_after_a_restart(tmp_path: Path) -> None:
    """Two names of one file (a hard link): read once, and after a restart the name that read it goes on."""
    log, other = tmp_path / "b.log", tmp_path / "a.log"
    log.write_text("one\n")
    os.link(log, other)
    tailer, got = make_tailer(tmp_path, str(tmp_path / "*.log"))
    tailer.cycle()
    append(log, "two\n")
    tailer.cycle()
    tailer.save_positions()
    assert got.text == ["one", "two"]
    append(log, "three\n")
    again, got_again = make_tailer(tmp_path, str(tmp_path / "*.log"))
    again.cycle()
    assert got_again.text == ["three"]


def test_a_name_that_only_ends_like_a_count_is_another_file(tmp_path: Path) -> None:
    """``vllm-1`` beside ``vllm`` and ``vllm-1.log`` beside ``vllm.log`` (one server's log per pod, say) are
    no rotated copies: all are followed."""
    for name in ("vllm", "vllm-1", "vllm.log", "vllm-1.log"):
        (tmp_path / name).write_text(f"{name}\n")
    tailer, got = make_tailer(tmp_path, str(tmp_path / "vllm*"), start_at_end=False)
    tailer.cycle()
    assert sorted(got.text) == ["vllm", "vllm-1", "vllm-1.log", "vllm.log"]


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
    log, tailer, got, skipped = _short_lines_tailer(tmp_path)
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


def test_a_directory_glob_follows_files_in_subdirectories_that_appear_later(tmp_path: Path) -> None:
    """``/logs/*/vllm.log``: a server's folder created after the start is found at the next look."""
    (tmp_path / "gpu0").mkdir()
    append(tmp_path / "gpu0" / "vllm.log", "zero 1\n")
    tailer, got = make_tailer(tmp_path, str(tmp_path / "*" / "vllm.log"), start_at_end=False)
    tailer.cycle()
    (tmp_path / "gpu1").mkdir()
    append(tmp_path / "gpu1" / "vllm.log", "one 1\n")
    append(tmp_path / "gpu0" / "vllm.log", "zero 2\n")
    tailer.rescan = True  # what the poll (or inotify on the parent folder) does
    tailer.cycle()
    assert sorted(got.text) == ["one 1", "zero 1", "zero 2"]
    assert set(tailer.snapshot()["s"]) == {str(tmp_path / "gpu0" / "vllm.log"), str(tmp_path / "gpu1" / "vllm.log")}


def test_a_deleted_file_of_a_glob_leaves_the_tailer_once_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Files a glob found come and go (one per pod, per day): their series must not pile up."""
    monkeypatch.setattr(tail_module, "ROTATE_WAIT", 0.0)  # a deleted file is finished at the next look
    for n in range(3):
        append(tmp_path / f"app-{n}.log", f"line {n}\n")
    tailer, got = make_tailer(tmp_path, str(tmp_path / "app-*.log"))
    tailer.cycle()
    (tmp_path / "app-0.log").unlink()
    (tmp_path / "app-1.log").unlink()
    tailer.cycle()
    tailer.cycle()
    assert sorted(got.text) == ["line 0", "line 1", "line 2"]
    assert set(tailer.snapshot()["s"]) == {str(tmp_path / "app-2.log")}


def test_a_followed_path_named_in_full_is_kept_while_it_is_missing(tmp_path: Path) -> None:
    log = tmp_path / "server.log"
    append(log, "before\n")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    log.unlink()
    tailer.cycle()
    append(log, "after\n")
    tailer.cycle()
    assert got.text == ["before", "after"]
    assert set(tailer.snapshot()["s"]) == {str(log)}


def test_two_rotations_between_two_reads_lose_no_file(tmp_path: Path) -> None:
    """a.log -> a.log.1 -> a.log.2 before kvwatch looks again (paused, or busy elsewhere):
    the middle file was the path's only between two looks, and is read whole, in order."""
    log = tmp_path / "a.log"
    log.write_text(lines("first", 2))
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    append(log, lines("first", 1, 2))
    os.rename(log, tmp_path / "a.log.1")
    log.write_text(lines("middle", 3))
    os.rename(tmp_path / "a.log.1", tmp_path / "a.log.2")
    os.rename(log, tmp_path / "a.log.1")
    log.write_text(lines("last", 2))
    tailer.cycle()
    assert got.text == [
        *(f"first {i}" for i in range(3)),
        *(f"middle {i}" for i in range(3)),
        *(f"last {i}" for i in range(2)),
    ]
    assert tailer.snapshot()["s"][str(log)].rotations == 2


def test_older_rotated_copies_are_not_read_again(tmp_path: Path) -> None:
    """Copies rotated before the last look (and compressed ones) are history, not new lines."""
    (tmp_path / "a.log.3").write_text("ancient\n")
    (tmp_path / "a.log.2.gz").write_bytes(b"\x1f\x8b not read")
    log = tmp_path / "a.log"
    log.write_text("one\n")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    os.rename(log, tmp_path / "a.log.1")
    log.write_text("two\n")
    tailer.cycle()
    assert got.text == ["one", "two"]


def test_restart_after_two_rotations_while_down_reads_the_middle_file(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text(lines("first", 2))
    tailer, _got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    tailer.stop()
    append(log, "first unread\n")
    os.rename(log, tmp_path / "a.log.1")
    log.write_text(lines("middle", 2))
    os.rename(tmp_path / "a.log.1", tmp_path / "a.log.2")
    os.rename(log, tmp_path / "a.log.1")
    log.write_text("last\n")
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got_again.text == ["first unread", "middle 0", "middle 1", "last"]


def test_restart_finishes_a_file_that_was_still_being_read_after_its_rotation(tmp_path: Path) -> None:
    """Killed while the old file was still being finished: its position was saved with the new one's."""
    log = tmp_path / "a.log"
    writer = open(log, "a", encoding="utf-8")  # noqa: SIM115 - the writer outlives the rotation
    writer.write("before\n")
    writer.flush()
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    os.rename(log, tmp_path / "a.log.1")
    log.write_text("new 0\n")
    tailer.cycle()
    tailer.save_positions()  # the state a kill would leave: the old file not yet finished
    writer.write("late\n")  # its writer had not reopened yet
    writer.close()
    append(log, "new 1\n")
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got.text == ["before", "new 0"]
    assert got_again.text == ["late", "new 1"]


def test_a_partial_line_at_a_restart_is_read_whole(tmp_path: Path) -> None:
    """The saved position never passes the start of a line not yet ended."""
    log = tmp_path / "a.log"
    log.write_text("whole\nthe first half")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    tailer.stop()
    append(log, " and the second\n")
    again, got_again = make_tailer(tmp_path, str(log), start_at_end=True)
    again.cycle()
    assert got.text == ["whole"]
    assert got_again.text == ["the first half and the second"]


def test_a_restart_inside_a_line_too_long_skips_to_its_end(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("x" * 300)  # longer than the limit, not yet ended
    got = Collected()
    skipped: dict[str, int] = {}
    tailer = Tailer(got, PositionStore(str(tmp_path / "positions.json")), use_inotify=False, max_line=100)
    tailer.add(Source("s", (str(log),), skipped, start_at_end=False))
    tailer.cycle()
    tailer.stop()
    append(log, "y" * 50 + "\nnext\n")
    again_got = Collected()
    again = Tailer(again_got, PositionStore(str(tmp_path / "positions.json")), use_inotify=False, max_line=100)
    again.add(Source("s", (str(log),), skipped, start_at_end=True))
    again.cycle()
    assert again_got.text == ["next"]
    assert skipped == {"too_long": 1}


def test_a_path_replaced_by_a_directory_and_back_reads_again_without_an_error(tmp_path: Path) -> None:
    log = tmp_path / "a.log"
    log.write_text("one\n")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    log.unlink()
    log.mkdir()
    tailer.cycle()
    tailer.cycle()
    log.rmdir()
    log.write_text("two\n")
    tailer.cycle()
    tailer.cycle()
    assert got.text == ["one", "two"]
    assert tailer.errors() == {}


def test_a_path_that_names_a_directory_is_an_error_and_a_glob_passes_directories_over(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``paths = ["/var/log/vllm"]`` for ``/var/log/vllm/*.log`` read nothing, and said nothing."""
    caplog.set_level(logging.INFO, logger="kvwatch.tail")
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "a.log").write_text("one\n")
    (logs / "old.d").mkdir()  # a glob's match that is a directory: not a followed path
    tailer, got = make_tailer(tmp_path, str(logs), str(logs / "*"))
    tailer.cycle()
    assert got.text == ["one"]
    assert tailer.errors() == {"s": {str(logs): "not_a_file"}}
    assert f'follow the files in it with a glob, e.g. "{logs / "*.log"}"' in caplog.text
    assert "names no file yet" not in caplog.text  # it names one that is there: a directory


def test_a_path_that_names_a_named_pipe_is_an_error_and_the_other_files_are_read(tmp_path: Path) -> None:
    """Opening a named pipe without a writer blocks: the one reading thread stopped, and with it every
    other file and /healthz.  A pipe, which has no size or position to follow, is a read error."""
    pipe = tmp_path / "vllm.log"
    os.mkfifo(pipe)
    log = tmp_path / "b.log"
    log.write_text("one\n")
    made: list = []
    done = threading.Event()

    def first_reads() -> None:
        made.extend(make_tailer(tmp_path, str(pipe), str(log)))  # the files present are opened here
        made[0].cycle()
        made[0].cycle()
        done.set()

    threading.Thread(target=first_reads, daemon=True).start()
    if not done.wait(10):
        os.close(os.open(pipe, os.O_WRONLY | os.O_NONBLOCK))  # release the blocked open, then fail
        pytest.fail("the reading thread hung opening the named pipe")
    tailer, got = made
    assert got.text == ["one"]
    assert tailer.errors() == {"s": {str(pipe): "not_a_file"}}
    pipe.unlink()
    pipe.write_text("now a file\n")
    tailer.cycle()
    tailer.cycle()
    assert got.text == ["one", "now a file"]
    assert tailer.errors() == {}


@pytest.mark.parametrize(
    ("name", "compress", "told"),
    [
        ("vllm.log.1.gz", gzip.compress, "gzip data"),
        ("vllm.log.2.xz", lzma.compress, "xz data"),
        ("vllm.log.3.bz2", bz2.compress, "bzip2 data"),
    ],
)
def test_a_compressed_file_named_alone_is_an_error_not_lines_of_garbage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, name: str, compress: Callable[[bytes], bytes], told: str
) -> None:
    """A rotated copy named in ``paths`` (a glob passes them over) is never written to: its bytes are no
    lines.  Reported as a file that cannot be followed; read once the path names a log again."""
    packed = tmp_path / name
    packed.write_bytes(compress(b"INFO 12-14 16:18:29 [x] one\n" * 100))
    log = tmp_path / "b.log"
    log.write_text("one\n")
    tailer, got = make_tailer(tmp_path, str(packed), str(log))
    tailer.cycle()
    assert got.lines == ["one"]  # nothing of the compressed file, not even skipped lines (None)
    assert tailer.errors() == {"s": {str(packed): "not_a_file"}}
    assert f"{told}, not a log being written: `kvwatch replay` reads it" in caplog.text
    packed.unlink()
    packed.write_text("now a log\n")
    tailer.cycle()
    tailer.cycle()
    assert got.text == ["one", "now a log"]
    assert tailer.errors() == {}


def test_a_file_renamed_away_and_back_is_read_on_not_again(tmp_path: Path) -> None:
    """A tool that moves the log aside and back (the same file, not a copy): read on from where it was."""
    log, aside = tmp_path / "a.log", tmp_path / "a.log.tmp"
    log.write_text("one\n")
    tailer, got = make_tailer(tmp_path, str(log))
    tailer.cycle()
    os.rename(log, aside)
    append(aside, "two\n")
    tailer.cycle()
    os.rename(aside, log)
    append(log, "three\n")
    tailer.cycle()
    assert got.text == ["one", "two", "three"]


@needs_logrotate
@pytest.mark.parametrize("compressor", ["gzip", "xz", "zstd"])
def test_logrotate_create_with_delayed_compression_under_a_glob_reads_each_line_once(
    tmp_path: Path, compressor: str
) -> None:
    """The real logrotate, twice, as Debian's configurations have it (``create``, ``compress``,
    ``delaycompress``): the writer finishes the renamed file, then writes the new one; the glob also finds
    the rotated copy (``a.log.1``) and the compressed ones (``a.log.2.gz``), none of which is read anew."""
    if shutil.which(compressor) is None:
        pytest.skip(f"{compressor} is missing (make test installs it)")
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(tmp_path / "a.log*"))
    options = f"create\ncompress\ndelaycompress\ncompresscmd {shutil.which(compressor)}"
    expected: list[str] = []
    for rotation in range(3):
        with open(log, "a", encoding="utf-8") as writer:  # the server's descriptor
            writer.write(lines(f"r{rotation}", 3))
            writer.flush()
            expected += [f"r{rotation} {i}" for i in range(3)]
            tailer.cycle()
            logrotate(log, options, tmp_path / "state")
            writer.write(lines(f"late{rotation}", 2))  # still to the renamed file, until it reopens
            writer.flush()
            expected += [f"late{rotation} {i}" for i in range(2)]
            tailer.rescan = True
            tailer.cycle()
    append(log, "last\n")
    tailer.rescan = True
    tailer.cycle()
    assert got.text == [*expected, "last"]
    suffix = {"gzip": ".gz", "xz": ".xz", "zstd": ".zst"}[compressor]  # logrotate's own choice of extension
    assert sorted(p.name for p in tmp_path.glob("a.log*")) == [
        "a.log",
        "a.log.1",
        f"a.log.2{suffix}",
        f"a.log.3{suffix}",
    ]
    assert list(tailer.snapshot()["s"]) == [str(log)]


@needs_logrotate
def test_logrotate_copytruncate_with_compression_under_a_glob_reads_each_line_once(tmp_path: Path) -> None:
    """The real logrotate's ``copytruncate``: the writer never reopens; the copy, compressed at once, holds
    lines already read, and the file goes on from its start."""
    log = tmp_path / "a.log"
    log.write_text("")
    tailer, got = make_tailer(tmp_path, str(tmp_path / "a.log*"))
    expected: list[str] = []
    with open(log, "a", encoding="utf-8") as writer:  # opened once, in append mode, as a server's stdout is
        for rotation in range(3):
            writer.write(lines(f"r{rotation}", 3))
            writer.flush()
            expected += [f"r{rotation} {i}" for i in range(3)]
            tailer.cycle()  # read before the copy: lines written between a copy and its truncation are lost
            logrotate(log, "copytruncate\ncompress", tmp_path / "state")
            writer.write(lines(f"after{rotation}", 2))
            writer.flush()
            expected += [f"after{rotation} {i}" for i in range(2)]
            tailer.rescan = True
            tailer.cycle()
    assert got.text == expected
    assert sorted(p.name for p in tmp_path.glob("a.log*")) == ["a.log", "a.log.1.gz", "a.log.2.gz", "a.log.3.gz"]
    assert tailer.snapshot()["s"][str(log)].truncations == 3


# -- a glob's listing, kept until its directory changes ------------------------------------------------------------


@pytest.fixture
def listings(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The globs listed (each call of ``glob_picks``), with a listing kept once its directory's last change is 50 ms
    older than it (2 s in use: the tests wait out the shorter time)."""
    listed: list[str] = []
    picks = tail_module.glob_picks

    def counted(pattern: str) -> list[str]:
        listed.append(pattern)
        return picks(pattern)

    monkeypatch.setattr(tail_module, "glob_picks", counted)
    monkeypatch.setattr(tail_module, "SETTLED_NS", 50_000_000)
    return listed


def _directory(tmp_path: Path) -> Path:
    """The logs' own directory (the positions are saved beside it: each save would change it)."""
    logs = tmp_path / "logs"
    logs.mkdir()
    return logs


def _settle() -> None:
    time.sleep(0.1)  # the directory's last change is older than SETTLED_NS when it is listed next


def _rescan(tailer: Tailer) -> None:
    tailer.rescan = True
    tailer.cycle()


def test_a_file_created_in_a_directory_listed_before_is_found(tmp_path: Path, listings: list[str]) -> None:
    logs = _directory(tmp_path)
    append(logs / "a.log", "a1\n")
    tailer, got = make_tailer(tmp_path, str(logs / "*.log"))
    _settle()
    _rescan(tailer)  # listed, and kept: the directory had not changed for a while
    before = len(listings)
    _rescan(tailer)
    _rescan(tailer)
    assert len(listings) == before  # nothing changed: not listed again
    append(logs / "b.log", "b1\n")
    _rescan(tailer)
    assert len(listings) == before + 1
    assert sorted(got.text) == ["a1", "b1"]


def test_a_file_removed_or_renamed_to_a_rotated_name_leaves_a_listed_directory(
    tmp_path: Path, listings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tail_module, "ROTATE_WAIT", 0.0)  # a file gone is finished at the next look
    logs = _directory(tmp_path)
    for name in ("a.log", "b.log", "c.log"):
        append(logs / name, f"{name}\n")
    tailer, got = make_tailer(tmp_path, str(logs / "*.log"))
    _settle()
    _rescan(tailer)
    (logs / "a.log").unlink()
    (logs / "b.log").rename(logs / "b.log.1")
    _rescan(tailer)
    _rescan(tailer)
    assert set(tailer.snapshot()["s"]) == {str(logs / "c.log")}
    assert sorted(got.text) == ["a.log", "b.log", "c.log"]


def test_a_permission_change_of_a_listed_directory_lists_it_again(tmp_path: Path, listings: list[str]) -> None:
    """chmod moves the directory's change time, not its modification time: a directory this user may no longer
    list is said so at the next rescan."""
    logs = _directory(tmp_path)
    append(logs / "a.log", "")
    tailer, _ = make_tailer(tmp_path, str(logs / "*.log"))
    _settle()
    _rescan(tailer)
    before = len(listings)
    _rescan(tailer)
    logs.chmod(0o700)
    _rescan(tailer)
    assert len(listings) == before + 1


def test_a_directory_listed_right_after_it_changed_is_listed_at_every_rescan(
    tmp_path: Path, listings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where a file system keeps coarse times, a file created in the same tick as a listing leaves the directory's
    times as they were: a listing is kept only when the directory had not changed for a while before it."""
    monkeypatch.setattr(tail_module, "SETTLED_NS", 3600 * 10**9)
    logs = _directory(tmp_path)
    append(logs / "a.log", "")
    tailer, _ = make_tailer(tmp_path, str(logs / "*.log"))
    before = len(listings)
    for _ in range(3):
        _rescan(tailer)
    assert len(listings) == before + 3


def test_a_file_created_in_a_subdirectory_a_wildcard_matched_is_found(tmp_path: Path, listings: list[str]) -> None:
    """A glob with a wildcard among its directories is listed at every rescan: a file created in one of them
    changes none of the directories before the wildcard."""
    logs = _directory(tmp_path)
    (logs / "gpu0").mkdir()
    (logs / "gpu1").mkdir()
    append(logs / "gpu0" / "vllm.log", "zero\n")
    tailer, got = make_tailer(tmp_path, str(logs / "gpu*" / "vllm.log"))
    _settle()
    _rescan(tailer)
    append(logs / "gpu1" / "vllm.log", "one\n")
    _rescan(tailer)
    assert sorted(got.text) == ["one", "zero"]


def test_a_file_created_where_the_directory_keeps_its_times_is_found_within_a_while(
    tmp_path: Path, listings: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Some network and FUSE file systems keep a directory's times whatever its entries do (here: its status as it
    was before the file came): a kept listing is made again after KEPT_FOR all the same."""
    monkeypatch.setattr(tail_module, "KEPT_FOR", 0.2)
    logs = _directory(tmp_path)
    append(logs / "a.log", "a1\n")
    tailer, got = make_tailer(tmp_path, str(logs / "*.log"))
    _settle()
    frozen = os.stat(logs)
    _rescan(tailer)
    before = len(listings)
    (logs / "b.log").write_text("b1\n")
    monkeypatch.setattr(tail_module.os, "stat", _times_kept(frozen, logs))
    _rescan(tailer)
    assert len(listings) == before and sorted(got.text) == ["a1"]  # the listing kept: b.log not seen yet
    time.sleep(0.3)
    _rescan(tailer)
    assert sorted(got.text) == ["a1", "b1"]


def _times_kept(frozen: os.stat_result, directory: Path) -> Callable[..., os.stat_result]:
    """``os.stat`` that gives ``directory`` the times it had (its change time too, which no call can set back)."""
    real = os.stat

    def stat(path: str | os.PathLike, *args: object, **kwargs: object) -> os.stat_result:
        return frozen if os.fspath(path) == str(directory) else real(path, *args, **kwargs)

    return stat


def test_a_followed_file_replaced_by_a_link_elsewhere_moves_its_real_directory(
    tmp_path: Path, listings: list[str]
) -> None:
    """Where the followed files really are (the directories inotify watches) is read again when their directory
    changes (the link made in a file's place), when the paths change, and when the directory's path resolves to
    another one (a directory symlink switched)."""
    logs, elsewhere, other = _directory(tmp_path), tmp_path / "elsewhere", tmp_path / "other"
    elsewhere.mkdir()
    other.mkdir()
    append(logs / "a.log", "")
    append(elsewhere / "a.log", "")
    readings = tail_module.DirectoryReadings()
    _settle()
    assert readings.real_directories("s", [str(logs / "a.log")]) == {str(logs)}
    (logs / "a.log").unlink()
    (logs / "a.log").symlink_to(elsewhere / "a.log")
    assert readings.real_directories("s", [str(logs / "a.log")]) == {str(elsewhere)}
    (logs / "b.log").symlink_to(other / "b.log")
    _settle()
    readings.real_directories("s", [str(logs / "a.log")])
    # b.log was there all along: the paths followed changed, not the directory
    assert readings.real_directories("s", [str(logs / "a.log"), str(logs / "b.log")]) == {str(elsewhere), str(other)}
    current = tmp_path / "current"
    current.symlink_to(logs)
    _settle()
    assert readings.real_directories("t", [str(current / "d.log")]) == {str(logs)}
    current.unlink()
    current.symlink_to(other)
    assert readings.real_directories("t", [str(current / "d.log")]) == {str(other)}
