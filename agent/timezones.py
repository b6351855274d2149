"""The time zone in which to read a server's local timestamps."""

from __future__ import annotations

import os
from datetime import datetime, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError


def resolve_timezone(name: str | None = None) -> tzinfo:
    """An IANA zone by name; without one, this host's zone (``TZ``, then ``/etc/localtime``).

    Raises ValueError naming the zone when it is unknown.
    """
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {name!r} (expected an IANA name such as UTC or Asia/Taipei)") from None
    env = os.environ.get("TZ", "").lstrip(":")
    if env:
        try:
            return ZoneInfo(env)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = os.path.realpath("/etc/localtime")
        marker = "/zoneinfo/"
        if marker in target:
            return ZoneInfo(target.split(marker, 1)[1])
    except (OSError, ZoneInfoNotFoundError, ValueError):
        pass
    # A fixed offset is the best left (no daylight-saving changes inside the log).
    return datetime.now().astimezone().tzinfo
