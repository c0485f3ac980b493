"""See what the cluster did: Dask's performance report of a block, its task stream, and a
progress bar, around code that runs on asyncio or trio alike."""

from __future__ import annotations

import tempfile

import anyio

from dask_anyio import DaskExecutor


def work(x: int) -> int:
    return sum(i * i for i in range(x))


async def main(n: int = 20) -> None:
    report = anyio.Path(tempfile.mkdtemp()) / "dask-report.html"
    async with (
        DaskExecutor() as ex,
        ex.performance_report(str(report)),  # written when the block is left
        ex.task_stream() as ts,  # ts.data: filled when the block is left
    ):
        handles = ex.map(work, range(1000, 1000 + n))
        await ex.progress(handles, description="work")  # a tqdm bar on stderr
        total = sum(await ex.gather(handles))
    workers = {task["worker"] for task in ts.data}  # (where each ran, and when)
    written = (await report.stat()).st_size > 0
    print(f"{len(ts.data)} tasks, total {total}, report {written}; {len(workers)} workers")


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
