"""``Depends`` providers: one unit of work per request and database, settled by the middleware.

Each provider opens (or joins) the request's unit of work on a database and registers it with
:class:`~asyncdal.fastapi.TransactionMiddleware`, which commits it before the response starts.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TypeVar

from fastapi import Request
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal.errors import UnitOfWorkError
from asyncdal.fastapi._lifespan import get_databases
from asyncdal.fastapi._middleware import SCOPE_KEY
from asyncdal.orm._database import Database
from asyncdal.orm._uow import UnitOfWork

__all__ = [
    "RequestUnitOfWork",
    "provided_unit_of_work",
    "read_only_unit_of_work_provider",
    "repository_provider",
    "session_provider",
    "unit_of_work_provider",
]

R = TypeVar("R")
P = TypeVar("P", bound=Callable[..., object])

# The attribute that marks a provider, so that the OpenAPI document can name the answers of
# the routes that reach a database (see asyncdal.fastapi._openapi).
_MARK = "__asyncdal_unit_of_work__"


@dataclass(frozen=True, slots=True)
class RequestUnitOfWork:
    """What a provider gives a route: a unit of work on ``database``, read-only or not."""

    database: str
    read_only: bool


def _marked(provide: P, database: str, *, read_only: bool) -> P:
    provide.__dict__[_MARK] = RequestUnitOfWork(database, read_only)
    return provide


def provided_unit_of_work(dependency: object) -> RequestUnitOfWork | None:
    """The unit of work ``dependency`` provides, when it is one of asyncdal's providers."""
    mark = getattr(dependency, _MARK, None)
    return mark if isinstance(mark, RequestUnitOfWork) else None


def _register(request: Request, uow: UnitOfWork) -> None:
    units: list[UnitOfWork] | None = request.scope.get(SCOPE_KEY)
    if units is None:
        raise UnitOfWorkError(
            "asyncdal.fastapi.TransactionMiddleware is not installed: call "
            "asyncdal.fastapi.setup(app) so request units of work commit before the response"
        )
    if not uow.joined:
        units.append(uow)


@asynccontextmanager
async def _request_unit_of_work(
    request: Request, database: str, *, read_only: bool, snapshot: bool = False
) -> AsyncIterator[UnitOfWork]:
    db: Database = get_databases(request)[database]
    uow = db.read_only_unit_of_work(snapshot=snapshot) if read_only else db.unit_of_work()
    async with uow:
        _register(request, uow)
        yield uow
        if uow in request.scope[SCOPE_KEY]:
            # Torn down before the response started (``Depends(..., scope="function")``):
            # closing now would roll back work the response is about to report as done.
            raise UnitOfWorkError(
                "a request unit of work was closed before the response started; "
                "asyncdal's providers need the default Depends scope ('request')"
            )


def unit_of_work_provider(
    database: str = "main",
) -> Callable[[Request], AsyncIterator[UnitOfWork]]:
    """A dependency giving the request's read-write unit of work on ``database``.

    It is committed before the response when the status is below 400, else rolled back.
    """

    async def provide(request: Request) -> AsyncIterator[UnitOfWork]:
        async with _request_unit_of_work(request, database, read_only=False) as uow:
            yield uow

    return _marked(provide, database, read_only=False)


def read_only_unit_of_work_provider(
    database: str = "main", *, snapshot: bool = False
) -> Callable[[Request], AsyncIterator[UnitOfWork]]:
    """A dependency giving a read-only unit of work (see ``Database.read_only_unit_of_work``)."""

    async def provide(request: Request) -> AsyncIterator[UnitOfWork]:
        async with _request_unit_of_work(
            request, database, read_only=True, snapshot=snapshot
        ) as uow:
            yield uow

    return _marked(provide, database, read_only=True)


def session_provider(database: str = "main") -> Callable[[Request], AsyncIterator[AsyncSession]]:
    """A dependency giving the ``AsyncSession`` of the request's unit of work on ``database``."""

    async def provide(request: Request) -> AsyncIterator[AsyncSession]:
        async with _request_unit_of_work(request, database, read_only=False) as uow:
            yield uow.session

    return _marked(provide, database, read_only=False)


def repository_provider(
    repository_class: Callable[[AsyncSession], R],
    *,
    database: str = "main",
    read_only: bool = False,
) -> Callable[[Request], AsyncIterator[R]]:
    """A dependency giving a repository bound to the request's unit of work.

    Args:
        repository_class: the :class:`~asyncdal.repository.Repository` subclass.
        database: the named database.
        read_only: use a read-only unit of work (for endpoints that only read).
    """

    async def provide(request: Request) -> AsyncIterator[R]:
        async with _request_unit_of_work(request, database, read_only=read_only) as uow:
            yield uow.repository(repository_class)

    return _marked(provide, database, read_only=read_only)
