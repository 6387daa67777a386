"""The request id reaches PostgreSQL (pg_stat_activity) and the slow-statement log."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Annotated

import asyncpg
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal import Database, Databases, request_id_scope
from asyncdal.fastapi import databases_lifespan, session_provider, setup
from tests.conftest import plain
from tests.helpers import app_client, wait_until

# At module level: FastAPI resolves the (string) annotation in the module's namespace.
SessionDep = Annotated[AsyncSession, Depends(session_provider())]


def slow_app(db: Database) -> FastAPI:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": db}), warm_up=False))
    setup(app)

    @app.get("/slow")
    async def slow(session: SessionDep) -> dict[str, float]:
        await session.execute(text("SELECT pg_sleep(:seconds)"), {"seconds": 0.6})
        return {"slept": 0.6}

    return app


async def find_backend(observer: asyncpg.Connection, request_id: str) -> asyncpg.Record:
    row: asyncpg.Record = await wait_until(
        lambda: observer.fetchrow(
            "SELECT application_name, query FROM pg_stat_activity "
            "WHERE state = 'active' AND application_name LIKE '%' || $1",
            request_id,
        ),
        timeout=5,
        interval=0.02,
        message="no active backend tagged with the request id",
    )
    return row


async def test_the_request_id_is_in_pg_stat_activity_while_a_slow_query_runs(
    make_database: Callable[..., Database],
    test_database_url: URL,
    caplog: pytest.LogCaptureFixture,
) -> None:
    db = make_database(slow_query_seconds=0.3, tag_requests=True)
    caplog.set_level(logging.WARNING, logger="asyncdal.slow_query")
    observer = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    try:
        async with app_client(slow_app(db)) as client:
            request = asyncio.create_task(
                client.get("/slow", headers={"X-Request-ID": "trace-4711"})
            )
            try:
                backend = await find_backend(observer, "trace-4711")
            finally:
                response = await request  # not left running when no backend was found
    finally:
        await observer.close()
    assert response.status_code == 200
    assert response.headers["x-request-id"] == "trace-4711"
    assert backend["application_name"] == f"{db.settings.application_name}:trace-4711"
    assert "pg_sleep" in backend["query"]
    (record,) = [r for r in caplog.records if r.name == "asyncdal.slow_query"]
    assert record.request_id == "trace-4711"  # type: ignore[attr-defined]
    assert "trace-4711" in record.getMessage()


async def test_a_connection_is_tagged_per_request_and_untagged_without_one(
    make_database: Callable[..., Database],
) -> None:
    db = make_database(pool_size=1, tag_requests=True)
    base = db.settings.application_name

    async def name_seen(request_id: str | None) -> str | None:
        with request_id_scope(request_id) if request_id else contextlib.nullcontext():
            async with db.read_only_unit_of_work() as uow:
                return await uow.session.scalar(text("SELECT current_setting('application_name')"))

    try:
        seen = [await name_seen(rid) for rid in ["first", "first", None, "second"]]
    finally:
        await db.dispose()
    # Work without a request id (a cron job, a health check) is not shown as the last request.
    assert seen == [f"{base}:first", f"{base}:first", base, f"{base}:second"]


async def test_tagging_is_off_by_default(make_database: Callable[..., Database]) -> None:
    db = make_database()
    try:
        with request_id_scope("untagged"):
            async with db.read_only_unit_of_work() as uow:
                name = await uow.session.scalar(text("SELECT current_setting('application_name')"))
    finally:
        await db.dispose()
    assert name == db.settings.application_name
