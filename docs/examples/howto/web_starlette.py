"""An asyncio web app (Starlette; FastAPI is built on it) that offloads work to Dask.

One executor for the app's lifetime, opened by its lifespan. Each request's work is a run()
call: it belongs to the request, and if the client disconnects first, the remote task is
cancelled. Serve it with `uvicorn web_starlette:app` (`pip install starlette uvicorn`).
"""

import contextlib
from collections.abc import AsyncIterator

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from dask_anyio import DaskExecutor, checkpoint

#: The largest request.
LARGEST = 10_000_000


def count_primes(stop: int) -> int:
    count = 0
    for n in range(2, stop):
        checkpoint()  # stops here once the task is cancelled (its client left)
        count += all(n % d for d in range(2, int(n**0.5) + 1))
    return count


async def cancel_on_disconnect(request: Request, scope: anyio.CancelScope) -> None:
    """Starlette does not cancel a handler whose client disconnected: wait for the ASGI
    server's ``http.disconnect`` message, then cancel ``scope``."""
    while (await request.receive())["type"] != "http.disconnect":
        pass  # the request's body (a GET has none)
    scope.cancel()


async def primes(request: Request) -> Response:
    ex: DaskExecutor = request.app.state.executor
    try:
        stop = int(request.query_params["below"])
    except (KeyError, ValueError):
        stop = -1
    if not 0 <= stop <= LARGEST:
        return JSONResponse({"error": f"below= needs a number from 0 to {LARGEST}"}, 400)
    with anyio.CancelScope() as request_scope:
        async with anyio.create_task_group() as tg:
            tg.start_soon(cancel_on_disconnect, request, request_scope)
            count = await ex.run(count_primes, stop)  # cancelled, remotely too, if the
            tg.cancel_scope.cancel()  # client leaves; else stop watching
        return JSONResponse({"below": stop, "primes": count})
    return Response(status_code=499)  # the client left: nobody reads this


@contextlib.asynccontextmanager
async def lifespan(app: Starlette) -> AsyncIterator[None]:
    async with DaskExecutor() as ex:  # or DaskExecutor("tcp://scheduler:8786")
        app.state.executor = ex
        yield


app = Starlette(routes=[Route("/primes", primes)], lifespan=lifespan)
