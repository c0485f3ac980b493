# A notebook under `%autoawait trio`, one cell after each "# %%". IPython then runs every
# cell in a trio.run of its own: an executor lives within one cell.

# %%
from IPython import get_ipython

get_ipython().run_line_magic("autoawait", "trio")  # the same as the cell `%autoawait trio`

# %%
import anyio

from dask_anyio import DaskExecutor


def square(x: int) -> int:
    return x * x


async with DaskExecutor(n_workers=2, threads_per_worker=1) as ex:
    with anyio.move_on_after(30):  # trio's rules hold inside the cell
        print(await ex.run(square, 4))
    print(sum(await ex.gather(ex.map(square, range(10)))))

# %%
# open() works too, but its scope ends with this cell's trio.run: the executor is closed
# then, its cluster with it.
kept = await DaskExecutor(n_workers=1, threads_per_worker=1).open()
print(await kept.run(square, 5))

# %% raises-exception
await kept.run(square, 6)  # RuntimeError: ... closed when the run ... ended
