"""Integration fixtures: a throwaway database with the catalog's tables, and a backend counter."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
import pytest_asyncio
from sqlalchemy import MetaData
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings
from asyncdal.testing import ReplicaPair, create_test_database, drop_test_database
from asyncdal.testing._fixtures import _ThrowawayDatabases as ThrowawayDatabases
from catalog.models import Base
from tests.conftest import plain
from tests.helpers import count_connections

BackendCounter = Callable[[str], Awaitable[int]]


@pytest.fixture(scope="session")
def asyncdal_metadata() -> MetaData:
    """asyncdal.testing creates these tables in its throwaway database."""
    return Base.metadata


@pytest_asyncio.fixture(scope="session", loop_scope="session")
async def test_database_url(
    _asyncdal_throwaway_databases: ThrowawayDatabases,  # noqa: PT019 (its value is used)
    asyncdal_metadata: MetaData,
) -> URL:
    """The URL of asyncdal.testing's throwaway database with the catalog's tables (the one
    ``asyncdal_database`` gives here), for session- and module-wide fixtures too."""
    database = await _asyncdal_throwaway_databases.of(asyncdal_metadata)
    return database.settings.sqlalchemy_url()


@pytest.fixture
def make_database(test_database_url: URL) -> Callable[..., Database]:
    """Build Databases on the throwaway database with a unique application_name each."""

    def make(name: str = "main", **settings: object) -> Database:
        options: dict[str, object] = {
            "url": plain(test_database_url),
            "application_name": f"it-{uuid.uuid4().hex[:10]}",
            **settings,
        }
        return Database(name, DatabaseSettings.model_validate(options))

    return make


@pytest.fixture
async def backends(test_database_url: URL) -> AsyncIterator[BackendCounter]:
    """Count the server's backends with a given application_name (tagged ones included), from
    a connection kept open for the test."""
    connection = await asyncpg.connect(
        plain(test_database_url.set(drivername="postgresql")),
        server_settings={"application_name": "it-observer"},
    )

    async def count(application_name: str) -> int:
        return await count_connections(connection, application_name=application_name)

    try:
        yield count
    finally:
        await connection.close()


@pytest.fixture(scope="session")
async def replica_database(asyncdal_replica_pair: ReplicaPair) -> AsyncIterator[URL]:
    """A throwaway database on the session's primary + replica pair, with a table ``items``
    and a function ``sneaky_write()`` that writes although it is called by a SELECT."""
    url = await create_test_database(asyncdal_replica_pair.primary.url, prefix="replicas")
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        await connection.execute(
            "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL);"
            "CREATE FUNCTION sneaky_write() RETURNS int LANGUAGE sql AS "
            "'INSERT INTO items VALUES (-1, ''sneaky'') RETURNING 1'"
        )
    finally:
        await connection.close()
    await asyncdal_replica_pair.caught_up()
    try:
        yield url
    finally:
        await drop_test_database(url)


@pytest.fixture
async def routed(
    asyncdal_replica_pair: ReplicaPair, replica_database: URL
) -> AsyncIterator[Callable[..., Database]]:
    """Build Databases on ``replica_database`` with the pair's replica; disposed after."""
    made: list[Database] = []
    replica = f"postgresql://postgres@127.0.0.1:{asyncdal_replica_pair.replica.port}"

    def make(**settings: object) -> Database:
        options: dict[str, object] = {
            "url": plain(replica_database),
            "replicas": [replica],
            "replica_check_interval": 0.2,
            "application_name": f"it-{uuid.uuid4().hex[:10]}",
            **settings,
        }
        database = Database("main", DatabaseSettings.model_validate(options))
        made.append(database)
        return database

    try:
        yield make
    finally:
        for database in made:
            await database.dispose()
