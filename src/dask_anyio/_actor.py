"""anyio front end: :class:`Actor`, a stateful object on one worker, made by
:meth:`DaskExecutor.actor` and owned by the executor's scope like a task."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, Concatenate, Generic, ParamSpec, TypeVar, overload

import anyio
import anyio.lowlevel

from . import _work
from ._errors import CancelReason
from ._handle import TaskHandle
from ._remote import new_actor

if TYPE_CHECKING:
    from ._scope import ExecutorScope

__all__ = ["Actor", "make_actor"]

T = TypeVar("T")
R = TypeVar("R")
P = ParamSpec("P")

_MISSING = object()


async def make_actor(
    scope: ExecutorScope, cls: type[T], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Actor[T]:
    """``cls(*args, **kwargs)`` as an actor on a worker, once it exists there. Checkpoint; a
    cancelled call cancels the task that makes it, or releases the actor it made, and
    returns once the scheduler forgot it."""
    if not isinstance(cls, type):
        raise TypeError(
            f"actor() needs a class, not {cls!r}: an actor is an instance of a class, kept "
            "on a worker; for a function, use run() or submit()"
        )
    scope.gate.check_open()
    await anyio.lowlevel.checkpoint_if_cancelled()
    options = {"actor": True, "pure": False, "key": f"{cls.__name__}-{uuid.uuid4().hex}"}
    handle = _work.submit(scope, new_actor, (cls, args, kwargs), {}, options)
    try:
        await handle
        future = scope.table.future_of(handle)
        address = await scope.runner.run(scope.core.actors.address, future)
    except BaseException:  # made or not, the actor goes: cancelled, or released if made
        with anyio.CancelScope(shield=True):
            await scope.table.abandon([handle], CancelReason.SCOPE)
        raise
    return Actor(scope, handle, cls, address)


class Actor(Generic[T]):
    """An instance of a class that lives on one worker of the cluster, its state with it.

    Made by :meth:`DaskExecutor.actor`; not created directly. ``await actor.method(*args)``
    calls a method there and returns its value (a coroutine method is awaited there);
    ``await actor.attribute`` reads an attribute; :meth:`call` does the first with the
    method's types seen by a type checker. Each is a checkpoint. A method's exception is
    raised here with its remote traceback. A cancelled call stops waiting at once; the
    method, if it had started, runs to its end on the worker (Dask cannot stop it), and
    the actor serves the next call. The worker runs one method of an actor at a time
    (coroutine methods interleave at their awaits).

    The actor belongs to the executor's scope, as a task does: the executor's exit releases
    it, and the worker drops it. Its :attr:`handle`, passed as an argument to a task,
    reaches the task as Dask's own proxy of the actor.
    """

    def __init__(self, scope: ExecutorScope, handle: TaskHandle[Any], cls: type[T], address: str):
        self._scope = scope
        self._handle = handle
        self._cls = cls
        self._address = address

    @property
    def handle(self) -> TaskHandle[Any]:
        """The handle of the task that made the actor (its key is the actor's)."""
        return self._handle

    @property
    def worker(self) -> str:
        """The address of the worker that holds the actor."""
        return self._address

    @overload
    async def call(
        self,
        method: Callable[Concatenate[T, P], Awaitable[R]],
        /,
        *args: P.args,
        **kwargs: P.kwargs,
    ) -> R: ...
    @overload
    async def call(
        self, method: Callable[Concatenate[T, P], R], /, *args: P.args, **kwargs: P.kwargs
    ) -> R: ...
    async def call(self, method: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Any:
        """Call ``method`` (a method of the actor's class: ``Counter.add``) on the actor:
        ``await actor.call(Counter.add, 2)`` is ``await actor.add(2)``, typed.

        :raises ValueError: if ``method`` is not one of the class's methods.
        """
        name = getattr(method, "__name__", None)
        if name is None or getattr(self._cls, name, None) is not method:
            raise ValueError(
                f"call() takes a method of {self._cls.__name__} (such as "
                f"{self._cls.__name__}.method), not {method!r}"
            )
        return await self._call(name, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        if callable(getattr(self._cls, name, _MISSING)):
            return functools.partial(self._call, name)
        return _Attribute(self, name)

    async def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        scope = self._scope
        scope.gate.check_open()
        args, kwargs = scope.table.unwrap(args), scope.table.unwrap(kwargs)
        await anyio.lowlevel.checkpoint_if_cancelled()
        actors = scope.core.actors
        return await scope.runner.run(
            actors.call, self._handle.key, self._address, name, args, kwargs
        )

    async def _read(self, name: str) -> Any:
        scope = self._scope
        scope.gate.check_open()
        await anyio.lowlevel.checkpoint_if_cancelled()
        actors = scope.core.actors
        return await scope.runner.run(actors.attribute, self._handle.key, self._address, name)

    def __reduce__(self) -> tuple[Any, ...]:
        raise TypeError(
            f"{self!r} is not sent to tasks: pass its handle (`actor.handle`), which reaches "
            "the task as Dask's own proxy of the actor"
        )

    def __repr__(self) -> str:
        return f"<Actor {self._cls.__name__} {self._handle.key!r} on {self._address}>"


class _Attribute:
    """``actor.name`` for an attribute: awaiting it reads the value on the worker."""

    __slots__ = ("_actor", "_name")

    def __init__(self, actor: Actor[Any], name: str) -> None:
        self._actor = actor
        self._name = name

    def __await__(self) -> Generator[Any, None, Any]:
        return self._actor._read(self._name).__await__()

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        raise TypeError(
            f"{self._name!r} is not a method of {self._actor._cls.__name__}: read it with "
            f"`await actor.{self._name}`"
        )
