"""A progress bar over tasks as they complete, failed ones included."""

import anyio
from tqdm import tqdm

from dask_anyio import DaskExecutor


def work(x: int) -> int:
    return x * x


async def main() -> None:
    async with DaskExecutor() as ex:
        handles = ex.map(work, range(100))
        # On stderr; disable=None hides the bar when stderr is not a terminal (CI logs).
        with tqdm(total=len(handles), unit="task", disable=None) as bar:
            async for _handle in ex.as_completed(handles):  # in completion order
                bar.update()  # a quick plain call: fine on either event loop
        print(sum(await ex.gather(handles)))


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
