"""Metrics from pool and engine events, against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import pytest
from fastapi import Depends, FastAPI
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal import Database, Databases, PoolTimeoutError
from asyncdal.fastapi import databases_lifespan, metrics_router, session_provider, setup
from asyncdal.observe._metrics import DatabaseMetrics, _statement_label
from catalog.models import Product
from tests.helpers import app_client, metric_samples, metric_value

# At module level: FastAPI resolves the (string) annotation in the module's namespace.
MainSession = Annotated[AsyncSession, Depends(session_provider())]


async def test_slow_query_shows_in_the_execution_histogram(
    make_database: Callable[..., Database],
) -> None:
    metrics = DatabaseMetrics()
    db = make_database()
    metrics.instrument(db)
    try:
        async with db.read_only_unit_of_work() as uow:
            await uow.session.execute(text("SELECT pg_sleep(0.2)"))
    finally:
        await db.dispose()
    count = metric_value(metrics, "asyncdal_query_seconds_count", statement="select")
    total = metric_value(metrics, "asyncdal_query_seconds_sum", statement="select")
    assert count == 1
    assert 0.19 <= total < 1.0
    assert metric_value(metrics, "asyncdal_connections_opened_total") == 1


async def test_waiting_for_a_saturated_pool_shows_in_the_wait_histogram(
    make_database: Callable[..., Database],
) -> None:
    metrics = DatabaseMetrics()
    db = make_database(pool_size=1, pool_timeout=0.2)
    metrics.instrument(db)
    try:
        holder = await db.engine.connect()
        await holder.exec_driver_sql("SELECT 1")
        assert metric_value(metrics, "asyncdal_pool_checked_out") == 1
        assert metric_value(metrics, "asyncdal_pool_size") == 1

        async def release_later() -> None:
            await asyncio.sleep(0.1)
            await holder.close()

        releaser = asyncio.create_task(release_later())
        async with db.engine.connect() as waiter:  # waits ~0.1 s for the holder
            await waiter.exec_driver_sql("SELECT 1")
        await releaser
        held = await db.engine.connect()
        with pytest.raises(PoolTimeoutError):
            await db.engine.connect()  # times out after 0.2 s
        await held.close()
    finally:
        await db.dispose()
    assert metric_value(metrics, "asyncdal_connection_wait_seconds_count") == 4
    assert metric_value(metrics, "asyncdal_connection_wait_seconds_sum") >= 0.28
    assert metric_value(metrics, "asyncdal_pool_checkout_timeouts_total") == 1


def statement_counts(metrics: DatabaseMetrics) -> dict[str, float]:
    return {
        dict(labels)["statement"]: count
        for (name, labels), count in metric_samples(metrics).items()
        if name == "asyncdal_query_seconds_count" and count
    }


async def test_text_statements_are_labelled_by_the_classifier(
    make_database: Callable[..., Database],
) -> None:
    metrics = DatabaseMetrics()
    db = make_database()
    metrics.instrument(db)
    try:
        async with db.engine.connect() as conn:  # its transaction is rolled back at the end
            # A keyword in a literal does not count; MERGE has a label of its own.
            await conn.execute(text("SELECT 'update pending' AS status"))
            await conn.execute(text("WITH x AS (SELECT 1) SELECT 'update pending' FROM x"))
            await conn.exec_driver_sql("SELECT 'delete me' AS note")
            await conn.execute(
                text(
                    "MERGE INTO products p USING (SELECT -1 AS id) s ON p.id = s.id "
                    "WHEN MATCHED THEN DO NOTHING"
                )
            )
            await conn.exec_driver_sql("WITH d AS (DELETE FROM products WHERE id = -1) SELECT 1")
            await conn.execute(text("SET LOCAL statement_timeout = 5000"))
    finally:
        await db.dispose()
    assert statement_counts(metrics) == {"select": 3, "merge": 1, "delete": 1, "other": 1}


async def test_compiled_statements_are_labelled_by_sqlalchemy(
    make_database: Callable[..., Database],
) -> None:
    from sqlalchemy import delete, insert, literal, select, update

    metrics = DatabaseMetrics()
    db = make_database()
    metrics.instrument(db)
    try:
        async with db.engine.connect() as conn:  # its transaction is rolled back at the end
            await conn.execute(insert(Product).values(sku="m-1", name="update", price=1))
            await conn.execute(update(Product).where(Product.sku == "m-1").values(price=2))
            # A bound 'delete' in the text, as the ORM would send it: SQLAlchemy says SELECT.
            await conn.execute(select(Product.id).where(Product.name == literal("delete")))
            await conn.execute(delete(Product).where(Product.sku == "m-1"))
            # A SELECT whose CTE deletes: SQLAlchemy's flags say SELECT, the text says more.
            gone = delete(Product).where(Product.sku == "m-2").returning(Product.id).cte()
            await conn.execute(select(gone.c.id))
    finally:
        await db.dispose()
    assert statement_counts(metrics) == {"insert": 1, "update": 1, "select": 1, "delete": 2}


def test_what_sqlalchemy_knows_comes_before_the_text() -> None:
    from types import SimpleNamespace

    from sqlalchemy import column, select, table

    def context(**flags: object) -> SimpleNamespace:
        defaults = {"isinsert": False, "isupdate": False, "isdelete": False, "is_text": False}
        return SimpleNamespace(**{"compiled": None, **defaults, **flags})

    items = table("items", column("id"))
    compiled_select = SimpleNamespace(statement=select(items))
    compiled_ddl = SimpleNamespace(statement=object())
    assert _statement_label("SELECT 1", context(isinsert=True)) == "insert"
    assert _statement_label("SELECT 1", context(isupdate=True)) == "update"
    assert _statement_label("SELECT 1", context(isdelete=True)) == "delete"
    assert _statement_label("DELETE FROM x", context(compiled=compiled_select)) == "select"
    assert _statement_label("SELECT 1", context(compiled=compiled_ddl)) == "other"
    # Text: the classifier decides (text(), driver SQL, a compiled SELECT with a WITH clause).
    text_select = SimpleNamespace(statement=text("DELETE FROM x").columns(column("id")))
    assert _statement_label("DELETE FROM x", context(compiled=text_select)) == "delete"
    assert _statement_label("MERGE INTO x", context(is_text=True)) == "merge"
    assert _statement_label("MERGE INTO x", context()) == "merge"
    assert _statement_label("MERGE INTO x", None) == "merge"
    with_cte = "WITH d AS (DELETE FROM x RETURNING id) SELECT id FROM d"
    assert _statement_label(with_cte, context(compiled=compiled_select)) == "delete"


async def test_retries_are_counted_by_kind(make_database: Callable[..., Database]) -> None:
    from asyncdal import UnitOfWork
    from asyncdal.errors import DatabaseUnavailableError
    from asyncdal.testing import spare_port

    metrics = DatabaseMetrics()
    db = make_database(retry_attempts=3, retry_base_delay=0.01)
    metrics.instrument(db)
    runs = 0

    async def conflicting_once(uow: UnitOfWork) -> int:
        nonlocal runs
        runs += 1
        if runs == 1:  # a real server error with SQLSTATE 40001, as a serialization failure
            await uow.session.execute(
                text("DO $$ BEGIN RAISE EXCEPTION 'conflict' USING ERRCODE = '40001'; END $$")
            )
        return runs

    unreachable = make_database(
        name="nowhere", port=spare_port(), retry_attempts=3, retry_base_delay=0.01
    )
    metrics.instrument(unreachable)
    try:
        assert await db.run_in_transaction(conflicting_once, idempotent=True) == 2
        with pytest.raises(DatabaseUnavailableError):
            async with unreachable.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))
    finally:
        await db.dispose()
        await unreachable.dispose()
    assert metric_value(metrics, "asyncdal_retries_total", kind="transaction") == 1
    assert (
        metric_samples(metrics).get(
            (
                "asyncdal_retries_total",
                (("database", "nowhere"), ("kind", "connect"), ("node", "primary")),
            )
        )
        == 2
    )


async def test_a_request_waiting_for_a_saturated_pool_shows_in_the_wait_histogram(
    make_database: Callable[..., Database],
) -> None:
    metrics = DatabaseMetrics()
    db = make_database(pool_size=1, pool_timeout=5)
    # Warmed up: the pool's one connection is open, so the first request's wait is a checkout,
    # not a connect (which on a loaded machine alone can pass 0.1 s).
    app = FastAPI(
        lifespan=databases_lifespan(lambda: Databases({"main": db}), warm_up=True, metrics=metrics)
    )
    setup(app)
    app.include_router(metrics_router())

    @app.get("/slow")
    async def slow(session: MainSession) -> dict[str, bool]:
        await session.execute(text("SELECT pg_sleep(0.3)"))
        return {"ok": True}

    labels = (("database", "main"), ("node", "primary"))
    fast = tuple(sorted((*labels, ("le", "0.1"))))

    def waits(scraped: str) -> tuple[float, float, float]:
        parsed = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(scraped)
            for sample in family.samples
        }
        return (
            parsed[("asyncdal_connection_wait_seconds_count", labels)],
            parsed[("asyncdal_connection_wait_seconds_sum", labels)],
            parsed[("asyncdal_connection_wait_seconds_bucket", fast)],
        )

    async with app_client(app) as client:
        count, total, quick = waits((await client.get("/metrics")).text)  # the warm-up's
        first, second = await asyncio.gather(client.get("/slow"), client.get("/slow"))
        assert (first.status_code, second.status_code) == (200, 200)
        after_count, after_total, after_quick = waits((await client.get("/metrics")).text)
    assert after_count - count == 2
    # One request got the connection at once, the other waited for the first one's query.
    assert after_total - total >= 0.25
    assert (after_count - count) - (after_quick - quick) == 1


async def test_the_quick_insert_and_the_outbox_event_are_labelled_inserts(
    make_database: Callable[..., Database],
) -> None:
    from decimal import Decimal

    from asyncdal.outbox import Outbox
    from catalog.repositories import ProductRepository

    metrics = DatabaseMetrics()
    db = make_database()
    metrics.instrument(db)
    try:
        async with db.unit_of_work() as uow:  # rolled back when left
            await uow.repository(ProductRepository).add(
                Product(sku="m-quick", name="quick", price=Decimal(1))
            )
            await Outbox.of(uow).add("thing.happened", {"n": 1})
    finally:
        await db.dispose()
    assert statement_counts(metrics) == {"insert": 2}
