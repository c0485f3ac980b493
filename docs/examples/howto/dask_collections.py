"""Dask collections: compute them, or persist them on the cluster for later."""

import anyio
import anyio.to_thread
import dask
import dask.array as da

from dask_anyio import DaskExecutor


@dask.delayed
def load(part: int) -> list[int]:
    return list(range(part * 1_000, (part + 1) * 1_000))


@dask.delayed
def total(parts: list[list[int]]) -> int:
    return sum(sum(part) for part in parts)


def library_code(y: da.Array) -> float:
    # Code that calls Dask's blocking API itself (xarray, say): run it in a worker thread.
    return float(y.max().compute())


async def main() -> None:
    async with DaskExecutor() as ex:
        # Any Dask collection: the graph is built and optimised in a worker thread, so the
        # event loop never waits for it. Cancelling compute() cancels its tasks.
        print(await ex.compute(total([load(i) for i in range(10)])))

        x = da.random.default_rng(42).random((2_000, 2_000), chunks=(500, 500))
        # persist(): the collection, backed by tasks on the cluster that the executor owns
        # (their keys are released at its exit). Compute from it as often as needed.
        y = await ex.persist(x + x.T)
        # Several collections: one graph, a tuple back, as dask.compute(a, b) does.
        mean, std = await ex.compute(y.mean(), y.std())
        print(f"mean {mean:.3f}, std {std:.3f}")

        # A handle stands for its task's value in any graph, as a Dask future does.
        part = ex.submit(list, range(10))
        print(await ex.compute(total([part, load(0)])))

        # In the executor's scope, Dask's own blocking API finds the executor's client.
        print(f"max {await anyio.to_thread.run_sync(library_code, y):.3f}")


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
