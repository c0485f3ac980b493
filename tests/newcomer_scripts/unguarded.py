"""A newcomer's script: it starts the embedded LocalCluster without the main guard.

``python unguarded.py BACKEND`` (asyncio, asyncio+uvloop or trio): its worker processes
re-run the script, and fail.
"""

import sys

import anyio

from dask_anyio import DaskExecutor


async def main() -> None:
    async with DaskExecutor(n_workers=1, threads_per_worker=1) as ex:
        print(await ex.run(sum, [1, 2]))


backend, _, loop = sys.argv[1].partition("+")
anyio.run(main, backend=backend, backend_options={"use_uvloop": True} if loop else {})
