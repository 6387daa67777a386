"""The pytest fixtures of :mod:`asyncdal.testing.plugin` (see there for how to use them)."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import pytest
import pytest_asyncio
from sqlalchemy import MetaData
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


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def asyncdal_database(
    asyncdal_test_url: str, asyncdal_metadata: MetaData | None
) -> AsyncIterator[Database]:
    """A :class:`Database` on a throwaway database, with the metadata's tables, dropped after."""
    url = await create_test_database(asyncdal_test_url)
    database = Database(
        "main",
        DatabaseSettings(url=url.render_as_string(hide_password=False), pool="queue"),
    )
    try:
        if asyncdal_metadata is not None:
            async with database.engine.begin() as connection:
                await connection.run_sync(asyncdal_metadata.create_all)
        yield database
    finally:
        await database.dispose()
        await drop_test_database(url)


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
