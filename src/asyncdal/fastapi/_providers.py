"""``Depends`` providers: one unit of work per request and database, settled by the middleware.

Each provider opens (or joins) the request's unit of work on a database and registers it with
:class:`~asyncdal.fastapi.TransactionMiddleware`, which commits it before the response starts.

A provider equals any other made with the same arguments, so it is its own stable key in
``app.dependency_overrides``: ``app.dependency_overrides[repository_provider(Products)]``
replaces the one every route declared (``asyncdal.testing.override`` builds such overrides
from fakes, registered so the middleware commits them).
"""

# No ``from __future__ import annotations`` here: FastAPI reads the annotations of a provider's
# ``__call__`` (``request: Request``), and some of its versions cannot resolve string
# annotations of a method on an object.

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal.errors import UnitOfWorkError
from asyncdal.fastapi._lifespan import get_databases
from asyncdal.fastapi._middleware import OPENED_KEY, SCOPE_KEY
from asyncdal.orm._database import Database
from asyncdal.orm._uow import UnitOfWork

__all__ = [
    "RequestUnitOfWork",
    "provided_unit_of_work",
    "read_only_unit_of_work_provider",
    "register_unit_of_work",
    "repository_provider",
    "session_provider",
    "unit_of_work_provider",
]

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class RequestUnitOfWork:
    """What a provider gives a route: a unit of work on ``database``, read-only or not."""

    database: str
    read_only: bool


def provided_unit_of_work(dependency: object) -> RequestUnitOfWork | None:
    """The unit of work ``dependency`` provides, when it is one of asyncdal's providers (so
    that the OpenAPI document can name the answers of the routes that reach a database)."""
    if isinstance(dependency, _Provider):
        return RequestUnitOfWork(dependency.database, dependency.read_only)
    return None


def register_unit_of_work(request: Request, uow: UnitOfWork) -> None:
    """Hand ``uow`` to :class:`~asyncdal.fastapi.TransactionMiddleware`, which commits it
    before the response starts (status below 400) or rolls it back.

    What every provider does once its unit of work is open; a test's stand-in for a provider
    (a ``FakeUnitOfWork``) must do it too, or nothing commits it. Registering one twice, or
    one that joined another, does nothing more.

    Raises:
        UnitOfWorkError: the middleware is not installed (``setup(app)`` was not called).
    """
    units: list[UnitOfWork] | None = request.scope.get(SCOPE_KEY)
    if units is None:
        raise UnitOfWorkError(
            "asyncdal.fastapi.TransactionMiddleware is not installed: call "
            "asyncdal.fastapi.setup(app) so request units of work commit before the response"
        )
    if not uow.joined and uow not in units:
        units.append(uow)


def _request_unit_of_work(
    request: Request, database: str, *, read_only: bool, snapshot: bool = False
) -> UnitOfWork:
    """Open (or join) the request's unit of work on ``database`` and hand it to the
    middleware, which settles it when the response starts and closes it with the request.

    A plain dependency, not a yield one: FastAPI's machinery for those (an exit stack, a
    shielded cancel scope, two context managers) cost the read path about a tenth of its CPU
    (measured, ``make bench``), and the middleware closes the unit of work anyway. Nothing
    here awaits (opening a unit of work does no I/O): the providers call it without a
    coroutine of its own.
    """
    opened: list[UnitOfWork] | None = request.scope.get(OPENED_KEY)
    if opened is None:
        raise UnitOfWorkError(
            "asyncdal.fastapi.TransactionMiddleware is not installed: call "
            "asyncdal.fastapi.setup(app) so request units of work commit before the response"
        )
    db: Database = get_databases(request)[database]
    uow = db.read_only_unit_of_work(snapshot=snapshot) if read_only else db.unit_of_work()
    uow._enter()
    opened.append(uow)
    register_unit_of_work(request, uow)
    return uow


class _Provider:
    """A provider: equal to (and hashed like) any other of its kind with the same arguments."""

    def __init__(self, database: str, *, read_only: bool, snapshot: bool = False) -> None:
        # Databases are looked up case-insensitively; so are providers.
        self.database = database.lower()
        self.read_only = read_only
        self.snapshot = snapshot
        # FastAPI hashes a dependency several times a request (its caches): once here.
        self._hash = hash(self._key())

    def _key(self) -> tuple[object, ...]:
        return (type(self), self.database, self.read_only, self.snapshot)

    def __eq__(self, other: object) -> bool:
        return other is self or (isinstance(other, _Provider) and other._key() == self._key())

    def __hash__(self) -> int:
        return self._hash

    def __repr__(self) -> str:
        return f"<{type(self).__name__.lstrip('_')} {self._key()[1:]!r}>"


class _UnitOfWorkProvider(_Provider):
    async def __call__(self, request: Request) -> UnitOfWork:
        return _request_unit_of_work(
            request, self.database, read_only=self.read_only, snapshot=self.snapshot
        )


class _SessionProvider(_Provider):
    async def __call__(self, request: Request) -> AsyncSession:
        uow = _request_unit_of_work(request, self.database, read_only=False)
        return uow.session


class _RepositoryProvider(_Provider, Generic[R]):
    def __init__(
        self, repository_class: Callable[[AsyncSession], R], database: str, *, read_only: bool
    ) -> None:
        self.repository_class = repository_class
        super().__init__(database, read_only=read_only)

    def _key(self) -> tuple[object, ...]:
        return (*super()._key(), self.repository_class)

    async def __call__(self, request: Request) -> R:
        uow = _request_unit_of_work(request, self.database, read_only=self.read_only)
        return uow.repository(self.repository_class)


def unit_of_work_provider(
    database: str = "main",
) -> Callable[[Request], Awaitable[UnitOfWork]]:
    """A dependency giving the request's read-write unit of work on ``database``.

    It is committed before the response when the status is below 400, else rolled back.
    """
    return _UnitOfWorkProvider(database, read_only=False)


def read_only_unit_of_work_provider(
    database: str = "main", *, snapshot: bool = False
) -> Callable[[Request], Awaitable[UnitOfWork]]:
    """A dependency giving a read-only unit of work (see ``Database.read_only_unit_of_work``)."""
    return _UnitOfWorkProvider(database, read_only=True, snapshot=snapshot)


def session_provider(database: str = "main") -> Callable[[Request], Awaitable[AsyncSession]]:
    """A dependency giving the ``AsyncSession`` of the request's unit of work on ``database``."""
    return _SessionProvider(database, read_only=False)


def repository_provider(
    repository_class: Callable[[AsyncSession], R],
    *,
    database: str = "main",
    read_only: bool = False,
) -> Callable[[Request], Awaitable[R]]:
    """A dependency giving a repository bound to the request's unit of work.

    Args:
        repository_class: the :class:`~asyncdal.repository.Repository` subclass.
        database: the named database.
        read_only: use a read-only unit of work (for endpoints that only read).

    Example:
        ``repository_provider(ProductRepository) == repository_provider(ProductRepository)``,
        so a test replaces what every route declared with
        ``app.dependency_overrides[repository_provider(ProductRepository)] = ...``.
    """
    return _RepositoryProvider(repository_class, database, read_only=read_only)
