"""A request cancelled mid-query (the client went away) leaks nothing, 500 times over."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid

import asyncpg
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings
from tests.conftest import plain
from tests.helpers import app_client, count_connections, wait_until
from tests.integration.faultapp import build_app, create_table

ROUNDS = 500


async def no_lock_held(observer: asyncpg.Connection, application_name: str) -> bool:
    """No backend of ``application_name`` (tagged ones included) holds a lock on fault_items."""
    held = await observer.fetchval(
        "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid "
        "WHERE l.relation = 'fault_items'::regclass AND l.granted "
        "AND (a.application_name = $1 OR a.application_name LIKE $1 || ':%')",
        application_name,
    )
    return bool(held == 0)


async def test_cancelled_mid_query_with_a_row_lock_leaks_nothing(test_database_url: URL) -> None:
    dsn = plain(test_database_url.set(drivername="postgresql"))
    await create_table(dsn)
    name = f"cancel-{uuid.uuid4().hex[:10]}"
    db = Database(
        "main", DatabaseSettings(url=plain(test_database_url), application_name=name, pool_size=3)
    )
    observer = await asyncpg.connect(dsn)
    sleeping = (
        "SELECT count(*) FROM pg_stat_activity "
        "WHERE (application_name = $1 OR application_name LIKE $1 || ':%') "
        "AND state = 'active' AND query LIKE '%pg_sleep%'"
    )
    worst_lock_wait = 0.0
    try:
        async with app_client(build_app({"main": db})) as client:
            for _ in range(ROUNDS):
                # httpx's ASGI transport runs the app in the caller's task: cancelling the
                # request cancels the handler mid-statement, as a server cancels a request
                # whose client went away.
                request = asyncio.create_task(client.get("/locked?seconds=30"))
                await wait_until(
                    lambda: observer.fetchval(sleeping, name),
                    timeout=10,
                    interval=0.001,
                    message="the request never reached pg_sleep",
                )
                request.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await request
                assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
                started = time.perf_counter()
                # The cancel is sent in the background: wait for the app's backends to let go
                # of the row, well within the 30 s pg_sleep a lost cancel would leave running.
                await wait_until(
                    lambda: no_lock_held(observer, name),
                    timeout=20,
                    message="the cancelled request still holds the row lock",
                )
                async with observer.transaction():
                    await observer.execute(
                        "SELECT id FROM fault_items WHERE id = 0 FOR UPDATE NOWAIT"
                    )
                worst_lock_wait = max(worst_lock_wait, time.perf_counter() - started)
            idle_in_transaction = await count_connections(
                observer,
                application_name=name,
                state=("idle in transaction", "idle in transaction (aborted)"),
            )
            assert idle_in_transaction == 0
            assert await observer.fetchval(sleeping, name) == 0
            assert (await client.get("/count")).status_code == 200
            assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        await observer.close()
    print(f"\n{ROUNDS} cancellations: worst wait to lock the row again {worst_lock_wait:.4f} s")
