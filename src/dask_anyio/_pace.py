"""Pacing of submits and completions of many calls, so that the event loop stays
responsive.

Submitting a task costs its caller's loop a fraction of a millisecond (Dask builds the
task's spec and its future, and hands the message to the client's loop). Two hundred
``run()`` calls started at once all submit in the same turn of the loop: timers and I/O wait
that long (tens of milliseconds), and under trio the work also contends for the GIL with
the core's thread. :class:`Pace` gives each turn of the loop a budget of submitting
(:data:`BUDGET`); a call that finds it spent waits for the next turn, as do the calls after
it in that turn, and the first of them back in the next turn starts a new budget. A turn
is told apart by time: a pause of :data:`PAUSE` between two submits means that the loop did
something else. Completions that come together (200 tasks that finish at once) are paced
alike: each is charged :data:`COMPLETION`, and waits for a turn with budget left before its
value is fetched.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import anyio.lowlevel

__all__ = ["BUDGET", "COMPLETION", "PAUSE", "Pace", "clock"]

#: Seconds of submitting that one turn of the loop may take.
BUDGET = 0.002
#: A pause between submits this long ends a run of them.
PAUSE = 0.0005
#: What taking in one completed call costs the loop, charged rather than timed (the
#: crossing that fetches its value, and its release: 0.1-0.15 ms measured on trio's thread).
COMPLETION = 0.00015
#: The clock (the tests' may replace it).
clock = time.perf_counter


class Pace:
    """One executor's budget of submitting (front loop only)."""

    def __init__(self) -> None:
        self._spent = 0.0
        self._last = 0.0
        #: Counts budgets: a call that waited for a turn starts a new one, unless another
        #: call back from the same wait did.
        self._budget = 0

    async def turn(self) -> None:
        """Wait for a turn of the loop whose budget is not spent. A checkpoint if it waits
        (at least one, then as many as it takes), else only if cancelled: either way a
        cancelled caller raises here, and starts nothing."""
        if self._spent_up():
            await self._wait()
        else:
            await anyio.lowlevel.checkpoint_if_cancelled()

    async def _wait(self) -> None:
        while True:
            budget = self._budget
            await anyio.lowlevel.checkpoint()
            if self._budget == budget:  # the first back, in a new turn: a new budget
                self._budget += 1
                self._spent = 0.0
            if not self._spent_up():
                return

    def charge(self, seconds: float) -> None:
        """Count ``seconds`` of work as submitting (work that is not timed)."""
        now = clock()
        self._count(now, seconds, now)

    def _count(self, start: float, seconds: float, end: float) -> None:
        """Add ``seconds`` of work that began at ``start`` and ended at ``end``: to this run
        of submits, or to a new one after a pause."""
        if start - self._last > PAUSE:
            self._spent = 0.0
        self._spent += seconds
        self._last = end

    def _spent_up(self) -> bool:
        return self._spent >= BUDGET and clock() - self._last <= PAUSE

    @contextmanager
    def spending(self) -> Iterator[None]:
        """Count the time of the block as submitting."""
        start = clock()
        try:
            yield
        finally:
            end = clock()
            self._count(start, end - start, end)
