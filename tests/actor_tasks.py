"""Actor classes of the actor tests: imported by the workers by module name."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import distributed


class CounterError(Exception):
    """An exception class of the user's, defined in the actor's module."""


class Counter:
    """A counter, with a method that blocks its worker thread until released."""

    def __init__(self, start: int = 0) -> None:
        self.n = start
        self._go = threading.Event()

    def add(self, by: int = 1) -> int:
        self.n += by
        return self.n

    async def add_later(self, by: int) -> int:
        await asyncio.sleep(0)
        return self.add(by)

    def fail(self, builtin: bool) -> None:
        if builtin:
            raise ValueError("the actor's own ValueError")
        raise CounterError("the actor's own CounterError")

    def hold(self, by: int, started: str) -> int:
        """Set the ``distributed.Event`` ``started``, block (in the actor's thread) until
        :meth:`release`, then add ``by``."""
        distributed.Event(started).set()
        self._go.wait(timeout=60)
        return self.add(by)

    async def release(self) -> None:
        """Let :meth:`hold` go (a coroutine method: it runs on the worker's loop, not in the
        actor's thread, which hold() blocks)."""
        self._go.set()


class SlowToMake:
    """An actor whose constructor waits until the ``distributed.Event`` ``name`` is set."""

    def __init__(self, name: str) -> None:
        distributed.Event(name).wait(timeout=60)


class TakesActor:
    """A class with a parameter named ``actor``: ``submit(TakesActor, actor=...)`` is fine."""

    def __init__(self, actor: Any) -> None:
        self.actor = actor


def add_through(counter: Any, by: int) -> int:
    """A task that calls an actor through Dask's proxy."""
    result: int = counter.add(by).result()
    return result


class MadeAtOnce:
    """An actor whose constructor returns at once."""
