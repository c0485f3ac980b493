"""A wake-up call for tasks of one event loop: :class:`Signal`."""

from __future__ import annotations

import anyio

__all__ = ["Signal"]


class Signal:
    """Wakes the tasks waiting in :meth:`wait` when :meth:`set` is called; a later
    :meth:`wait` waits for the next :meth:`set`. A set with nobody waiting is not kept: check
    the condition, then wait, with no checkpoint between. Front loop only."""

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event: anyio.Event | None = None

    def set(self) -> None:
        """Wake every task waiting now. A plain call."""
        if self._event is not None:
            self._event.set()
            self._event = None

    async def wait(self) -> None:
        """Wait until the next :meth:`set`. Checkpoint; cancelling it only stops the waiting."""
        if self._event is None:
            self._event = anyio.Event()
        await self._event.wait()
