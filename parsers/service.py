"""The service manager's lines about a unit: systemd's, in the unit's journal (or a syslog file, with every unit's).

``journalctl -u vllm`` (and kvwatch's ``journal_unit`` follow) shows, beside the
server's own lines, what systemd says of the unit: how its main process ended
(``vllm.service: Main process exited, code=killed, status=9/KILL``), that the
OOM killer took one of its processes, that it failed and with what result, that
it restarts it (with its restart counter), and that it gave up restarting it.
A server the OOM killer or a signal ended writes nothing more itself, so these
lines are the only record of such an end.  Each is a message alone behind the
journal's framing: ``UNIT: `` and the words systemd has used since version
235 (2017).  Which unit runs which server the parser does not know: each event
names its unit.
"""

from __future__ import annotations

import re

from parsers.events import (
    SERVICE_RESULTS,
    Event,
    ServiceExited,
    ServiceFailed,
    ServiceOomKill,
    ServiceRestartScheduled,
    ServiceStartLimitHit,
)
from parsers.shapes import INTEGER

# The unit types whose processes a server runs in: a service, or a scope (``systemd-run --scope``).
UNIT_ENDS = (".service:", ".scope:")
# A unit's name: letters, digits and ``:-_.\\@`` (a template's instance after ``@``), at most 256 characters.
UNIT_NAME_MAX = 256
_UNIT = r"([\w:.\\@-]{1,250}\.(?:service|scope))"
LINE = re.compile(
    _UNIT + r": (?:"
    # (``main`` in lower case before systemd 236.)  A clean exit is logged at debug level only.
    r"[Mm]ain process exited, code=(exited|killed|dumped), status=(\d{1,9})/\S{1,40}"
    r"|Failed with result '([\w-]{1,40})'"
    rf"|Scheduled restart job, restart counter is at ({INTEGER})"
    r"|(A process of this unit has been killed by the OOM killer)"
    rf"|systemd-oomd killed ({INTEGER}) process\(es\) in this unit"
    r"|(Start request repeated too quickly)"
    r")",
    re.ASCII,
)


def parse(line: str, start: int, stamp: str | None) -> tuple[Event, ...] | None:
    """The event of one of systemd's lines about a unit (the message from ``start``)."""
    m = LINE.match(line, start)
    if m is None:
        return None
    unit, how, status, result, restarts, oom_kill, oomd_kills, start_limit = m.groups()
    if how is not None:
        exited = how == "exited"  # (the status is then an exit code, else a signal's number)
        code = int(status)
        return (ServiceExited(stamp, unit, how, code if exited else None, None if exited else code),)  # type: ignore[arg-type]
    if result is not None:
        return (ServiceFailed(stamp, unit, result if result in SERVICE_RESULTS else "other"),)  # type: ignore[arg-type]
    if restarts is not None:
        return (ServiceRestartScheduled(stamp, unit, int(restarts)),)
    if oom_kill is not None:
        return (ServiceOomKill(stamp, unit),)
    if oomd_kills is not None:
        return (ServiceOomKill(stamp, unit, "systemd-oomd", int(oomd_kills)),)
    if start_limit is not None:
        return (ServiceStartLimitHit(stamp, unit),)
    return None
