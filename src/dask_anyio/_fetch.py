"""Values: fetching the values of done tasks (:class:`Fetcher`), and the calls that own their
tasks, ``run()`` and ``compute()``.

Methods that wait for a failure *return* it, as ``(values, failure)``, for the public method
to raise: a failure raised here would add our frames to the remote traceback users read.
"""

from __future__ import annotations

import collections
import functools
from typing import Any, Literal

import anyio
import anyio.lowlevel
from distributed.client import FutureCancelledError

from ._bridge import CoreRunner
from ._core import DaskCore
from ._errors import CancelReason, TaskCancelled
from ._gate import Gate
from ._handle import SKIP, TaskHandle, map_handles, state_of
from ._pace import COMPLETION, Pace
from ._signal import Signal
from ._tasks import TaskTable
from ._watch import Watcher

__all__ = ["Fetcher"]


class Fetcher:
    """Fetches values for one executor's front end. Front loop only."""

    def __init__(
        self,
        runner: CoreRunner,
        core: DaskCore,
        gate: Gate,
        watcher: Watcher,
        table: TaskTable,
        pace: Pace,
    ) -> None:
        self._runner = runner
        self._pace = pace
        self._core = core
        self._gate = gate
        self._watcher = watcher
        self._table = table

    async def retrieve(self, handle: TaskHandle[Any]) -> tuple[Any, Exception | None]:
        """``retrieve()``, the handle checked: ``(value, None)`` or ``(None, failure)``."""
        self._gate.check_open(fetching=True)
        await anyio.lowlevel.checkpoint_if_cancelled()
        with self._gate.call_under_way():
            return await self.value_of(handle)

    async def value_of(
        self, handle: TaskHandle[Any], *, paced: bool = False
    ) -> tuple[Any, Exception | None]:
        """Wait for ``handle`` and fetch its value: ``(value, None)``, or ``(None, failure)``.
        ``paced``: completions that came together fetch over several turns of the loop
        (run(), compute() of one key): a checkpoint more."""
        failure = await self._watcher.outcome(handle)
        if failure is not None:
            return None, failure
        if paced:
            await self._pace.turn()
            self._pace.charge(COMPLETION)
        try:
            return await self._runner.run(self._core.result, state_of(handle).future), None
        except FutureCancelledError:  # released or cancelled while its value was on the way
            return None, await self._lost_on_the_way([handle])

    async def fetch(self, handles: list[TaskHandle[Any]]) -> list[Any]:
        """The values of finished tasks, in one request per worker (Dask's errors raised)."""
        return await self._runner.run(self._core.gather, [state_of(h).future for h in handles])

    async def gathered(self, handles: list[TaskHandle[Any]]) -> tuple[list[Any], Exception | None]:
        """Fetch the values of finished tasks in one request per worker: ``(values, None)``,
        or ``([], failure)`` if one was cancelled or released while on the way."""
        try:
            return await self.fetch(handles), None
        except FutureCancelledError:
            return [], await self._lost_on_the_way(handles)

    async def _lost_on_the_way(self, handles: list[TaskHandle[Any]]) -> Exception:
        """What a transfer that Dask's client cancelled gives: the first of ``handles`` to
        have failed or been cancelled tells why, else its key was released meanwhile."""
        for handle in handles:
            failure = await self._watcher.failure_of(handle)
            if failure is not None:
                break
        else:
            failure = TaskCancelled(handles[0].key, "its key was released before its value came")
        failure.__suppress_context__ = True
        return failure

    async def gather(
        self, structure: Any, errors: Literal["raise", "skip"]
    ) -> tuple[Any, Exception | None]:
        """``gather()``, open and checked: the values in the same structure, or a failure."""
        found: dict[str, TaskHandle[Any]] = {}

        def collect(handle: TaskHandle[Any]) -> None:
            self._table.future_of(handle)  # checks the owner
            found[handle.key] = handle

        map_handles(structure, collect)
        with self._gate.call_under_way():  # (from before the checkpoint: the exit waits for it)
            await anyio.lowlevel.checkpoint()  # cancelled already: raises before a transfer
            failed, failure = await self.wait_all(
                list(found.values()), stop_at_failure=errors == "raise"
            )
            if failure is not None:
                return None, failure
            keys = [k for k in found if k not in failed]
            values, failure = await self.gathered([found[k] for k in keys])
            if failure is not None:
                return None, failure
        lookup = dict(zip(keys, values, strict=True))
        result = map_handles(structure, lambda h: SKIP if h.key in failed else lookup[h.key])
        return (None if result is SKIP else result), None

    async def wait_all(
        self, handles: list[TaskHandle[Any]], *, stop_at_failure: bool
    ) -> tuple[set[str], Exception | None]:
        """Wait until every handle is done; return the keys of those that failed (or were
        cancelled). With ``stop_at_failure``, return as soon as one failure is known, with it.

        Handles are looked at in completion order, as many per wake-up as are done: unlike
        ``as_completed``, whose every iteration is a checkpoint, this waits once per batch
        of completions (a checkpoint per task cost a large gather a tenth of its speed);
        and the core holds finished tasks back until all are in or one failed (see
        :meth:`Watcher.watch_together`): one wake-up for a gather whose tasks all finish.
        """
        done: collections.deque[TaskHandle[Any]] = collections.deque()
        wakeup = Signal()

        def on_done(handle: TaskHandle[Any]) -> None:
            done.append(handle)
            wakeup.set()

        callbacks = [(handle, functools.partial(on_done, handle)) for handle in handles]
        failed: set[str] = set()
        outstanding = len(handles)
        let_go = None
        try:
            let_go = self._watcher.watch_together(callbacks)  # calls back at once if done
            while True:
                while done:
                    handle = done.popleft()
                    outstanding -= 1
                    failure = await self._watcher.failure_of(handle)
                    if failure is not None:
                        state_of(handle).observed = True
                        if stop_at_failure:
                            return {handle.key}, failure
                        failed.add(handle.key)
                if not outstanding:
                    return failed, None
                await wakeup.wait()  # nothing is done and unseen: wait for more
        finally:
            for handle, callback in callbacks:
                self._watcher.unwatch(handle, callback)
            if outstanding and let_go is not None:  # others may wait for what is held
                let_go()

    # -- calls that own their tasks (run, compute) -----------------------------------------

    async def results_of_call(
        self, handles: list[TaskHandle[Any]]
    ) -> tuple[list[Any], Exception | None]:
        """Wait for the values of tasks that belong to this call (run(), compute()):
        ``(values, None)``, or ``([], failure)``; then let go of them (cancel them if the
        caller was cancelled).

        Others may hold their keys too (a compute() of a persisted collection, two compute()
        calls of one collection): then this call lets go of its own references only.
        """
        with self._gate.call_under_way():  # (its cleanup too: the exit closes the client next)
            return await self._call_results(handles)

    async def _call_results(
        self, handles: list[TaskHandle[Any]]
    ) -> tuple[list[Any], Exception | None]:
        table = self._table
        try:
            table.begin_call(handles)
            values, failure, culprits = await self._values_of(handles)
        except anyio.get_cancelled_exc_class():
            last_holders = [h for h in handles if table.end_call(h)]
            if last_holders:  # the last holders of these keys: cancel them
                with anyio.CancelScope(shield=True):
                    await table.abandon(last_holders, CancelReason.SCOPE)
            raise
        except Exception:
            table.observed_by_call(handles)
            raise
        finally:
            for handle in handles:
                if table.in_call(handle):  # not let go of yet
                    sole = table.end_call(handle)
                    if table.release(handle) and sole:
                        table.confirm_later(state_of(handle).future.key)
        if failure is not None:  # (only the one told: the others' failures are still due)
            table.observed_by_call([h for h in handles if h.key in culprits])
        return values, failure

    async def _values_of(
        self, handles: list[TaskHandle[Any]]
    ) -> tuple[list[Any], Exception | None, set[str]]:
        """Wait for ``handles`` and fetch their values, as :meth:`value_of` does for one:
        also the keys of the tasks whose failure is returned."""
        if len(handles) == 1:  # run(): the round trip that counts
            value, failure = await self.value_of(handles[0], paced=True)
            return [value], failure, {handles[0].key}
        culprits, failure = await self.wait_all(handles, stop_at_failure=True)
        if failure is not None:
            return [], failure, culprits
        values, failure = await self.gathered(handles)
        return values, failure, {h.key for h in handles}
