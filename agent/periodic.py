"""A piece of work done again and again in a thread of its own, until stopped.

The health probe, the periodic canary and the journal reader each run one:
``turn`` does the work once and returns how many seconds to wait before the
next turn; :meth:`Periodic.stop` ends the wait at once.  An exception in a turn
is logged and the next turn comes as usual: a bug in one of them must not end
it for good.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

log = logging.getLogger("kvwatch.periodic")


class Periodic:
    def __init__(self, name: str, turn: Callable[[], float]) -> None:
        self.name = name
        self._turn = turn
        self.stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, wait: float | None = None) -> None:
        """End the loop; with ``wait``, also wait that long for the turn under way to finish."""
        self.stopping.set()
        if wait is not None and self._thread.is_alive():
            self._thread.join(timeout=wait)

    def _run(self) -> None:
        while not self.stopping.is_set():
            try:
                pause = self._turn()
            except Exception:
                log.exception("%s failed; trying again", self.name)
                pause = 1.0
            self.stopping.wait(pause)
