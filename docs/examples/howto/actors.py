"""Keep state on a worker: an actor holds a model that is slow to load, loaded once, and
serves every call; tasks reach it through its handle."""

from __future__ import annotations

from typing import Any

import anyio

from dask_anyio import DaskExecutor


class Model:
    """Stands for something slow to load (weights, an index) that many calls share."""

    def __init__(self, scale: int) -> None:
        self.scale = scale  # (load the weights here, once)
        self.calls = 0

    def predict(self, x: int) -> int:
        self.calls += 1
        return self.scale * x

    async def predict_later(self, x: int) -> int:  # a coroutine method runs on the worker's loop
        return self.predict(x)


def score(model: Any, x: int) -> int:
    """A task that uses the actor: it gets Dask's own proxy of it."""
    prediction: int = model.predict(x).result()
    return prediction + 1


async def main() -> None:
    async with DaskExecutor() as ex:
        model = await ex.actor(Model, 10)  # made on a worker; it stays there
        direct = [await model.predict(x) for x in range(3)]
        typed = await model.call(Model.predict_later, 3)  # a type checker sees int
        from_tasks = [await ex.run(score, model.handle, x) for x in range(2)]
        print(direct, typed, from_tasks, "calls:", await model.calls)
    # The exit released the actor: the worker dropped it.


if __name__ == "__main__":
    anyio.run(main)  # or anyio.run(main, backend="trio")
