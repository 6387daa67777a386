"""Timeouts answer clearly and in time: pool exhausted, statement and lock timeouts."""

from __future__ import annotations

import asyncio
import time
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import URL
from sqlalchemy.exc import ProgrammingError

from asyncdal import Database, DatabaseSettings
from tests.conftest import plain
from tests.helpers import app_client, wait_until
from tests.integration.faultapp import build_app, create_table


def make(test_database_url: URL, **overrides: object) -> Database:
    options: dict[str, object] = {
        "url": plain(test_database_url),
        "application_name": f"timeouts-{uuid.uuid4().hex[:10]}",
        "pool_size": 1,
        **overrides,
    }
    return Database("main", DatabaseSettings.model_validate(options))


async def test_pool_exhausted_is_a_503_with_retry_after_after_the_pool_timeout(
    test_database_url: URL,
) -> None:
    db = make(test_database_url, pool_timeout=0.5)
    async with app_client(build_app({"main": db})) as client:
        holder = asyncio.create_task(client.get("/slow?seconds=1.5"))
        await wait_until(
            lambda: db.engine.pool.checkedout(),  # type: ignore[attr-defined]
            timeout=10,
            interval=0.01,
            message="the slow request never took the pool's connection",
        )
        started = time.perf_counter()
        response = await client.get("/main-only")
        waited = time.perf_counter() - started
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
        assert "no database connection became free" in response.json()["detail"]
        assert 0.5 <= waited < 1.4
        print(f"\npool exhausted: 503 after {waited:.3f} s (POOL_TIMEOUT 0.5 s)")
        assert (await holder).status_code == 200
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_statement_timeout_is_a_504_and_the_connection_stays_usable(
    test_database_url: URL,
) -> None:
    db = make(test_database_url, statement_timeout=0.2)
    async with app_client(build_app({"main": db})) as client:
        pid = (await client.get("/pid")).json()["pid"]
        started = time.perf_counter()
        response = await client.get("/slow?seconds=2")
        print(f"\nstatement timeout: 504 after {time.perf_counter() - started:.3f} s (0.2 s)")
        assert response.status_code == 504
        assert "statement_timeout" in response.json()["detail"]
        after = await client.get("/pid")
        assert after.status_code == 200
        assert after.json()["pid"] == pid  # the same connection, back in the pool and usable
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_lock_timeout_is_a_503_and_the_connection_stays_usable(
    test_database_url: URL,
) -> None:
    dsn = plain(test_database_url.set(drivername="postgresql"))
    await create_table(dsn)
    db = make(test_database_url, lock_timeout=0.2)
    locker = await asyncpg.connect(dsn)
    try:
        async with app_client(build_app({"main": db})) as client:
            pid = (await client.get("/pid")).json()["pid"]
            async with locker.transaction():
                await locker.execute("SELECT id FROM fault_items WHERE id = 0 FOR UPDATE")
                started = time.perf_counter()
                response = await client.get("/locked?seconds=0")
                waited = time.perf_counter() - started
            assert response.status_code == 503
            assert response.headers["Retry-After"] == "1"
            assert "lock_timeout" in response.json()["detail"]
            assert waited < 1.5
            print(f"\nlock timeout: 503 after {waited:.3f} s (LOCK_TIMEOUT 0.2 s)")
            assert (await client.get("/locked?seconds=0")).status_code == 200
            assert (await client.get("/pid")).json()["pid"] == pid
    finally:
        await locker.close()


async def test_server_timeouts_come_from_the_settings(test_database_url: URL) -> None:
    db = make(
        test_database_url,
        statement_timeout=4,
        lock_timeout=1.5,
        idle_in_transaction_session_timeout=3,
    )
    async with app_client(build_app({"main": db})) as client:
        shown = (await client.get("/pid")).json()
    assert (shown["statement"], shown["lock"], shown["idle"]) == ("4s", "1500ms", "3s")


async def test_other_database_errors_are_not_turned_into_503s(test_database_url: URL) -> None:
    db = make(test_database_url)
    async with app_client(build_app({"main": db})) as client:
        with pytest.raises(ProgrammingError, match="no_such_table"):
            await client.get("/broken")
        assert (await client.get("/main-only")).status_code == 200
