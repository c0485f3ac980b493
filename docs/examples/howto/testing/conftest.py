"""Fixtures: both event loops, and one cluster for the whole test session."""

from collections.abc import Iterator

import pytest
from distributed import LocalCluster


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    """Every test marked `anyio` runs on asyncio and on trio."""
    return str(request.param)


@pytest.fixture(scope="session")
def dask_address() -> Iterator[str]:
    """A cluster shared by the tests: starting one per test takes seconds."""
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=2, host="127.0.0.1", dashboard_address="127.0.0.1:0"
    )
    with cluster:
        yield cluster.scheduler_address
