"""anyio front end: the half of :class:`~dask_anyio.DaskExecutor` that is a scope, its
base class :class:`ExecutorLifetime`: entering and leaving (``async with``, or ``open()``
and ``aclose()``), what it shows (reprs, statistics) and the client under it. The other
half, in ``_executor``, submits work and waits for it."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, Self

import anyio.lowlevel
import distributed

from ._client import make_default
from ._gate import Phase
from ._handle import ExecutorStatistics
from ._host import Host
from ._scope import ExecutorScope
from ._show import executor_html, executor_repr, shown

__all__ = ["ExecutorLifetime"]

P = ParamSpec("P")


class ExecutorLifetime:
    """The scope of a :class:`~dask_anyio.DaskExecutor` (its base class; see there)."""

    _scope: ExecutorScope
    #: The background task holding the scope, if opened with open().
    _host: Host | None

    # -- lifetime --------------------------------------------------------------------------

    async def open(self) -> Self:
        """Enter the executor's scope in a background task of the event loop; return the
        executor, open until :meth:`aclose`. For notebooks and other REPLs, where one
        ``async with`` block cannot span cells (each cell is a task of its own).

        Checkpoint; cancelling it closes whatever was opened. The scope keeps the rules of
        ``async with``; ``aclose()`` is its normal exit, and if the event loop's run ends
        first (``asyncio.run()`` returns; under trio the main task returns, as at the end of
        every cell under IPython's ``%autoawait trio``), the scope is left as a cancelled one
        is: its tasks are cancelled and the cluster closed, and later calls raise
        :exc:`RuntimeError` saying so. Use ``async with`` wherever one block can hold the
        executor.
        """
        if self._scope.gate.phase is not Phase.NEW or self._host is not None:
            raise RuntimeError("a DaskExecutor can be entered only once")
        self._host = Host(self, name=f"dask-anyio: {self!r}", on_run_end=self._ended_with_run)
        await self._host.open()
        # The scope's current client is the host task's: make it Dask's default instead,
        # for the blocking API of every later cell (a notebook's xarray, say).
        make_default(self._scope.core.client)
        return self

    async def aclose(self) -> None:
        """Leave the scope that :meth:`open` entered, as ``async with`` leaves it normally:
        wait for every outstanding task, release every key, close what the executor owns,
        and raise the failures nobody observed.

        Checkpoint; cancelling it cancels the outstanding tasks, as a cancelled scope does.
        Nothing to do if the scope was left already (the event loop's run ended).
        """
        if self._host is None:
            raise RuntimeError(
                "aclose() leaves an executor opened with `await ex.open()`; one entered with "
                "`async with` is left at the end of that block"
            )
        if self._host.done:
            return
        self._scope.gate.check_loop()
        await self._host.close()

    async def __aenter__(self) -> Self:
        # (a host leaves the scope itself when the run ends)
        guard = f"dask-anyio: closes {self!r}" if self._host is None else None
        await self._scope.enter(guard)
        return self

    def _ended_with_run(self) -> None:
        self._scope.gate.ended_with_run = True

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        return await self._scope.leave(exc)

    async def _aexit_within(self, patience: float) -> None:
        """A normal ``__aexit__`` that waits ``patience`` seconds at most for what is
        outstanding, then cancels it and raises ``_scope.ExitTimeout`` (the pytest
        plugin's exit after a test that passed)."""
        await self._scope.leave(None, patience)

    # -- introspection ---------------------------------------------------------------------

    def __repr__(self) -> str:
        return executor_repr(shown(self._scope, self._statistics_here()))

    def _repr_html_(self) -> str:
        """What Jupyter shows: scheduler, dashboard link, workers, tasks."""
        return executor_html(shown(self._scope, self._statistics_here()))

    def _statistics_here(self) -> ExecutorStatistics | None:
        """The counts, if this is the executor's own loop (where they are kept)."""
        if self._scope.gate.phase is Phase.NEW:
            return None
        with contextlib.suppress(RuntimeError):  # from another thread or loop
            return self.statistics()
        return None

    def statistics(self) -> ExecutorStatistics:
        """Return counts of this executor's tasks, as a frozen record. A plain call."""
        self._scope.gate.check_loop()
        if self._scope.tasks is None:
            return ExecutorStatistics(0, 0, 0, 0, 0, 0)
        return self._scope.tasks.statistics()

    @property
    def client(self) -> distributed.Client:
        """The underlying asynchronous :class:`distributed.Client`, for the rest of Dask's API.

        It lives on the core loop: under asyncio that is your own loop and you may ``await``
        its methods; under trio it is a private asyncio loop thread, so never call its
        methods that talk to the scheduler from trio (they would block or return coroutines
        of another loop): go through :meth:`call_client`, which works on both backends.
        Reading attributes (``id``, ``status``) is fine. Futures you create through it are not
        owned by the executor: release them yourself.
        """
        self._scope.gate.check_open()
        return self._scope.core.client

    @property
    def dashboard_link(self) -> str | None:
        """The link to the scheduler's dashboard, if it serves one."""
        self._scope.gate.check_open()
        return self._scope.core.dashboard_link

    async def call_client(
        self,
        fn: Callable[Concatenate[distributed.Client, P], object],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> Any:
        """Call ``fn(client, *args, **kwargs)`` on the client's event loop; return its result,
        awaited if it is awaitable.

        Checkpoint; cancelling the caller cancels the call. The safe way to use the rest of
        Dask's client API on either backend, for example
        ``await ex.call_client(distributed.Client.who_has)`` or
        ``await ex.call_client(lambda c: c.run_on_scheduler(fn))``. Handles in ``args`` and
        ``kwargs`` (also inside lists, tuples, sets and dicts) are replaced by their Dask
        futures, as :meth:`submit` replaces them, so that
        ``await ex.call_client(distributed.Client.replicate, [handle])`` works.
        """
        self._scope.gate.check_open()
        args, kwargs = self._scope.table.unwrap(args), self._scope.table.unwrap(kwargs)
        await anyio.lowlevel.checkpoint_if_cancelled()
        return await self._scope.runner.run(self._scope.core.call, fn, args, kwargs)
