"""Remote failures in task groups, with their own attributes and chains, and a killed worker."""

from __future__ import annotations

import operator
import traceback
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
import dask
import distributed
import pytest

from dask_anyio import DaskExecutor

from . import error_tasks
from .conftest import ExternalCluster
from .error_tasks import (
    CodeError,
    LedgerError,
    exit_worker_process,
    fail_from_cause,
    fail_while_handling,
    fail_with_code,
    fail_with_ledger_error,
    fail_with_lookup_error,
    fail_with_value_error,
)
from .tasks import worker_pid

pytestmark = pytest.mark.anyio

#: The three failing tasks of the task-group tests: function, argument, expected type.
FAILURES: list[tuple[Callable[[str], Any], str, type[Exception]]] = [
    (fail_with_value_error, "first failure", ValueError),
    (fail_with_lookup_error, "second failure", LookupError),
    (fail_with_ledger_error, "third failure", LedgerError),
]


def error_task_frames(exc: BaseException) -> list[str]:
    """Names of the frames of ``exc``'s traceback that are in tests/error_tasks.py."""
    return [
        frame.name
        for frame in traceback.extract_tb(exc.__traceback__)
        if frame.filename.endswith(("tests/error_tasks.py", "tests\\error_tasks.py"))
    ]


def is_from(function: Callable[..., Any], kind: type[Exception]) -> Callable[[BaseException], bool]:
    """Whether an exception is exactly ``kind`` (not a subclass or a wrapper) and its
    traceback holds the frame of ``function``, in tests/error_tasks.py."""
    assert function.__module__ == error_tasks.__name__
    return lambda exc: type(exc) is kind and function.__name__ in error_task_frames(exc)


async def fail_together(calls: list[Callable[[], Awaitable[object]]]) -> None:
    """Run ``calls`` in one task group, each expected to fail; none leaves its task before
    all have finished, so the group's cancellation cannot pre-empt the slower ones.

    (Without this, the first failure cancels its siblings, and how many failures the group
    gathers depends on when the cluster's replies arrive.)"""
    finished = 0
    all_finished = anyio.Event()

    async def call_and_wait(call: Callable[[], Awaitable[object]]) -> None:
        nonlocal finished
        try:
            await call()
            raise AssertionError(f"{call} did not fail")
        finally:
            finished += 1
            if finished == len(calls):
                all_finished.set()
            with anyio.CancelScope(shield=True):
                await all_finished.wait()

    async with anyio.create_task_group() as tg:
        for call in calls:
            tg.start_soon(call_and_wait, call)


async def wait_for(awaitable: Awaitable[object]) -> None:
    await awaitable


def expected_group() -> pytest.RaisesGroup[Exception]:
    """The ExceptionGroup of FAILURES: each member its own type, message and remote frame."""
    return pytest.RaisesGroup(
        *(
            pytest.RaisesExc(kind, match=f"^{message}$", check=is_from(function, kind))
            for function, message, kind in FAILURES
        )
    )


def assert_distinct(group: BaseExceptionGroup[Any]) -> None:
    assert len({id(exc) for exc in group.exceptions}) == len(FAILURES)


async def test_failures_of_run_in_one_task_group(ex: DaskExecutor) -> None:
    """Failed run() calls in one task group give one ExceptionGroup member each, with its
    own type, message and remote frame."""
    with expected_group() as excinfo:
        await fail_together([partial(ex.run, fn, message) for fn, message, _ in FAILURES])
    assert_distinct(excinfo.value)


async def test_failures_of_handles_in_one_task_group(ex: DaskExecutor) -> None:
    """Failed handles awaited, then retrieved, in one task group give one ExceptionGroup
    member each, with its own type, message and remote frame."""
    handles = [ex.submit(fn, message) for fn, message, _ in FAILURES]
    with expected_group() as excinfo:
        await fail_together([partial(wait_for, handle) for handle in handles])
    assert_distinct(excinfo.value)
    with expected_group() as excinfo:
        await fail_together([partial(ex.retrieve, handle) for handle in handles])
    assert_distinct(excinfo.value)


async def test_custom_exception_keeps_its_attributes(ex: DaskExecutor) -> None:
    """An exception with its own __init__ signature and attributes arrives with them."""
    with pytest.raises(CodeError, match=r"^error 404: no such account$") as excinfo:
        await ex.run(fail_with_code, 404, "no such account")
    assert type(excinfo.value) is CodeError
    assert (excinfo.value.code, excinfo.value.detail) == (404, "no such account")
    assert excinfo.value.args == ("error 404: no such account",)
    assert "fail_with_code" in error_task_frames(excinfo.value)

    handle = ex.submit(fail_with_code, 409, "conflict")
    for wait in (partial(wait_for, handle), partial(ex.retrieve, handle)):
        with pytest.raises(CodeError, match=r"^error 409: conflict$") as excinfo:
            await wait()
        assert (excinfo.value.code, excinfo.value.detail) == (409, "conflict")


async def test_chained_exceptions_keep_their_chain(ex: DaskExecutor) -> None:
    """`raise X from Y` on the worker keeps Y as __cause__ (with its own remote frame); an
    exception raised while handling another keeps that one as __context__."""
    with pytest.raises(CodeError, match=r"^error 400: bad amount 'ten'$") as excinfo:
        await ex.run(fail_from_cause, "ten")
    error = excinfo.value
    assert "fail_from_cause" in error_task_frames(error)
    assert isinstance(error.__cause__, ValueError)
    assert str(error.__cause__) == "invalid literal for int() with base 10: 'ten'"
    assert error.__suppress_context__ is True
    assert error.__context__ is error.__cause__
    assert error_task_frames(error.__cause__) == ["fail_from_cause", "_parse_amount"]

    handle = ex.submit(fail_while_handling, "eleven")
    with pytest.raises(LedgerError, match=r"^could not book 'eleven'$") as implicit:
        await handle
    assert implicit.value.__cause__ is None
    assert implicit.value.__suppress_context__ is False
    context = implicit.value.__context__
    assert isinstance(context, ValueError)
    assert str(context) == "invalid literal for int() with base 10: 'eleven'"
    assert error_task_frames(context) == ["fail_while_handling", "_parse_amount"]


async def test_killed_worker_passes_through() -> None:
    """A task that kills its worker raises distributed.KilledWorker itself (from run() and
    from its handle), and the executor keeps working once the nanny restarted the worker."""
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        async with DaskExecutor(n_workers=1, threads_per_worker=1) as ex:
            first_pid = await ex.run(worker_pid)
            with pytest.raises(distributed.KilledWorker) as excinfo:
                await ex.run(exit_worker_process)
            assert type(excinfo.value) is distributed.KilledWorker
            assert excinfo.value.allowed_failures == 0
            # The scheduler reports KilledWorker once it removed the dead worker: a new
            # task waits on the scheduler until the nanny's new worker registers.
            assert await ex.run(operator.add, 1, 2) == 3
            second_pid = await ex.run(worker_pid)
            assert second_pid != first_pid

            handle = ex.submit(exit_worker_process)
            for wait in (partial(wait_for, handle), partial(ex.retrieve, handle)):
                with pytest.raises(distributed.KilledWorker) as excinfo:
                    await wait()
                assert type(excinfo.value) is distributed.KilledWorker
                assert excinfo.value.task == handle.key
            assert await ex.run(operator.add, 1, 2) == 3
            assert await ex.run(worker_pid) not in (first_pid, second_pid)


async def test_remote_tracebacks_have_few_frames_of_ours(
    ex: DaskExecutor,
) -> None:
    """Between the caller and the remote code, a failure's traceback shows at most two
    frames of dask-anyio, whichever call raised it (distributed's own bound is three)."""
    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "run": lambda: ex.run(fail_with_value_error, "x"),
        "await": lambda: wait_for(ex.submit(fail_with_value_error, "x")),
        "retrieve": lambda: ex.retrieve(ex.submit(fail_with_value_error, "x")),
        "gather": lambda: ex.gather([ex.submit(fail_with_value_error, "x")]),
        "compute": lambda: ex.compute(dask.delayed(fail_with_value_error)("x")),
    }
    for name, call in calls.items():
        with pytest.raises(ValueError, match=r"^x$") as excinfo:
            await call()
        frames = traceback.extract_tb(excinfo.value.__traceback__)
        first_remote = next(
            i for i, f in enumerate(frames) if f.filename.endswith("error_tasks.py")
        )
        ours = [f.name for f in frames[:first_remote] if "dask_anyio" in f.filename]
        assert len(ours) <= 2, (name, ours)


async def test_a_failure_raised_again_keeps_its_traceback(
    external_cluster: ExternalCluster,
) -> None:
    """Raising a frozen failure again (await handle after the exit) does not pile up frames."""
    with pytest.raises(ExceptionGroup):
        async with DaskExecutor(external_cluster.address) as ex:
            handle = ex.submit(fail_with_value_error, "x")
    lengths = []
    for _ in range(3):
        with pytest.raises(ValueError, match=r"^x$") as excinfo:
            await wait_for(handle)
        lengths.append(len(traceback.extract_tb(excinfo.value.__traceback__)))
    assert lengths[0] == lengths[1] == lengths[2]
