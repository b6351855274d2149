"""Year, time zone and precision of the stamps events carry."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
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


def test_a_vllm_stamp_with_milliseconds_keeps_them_and_takes_its_year_as_any_vllm_stamp() -> None:
    """A logging format that adds ``%(msecs)03d`` after vLLM's time (with a dot, or a comma as asctime)."""
    clock = Clock(TAIPEI, datetime(2026, 3, 1, tzinfo=UTC))
    assert isoformat(clock.resolve("12-14 16:18:29.123")) == "2025-12-14T16:18:29.123+08:00"
    assert clock.resolve("12-14 16:18:29,5") == datetime(2025, 12, 14, 16, 18, 29, 500000, tzinfo=TAIPEI)
    # Finer than microseconds is cut there, as a wrapper's nanoseconds are.
    assert clock.resolve("12-14 16:18:29.123456789").microsecond == 123456
    assert clock.seconds("12-14 16:18:29.250") == clock.resolve("12-14 16:18:29").timestamp() + 0.25
    # Across New Year the year follows the log, milliseconds or not.
    assert clock.resolve("12-31 23:59:59.900").year == 2025
    assert clock.resolve("01-01 00:00:00.100") == datetime(2026, 1, 1, 0, 0, 0, 100000, tzinfo=TAIPEI)


def test_pytorchs_stamp_is_read_as_a_year_less_one_its_month_padded_or_not() -> None:
    """``[W1125 05:40:38.380832896 utils.cpp:68]``, ``[W214 …]`` (February 14th), glog's ``W0714 …``."""
    clock = Clock(TAIPEI, datetime(2026, 3, 1, tzinfo=UTC))
    assert isoformat(clock.resolve("1125 05:40:38.380832896")) == "2025-11-25T05:40:38.380832+08:00"
    assert clock.resolve("214 15:20:56.973624780") == datetime(2026, 2, 14, 15, 20, 56, 973624, tzinfo=TAIPEI)
    assert clock.resolve("0227 10:54:51.986111") == datetime(2026, 2, 27, 10, 54, 51, 986111, tzinfo=TAIPEI)
    for stamp in ("1325 05:32:21.4", "12345 05:32:21.4", "1125 05:32:21", "2025 12:00:00.1", "1125 05:32:21.4x"):
        assert clock.resolve(stamp) is None, stamp


def test_text_that_is_no_timestamp_gives_none() -> None:
    clock = Clock(UTC, datetime(2026, 1, 1, tzinfo=UTC))
    for stamp in (
        None,
        "",
        "13-45 99:99:99",
        "13-45 12:00:00.123",
        "12-14 16:18:29.",
        "12-14 16:18:29.12x",
        "12-14 16:18:29.\u0661\u0662",  # digits, but not ASCII ones
        "not a time at all",
        "@notdigits",
        "2025-99-99 00:00:00,000",
    ):
        assert clock.resolve(stamp) is None


def test_seconds_are_the_resolved_instants_posix_seconds_whatever_the_order() -> None:
    """``seconds`` has a short cut for LMCache's millisecond stamps: it must give exactly what resolving
    the stamp gives, through DST changes, new seconds, other formats in between and bad milliseconds."""
    berlin = ZoneInfo("Europe/Berlin")
    rng = random.Random(20261202)
    base = datetime(2025, 3, 30, 1, 59, 58, tzinfo=berlin)  # the spring-forward gap in the middle
    stamps = []
    for step in range(4000):
        when = base + timedelta(milliseconds=step * rng.choice((1, 7, 250, 999)))
        kind = rng.random()
        if kind < 0.7:
            stamps.append(when.strftime("%Y-%m-%d %H:%M:%S,") + f"{when.microsecond // 1000:03d}")
        elif kind < 0.8:
            stamps.append(when.strftime("%m-%d %H:%M:%S"))
        elif kind < 0.85:
            stamps.append(when.strftime("%m-%d %H:%M:%S.") + f"{when.microsecond // 1000:03d}")
        elif kind < 0.95:
            stamps.append(when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))
        else:
            stamps.append(when.strftime("%Y-%m-%d %H:%M:%S,") + rng.choice(("12x", "+12", " 12")))
    fast, slow = Clock(berlin, base), Clock(berlin, base)
    for stamp in stamps:
        resolved = slow.resolve(stamp)
        assert fast.seconds(stamp) == (resolved.timestamp() if resolved is not None else None), stamp


def test_a_millisecond_stamp_read_as_seconds_still_sets_the_year_context() -> None:
    clock = Clock(UTC, datetime(2026, 6, 1, tzinfo=UTC))
    assert clock.seconds("2024-12-31 23:59:59,100") is not None
    assert clock.seconds("2026-06-01T00:00:00Z") is not None  # another writer, another year
    assert clock.seconds("2024-12-31 23:59:59,200") is not None  # the same second as the first: the short cut
    assert clock.resolve("12-31 23:59:59") == datetime(2024, 12, 31, 23, 59, 59, tzinfo=UTC)


def test_a_stamp_asked_for_again_gives_its_answer_and_leaves_the_year_context_as_resolving_it_again_would() -> None:
    """Each event's stamp is asked for twice in a row (the stats, then the request joiner): the second answer is
    the first one kept, and the clock's year context must be left as resolving the stamp again leaves it, also
    when another stamp was resolved in between (a year-less stamp then takes the year nearest that context)."""
    for stamp in ("2025-06-01 12:00:00,250", "2025-06-01T12:00:00Z", "06-01 12:00:00"):
        kept, afresh = Clock(UTC, datetime(2025, 6, 2, tzinfo=UTC)), Clock(UTC, datetime(2025, 6, 2, tzinfo=UTC))
        first = kept.seconds(stamp)
        assert first is not None and first == afresh.seconds(stamp)
        for clock in (kept, afresh):
            assert clock.resolve("2026-06-01 12:00:00") == datetime(2026, 6, 1, 12, tzinfo=UTC)  # another writer
        assert kept.seconds(stamp) == afresh.seconds("".join(stamp)) == first  # the same string; an equal one
        assert kept.resolve("03-01 00:00:00") == afresh.resolve("03-01 00:00:00") == datetime(2025, 3, 1, tzinfo=UTC)
