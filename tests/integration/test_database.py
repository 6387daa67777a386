"""Database against the real server: pools really sized, warm-up, dispose, NullPool, loops."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

import pytest
from sqlalchemy import text

from asyncdal import Database, Databases, PoolTimeoutError, ReadOnlyError, UnknownDatabaseError
from catalog.models import Product
from tests.helpers import wait_until
from tests.integration.conftest import BackendCounter

MakeDatabase = Callable[..., Database]


async def test_warm_up_opens_the_configured_pool(
    make_database: MakeDatabase, backends: BackendCounter
) -> None:
    db = make_database(pool_size=3, max_overflow=2)
    try:
        await db.warm_up()
        pool = db.engine.pool
        assert pool.size() == 3  # type: ignore[attr-defined]
        assert pool.checkedin() == 3  # type: ignore[attr-defined]
        assert await backends(db.settings.application_name) == 3
        await db.warm_up()  # idempotent: no more connections
        assert await backends(db.settings.application_name) == 3
    finally:
        await db.dispose()
    assert await backends(db.settings.application_name) == 0
    await db.dispose()  # idempotent


async def test_pool_overflow_and_timeout_are_applied(make_database: MakeDatabase) -> None:
    db = make_database(pool_size=2, max_overflow=1, pool_timeout=0.3)
    try:
        connections = [await db.engine.connect() for _ in range(3)]
        pool = db.engine.pool
        assert pool.checkedout() == 3  # type: ignore[attr-defined]
        assert pool.overflow() == 1  # type: ignore[attr-defined]
        with pytest.raises(PoolTimeoutError):
            await db.engine.connect()
        for connection in connections:
            await connection.close()
        assert pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await db.dispose()


async def test_null_pool_leaves_no_connection_open(
    make_database: MakeDatabase, backends: BackendCounter
) -> None:
    db = make_database(pool="null")
    try:
        await db.warm_up()
        assert await backends(db.settings.application_name) == 0
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1"))
            assert await backends(db.settings.application_name) == 1
        assert await backends(db.settings.application_name) == 0
    finally:
        await db.dispose()


async def test_server_settings_reach_the_session(make_database: MakeDatabase) -> None:
    db = make_database(statement_timeout=0.25)
    try:
        async with db.unit_of_work() as uow:
            timeout = await uow.session.scalar(text("SHOW statement_timeout"))
            name = await uow.session.scalar(text("SELECT current_setting('application_name')"))
        assert timeout == "250ms"
        assert name == db.settings.application_name
    finally:
        await db.dispose()


async def test_engine_works_from_several_event_loops(
    make_database: MakeDatabase, backends: BackendCounter
) -> None:
    db = make_database(pool_size=2)
    errors: list[BaseException] = []

    async def use() -> int:
        async with db.read_only_unit_of_work() as uow:
            return int(await uow.session.scalar(text("SELECT 1")) or 0)

    def in_fresh_loop() -> None:
        try:
            assert asyncio.run(use()) == 1
        except BaseException as error:  # reported to the test below
            errors.append(error)

    try:
        assert await use() == 1
        for _ in range(2):  # each thread: a new loop, then the loop is closed
            thread = threading.Thread(target=in_fresh_loop)
            thread.start()
            thread.join()
        assert errors == []
        assert await use() == 1  # the original loop still has its own, working engine
    finally:
        await db.dispose()

    # The connections of the closed loops were closed too, not left to the garbage collector.
    # (The server ends a backend shortly after its client's socket closes, not at once.)
    async def all_closed() -> bool:
        return await backends(db.settings.application_name) == 0

    await wait_until(all_closed, timeout=5, message="connections of the closed loops are open")


async def test_read_only_unit_of_work_runs_in_autocommit_and_refuses_flush(
    make_database: MakeDatabase,
) -> None:
    db = make_database()
    try:
        async with db.read_only_unit_of_work() as uow:
            # In autocommit each statement is its own transaction: no xid is held across them.
            first = await uow.session.scalar(text("SELECT pg_current_xact_id()::text"))
            second = await uow.session.scalar(text("SELECT pg_current_xact_id()::text"))
            assert first != second
            uow.session.add(Product(sku="RO", name="x", price=1))
            with pytest.raises(ReadOnlyError):
                await uow.session.flush()
    finally:
        await db.dispose()


async def test_snapshot_read_only_unit_of_work_is_refused_writes_by_the_server(
    make_database: MakeDatabase,
) -> None:
    db = make_database()
    try:
        async with db.read_only_unit_of_work(snapshot=True) as uow:
            assert await uow.session.scalar(text("SHOW transaction_read_only")) == "on"
            assert await uow.session.scalar(text("SHOW transaction_isolation")) == "repeatable read"
            # A write hidden in a function call gets past any client-side check, not the server.
            with pytest.raises(ReadOnlyError, match="read-only transaction"):
                await uow.session.execute(
                    text("SELECT nextval(pg_get_serial_sequence('products', 'id'))")
                )
    finally:
        await db.dispose()


async def test_databases_registry_names_and_errors(make_database: MakeDatabase) -> None:
    databases = Databases({"main": make_database()})
    async with databases:
        assert databases.main is databases["MAIN"]
        assert "main" in databases
        assert databases.get("reference") is None
        with pytest.raises(UnknownDatabaseError, match="DB__REFERENCE__URL"):
            databases["reference"]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO products (sku, name, price) VALUES ('W', 'w', 1)",
        "  update products SET name = 'x'",
        "DELETE FROM products",
        "WITH gone AS (DELETE FROM products RETURNING id) SELECT count(*) FROM gone",
        "EXPLAIN ANALYZE DELETE FROM products",
        "TRUNCATE products",
        "CREATE TABLE nope (id int)",
    ],
)
async def test_autocommit_read_only_unit_of_work_refuses_raw_writes(
    make_database: MakeDatabase, statement: str
) -> None:
    db = make_database()
    try:
        async with db.read_only_unit_of_work() as uow:
            with pytest.raises(ReadOnlyError):
                await uow.session.execute(text(statement))
            assert await uow.session.scalar(text("SELECT 1")) == 1
            assert await uow.session.scalar(text("(SELECT 2)")) == 2
            assert await uow.session.scalar(text("with x as (select 3 as v) select v from x")) == 3
    finally:
        await db.dispose()


async def test_autocommit_read_only_unit_of_work_refuses_core_writes(
    make_database: MakeDatabase,
) -> None:
    from sqlalchemy import delete, insert, update

    db = make_database()
    try:
        async with db.read_only_unit_of_work() as uow:
            for statement in (
                insert(Product).values(sku="C", name="c", price=1),
                update(Product).values(name="c"),
                delete(Product),
            ):
                with pytest.raises(ReadOnlyError):
                    await uow.session.execute(statement)
    finally:
        await db.dispose()
