"""Handler registration, and what each handler asks for (read from its signature).

A handler takes the event's payload (a ``dict``) or, when its first parameter is annotated
``OutboxEvent`` (or named ``event``), the whole :class:`~asyncdal.outbox._event.OutboxEvent`.
It may also ask for database access with a second parameter:

- annotated ``UnitOfWork`` (or named ``uow``): the worker opens a unit of work on the
  handlers' own pool, passes it, and commits it when the handler returns (an exception rolls
  it back). Up to ``transaction_size`` such events share one transaction, which also marks them
  done: their writes and their completion commit together; a handler that fails (or ends the
  transaction itself) rolls it back, and each of its events runs again alone, in a
  transaction of its own;
- annotated ``Database`` (or named ``database`` / ``db``): a factory of units of work and
  repositories on that pool; the handler opens and commits its own.

The worker's claim/settle connection is never handed to a handler. Sync handlers run in a
thread pool; they cannot ask for database access (asyncdal is async).

Example:
    >>> handlers = Handlers()
    >>> @handlers.on("product.created")
    ... async def announce(payload: dict[str, Any]) -> None: ...
    >>> @handlers.on("product.deleted")
    ... async def forget(event: OutboxEvent, uow: UnitOfWork) -> None:
    ...     await uow.session.execute(delete(Cache).where(Cache.product_id == event.key))
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from asyncdal.orm._database import Database
from asyncdal.orm._uow import UnitOfWork
from asyncdal.outbox._event import OutboxEvent

__all__ = ["ANY_EVENT", "HandlerSpec", "Handlers"]

ANY_EVENT = "*"
"""Register under this type to receive every event no other handler takes (e.g. a relay)."""

F = TypeVar("F", bound=Callable[..., Any])
DatabaseAccess = Literal["uow", "database"]


@dataclass(frozen=True, slots=True)
class HandlerSpec:
    """A registered handler and what it asks for.

    Attributes:
        event_type: the type it handles (or ``*``).
        function: the callable.
        name: a readable name (module and qualified name), also the default inbox consumer.
        wants_event: pass the :class:`OutboxEvent` (else the payload).
        is_async: a coroutine function (else it runs in a thread pool).
        access: ``uow``, ``database`` or None.
        access_parameter: the keyword the access is passed as.
    """

    event_type: str
    function: Callable[..., Any]
    name: str
    wants_event: bool
    is_async: bool
    access: DatabaseAccess | None
    access_parameter: str | None


def _name(function: Callable[..., Any]) -> str:
    qualified = getattr(function, "__qualname__", None) or type(function).__qualname__
    module = getattr(function, "__module__", None) or type(function).__module__
    return f"{module}.{qualified}"


def _is_async(function: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004 - async __call__ of an object
    return call is not None and inspect.iscoroutinefunction(call)


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    target: Any = function
    if not (inspect.isfunction(function) or inspect.ismethod(function)):
        target = getattr(function, "__call__", function)  # noqa: B004
    try:
        return typing.get_type_hints(target)
    except (NameError, TypeError):
        # Annotations that cannot be resolved here: fall back to parameter names.
        return {}


def inspect_handler(event_type: str, function: Callable[..., Any]) -> HandlerSpec:
    """Read what ``function`` asks for from its signature.

    Raises:
        TypeError: it takes no parameter, more than one extra parameter, an extra parameter
            that is neither database access nor optional, or database access in a sync
            handler.
    """
    name = _name(function)
    try:
        parameters = list(inspect.signature(function).parameters.values())
    except (TypeError, ValueError) as error:
        raise TypeError(f"handler {name} for {event_type!r}: no readable signature") from error
    positional = [
        p for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD, p.KEYWORD_ONLY)
    ]
    if not positional:
        raise TypeError(
            f"handler {name} for {event_type!r} must take the payload or the event as its "
            "first parameter"
        )
    hints = _hints(function)
    first = positional[0]
    wants_event = hints.get(first.name) is OutboxEvent or first.name == "event"
    access: DatabaseAccess | None = None
    access_parameter: str | None = None
    for parameter in parameters[parameters.index(first) + 1 :]:
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        hint = hints.get(parameter.name)
        if hint is UnitOfWork or (hint is None and parameter.name == "uow"):
            kind: DatabaseAccess | None = "uow"
        elif hint is Database or (hint is None and parameter.name in {"database", "db"}):
            kind = "database"
        else:
            kind = None
        if kind is None:
            if parameter.default is parameter.empty:
                raise TypeError(
                    f"handler {name} for {event_type!r}: parameter {parameter.name!r} is "
                    "neither database access (annotate it UnitOfWork or Database) nor optional"
                )
            continue
        if access is not None:
            raise TypeError(f"handler {name} for {event_type!r} asks for database access twice")
        access, access_parameter = kind, parameter.name
    is_async = _is_async(function)
    if access is not None and not is_async:
        raise TypeError(
            f"handler {name} for {event_type!r} is synchronous but asks for database access; "
            "make it 'async def'"
        )
    return HandlerSpec(event_type, function, name, wants_event, is_async, access, access_parameter)


class Handlers(Mapping[str, HandlerSpec]):
    """The handlers of a worker, one per event type (``*`` for every other type).

    Args:
        handlers: an initial mapping of event type to handler.
    """

    def __init__(self, handlers: Mapping[str, Callable[..., Any]] | None = None) -> None:
        self._specs: dict[str, HandlerSpec] = {}
        for event_type, function in (handlers or {}).items():
            self.add(event_type, function)

    def add(self, event_type: str, function: Callable[..., Any]) -> HandlerSpec:
        """Register ``function`` for ``event_type``.

        Raises:
            ValueError: a handler is already registered for this type, or the type is empty.
            TypeError: see :func:`inspect_handler`.
        """
        if not event_type:
            raise ValueError("event_type must not be empty")
        if event_type in self._specs:
            raise ValueError(
                f"a handler is already registered for {event_type!r}: "
                f"{self._specs[event_type].name}"
            )
        spec = self._specs[event_type] = inspect_handler(event_type, function)
        return spec

    def on(self, event_type: str) -> Callable[[F], F]:
        """Decorator form of :meth:`add`."""

        def register(function: F) -> F:
            self.add(event_type, function)
            return function

        return register

    def for_type(self, event_type: str) -> HandlerSpec | None:
        """The handler for ``event_type``: its own, else the ``*`` one, else None."""
        return self._specs.get(event_type) or self._specs.get(ANY_EVENT)

    @property
    def event_types(self) -> list[str] | None:
        """The types a worker should claim; None when a ``*`` handler takes every type."""
        if ANY_EVENT in self._specs:
            return None
        return sorted(self._specs)

    @property
    def needs_database(self) -> bool:
        """True when any handler asks for database access."""
        return any(spec.access is not None for spec in self._specs.values())

    async def aclose(self) -> None:
        """Close every handler that has an ``aclose()`` (e.g. a relay's broker connection)."""
        seen: set[int] = set()
        for spec in self._specs.values():
            closer = getattr(spec.function, "aclose", None)
            if closer is not None and id(spec.function) not in seen:
                seen.add(id(spec.function))
                await closer()

    def __getitem__(self, event_type: str) -> HandlerSpec:
        return self._specs[event_type]

    def __iter__(self) -> Iterator[str]:
        return iter(self._specs)

    def __len__(self) -> int:
        return len(self._specs)
