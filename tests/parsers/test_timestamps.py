"""Year, time zone and precision of the stamps events carry."""

from __future__ import annotations

from datetime import UTC, datetime
from zoneinfo import ZoneInfo

from parsers.timestamps import Clock, isoformat

TAIPEI = ZoneInfo("Asia/Taipei")


def test_vllm_stamp_takes_the_latest_year_not_after_the_reference() -> None:
    # A log written in December, read in the following March: its lines are from last year.
    clock = Clock(UTC, datetime(2026, 3, 1, tzinfo=UTC))
    assert clock.resolve("12-14 16:18:29") == datetime(2025, 12, 14, 16, 18, 29, tzinfo=UTC)


def test_year_follows_the_log_across_new_year() -> None:
    clock = Clock(UTC, datetime(2026, 1, 2, 12, tzinfo=UTC))
    assert clock.resolve("12-31 23:59:50").year == 2025
    assert clock.resolve("01-01 00:00:05") == datetime(2026, 1, 1, 0, 0, 5, tzinfo=UTC)
    assert clock.resolve("01-01 00:10:00").year == 2026


def test_a_full_date_in_the_log_sets_the_year_for_what_follows() -> None:
    # The file's modification time is years off (copied, restored from a backup).
    clock = Clock(UTC, datetime(2030, 6, 1, tzinfo=UTC))
    assert clock.resolve("2025-12-14 16:18:24,320") == datetime(2025, 12, 14, 16, 18, 24, 320000, tzinfo=UTC)
    assert clock.resolve("12-14 16:18:29").year == 2025


def test_local_stamps_are_read_in_the_servers_zone() -> None:
    clock = Clock(TAIPEI, datetime(2026, 1, 1, tzinfo=UTC))
    when = clock.resolve("12-14 16:18:29")
    assert isoformat(when) == "2025-12-14T16:18:29+08:00"
    assert isoformat(clock.resolve("2025-12-14 16:18:24,320")) == "2025-12-14T16:18:24.320+08:00"


def test_wrapper_stamps_keep_their_own_offset_and_precision() -> None:
    clock = Clock(TAIPEI, datetime(2026, 1, 1, tzinfo=UTC))
    assert isoformat(clock.resolve("2025-12-14T08:18:29.123456789Z")) == "2025-12-14T08:18:29.123456+00:00"
    assert isoformat(clock.resolve("2025-12-14T16:18:29+0800")) == "2025-12-14T16:18:29+08:00"
    # journald's __REALTIME_TIMESTAMP, microseconds since the epoch
    assert clock.resolve("@1765700309123456") == datetime(2025, 12, 14, 8, 18, 29, 123456, tzinfo=UTC)


def test_february_29th_only_in_a_leap_year() -> None:
    clock = Clock(UTC, datetime(2025, 6, 1, tzinfo=UTC))
    assert clock.resolve("02-29 12:00:00").year == 2024


def test_text_that_is_no_timestamp_gives_none() -> None:
    clock = Clock(UTC, datetime(2026, 1, 1, tzinfo=UTC))
    for stamp in (None, "", "13-45 99:99:99", "not a time at all", "@notdigits", "2025-99-99 00:00:00,000"):
        assert clock.resolve(stamp) is None
