"""``Outbox.add`` runs its INSERT on the driver connection of the session's connection, in its
transaction; it answers and fails exactly as through the engine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import asyncpg
import pytest
from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError, PendingRollbackError

import asyncdal.engine._driver as driver_module
from asyncdal import (
    ConnectionLostError,
    Database,
    DeadlineExceededError,
    UniqueViolationError,
    UnitOfWorkError,
    deadline,
)
from asyncdal.outbox import Outbox
from asyncdal.testing import assert_max_queries

PATHS = ["driver", "engine"]


@pytest.fixture
def driver_statements(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The SQL of every statement sent on the driver path."""
    sent: list[str] = []
    original = driver_module._fetchrow

    async def counted(adapter: Any, mutex: Any, driver: Any, sql: str, parameters: Any) -> Any:
        sent.append(sql)
        return await original(adapter, mutex, driver, sql, parameters)

    monkeypatch.setattr(driver_module, "_fetchrow", counted)
    return sent


@pytest.fixture
async def through(database: Database, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Which path the event's INSERT takes: the engine one when a statement listener of the
    application's has no stand-in on the driver."""
    path: str = request.param
    if path == "driver":
        yield path
        return
    sync_engine = database.engine.sync_engine

    def listener(*args: Any) -> None:
        pass

    event.listen(sync_engine, "before_cursor_execute", listener)
    try:
        yield path
    finally:
        event.remove(sync_engine, "before_cursor_execute", listener)


async def test_the_event_insert_runs_on_the_driver_in_the_transaction(
    database: Database, sql: asyncpg.Connection, driver_statements: list[str]
) -> None:
    async with database.unit_of_work() as uow:
        # The first statement of the transaction: its BEGIN is the adapter's, so the rollback
        # takes the event back.
        await Outbox.of(uow).add("thing.happened", {"n": 1})
        assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox") == 0
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox") == 0
    async with database.unit_of_work() as uow:
        first = await Outbox.of(uow).add("thing.happened", {"n": 2}, key=3)
        second = await Outbox.of(uow).add("thing.happened", {"n": 3})
        await uow.commit()
    assert second == first + 1
    rows = await sql.fetch("SELECT id, key, payload FROM asyncdal_outbox ORDER BY id")
    assert [(row["id"], row["key"], row["payload"]) for row in rows] == [
        (first, "3", '{"n": 2}'),
        (second, None, '{"n": 3}'),
    ]
    assert len(driver_statements) == 3
    assert driver_statements[0].startswith("INSERT INTO asyncdal_outbox")


async def test_an_application_cursor_listener_sees_the_event_insert(
    database: Database, driver_statements: list[str]
) -> None:
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(database.engine.sync_engine, "before_cursor_execute", listener)
    try:
        async with database.unit_of_work() as uow:
            await Outbox.of(uow).add("thing.happened", {})
    finally:
        event.remove(database.engine.sync_engine, "before_cursor_execute", listener)
    assert [statement.split()[:3] for statement in seen] == [["INSERT", "INTO", "asyncdal_outbox"]]
    assert driver_statements == []


async def test_assert_max_queries_counts_the_event_insert(database: Database) -> None:
    async with database.unit_of_work() as uow:
        with pytest.raises(AssertionError), assert_max_queries(0):
            await Outbox.of(uow).add("thing.happened", {})


@pytest.mark.parametrize("through", PATHS, indirect=True)
async def test_a_failed_event_insert_fails_the_transaction_as_through_the_engine(
    database: Database, sql: asyncpg.Connection, through: str, driver_statements: list[str]
) -> None:
    await sql.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE unique_violation USING MESSAGE = 'refused'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON asyncdal_outbox
        FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    async with database.unit_of_work() as uow:
        await uow.session.execute(text("CREATE TEMP TABLE written (n int)"))
        await uow.session.execute(text("INSERT INTO written VALUES (1)"))
        with pytest.raises(UniqueViolationError) as failed:
            await Outbox.of(uow).add("thing.happened", {})
        assert "refused" in str(failed.value.__cause__)
        # The server's transaction is aborted, and SQLAlchemy does not know: the next
        # statement fails on the server; COMMIT, which PostgreSQL would answer with ROLLBACK
        # (not an error), raises instead, naming the first failure.
        with pytest.raises(DBAPIError, match="current transaction is aborted") as next_failed:
            await uow.session.execute(text("SELECT count(*) FROM written"))
        assert type(next_failed.value) is DBAPIError
        with pytest.raises(UnitOfWorkError, match=r"\(UniqueViolationError\).*nothing of it"):
            await uow.commit()
        await uow.rollback()
        assert (await uow.session.execute(text("SELECT 1"))).scalar_one() == 1
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox") == 0
    assert len(driver_statements) == (1 if through == "driver" else 0)


@pytest.mark.parametrize("through", PATHS, indirect=True)
async def test_a_connection_lost_during_the_event_insert_fails_as_through_the_engine(
    database: Database, sql: asyncpg.Connection, through: str, driver_statements: list[str]
) -> None:
    async with database.unit_of_work() as uow:
        pid = (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one()
        await sql.execute("SELECT pg_terminate_backend($1)", pid)
        with pytest.raises(ConnectionLostError):
            await Outbox.of(uow).add("thing.happened", {})
        # The connection was invalidated with the transaction: it must be rolled back first.
        with pytest.raises(PendingRollbackError):
            await uow.session.execute(text("SELECT 1"))
        with pytest.raises(PendingRollbackError):
            await uow.commit()
        await uow.rollback()
        # A fresh connection after the rollback.
        assert (await uow.session.execute(text("SELECT pg_backend_pid()"))).scalar_one() != pid
    assert len(driver_statements) == (1 if through == "driver" else 0)


@pytest.mark.parametrize("through", PATHS, indirect=True)
async def test_a_deadline_cancels_the_event_insert_as_through_the_engine(
    database: Database, sql: asyncpg.Connection, through: str, driver_statements: list[str]
) -> None:
    await sql.execute(
        """
        CREATE FUNCTION linger() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM pg_sleep(30); RETURN NEW; END $$;
        CREATE TRIGGER linger BEFORE INSERT ON asyncdal_outbox
        FOR EACH ROW EXECUTE FUNCTION linger();
        """
    )
    backend = text("SELECT pg_backend_pid()")
    async with database.unit_of_work() as uow:
        pid = (await uow.session.execute(backend)).scalar_one()
        with pytest.raises(DeadlineExceededError, match="server cancelled"):
            async with deadline(1.0):
                await Outbox.of(uow).add("thing.happened", {})
        with pytest.raises(DeadlineExceededError, match="before a statement"):
            async with deadline(30) as budget:
                budget.at = 0  # as if the time had gone by
                await Outbox.of(uow).add("thing.happened", {})
        await uow.rollback()
        # The cancelled statement's connection was kept, as the engine keeps it.
        assert (await uow.session.execute(backend)).scalar_one() == pid
    assert len(driver_statements) == (1 if through == "driver" else 0)


@pytest.mark.parametrize("through", PATHS, indirect=True)
async def test_an_error_asyncdal_has_no_name_for_is_sqlalchemys_on_either_path(
    database: Database, sql: asyncpg.Connection, through: str, driver_statements: list[str]
) -> None:
    await sql.execute(
        """
        CREATE FUNCTION refuse() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION 'no events today'; END $$;
        CREATE TRIGGER refuse BEFORE INSERT ON asyncdal_outbox
        FOR EACH ROW EXECUTE FUNCTION refuse();
        """
    )
    async with database.unit_of_work() as uow:
        with pytest.raises(DBAPIError, match="no events today") as failed:
            await Outbox.of(uow).add("thing.happened", {})
    assert type(failed.value) is DBAPIError
    # The adapter's DBAPI error, around the driver's, as SQLAlchemy's engine raises it.
    assert type(failed.value.orig).__name__ == "Error"
    assert type(failed.value.orig).__module__ == "sqlalchemy.dialects.postgresql.asyncpg"
    assert isinstance(failed.value.orig.__cause__, asyncpg.RaiseError)
    assert failed.value.__cause__ is failed.value.orig
    assert "INSERT INTO asyncdal_outbox" in str(failed.value.statement)
    assert len(driver_statements) == (1 if through == "driver" else 0)
