"""Tests of mycode, on both event loops, against a real cluster."""

import pytest
from mycode import best_word

from dask_anyio import DaskExecutor

pytestmark = pytest.mark.anyio


async def test_best_word(dask_address: str) -> None:
    async with DaskExecutor(dask_address) as ex:
        assert await best_word(ex, ["dask", "trio", "anyio"]) == "anyio"


async def test_a_task_error_reaches_the_caller(dask_address: str) -> None:
    async with DaskExecutor(dask_address) as ex:
        with pytest.raises(ValueError, match="empty word"):  # its own type and message
            await best_word(ex, ["dask", ""])
