"""Turn the timestamp text a line printed into an aware datetime.

Shapes seen in the field:

==========================================  =====================================
``12-14 16:18:29``                          vLLM: no year, no sub-seconds (unless
                                            a logging format adds them:
                                            ``12-14 16:18:29.123``), the server's
                                            local time
``2025-12-14 16:18:24,320``                 LMCache, Python's default ``asctime``
``2025-12-14T16:18:24.320123456Z``          docker, CRI, ``docker logs -t``,
                                            journalctl short-iso (offset optional)
``@1702570704320123``                       journald's ``__REALTIME_TIMESTAMP`` (µs)
``1125 05:32:21.411251777``                 PyTorch's C++ header (``[W1125 …]``):
                                            month (not padded) and day, no year
==========================================  =====================================

Local times are read in the time zone the caller names (the server's).  A
vLLM stamp's year comes from context: the nearest earlier full date seen by
the same :class:`Clock` (LMCache lines and wrappers carry one), and before any,
from a reference instant the caller supplies (a file's modification time, or
now for a stream), taking the latest year that does not put the line after
that reference.  After that each year-less stamp takes the year that puts it
closest to the previous resolved time, which follows a log across New Year.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, tzinfo

# A line written just before the reference may carry a clock a little ahead of
# it (time zone or clock skew); this much is still "not after".
_SKEW = timedelta(days=1)


RECENT_STAMPS = 64  # stamps remembered by a clock; a burst of lines repeats a few
# What separates a stamp's seconds from their fraction (``%(msecs)`` after a comma or a dot).
_FRACTION_MARKS = (".", ",")
_NOTHING_YET = object()  # what a clock has resolved before its first stamp


def _microseconds(fraction: str) -> str:
    """A stamp's fraction of a second as six digits: datetime holds no finer (docker prints nine)."""
    return fraction[:6].ljust(6, "0")


class Clock:
    """Resolves one source's stamps, in order; keeps the year context between calls."""

    __slots__ = (
        "_last_previous",
        "_last_seconds",
        "_last_stamp",
        "_previous",
        "_recent",
        "_reference",
        "_second",
        "_second_us",
        "tz",
    )

    def __init__(self, tz: tzinfo, reference: datetime) -> None:
        if reference.tzinfo is None:
            reference = reference.replace(tzinfo=tz)
        self.tz = tz
        self._reference = reference
        self._previous: datetime | None = None
        # Lines come in bursts with the same stamps (each writer of a log has its own format, and
        # their lines interleave), or the same second: the stamps resolved lately, with their
        # instants as datetimes and as POSIX seconds, and the last full-date second.
        self._recent: dict[str, tuple[datetime, float]] = {}
        self._second: tuple[str, datetime] | None = None
        self._second_us: int | None = None  # that second as POSIX microseconds, once asked for
        # The last stamp :meth:`seconds` resolved: each event's is asked for twice in a row (by the stats,
        # then by the request joiner).
        self._last_stamp: object = _NOTHING_YET
        self._last_seconds = 0.0
        self._last_previous: datetime | None = None

    def resolve(self, stamp: str | None) -> datetime | None:
        """The instant a stamp names, or None for text that is not a timestamp."""
        known = self._known(stamp)
        return known[0] if known is not None else None

    def seconds(self, stamp: str | None) -> float | None:
        """:meth:`resolve` as POSIX seconds."""
        if stamp is self._last_stamp:
            self._previous = self._last_previous  # as resolving it again leaves it
            return self._last_seconds
        when = self._seconds(stamp)
        if when is not None:
            self._last_stamp, self._last_seconds, self._last_previous = stamp, when, self._previous
        return when

    def _seconds(self, stamp: str | None) -> float | None:
        second = self._second
        if second is not None and stamp is not None and len(stamp) == 23 and stamp.startswith(second[0]):
            # LMCache's millisecond stamps are nearly all distinct, but a burst shares its second:
            # no datetime for the rest.  Integer microseconds divided once, as datetime.timestamp()
            # does, give the very same float.
            milliseconds = stamp[20:]
            if stamp[19] == "," and milliseconds.isdigit():
                if self._second_us is None:
                    self._second_us = round(second[1].timestamp()) * 1_000_000
                self._previous = second[1]
                return (self._second_us + int(milliseconds) * 1000) / 1_000_000
        known = self._known(stamp)
        return known[1] if known is not None else None

    def _known(self, stamp: str | None) -> tuple[datetime, float] | None:
        if not stamp:
            return None
        known = self._recent.get(stamp)
        if known is not None:
            self._previous = known[0]
            return known
        when = self._resolve(stamp)
        if when is None:
            return None
        if len(self._recent) >= RECENT_STAMPS:
            self._recent.clear()
        known = self._recent[stamp] = (when, when.timestamp())
        return known

    def _resolve(self, stamp: str) -> datetime | None:
        try:
            if len(stamp) == 14 and stamp[2] == "-":
                when = self._without_year(stamp)
            elif stamp[2:3] == "-" and stamp[14:15] in _FRACTION_MARKS:
                when = self._without_year_fraction(stamp)
            elif stamp[:3].isdigit() and " " in stamp[3:5]:
                when = self._torch(stamp)
            elif stamp[0] == "@":
                when = datetime.fromtimestamp(int(stamp[1:]) / 1e6, UTC)
            else:
                when = self._full(stamp)
        except (ValueError, OverflowError, IndexError):
            return None
        if when is not None:
            self._previous = when
        return when

    def _full(self, stamp: str) -> datetime | None:
        if len(stamp) == 23 and stamp[19] == "," and stamp[20:].isdigit():  # LMCache's asctime
            second = self._second
            if second is None or second[0] != stamp[:19]:
                second = self._second = (stamp[:19], self._full(stamp[:19]))
                self._second_us = None
            return second[1] + timedelta(milliseconds=int(stamp[20:]))
        text = stamp.replace(",", ".")
        if text.endswith("Z"):
            text = text[:-1] + "+00:00"
        # fromisoformat takes at most six fractional digits; docker prints nine.
        dot = text.find(".")
        if dot != -1:
            end = dot + 1
            while end < len(text) and text[end].isdigit():
                end += 1
            text = text[: dot + 1] + _microseconds(text[dot + 1 : end]) + text[end:]
        when = datetime.fromisoformat(text)
        if when.tzinfo is None:
            when = when.replace(tzinfo=self.tz)
        return when

    def _without_year_fraction(self, stamp: str) -> datetime | None:
        """``MM-DD HH:MM:SS.fff`` (vLLM's header under a logging format that adds milliseconds): its second
        resolved as a stamp of its own (and remembered: the lines of one second share it), then the fraction,
        read to the microsecond as a wrapper's is."""
        digits = stamp[15:]
        if not (digits.isascii() and digits.isdigit()):
            return None
        second = self._known(stamp[:14])
        if second is None:
            return None
        return second[0] + timedelta(microseconds=int(_microseconds(digits)))

    def _torch(self, stamp: str) -> datetime | None:
        """PyTorch's C++ header's ``MDD HH:MM:SS.fff`` (the month not padded: ``227``, ``1125``; glog pads
        it): read as vLLM's year-less stamp with its fraction."""
        day, _, time_of_day = stamp.partition(" ")
        if not (day.isascii() and day.isdigit() and len(day) <= 4):
            return None
        return self._without_year_fraction(f"{day[:-2]:0>2}-{day[-2:]} {time_of_day}")

    def _without_year(self, stamp: str) -> datetime:
        month, day = int(stamp[0:2]), int(stamp[3:5])
        hour, minute, second = int(stamp[6:8]), int(stamp[9:11]), int(stamp[12:14])
        anchor = self._previous
        first = anchor is None
        if first:
            anchor = self._reference
        candidates = []
        for year in (anchor.year - 1, anchor.year, anchor.year + 1):
            try:
                candidates.append(datetime(year, month, day, hour, minute, second, tzinfo=self.tz))
            except ValueError:  # 02-29 in a common year
                continue
        if not candidates:
            raise ValueError(stamp)
        if first:
            not_after = [c for c in candidates if c <= anchor + _SKEW]
            if not_after:
                return max(not_after)
        return min(candidates, key=lambda c: abs(c - anchor))


def isoformat(when: datetime) -> str:
    """ISO 8601 with the precision the stamp had (seconds, milliseconds or microseconds)."""
    if when.microsecond == 0:
        return when.isoformat(timespec="seconds")
    if when.microsecond % 1000 == 0:
        return when.isoformat(timespec="milliseconds")
    return when.isoformat(timespec="microseconds")
