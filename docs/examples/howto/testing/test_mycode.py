"""Tests of mycode on every installed event loop (asyncio, and trio when it is installed),
against a real cluster. No conftest: dask-anyio's pytest plugin brings the fixtures."""

import pytest
from mycode import best_word

from dask_anyio import DaskExecutor

pytestmark = pytest.mark.anyio


async def test_best_word(dask_executor: DaskExecutor) -> None:
    assert await best_word(dask_executor, ["dask", "trio", "anyio"]) == "anyio"


async def test_a_task_error_reaches_the_caller(dask_executor: DaskExecutor) -> None:
    with pytest.raises(ValueError, match="empty word"):  # its own type and message
        await best_word(dask_executor, ["dask", ""])
