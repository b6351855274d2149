"""The loop behind the health probe, the periodic canary and the journal reader."""

from __future__ import annotations

import threading
import time

from agent.periodic import Periodic


def test_a_failing_turn_is_retried_and_stop_ends_the_wait_at_once() -> None:
    turns: list[float] = []
    third = threading.Event()

    def turn() -> float:
        turns.append(time.monotonic())
        if len(turns) == 1:
            raise RuntimeError("a bug in one turn")
        if len(turns) == 3:
            third.set()
            return 3600.0  # a long wait, which stop must cut short
        return 0.01

    loop = Periodic("kvwatch-test", turn)
    loop.start()
    assert third.wait(10.0), "the loop stopped after the failing turn"
    began = time.monotonic()
    loop.stop(wait=5.0)
    assert time.monotonic() - began < 2.0
    assert len(turns) == 3
