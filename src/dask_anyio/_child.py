"""The child process of a :func:`dask_anyio.kill_on_cancel` call: ``python -m
dask_anyio._child FD``. It reads the call from stdin (``sys.path`` first, pickled, then the
function and its arguments, cloudpickled, each as a length-prefixed frame), runs it, and
writes the outcome to file descriptor ``FD``: ``("ok", value)`` or ``("error", exception)``.
"""

from __future__ import annotations

import os
import pickle
import struct
import sys
from typing import Any, BinaryIO

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


def frame(data: bytes) -> bytes:
    return _LENGTH.pack(len(data)) + data


def main() -> None:
    result_fd = int(sys.argv[1])
    stdin = sys.stdin.buffer
    sys.path[:] = pickle.loads(read_frame(stdin))  # before the function's modules load
    import cloudpickle

    fn, args, kwargs = cloudpickle.loads(read_frame(stdin))
    outcome: tuple[str, Any]
    try:
        outcome = ("ok", fn(*args, **kwargs))
    except BaseException as error:  # reported to the worker, as Dask does
        outcome = ("error", error)
    try:
        data = cloudpickle.dumps(outcome)
    except Exception as error:  # an unpicklable value or exception
        data = cloudpickle.dumps(("error", TypeError(f"cannot send the outcome back: {error}")))
    with os.fdopen(result_fd, "wb") as out:
        out.write(data)


if __name__ == "__main__":
    main()
