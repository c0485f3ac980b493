# A notebook under IPython's default autoawait (asyncio), one cell after each "# %%".
# Every cell runs as a task of its own, so no `async with` block spans cells: open() holds
# the executor's scope in a task of its own until aclose().

# %%
from dask_anyio import DaskExecutor

ex = await DaskExecutor(n_workers=2, threads_per_worker=1).open()
ex  # Jupyter shows the scheduler, the dashboard link, the workers and the tasks


# %%
def square(x: int) -> int:  # defined in the notebook: Dask sends it to the workers
    return x * x


await ex.run(square, 4)

# %%
handles = ex.map(square, range(10))  # they belong to the executor, across cells
sum(await ex.gather(handles))

# %%
slow = ex.submit(square, 3, resources={"GPU": 1})  # no worker has a GPU: it waits
slow.cancel()  # a plain call; await slow would raise TaskCancelled
ex.statistics()

# %%
await ex.aclose()  # as leaving `async with`: waits, releases every key, closes the cluster
ex
