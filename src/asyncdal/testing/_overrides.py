"""Replace an app's providers by name with fakes that the commit middleware settles.

Example:
    >>> uow = override(app, ProductRepository)        # an InMemoryRepository.like(...) in uow
    >>> response = await client.post("/products", json={...})
    >>> uow.committed                                  # committed before the 201, like the real one
    True
"""

# No ``from __future__ import annotations``: FastAPI reads the annotation of ``__call__``
# (``request: Request``), and some of its versions cannot resolve it from a string.

from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request

from asyncdal.fastapi._providers import (
    read_only_unit_of_work_provider,
    register_unit_of_work,
    repository_provider,
    unit_of_work_provider,
)
from asyncdal.orm._repository import Repository
from asyncdal.orm._uow import UnitOfWork
from asyncdal.testing._fakes import FakeUnitOfWork
from asyncdal.testing._memory import InMemoryRepository

__all__ = ["override"]

# Where a request keeps the fakes it has entered already (several providers may stand in for
# the same FakeUnitOfWork in one request: it is entered and registered once).
_ENTERED = "asyncdal.testing.entered_fakes"


class _StandIn:
    """What an overridden provider becomes: hands out ``unit_of_work``, or one repository of
    it, after entering it once for the request and registering it with the middleware."""

    def __init__(self, unit_of_work: FakeUnitOfWork, repository_class: Any = None) -> None:
        self.unit_of_work = unit_of_work
        self.repository_class = repository_class

    def _give(self) -> Any:
        if self.repository_class is None:
            return self.unit_of_work
        return self.unit_of_work.repository(self.repository_class)

    async def __call__(self, request: Request) -> AsyncIterator[Any]:
        entered: list[FakeUnitOfWork] = request.scope.setdefault(_ENTERED, [])
        if any(uow is self.unit_of_work for uow in entered):
            yield self._give()
            return
        entered.append(self.unit_of_work)
        self.unit_of_work.reopen()  # the same fake serves every request, one at a time
        async with self.unit_of_work:
            # Without this the middleware never sees the fake, so never commits it.
            register_unit_of_work(request, self.unit_of_work)
            yield self._give()


def _unit_of_work_keys(database: str) -> list[Any]:
    return [
        unit_of_work_provider(database),
        read_only_unit_of_work_provider(database),
        read_only_unit_of_work_provider(database, snapshot=True),
    ]


def _fake_of(app: FastAPI, database: str) -> FakeUnitOfWork | None:
    """The FakeUnitOfWork the app's providers of ``database`` hand out already, if any."""
    current = app.dependency_overrides.get(unit_of_work_provider(database))
    return current.unit_of_work if isinstance(current, _StandIn) else None


def override(
    app: FastAPI, target: Any, fake: Any = None, *, database: str = "main"
) -> FakeUnitOfWork:
    """Make the app's providers of ``target`` hand out ``fake``, by name, in
    ``app.dependency_overrides``.

    Every overridden provider of one database shares one :class:`FakeUnitOfWork`, which is
    registered with the commit middleware like a real unit of work: after a response below 400
    it is committed (``committed`` is True), otherwise rolled back. The unit-of-work providers
    of that database hand it out too, so a handler's repositories and its unit of work agree.
    (``session_provider`` is left alone: a fake unit of work has no session.)

    Args:
        app: the FastAPI app (its routes declared ``repository_provider(...)`` and the like).
        target: a repository class: every ``repository_provider(target, database=...)``,
            read-write and read-only, now gives ``fake``. Or :class:`~asyncdal.UnitOfWork`:
            ``unit_of_work_provider(database)`` and ``read_only_unit_of_work_provider
            (database)`` give ``fake``, a FakeUnitOfWork (override it first, before any
            repository of that database).
        fake: what to hand out; by default ``InMemoryRepository.like(target)`` (a repository
            the FakeUnitOfWork holds already is kept), or a new FakeUnitOfWork.
        database: the named database whose providers to replace.

    Returns:
        The FakeUnitOfWork of that database, whose ``repositories`` include ``target``'s fake.

    Raises:
        ValueError: another FakeUnitOfWork stands in for ``database`` already, or ``fake``
            does not fit ``target``.
    """
    current = _fake_of(app, database)
    if target is UnitOfWork:
        if fake is not None and not isinstance(fake, FakeUnitOfWork):
            raise ValueError(f"a unit of work is overridden with a FakeUnitOfWork, not {fake!r}")
        if current is not None and fake is not None and fake is not current:
            raise ValueError(
                f"another FakeUnitOfWork stands in for database {database!r} already: override "
                "UnitOfWork first, or leave out the fake to get the one in place"
            )
        uow = current or fake or FakeUnitOfWork()
    else:
        uow = current or FakeUnitOfWork()
        if fake is None:
            fake = uow.repositories.get(target)
        if fake is None:
            if not (isinstance(target, type) and issubclass(target, Repository)):
                raise ValueError(f"give a fake for {target!r}: it is no asyncdal Repository")
            fake = InMemoryRepository.like(target)
        uow.repositories[target] = fake
        for read_only in (False, True):
            key = repository_provider(target, database=database, read_only=read_only)
            app.dependency_overrides[key] = _StandIn(uow, target)
    if current is None or current is not uow:
        for key in _unit_of_work_keys(database):
            app.dependency_overrides[key] = _StandIn(uow)
    return uow
