"""The backends of one module, asyncio with uvloop among them (`pip install uvloop`): its own
`anyio_backend` fixture (in a conftest, it would name them for every module below)."""

import pytest
from mycode import best_word

from dask_anyio import DaskExecutor

BACKENDS = ["asyncio", ("asyncio", {"use_uvloop": True}), "trio"]


@pytest.fixture(params=BACKENDS, ids=["asyncio", "uvloop", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> object:
    return request.param


@pytest.mark.anyio
async def test_best_word_of_one(dask_executor: DaskExecutor) -> None:
    assert await best_word(dask_executor, ["dask"]) == "dask"
