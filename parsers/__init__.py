"""Pure parsing of vLLM and LMCache log lines into typed events.

No I/O, no clocks, no Prometheus: ``parse_line(str) -> tuple[Event, ...]``.
:class:`LogStream` adds the little per-source state some wrappers need, and
:class:`Clock` turns the timestamp text events carry into datetimes.
"""

from parsers.dispatch import parse_line
from parsers.events import EVENT_KINDS, EVENT_TYPES, Event
from parsers.stream import LogStream
from parsers.timestamps import Clock

__all__ = ["EVENT_KINDS", "EVENT_TYPES", "Clock", "Event", "LogStream", "parse_line"]
