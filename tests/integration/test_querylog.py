"""Slow-statement log without parameter values, and a rate-limited pool exhaustion warning."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import pytest
from sqlalchemy import text

from asyncdal import Database


async def test_slow_statement_is_logged_without_its_parameters(
    make_database: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = make_database(slow_query_seconds=0.1)
    caplog.set_level(logging.WARNING, logger="asyncdal.slow_query")
    try:
        async with db.read_only_unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1 WHERE :secret = 'x'"), {"secret": "hunter2"})
            await uow.session.execute(
                text("SELECT pg_sleep(0.2) WHERE :secret <> 'x'"), {"secret": "hunter2"}
            )
    finally:
        await db.dispose()
    records = [r for r in caplog.records if r.name == "asyncdal.slow_query"]
    assert len(records) == 1
    record = records[0]
    assert "pg_sleep" in record.statement  # type: ignore[attr-defined]
    assert record.duration_ms >= 190  # type: ignore[attr-defined]
    assert (record.database, record.node) == ("main", "primary")  # type: ignore[attr-defined]
    assert "hunter2" not in record.getMessage()


async def test_fast_statements_and_no_threshold_log_nothing(
    make_database: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = make_database()
    caplog.set_level(logging.WARNING, logger="asyncdal.slow_query")
    try:
        async with db.read_only_unit_of_work() as uow:
            await uow.session.execute(text("SELECT pg_sleep(0.05)"))
    finally:
        await db.dispose()
    assert [r for r in caplog.records if r.name == "asyncdal.slow_query"] == []


async def test_exhaustion_warning_once_per_interval_under_sustained_saturation(
    make_database: Callable[..., Database],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asyncdal.engine import _statement_log as querylog

    interval = 0.3
    monkeypatch.setattr(querylog, "EXHAUSTION_WARNING_INTERVAL", interval)
    db = make_database(pool_size=2)
    caplog.set_level(logging.WARNING, logger="asyncdal.pool")

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records if r.name == "asyncdal.pool"]

    async def saturated_checkouts(count: int) -> None:
        for _ in range(count):  # 2 of 2 in use, checkout after checkout
            second = await db.engine.connect()
            await second.exec_driver_sql("SELECT 1")
            await second.close()

    try:
        first = await db.engine.connect()
        await first.exec_driver_sql("SELECT 1")
        assert warnings() == []  # 1 of 2: fine
        loop = asyncio.get_running_loop()
        started = loop.time()
        await saturated_checkouts(20)
        assert len(warnings()) == 1, "one warning per interval, not one per checkout"
        # Still saturated once the interval has passed: one more warning, not twenty.
        await asyncio.sleep(max(0.0, started + interval + 0.05 - loop.time()))
        await saturated_checkouts(20)
        await first.close()
    finally:
        await db.dispose()
    assert len(warnings()) == 2
    assert "2 of 2" in warnings()[0].getMessage()


async def test_warm_up_filling_the_pool_is_not_an_exhaustion_warning(
    make_database: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    db = make_database(pool_size=4)
    caplog.set_level(logging.WARNING, logger="asyncdal.pool")
    try:
        await db.warm_up()
        assert db.engine.sync_engine.pool.checkedin() == 4  # type: ignore[attr-defined]
    finally:
        await db.dispose()
    assert [r for r in caplog.records if r.name == "asyncdal.pool"] == []
