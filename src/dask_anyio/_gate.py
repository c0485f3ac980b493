"""An executor's lifetime as its parts see it: :class:`Gate` says whether a call may start
(open, the right event loop), counts the calls that fetch values, and holds what the exit
closes first."""

from __future__ import annotations

import contextlib
import enum
from collections.abc import Awaitable, Callable, Iterator

from ._bridge import LoopToken
from ._signal import Signal

__all__ = ["Gate", "Phase"]


class Phase(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


class Gate:
    """The phase of one executor and the checks of every call. Front loop only."""

    def __init__(self) -> None:
        self.phase = Phase.NEW
        #: The caller's event loop, once entered.
        self.front: LoopToken | None = None
        #: Set by the exit once no call may start any more: it releases every key next.
        self.releasing = False
        #: Whether the run of the event loop that entered ended while the scope was open.
        self.ended_with_run = False
        #: What the exit closes first (result streams nobody reads any more).
        self.closers: set[Callable[[], Awaitable[None]]] = set()
        self._calls_under_way = 0
        self._no_call_under_way = Signal()

    def check_open(self, *, fetching: bool = False) -> None:
        """Refuse use unless open; ``fetching`` calls (retrieve, gather, as_completed's
        values) are also let in while a normal exit still waits, so that a value on its way
        to another task is not lost (the exit waits for them).

        :raises RuntimeError: saying why not.
        """
        if self.phase is Phase.OPEN or (
            fetching and self.phase is Phase.CLOSING and not self.releasing
        ):
            self.check_loop()
            return
        if self.phase is Phase.NEW:
            raise RuntimeError(
                "this DaskExecutor is not open: use `async with DaskExecutor() as ex`"
            )
        if self.ended_with_run:
            raise RuntimeError(
                "this DaskExecutor was closed when the run of the event loop that opened it "
                "ended (under IPython's `%autoawait trio`, every cell runs in a trio.run of "
                "its own): open and use an executor within one cell there, or keep one "
                "across cells under IPython's default asyncio autoawait"
            )
        raise RuntimeError(f"this DaskExecutor is {self.phase.value}: it cannot be used any more")

    def check_loop(self) -> None:
        """Refuse a call from another thread or event loop than the one that entered (it
        would wait for a loop that never wakes it).

        :raises RuntimeError: saying what to do instead.
        """
        if self.phase in (Phase.OPEN, Phase.CLOSING) and not (
            self.front is not None and self.front.is_current()
        ):
            raise RuntimeError(
                "a DaskExecutor is used from the event loop that entered it, and this is "
                "another thread or another event loop (a second anyio.run, say, or a notebook "
                "cell that IPython runs in a trio.run of its own); from another thread, go "
                "through anyio.from_thread"
            )

    @property
    def accepts_background(self) -> bool:
        """Whether the executor's task group still takes tasks."""
        return self.phase in (Phase.OPEN, Phase.CLOSING)

    @contextlib.contextmanager
    def call_under_way(self) -> Iterator[None]:
        """Count a call that fetches values (run, compute, retrieve, gather) or adopts
        tasks (persist, scatter): the exit waits for it before releasing any key, so that no
        value is lost on the way."""
        self._calls_under_way += 1
        try:
            yield
        finally:
            self._calls_under_way -= 1
            if not self._calls_under_way:
                self._no_call_under_way.set()

    @property
    def calls_under_way(self) -> int:
        return self._calls_under_way

    async def wait_calls(self) -> None:
        """Wait until no call is under way. Checkpoint only if one is."""
        if self._calls_under_way:
            await self._no_call_under_way.wait()
