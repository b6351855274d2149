"""Message shapes, and one regex per header type that tries the commonest ones at once.

A :class:`Shape` is a family's message regex with a function that builds the
event from its groups.  Family parsers use their shapes on a message; the
dispatcher also joins a header pattern with the hottest shapes and a catch-all
first word into one :class:`LineMatcher`, so that a typical line costs one
regex call: either a shape matches and its event is built, or the first word
of the message comes back for the table-driven family lookup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence

from parsers.events import Event

Build = Callable[[str | None, "int | None", tuple], Event]

# What turning a field a pattern matched into a number can raise on a line that only looks right: a
# decimal of digits and dots that is none ("1.2.3"), an integer of over 4,300 digits, an infinite size
# made a byte count.  Such a line is not the message its pattern describes.
NOT_A_NUMBER = (ValueError, ArithmeticError)
# An integer field of a message: a count, a size, an index.  No log means one of more than 18 digits,
# and none such fits where numbers go (a metric's float, an OTLP int64): a longer run is no match.
MAX_DIGITS = 18
INTEGER = rf"\d{{1,{MAX_DIGITS}}}(?!\d)"
# A decimal field: a size, a time, a rate.  At most 40 digits and dots, more than any measurement is
# printed with and few enough that each reads as a finite float: a longer run reads as infinity, and one
# infinite cost would stay in a metric's sum for good.
DECIMAL = r"[\d.]{1,40}(?![\d.])"


def integer(value: str | float) -> int:
    """An integer field no pattern bounds: text split from a list of fields, or a number computed from
    one (a size in GiB made bytes).  Past MAX_DIGITS digits it raises ValueError (OverflowError when infinite)."""
    if isinstance(value, str):
        if len(value.lstrip("+-")) > MAX_DIGITS:
            raise ValueError(value)
        return int(value)
    number = round(value)
    if len(str(abs(number))) > MAX_DIGITS:
        raise ValueError(value)
    return number


def ratio(percent: float) -> float:
    """A percentage as the 0-1 ratio events carry, rounded so that 62.5 reads 0.625."""
    return round(percent / 100.0, 6)


def decimal(text: str) -> float:
    """A decimal field no pattern bounds (text split from a list of fields): ValueError unless it is a
    finite number (``inf``, ``nan`` and overlong digits are not a measurement)."""
    number = float(text)
    if not math.isfinite(number):
        raise ValueError(text)
    return number


def one_of(texts: Sequence[str]) -> str:
    """A regex that matches any one of ``texts`` (none empty) as they are, the first that does in their order.
    (One branch per first character, each holding the rest of the texts that begin with it: ``re`` tries every
    branch of an alternation in turn wherever a search looks, and a long list of words makes that slow.  At one
    place only the texts of one first character can match, so the grouping matches what the list would.)"""
    rests: dict[str, list[str]] = {}
    for text in texts:
        rests.setdefault(text[0], []).append(re.escape(text[1:]))
    return "(?:" + "|".join(re.escape(first) + "(?:" + "|".join(rest) + ")" for first, rest in rests.items()) + ")"


def opens_with(line: str, start: int, openings: tuple[str, ...]) -> bool:
    """Whether the message at ``start`` begins with one of a family's ``openings``, or ends inside one:
    a record cut short (a paste wrapped at a terminal's width) is that family's suspicious line, not
    some other message."""
    rest = len(line) - start
    return any(
        line.startswith(opening, start) if rest >= len(opening) else opening.startswith(line[start:])
        for opening in openings
    )


# A member of a set of ids as Python prints it (``{'a', 'b'}``); a line names at most MAX_SET_MEMBERS of them.
_SET_MEMBER = re.compile(r"'([^'\s]{1,256})'")
MAX_SET_MEMBERS = 1024


def set_members(line: str, start: int) -> list[str]:
    """The quoted ids of a Python set (or list) printed at or after ``start``, at most MAX_SET_MEMBERS."""
    return [found.group(1) for _, found in zip(range(MAX_SET_MEMBERS), _SET_MEMBER.finditer(line, start), strict=False)]


class Shape:
    """A message regex (compiled with ASCII classes: fields are ASCII, and faster so) and its event builder."""

    __slots__ = ("build", "groups", "pattern", "regex")

    def __init__(self, pattern: str, build: Build) -> None:
        self.pattern = pattern
        self.regex = re.compile(pattern, re.ASCII)
        self.groups = self.regex.groups
        self.build = build

    def parse(self, line: str, start: int, stamp: str | None, rank: int | None = None) -> Event | None:
        m = self.regex.match(line, start)
        return self.build(stamp, rank, m.groups()) if m is not None else None


Fallback = Callable[[str, int, "str | None", "int | None"], tuple]


class LineMatcher:
    """``header`` (whose one group is the stamp) followed by one of ``shapes`` or any first word.

    ``parse`` returns the events of a line whose header matches -- from a shape,
    or from ``fallback(line, message start, stamp, rank)`` -- and None otherwise.
    """

    __slots__ = ("_by_last", "_fallback", "_header", "_match", "_word")

    def __init__(self, header: str, shapes: Sequence[Shape], fallback: Fallback) -> None:
        alternatives = [shape.pattern for shape in shapes] + [r"([^ ]*)"]
        # ASCII classes: the fields are ASCII, and ``re`` tests them faster than Unicode ones.
        self._match = re.compile(header + "(?:" + "|".join(alternatives) + ")", re.ASCII).match
        self._header = re.compile(header, re.ASCII).match
        # The last group a match sets tells which alternative matched.
        self._by_last: dict[int, tuple[int, int, Build]] = {}
        first = re.compile(header).groups + 1
        for shape in shapes:
            for index in range(first, first + shape.groups):
                self._by_last[index] = (first - 1, first - 1 + shape.groups, shape.build)
            first += shape.groups
        self._word = first
        self._fallback = fallback

    def parse(self, line: str, rank: int | None = None, pos: int = 0) -> tuple | None:
        m = self._match(line, pos)
        if m is None:
            return None
        groups = m.groups()
        entry = self._by_last.get(m.lastindex)
        stamp = groups[0] or None  # "" for a header without a time (uvicorn)
        if entry is None:
            return self._fallback(line, m.start(self._word), stamp, rank)
        try:
            return (entry[2](stamp, rank, groups[entry[0] : entry[1]]),)
        except NOT_A_NUMBER:
            # A number the shape let through that is none: the family's own parser says what the line is.
            return self._fallback(line, self._header(line, pos).end(), stamp, rank)
