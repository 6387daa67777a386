"""The CRUD helpers' tests: a contract suite run on PostgreSQL and in memory
(``test_contract_*``), what only PostgreSQL shows, the fakes' own behaviour, and the FastAPI
helpers.

``blog`` gives the blog's repositories either as ``Repository`` subclasses bound to a unit of
work on a real database (rolled back after the test) or as ``InMemoryRepository.like(...)``
fakes. A test that passes on one and fails on the other is a broken promise of the fake.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from asyncdal import Database, DatabaseSettings
from asyncdal.testing import InMemoryRepository, create_test_database, drop_test_database
from tests.blog import AuthorRepository, Base, PostRepository
from tests.crud.data import Blog


@pytest.fixture(scope="session")
async def blog_database(server_url: str) -> AsyncIterator[Database]:
    """A throwaway database with the blog's tables, for the session."""
    url = await create_test_database(server_url, prefix="blog")
    database = Database(
        "main", DatabaseSettings(url=url.render_as_string(hide_password=False), pool="queue")
    )
    try:
        async with database.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        yield database
    finally:
        await database.dispose()
        await drop_test_database(url)


@pytest.fixture(params=["postgres", "memory"])
async def blog(request: pytest.FixtureRequest, blog_database: Database) -> AsyncIterator[Blog]:
    """The blog's repositories, on PostgreSQL (in a transaction rolled back afterwards) or in
    memory."""
    if request.param == "memory":
        yield Blog(
            "memory",
            InMemoryRepository.like(AuthorRepository),
            InMemoryRepository.like(PostRepository),
        )
        return
    database = blog_database
    async with database.engine.connect() as connection:
        transaction = await connection.begin()
        try:
            async with database.use_connection(connection), database.unit_of_work() as uow:
                yield Blog(
                    "postgres", uow.repository(AuthorRepository), uow.repository(PostRepository)
                )
        finally:
            await transaction.rollback()
