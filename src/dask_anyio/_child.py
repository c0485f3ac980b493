"""The child process of a :func:`dask_anyio.kill_on_cancel` call, run by its path (``python
.../_child.py FD``: importing the package would cost half a second). It reads the call from
stdin (``sys.path`` first, then the function and its arguments, each pickled in a
length-prefixed frame), runs it, and writes the outcome to file descriptor ``FD``, framed
alike: ``("ok", value)`` or ``("error", exception)``, the exception with its traceback (and those of
its causes), pickled by tblib as Dask does. A coroutine function's coroutine is run with
:func:`asyncio.run`.

The rest of stdin is the child's lifeline: the worker closes it once the call is over, or by
dying, and the child then kills its own process group. The call itself gets an empty stdin.

Only what a call needs is imported: :mod:`pickle` loads cloudpickle by itself if the call
was pickled by value, and cloudpickle and tblib are imported only to send back what
:mod:`pickle` cannot.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
import types
from typing import Any, BinaryIO

__all__ = ["HEADER_SIZE", "complete", "header", "main", "read_frame"]

_LENGTH = struct.Struct("!Q")


def read_frame(stream: BinaryIO) -> bytes:
    header = stream.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("the worker closed the pipe")
    (size,) = _LENGTH.unpack(header)
    data = stream.read(size)
    if len(data) < size:
        raise EOFError("the worker closed the pipe")
    return data


HEADER_SIZE = _LENGTH.size


def header(data: bytes) -> bytes:
    """What precedes ``data`` in its frame."""
    return _LENGTH.pack(len(data))


def complete(data: bytes) -> bool:
    """Whether ``data`` is one whole frame (the outcome of a child that was not cut short)."""
    return len(data) >= HEADER_SIZE and _LENGTH.unpack_from(data)[0] == len(data) - HEADER_SIZE


def _lifeline(fd: int) -> None:
    """Wait until the worker closes its end of the pipe ``fd`` (it does so once the call is
    over, or by dying), then kill this process's group: nothing of the call outlives it."""
    while os.read(fd, 1 << 16):
        pass
    import signal

    os.killpg(0, signal.SIGKILL)


def _dumps(outcome: tuple[str, Any]) -> bytes:
    try:
        return pickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:
        import cloudpickle  # (a lambda, a class defined in the function...)

        data: bytes = cloudpickle.dumps(outcome, protocol=pickle.HIGHEST_PROTOCOL)
        return data


def main() -> None:
    result_fd = int(sys.argv[1])
    os.set_inheritable(result_fd, False)  # (a process the call starts must not hold it open)
    stdin = sys.stdin.buffer
    sys.path[:] = pickle.loads(read_frame(stdin))  # before the function's modules load
    fn, args, kwargs = pickle.loads(read_frame(stdin))
    # The rest of stdin is the lifeline; the call gets an empty stdin, as a task has.
    lifeline = os.dup(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    import threading

    threading.Thread(target=_lifeline, args=(lifeline,), daemon=True).start()
    outcome: tuple[str, Any]
    try:
        value = fn(*args, **kwargs)
        if isinstance(value, types.CoroutineType):
            import asyncio

            value = asyncio.run(value)
        outcome = ("ok", value)
    except BaseException as error:  # reported to the worker, as Dask does
        import tblib.pickling_support

        tblib.pickling_support.install(error)  # its traceback travels with it
        outcome = ("error", error)
    try:
        data = _dumps(outcome)
    except Exception as error:  # an unpicklable value or exception
        data = _dumps(("error", TypeError(f"cannot send the outcome back: {error}")))
    with os.fdopen(result_fd, "wb") as out:
        out.write(header(data))
        out.write(data)


if __name__ == "__main__":
    main()
