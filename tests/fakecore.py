"""A fake asyncio core for fast, exhaustive collaboration tests of the front end (house
style 13; the model is trio-parallel's MockWorker tests).

:class:`FakeCore` offers what :class:`dask_anyio._core.DaskCore` offers the front end (a test
checks that their signatures agree), keeps the cluster's side in plain dictionaries, and runs
on the caller's own event loop, asyncio or trio, through :func:`open_fake_runner` (the
bridge's seam): nothing crosses a thread, so ``anyio.wait_all_tasks_blocked()`` sees
everything. The test drives the cluster: :meth:`FakeCore.finish`, :meth:`FakeCore.fail`,
:meth:`FakeCore.lose_scheduler`; and reads what the front end told it: ``cancels``,
``confirmed``, :meth:`FakeCore.held`.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from dask.base import tokenize
from distributed.client import FutureCancelledError

from dask_anyio._bridge import LoopToken, current_loop_token
from dask_anyio._core import SCHEDULER_LOST
from dask_anyio._executor import DaskExecutor, executor_over

PENDING, FINISHED, ERROR, CANCELLED = "pending", "finished", "error", "cancelled"


@dataclass(eq=False)
class FakeTask:
    """A task as the fake scheduler knows it."""

    key: str
    fn: Callable[..., Any]
    args: list[Any]
    status: str = PENDING
    value: Any = None
    error: BaseException | None = None
    reason: str | None = None
    #: The client's references to the key (futures not released).
    refs: int = 0
    #: Whether the scheduler still holds the key.
    held: bool = True
    dependents: list[FakeTask] = field(default_factory=list)


class FakeFuture:
    """What the front end reads of a Dask future: its key and status."""

    def __init__(self, task: FakeTask) -> None:
        self.task = task
        self.key = task.key
        self.released = False
        task.refs += 1

    @property
    def status(self) -> str:
        return self.task.status


@dataclass
class FakeClient:
    id: str = "fake-client"
    status: str = "running"


class FakeRunner:
    """A core runner whose core is the caller's own loop, on either backend."""

    def __init__(self) -> None:
        self.front = self.core = current_loop_token()

    async def run(self, fn: Callable[..., Awaitable[Any]], *args: Any, dropped: Any = None) -> Any:
        return await fn(*args)

    async def finish(
        self, fn: Callable[..., Awaitable[Any]], *args: Any, dropped: Any = None
    ) -> Any:
        with anyio.CancelScope(shield=True):
            return await fn(*args)


@asynccontextmanager
async def open_fake_runner() -> AsyncIterator[FakeRunner]:
    yield FakeRunner()


class _Unfaked:
    """A part of the real core that the fake leaves out: using it says where it is tested."""

    def __init__(self, what: str) -> None:
        self._what = what

    def __getattr__(self, name: str) -> Any:
        raise NotImplementedError(f"{self._what}: see the real-cluster tests")


class FakeCore:
    """The front end's view of a Dask client and its cluster, in memory."""

    def __init__(self) -> None:
        self.client = FakeClient()
        self.scheduler_address: str | None = "tcp://fake:1"
        self.dashboard_link: str | None = None
        self.scheduler_identity: Mapping[str, Any] = {"n_workers": 1}
        self.tasks: dict[str, FakeTask] = {}
        #: Every cancel request: the keys and the reason.
        self.cancels: list[tuple[list[str], str]] = []
        #: Every confirmation asked for: the keys.
        self.confirmed: list[list[str]] = []
        self.closed = False
        #: Every future made, to check that each was released.
        self.futures: list[FakeFuture] = []
        #: If set, a task finishes as it is submitted, with ``auto(*args)``.
        self.auto: Callable[..., Any] | None = None
        #: The most keys the scheduler held at once.
        self.most_held = 0
        self._token: LoopToken | None = None
        self._watched: anyio.Event | None = None
        self._watching: dict[str, list[tuple[Any, Callable[[list[Any]], object]]]] = {}
        self._keys = itertools.count()
        self.leases = _Unfaked("locks and semaphores")
        self.exchange = _Unfaked("queues, events and variables")
        self.actors = _Unfaked("actors")

    def executor(self, **kwargs: Any) -> DaskExecutor:
        """An executor over this core."""
        return executor_over(open_fake_runner, self.open, **kwargs)

    async def open(self, address: str | None) -> FakeCore:
        self._token = current_loop_token()
        return self

    # -- driving the cluster ---------------------------------------------------------------

    def task(self, which: Any) -> FakeTask:
        """The task of a key, a handle or a position in submission order."""
        if isinstance(which, int):
            return list(self.tasks.values())[which]
        return self.tasks[getattr(which, "key", which)]

    def finish(self, which: Any, value: Any = None) -> None:
        task = self.task(which)
        assert task.status == PENDING, task
        task.status, task.value = FINISHED, value
        self._changed(task)

    def fail(self, which: Any, error: BaseException) -> None:
        task = self.task(which)
        assert task.status == PENDING, task
        task.status, task.error = ERROR, error
        self._changed(task)

    def lose_scheduler(self) -> None:
        """As Dask's client does: cancel every future, then reconnect (here: never)."""
        self.client.status = "connecting"
        for task in self.tasks.values():
            if task.status == PENDING:
                task.status, task.reason = CANCELLED, SCHEDULER_LOST
                self._changed(task)

    def held(self) -> set[str]:
        """The keys the scheduler holds."""
        return {k for k, t in self.tasks.items() if t.held}

    def check_clean(self) -> None:
        """After an exit: closed, every future released, the scheduler holds nothing, and
        no watch is left."""
        assert self.closed
        assert [f.key for f in self.futures if not f.released] == []
        assert self.held() == set()
        assert self._watching == {}

    async def watched_pending(self) -> FakeTask:
        """Wait until a pending task is watched (someone waits for it); return it."""
        while True:
            for task in self.pending():
                if self._watching.get(task.key):
                    return task
            self._watched = anyio.Event()
            await self._watched.wait()

    def pending(self) -> list[FakeTask]:
        return [t for t in self.tasks.values() if t.status == PENDING]

    def _changed(self, task: FakeTask) -> None:
        watchers = self._watching.pop(task.key, [])
        for deliver, items in itertools.groupby(watchers, key=lambda w: w[1]):
            assert self._token is not None
            self._token.run_sync_soon(deliver, [item for item, _ in items])

    # -- what DaskCore offers --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self.client.status == "running"

    async def close(self) -> None:
        self.closed = True

    def watch(self, future: Any, item: Any, deliver: Callable[[list[Any]], object]) -> None:
        self._watching.setdefault(future.key, []).append((item, deliver))
        if self._watched is not None:
            self._watched.set()
        if future.status != PENDING:
            self._changed(future.task)

    def submit(
        self,
        fn: Callable[..., Any],
        args: Iterable[Any],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
    ) -> Any:
        args = list(args)
        # As Dask's client: pure=True names a call by its function and arguments.
        token = tokenize(fn, kwargs, *args) if options.get("pure") else next(self._keys)
        key = options.get("key") or f"{getattr(fn, '__name__', 'task')}-{token}"
        return self._new(key, fn, args)

    def map(
        self,
        fn: Callable[..., Any],
        iterables: list[list[Any]],
        kwargs: Mapping[str, Any],
        options: Mapping[str, Any],
        start: int = 0,
    ) -> list[Any]:
        prefix = options.get("key") or getattr(fn, "__name__", "task")
        return [
            self._new(f"{prefix}-{next(self._keys)}", fn, list(row))
            for row in zip(*iterables, strict=False)
        ]

    def _new(self, key: str, fn: Callable[..., Any], args: list[Any]) -> FakeFuture:
        task = self.tasks.get(key)
        if task is None:
            task = self.tasks[key] = FakeTask(key, fn, args)
            for dependency in args:
                if isinstance(dependency, FakeFuture):
                    dependency.task.dependents.append(task)
            if self.auto is not None:
                task.status, task.value = FINISHED, self.auto(*args)
        future = FakeFuture(task)
        self.futures.append(future)
        self.most_held = max(self.most_held, len(self.held()))
        return future

    def compute(self, collections: list[Any], options: Mapping[str, Any]) -> list[Any]:
        raise NotImplementedError("collections: see the real-cluster tests")

    def persist(
        self, collections: list[Any], options: Mapping[str, Any]
    ) -> tuple[list[Any], list[Any]]:
        raise NotImplementedError("collections: see the real-cluster tests")

    async def wait_fetches(self, keys: Collection[Any]) -> None:
        pass

    def release(self, future: Any) -> None:
        assert not future.released, "released twice"
        future.released = True
        task = future.task
        task.refs -= 1
        if not task.refs:  # as Dask's client: the last reference gone, the key goes
            task.held = False
            if task.status == PENDING:
                task.status = CANCELLED
                self._changed(task)

    release_now = release  # (both drop the reference at once here)

    async def wait_released(self, keys: Collection[Any]) -> None:
        pass

    async def result(self, future: Any) -> Any:
        return (await self.gather([future]))[0]

    async def call(
        self, fn: Callable[..., object], args: tuple[Any, ...], kwargs: Mapping[str, Any]
    ) -> Any:
        return fn(self.client, *args, **kwargs)

    async def gather(self, futures: list[Any]) -> list[Any]:
        for future in futures:
            if future.status == CANCELLED or future.released:
                raise FutureCancelledError(future.key, reason=future.task.reason)
            assert future.status == FINISHED, future.task
        return [f.task.value for f in futures]

    async def scatter(self, data: list[Any], broadcast: bool) -> list[Any]:
        futures = [self._new(f"data-{next(self._keys)}", object, []) for _ in data]
        for future, value in zip(futures, data, strict=True):
            future.task.status, future.task.value = FINISHED, value
        return futures

    @staticmethod
    async def cancel_reason(future: Any) -> str:
        return str(future.task.reason)

    async def exception(self, future: Any) -> BaseException:
        assert future.task.error is not None
        return future.task.error

    async def cancel(self, futures: Collection[Any], reason: str) -> None:
        self.cancels.append(([f.key for f in futures], str(reason)))
        for future in futures:
            self._cancel(future.task, str(reason))

    def _cancel(self, task: FakeTask, reason: str) -> None:
        for dependent in task.dependents:  # Dask's cancel cascades
            self._cancel(dependent, reason)
        task.held = False
        if task.status == PENDING:
            task.status, task.reason = CANCELLED, reason
            self._changed(task)

    async def wait_forgotten(
        self, keys: Collection[Any], *, arrived: Collection[Any] = (), give_up_after: float = 10.0
    ) -> None:
        self.confirmed.append(sorted(keys))
        still = [k for k in keys if k in self.tasks and self.tasks[k].held]
        assert not still, f"the scheduler still holds released keys {still}"
