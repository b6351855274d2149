"""inotify wakes the running tailer at once, goes quiet while lines flow, and rearms."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from agent.sources.positions import PositionStore
from agent.sources.tail import Source, Tailer
from tests.support.harness import wait_for
from tests.support.tailing import Collected, append


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


def test_a_steady_flow_is_read_in_batches_not_once_per_write(tmp_path: Path) -> None:
    """A busy server's log (here about 1,000 writes of ~150 bytes a second): every line arrives, in a
    few dozen cycles a second rather than one per write -- each wake-up costs what hundreds of lines do."""
    log = tmp_path / "a.log"
    log.write_text("")
    got = Collected()
    tailer = inotify_tailer(got, log)
    line = "x" * 150 + "\n"
    try:
        cycles_before = tailer.cycles
        began = time.monotonic()
        with log.open("a") as out:
            for _ in range(2000):
                out.write(line)
                out.flush()
                time.sleep(0.001)
        wait_for(lambda: len(got.text) == 2000, what="every line")
        elapsed = time.monotonic() - began
        cycles = tailer.cycles - cycles_before
        # With a pause of 2 ms after each read it took 300 cycles a second here, with a flowing pause of
        # 25 ms 41; with 250 ms, 22 in 2.3 s, 13 of them in the first 25 ms, before the rate is judged
        # (the few that find nothing and rearm included).  A loaded machine only lowers it.
        assert cycles < 25 * elapsed, (cycles, elapsed)
    finally:
        tailer.stop()


def test_the_directories_watched_are_where_each_file_really_is(tmp_path: Path, monkeypatch) -> None:
    """Resolved once per directory, a file alone when it is a symlink: the same as each file's realpath."""
    from agent.sources.tail import _real_directories

    real = tmp_path / "releases" / "v2"
    real.mkdir(parents=True)
    (real / "run.log").write_text("")
    (tmp_path / "current").symlink_to(real)  # a directory link
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / "engine.log").write_text("")
    (real / "engine.log").symlink_to(other / "engine.log")  # a file link inside a linked directory
    (real / "dangling.log").symlink_to(tmp_path / "nowhere" / "x.log")
    monkeypatch.chdir(real)
    paths = [
        str(tmp_path / "current" / "run.log"),
        str(tmp_path / "current" / "engine.log"),
        str(tmp_path / "current" / "dangling.log"),
        str(tmp_path / "current" / "not-yet.log"),
        str(tmp_path / "releases" / "v2" / "run.log"),
        "run.log",
        "engine.log",
    ]
    expected = {os.path.dirname(os.path.realpath(path)) for path in paths}
    assert _real_directories(paths) == expected
    assert expected == {os.path.realpath(d) for d in (real, other, tmp_path / "nowhere")}
