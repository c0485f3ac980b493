"""The command line: `dask anyio demo` and `python -m dask_anyio demo`."""

from __future__ import annotations

import shutil
import sys

import anyio
import pytest

from .conftest import ExternalCluster

pytestmark = pytest.mark.anyio


async def test_demo_against_external_cluster(
    external_cluster: ExternalCluster, anyio_backend_name: str
) -> None:
    """The demo runs the scenario and shows that the scheduler forgot the cancelled task."""
    result = await anyio.run_process(
        [
            sys.executable,
            "-m",
            "dask_anyio",
            "demo",
            "--backend",
            anyio_backend_name,
            "--address",
            external_cluster.address,
            "--delay",
            "0.05",
        ],
    )
    out = result.stdout.decode()
    assert f"dask-anyio demo on {anyio_backend_name}" in out
    assert "retrieve(c) = 7" in out
    assert "run(operator.add, 1, 2) = 3" in out
    assert "cancelled=True" in out
    assert "none, it forgot the task" in out


def test_dask_cli_plugin() -> None:
    """`dask anyio` is registered through Dask's `dask_cli` entry points."""
    import os
    import subprocess

    here = os.path.dirname(sys.executable)  # the environment's scripts, activated or not
    dask = shutil.which("dask", path=here) or shutil.which("dask")
    assert dask, "the dask command is not installed"
    out = subprocess.run(
        [dask, "anyio", "demo", "--help"], capture_output=True, check=True, text=True
    ).stdout
    assert "--backend [asyncio|trio]" in out
    assert "--address ADDR" in out
