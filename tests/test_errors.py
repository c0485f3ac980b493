"""Remote failures arrive with their own type, message and remote traceback."""

from __future__ import annotations

import traceback

import pytest

from dask_anyio import DaskExecutor

from .conftest import ExternalCluster
from .tasks import RemoteOnlyError, raise_remote_only

pytestmark = pytest.mark.anyio


def remote_frames(exc: BaseException) -> list[str]:
    return [
        f.name for f in traceback.extract_tb(exc.__traceback__) if f.filename.endswith("tasks.py")
    ]


async def test_remote_exception_through_await_retrieve_and_run(
    ex: DaskExecutor,
) -> None:
    """await handle, retrieve() and run() raise the original type with the remote frame."""
    handle = ex.submit(raise_remote_only, "boom 1")
    with pytest.raises(RemoteOnlyError, match=r"^boom 1$") as excinfo:
        await handle
    assert "raise_remote_only" in remote_frames(excinfo.value)
    with pytest.raises(RemoteOnlyError, match=r"^boom 1$") as excinfo:
        await ex.retrieve(handle)
    assert "raise_remote_only" in remote_frames(excinfo.value)
    with pytest.raises(RemoteOnlyError, match=r"^boom 2$") as excinfo:
        await ex.run(raise_remote_only, "boom 2")
    assert "raise_remote_only" in remote_frames(excinfo.value)
    assert not isinstance(excinfo.value, BaseExceptionGroup)


async def test_dependent_of_failed_task_fails_with_its_error(
    external_cluster: ExternalCluster,
) -> None:
    """A task whose input failed raises the input's exception."""
    from .tasks import inc

    async with DaskExecutor(external_cluster.address) as ex:
        failed = ex.submit(raise_remote_only, "upstream")
        with pytest.raises(RemoteOnlyError, match="upstream"):
            await ex.retrieve(ex.submit(inc, failed))
        with pytest.raises(RemoteOnlyError):
            await failed


async def test_remote_base_exceptions_are_not_mistaken_for_local_ones(
    external_cluster: ExternalCluster,
) -> None:
    """A task's BaseException (CancelledError included) arrives wrapped, never bare."""
    from dask_anyio import TaskCancelled

    from .tasks import RemoteBaseError, cancel_itself, raise_base_exception

    async with DaskExecutor(external_cluster.address) as ex:
        with pytest.raises(RuntimeError, match="not an Exception") as excinfo:
            await ex.run(raise_base_exception)
        assert isinstance(excinfo.value.__cause__, RemoteBaseError)
        with pytest.raises(TaskCancelled, match="CancelledError"):
            await ex.run(cancel_itself)
        assert await ex.run(int, "7") == 7  # and the caller was not cancelled
