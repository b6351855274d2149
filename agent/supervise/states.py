"""The states of a supervised server, and the groups the supervisor reasons about.

``kvwatch_server_state`` has one series per state, 1 for the current one.
"""

from __future__ import annotations

from enum import StrEnum


class ServerState(StrEnum):
    WAITING = "waiting"  # not started until what it needs runs (vLLM for its LMCache server)
    STARTING = "starting"  # started or adopted, not answering yet
    RUNNING = "running"  # healthy
    UNHEALTHY = "unhealthy"  # was ready, its health probe fails
    STALLED = "stalled"  # requests pending and no progress in the log
    BACKOFF = "backoff"  # exited; started again after a pause
    CRASH_LOOP = "crash_loop"  # exited too often lately; started again after a longer pause
    STOPPING = "stopping"  # SIGTERM sent, waiting for it to exit
    STOPPED = "stopped"  # stopped by kvwatch (or never started)
    EXITED = "exited"  # exited, and its restart policy says to leave it


# A start is scheduled (``next_start``).
WAITING_TO_START = frozenset((ServerState.BACKOFF, ServerState.CRASH_LOOP))
# No process, and none planned.
DOWN = frozenset((ServerState.STOPPED, ServerState.EXITED))
