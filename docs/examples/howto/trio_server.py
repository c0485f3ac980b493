"""A trio (or asyncio) TCP server that offloads each request to Dask.

A client sends a number and a newline; the server answers with the number of primes below
it. If the client disconnects before the answer, its remote task is cancelled. Try it with
`nc 127.0.0.1 8000` and a typed number (not piped: the end of piped input reads as a
disconnect).
"""

import contextlib
import functools

import anyio
from anyio import TASK_STATUS_IGNORED
from anyio.abc import SocketAttribute, SocketStream, TaskStatus
from anyio.streams.buffered import BufferedByteReceiveStream

from dask_anyio import DaskExecutor, checkpoint

#: The largest request.
LARGEST = 10_000_000


def count_primes(stop: int) -> int:
    count = 0
    for n in range(2, stop):
        checkpoint()  # stops here once the task is cancelled (its client left)
        count += all(n % d for d in range(2, int(n**0.5) + 1))
    return count


async def cancel_on_disconnect(stream: SocketStream, scope: anyio.CancelScope) -> None:
    """Cancel ``scope`` once the client closes its side or goes away."""
    try:
        while await stream.receive():
            pass  # more bytes while we work: ignored
    except (anyio.EndOfStream, anyio.BrokenResourceError):
        scope.cancel()


async def handle(ex: DaskExecutor, stream: SocketStream) -> None:
    # An exception escaping a handler would stop listener.serve(), and the whole server
    # with it: every way a connection can fail ends here, with that connection.
    failures = (anyio.EndOfStream, anyio.IncompleteRead, anyio.DelimiterNotFound)
    with contextlib.suppress(*failures, anyio.BrokenResourceError, TimeoutError):
        async with stream:
            with anyio.fail_after(10):  # an idle client does not hold its task forever
                line = await BufferedByteReceiveStream(stream).receive_until(b"\n", 20)
            try:
                stop = int(line)
            except ValueError:
                stop = -1
            if not 0 <= stop <= LARGEST:
                await stream.send(b"error: send a number from 0 to %d\n" % LARGEST)
                return
            with anyio.CancelScope() as request_scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(cancel_on_disconnect, stream, request_scope)
                    count = await ex.run(count_primes, stop)  # cancelled, remotely too,
                    tg.cancel_scope.cancel()  # if the client leaves; else stop watching
                await stream.send(b"%d\n" % count)


async def main(port: int = 8000, *, task_status: TaskStatus[int] = TASK_STATUS_IGNORED) -> None:
    async with (
        DaskExecutor() as ex,
        await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=port) as listener,
    ):
        task_status.started(listener.extra(SocketAttribute.local_port))  # port=0: a free one
        await listener.serve(functools.partial(handle, ex))  # one task per connection


if __name__ == "__main__":
    anyio.run(main, backend="trio")
