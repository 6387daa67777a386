"""The pytest fixtures of :mod:`asyncdal.testing.plugin` (see there for how to use them)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import MetaData
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection

from asyncdal.orm._database import Database
from asyncdal.settings import DatabaseSettings
from asyncdal.testing._servers import (
    DEFAULT_TEST_DATABASE_URL,
    ReplicaPair,
    create_test_database,
    drop_test_database,
    replica_pair,
)

__all__ = [
    "asyncdal_database",
    "asyncdal_metadata",
    "asyncdal_replica_pair",
    "asyncdal_test_url",
    "rollback_connection",
    "rollback_database",
]


@pytest.fixture(scope="session")
def asyncdal_test_url() -> str:
    """The server tests create their databases on (``TEST_DATABASE_URL``)."""
    return os.environ.get("TEST_DATABASE_URL", DEFAULT_TEST_DATABASE_URL)


@pytest.fixture(scope="session")
def asyncdal_replica_pair() -> Iterator[ReplicaPair]:
    """A primary and a streaming replica for the whole test session (see :func:`replica_pair`)."""
    with replica_pair() as pair:
        yield pair


@pytest.fixture(scope="session")
def asyncdal_metadata() -> MetaData | None:
    """Override to return the ``MetaData`` whose tables the test database should have."""
    return None


class _ThrowawayDatabases:
    """The session's throwaway databases, one per ``MetaData`` a test asks for.

    One project may hold several ``asyncdal_metadata`` overrides (a conftest per folder): each
    test gets the database with its own tables, each made once and dropped at the end.
    """

    def __init__(self, server_url: str) -> None:
        self._server_url = server_url
        # Keyed by identity; the MetaData is kept in the value, so its id is never reused.
        self._made: dict[int, tuple[MetaData | None, Database, URL]] = {}

    async def of(self, metadata: MetaData | None) -> Database:
        made = self._made.get(id(metadata))
        if made is not None:
            return made[1]
        url = await create_test_database(self._server_url)
        database = Database(
            "main",
            DatabaseSettings(url=url.render_as_string(hide_password=False), pool="queue"),
        )
        self._made[id(metadata)] = (metadata, database, url)
        if metadata is not None:
            async with database.engine.begin() as connection:
                await connection.run_sync(metadata.create_all)
        return database

    async def drop_all(self) -> None:
        for _, database, url in self._made.values():
            await database.dispose()
            await drop_test_database(url)
        self._made.clear()


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def _asyncdal_throwaway_databases(
    asyncdal_test_url: str,
) -> AsyncIterator[_ThrowawayDatabases]:
    """The throwaway databases behind ``asyncdal_database``, dropped at the session's end."""
    databases = _ThrowawayDatabases(asyncdal_test_url)
    try:
        yield databases
    finally:
        await databases.drop_all()


@pytest_asyncio.fixture(loop_scope="session")
async def asyncdal_database(
    _asyncdal_throwaway_databases: _ThrowawayDatabases, asyncdal_metadata: MetaData | None
) -> Database:
    """A :class:`Database` on a throwaway database with the tables of the ``asyncdal_metadata``
    that applies to the test.

    The database is made the first time a test asks for those tables and dropped at the end of
    the session; tests under another ``asyncdal_metadata`` override get a database of their own.
    """
    return await _asyncdal_throwaway_databases.of(asyncdal_metadata)


@pytest_asyncio.fixture(loop_scope="session")
async def rollback_connection(asyncdal_database: Database) -> AsyncIterator[AsyncConnection]:
    """A connection to ``asyncdal_database`` in a transaction rolled back after the test.

    ``rollback_database`` and ``asyncdal_client`` route every session through it, so a test
    sees what its requests wrote, and the next test sees none of it.
    """
    async with asyncdal_database.engine.connect() as connection:
        transaction = await connection.begin()
        try:
            yield connection
        finally:
            await transaction.rollback()


@pytest_asyncio.fixture(loop_scope="session")
async def rollback_database(
    asyncdal_database: Database, rollback_connection: AsyncConnection
) -> AsyncIterator[Database]:
    """``asyncdal_database`` with every session inside one transaction rolled back afterwards.

    All its sessions share one connection: run the test in the session's event loop
    (``asyncio_default_test_loop_scope = "session"``, which the plugin checks), and don't use
    it from concurrent tasks.
    """
    async with asyncdal_database.use_connection(rollback_connection):
        yield asyncdal_database
