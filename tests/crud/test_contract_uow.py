"""Contract: the fake unit of work keeps the real one's promises (entered once, commits only
while open, and what was not committed is gone)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import pytest

from asyncdal import Database, UnitOfWork, UnitOfWorkError
from asyncdal.testing import FakeUnitOfWork, InMemoryRepository
from tests.blog import Author, AuthorRepository


@pytest.fixture(params=["postgres", "memory"])
async def units(
    request: pytest.FixtureRequest, blog_database: Database
) -> AsyncIterator[Callable[[], UnitOfWork]]:
    """Makes units of work: real ones (inside a transaction rolled back afterwards), or fakes
    sharing one in-memory AuthorRepository."""
    if request.param == "memory":
        authors = InMemoryRepository.like(AuthorRepository)
        yield lambda: FakeUnitOfWork({AuthorRepository: authors})
        return
    async with blog_database.engine.connect() as connection:
        transaction = await connection.begin()
        try:
            async with blog_database.use_connection(connection):
                yield blog_database.unit_of_work
        finally:
            await transaction.rollback()


async def names(units: Callable[[], UnitOfWork]) -> list[str]:
    async with units() as uow:
        return [a.name for a in await uow.repository(AuthorRepository).list(order_by="name")]


async def test_what_is_not_committed_is_gone(units: Callable[[], UnitOfWork]) -> None:
    async with units() as uow:
        authors = uow.repository(AuthorRepository)
        ada = await authors.add(Author(email="ada@x", name="Ada"))
        await authors.add(Author(email="bob@x", name="Bob"))
        await uow.commit()
        await authors.update(ada, name="Ada L.")
        await authors.add(Author(email="cy@x", name="Cy"))
    assert await names(units) == ["Ada", "Bob"]
    with pytest.raises(RuntimeError):
        async with units() as uow:
            authors = uow.repository(AuthorRepository)
            await authors.delete((await authors.by_email("bob@x")) or 0)
            await authors.update((await authors.by_email("ada@x")) or 0, name="A")
            raise RuntimeError
    assert await names(units) == ["Ada", "Bob"]
    async with units() as uow:
        await uow.repository(AuthorRepository).add(Author(email="cy@x", name="Cy"))
        await uow.rollback()
        await uow.repository(AuthorRepository).add(Author(email="di@x", name="Di"))
        await uow.commit()
    assert await names(units) == ["Ada", "Bob", "Di"]


async def test_entered_once_and_committed_only_while_open(
    units: Callable[[], UnitOfWork],
) -> None:
    uow = units()
    with pytest.raises(UnitOfWorkError, match="not open"):
        await uow.commit()
    async with uow:
        pass
    with pytest.raises(UnitOfWorkError, match="entered only once"):
        async with uow:
            pass
