"""Metrics from pool and engine events, against the real server."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Annotated

import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from httpx import ASGITransport, AsyncClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal import Database, Databases, PoolTimeoutError
from asyncdal.fastapi import databases_lifespan, metrics_router, session_provider, setup
from asyncdal.observe._metrics import DatabaseMetrics, statement_kind

# At module level: FastAPI resolves the (string) annotation in the module's namespace.
MainSession = Annotated[AsyncSession, Depends(session_provider())]


def samples(metrics: DatabaseMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    parsed = text_string_to_metric_families(metrics.render().decode())
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parsed
        for sample in family.samples
    }


def value(metrics: DatabaseMetrics, name: str, **labels: str) -> float:
    wanted = tuple(sorted({"database": "main", "node": "primary", **labels}.items()))
    return samples(metrics).get((name, wanted), 0.0)


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
    count = value(metrics, "asyncdal_query_seconds_count", statement="select")
    total = value(metrics, "asyncdal_query_seconds_sum", statement="select")
    assert count == 1
    assert 0.19 <= total < 1.0
    assert value(metrics, "asyncdal_connections_opened_total") == 1


async def test_waiting_for_a_saturated_pool_shows_in_the_wait_histogram(
    make_database: Callable[..., Database],
) -> None:
    metrics = DatabaseMetrics()
    db = make_database(pool_size=1, pool_timeout=0.2)
    metrics.instrument(db)
    try:
        holder = await db.engine.connect()
        await holder.exec_driver_sql("SELECT 1")
        assert value(metrics, "asyncdal_pool_checked_out") == 1
        assert value(metrics, "asyncdal_pool_size") == 1

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
    assert value(metrics, "asyncdal_connection_wait_seconds_count") == 4
    assert value(metrics, "asyncdal_connection_wait_seconds_sum") >= 0.28
    assert value(metrics, "asyncdal_pool_checkout_timeouts_total") == 1


def test_statement_kinds() -> None:
    assert statement_kind("SELECT 1") == "select"
    assert statement_kind("  (select 1)") == "select"
    assert statement_kind("INSERT INTO t VALUES (1)") == "insert"
    assert statement_kind("WITH x AS (DELETE FROM t RETURNING id) SELECT 1") == "delete"
    assert statement_kind("with x as (select 1) select * from x") == "select"
    assert statement_kind("SET LOCAL statement_timeout = 5") == "other"


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
    assert value(metrics, "asyncdal_retries_total", kind="transaction") == 1
    assert (
        samples(metrics).get(
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
    app = FastAPI(
        lifespan=databases_lifespan(lambda: Databases({"main": db}), warm_up=False, metrics=metrics)
    )
    setup(app)
    app.include_router(metrics_router())

    @app.get("/slow")
    async def slow(session: MainSession) -> dict[str, bool]:
        await session.execute(text("SELECT pg_sleep(0.3)"))
        return {"ok": True}

    async with (
        LifespanManager(app) as manager,
        AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://t") as client,
    ):
        first, second = await asyncio.gather(client.get("/slow"), client.get("/slow"))
        assert (first.status_code, second.status_code) == (200, 200)
        scraped = (await client.get("/metrics")).text
    parsed = {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(scraped)
        for sample in family.samples
    }
    labels = (("database", "main"), ("node", "primary"))
    assert parsed[("asyncdal_connection_wait_seconds_count", labels)] == 2
    # One request got the connection at once, the other waited for the first one's query.
    assert parsed[("asyncdal_connection_wait_seconds_sum", labels)] >= 0.25
    waited_long = (
        parsed[("asyncdal_connection_wait_seconds_count", labels)]
        - parsed[
            ("asyncdal_connection_wait_seconds_bucket", tuple(sorted((*labels, ("le", "0.1")))))
        ]
    )
    assert waited_long == 1
