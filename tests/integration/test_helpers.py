"""count_connections, the tests' one way to count a server's connections, against the server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable

import asyncpg
import pytest
from sqlalchemy.engine import URL

from tests.conftest import plain
from tests.helpers import count_connections

Connect = Callable[..., Awaitable[asyncpg.Connection]]


@pytest.fixture
async def connect(test_database_url: URL) -> AsyncIterator[Connect]:
    """Open asyncpg connections with a given application_name; all closed after the test."""
    opened: list[asyncpg.Connection] = []

    async def open_one(application_name: str, database: str | None = None) -> asyncpg.Connection:
        url = test_database_url.set(drivername="postgresql")
        if database is not None:
            url = url.set(database=database)
        connection = await asyncpg.connect(
            plain(url), server_settings={"application_name": application_name}
        )
        opened.append(connection)
        return connection

    try:
        yield open_one
    finally:
        for connection in opened:
            await connection.close()


async def test_counts_by_application_name_with_its_tagged_variants_only(
    connect: Connect, test_database_url: URL
) -> None:
    unique = uuid.uuid4().hex[:8]
    name = f"count_{unique}"
    await connect(name)
    await connect(f"{name}:req-1")  # tagged with a request id by asyncdal
    await connect(f"{name}:outbox-worker")
    await connect(f"{name}x")  # another application whose name merely starts the same
    await connect(f"countX{unique}:req-2")  # would match if `_` were a LIKE wildcard
    assert await count_connections(test_database_url, application_name=name) == 3
    assert await count_connections(test_database_url, application_name=f"{name}:req-1") == 1
    assert await count_connections(test_database_url, application_name=f"{name}x") == 1


async def test_the_asking_connection_is_not_counted_and_stays_open(connect: Connect) -> None:
    name = f"count-{uuid.uuid4().hex[:8]}"
    observer = await connect(name)
    assert await count_connections(observer, application_name=name) == 0
    await connect(name)
    assert await count_connections(observer, application_name=name) == 1
    assert not observer.is_closed()


async def test_counts_by_database_state_and_user(connect: Connect, test_database_url: URL) -> None:
    name = f"count-{uuid.uuid4().hex[:8]}"
    idle = await connect(name)
    in_transaction = await connect(name)
    await connect(name, database="postgres")
    await in_transaction.execute("BEGIN; SELECT 1")
    database = test_database_url.database
    assert await count_connections(idle, application_name=name, database=database) == 1
    assert await count_connections(idle, application_name=name, database="postgres") == 1
    assert await count_connections(idle, application_name=name, state="idle") == 1
    waiting = ("idle in transaction", "idle in transaction (aborted)")
    assert await count_connections(idle, application_name=name, state=waiting) == 1
    assert await count_connections(idle, application_name=name, state=[]) == 0
    user = test_database_url.username or "postgres"
    assert await count_connections(idle, application_name=name, user=user) == 2
    assert await count_connections(idle, application_name=name, user="nobody") == 0
    await in_transaction.execute("ROLLBACK")
    assert await count_connections(idle, application_name=name, state="idle") == 2
