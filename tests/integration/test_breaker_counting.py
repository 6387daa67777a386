"""What the circuit breaker counts: a busy server is not a dead one; a statement that ran is a
success."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseUnavailableError
from tests.conftest import plain
from tests.helpers import count_connections, wait_until


@pytest.fixture
async def limited_role(test_database_url: URL) -> AsyncIterator[str]:
    """A login role that may hold at most two connections (its 3rd gets SQLSTATE 53300)."""
    role = f"lim_{uuid.uuid4().hex[:10]}"
    admin = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    await admin.execute(f"CREATE ROLE {role} LOGIN CONNECTION LIMIT 2")
    try:
        yield role
    finally:
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1", role
        )

        async def all_ended() -> bool:
            return await count_connections(admin, user=role) == 0

        await wait_until(all_ended, timeout=5, interval=0.02, message=f"{role} still connected")
        await admin.execute(f"DROP ROLE {role}")
        await admin.close()


async def test_too_many_connections_does_not_open_the_breaker(
    make_database: Callable[..., Database], test_database_url: URL, limited_role: str
) -> None:
    db = make_database(
        url=plain(test_database_url.set(username=limited_role, password=None)),
        pool_size=2,
        max_overflow=3,
        retry_attempts=1,
        breaker_failure_threshold=2,
        breaker_cool_down=30,
    )

    async def read(seconds: float) -> str:
        try:
            async with db.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
        except DatabaseUnavailableError:
            return "unavailable"
        return "ok"

    try:
        await db.warm_up()
        burst = await asyncio.gather(*(read(0.3) for _ in range(5)))
        # Two served by the pool; three refused by the server (53300), answered as 503s.
        assert sorted(burst) == ["ok", "ok", "unavailable", "unavailable", "unavailable"]
        assert db.breaker.state == "closed"
        assert await read(0) == "ok"  # the pooled connections still serve
    finally:
        await db.dispose()


async def test_a_statement_that_runs_resets_the_failure_count(
    make_database: Callable[..., Database],
) -> None:
    db = make_database(pool_size=1, breaker_failure_threshold=3)
    try:
        async with db.read_only_unit_of_work() as uow:  # opens the one pooled connection
            await uow.session.execute(text("SELECT 1"))
        db.breaker.record_failure(OSError("simulated"))
        db.breaker.record_failure(OSError("simulated"))
        async with db.read_only_unit_of_work() as uow:  # reuses it: no new connection
            await uow.session.execute(text("SELECT 1"))
        assert db.breaker.failures == 0
        db.breaker.record_failure(OSError("simulated"))
        assert db.breaker.state == "closed"  # not three in a row
    finally:
        await db.dispose()
