"""Read positions saved and resumed across a restart of the reader, and a damaged positions file."""

from __future__ import annotations

import json
import os
from pathlib import Path

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
