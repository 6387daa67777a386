"""A COMMIT that was never sent is a known rollback, not an unknown outcome; conflicts in an
ordinary request are a 503 to retry."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, NotCommittedError
from asyncdal.errors import InvalidValueError, UnitOfWorkError
from tests.conftest import plain
from tests.helpers import app_client, count_connections, wait_until
from tests.integration.faultapp import build_app, create_table

IDLE_LIMIT = 0.3


async def saved(test_database_url: URL, tag: str) -> int:
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM fault_items WHERE tag = $1", tag)
        )
    finally:
        await connection.close()


async def test_commit_on_a_connection_the_server_already_closed_is_not_committed(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    await create_table(plain(test_database_url.set(drivername="postgresql")))
    db = make_database(pool_size=1, idle_in_transaction_session_timeout=IDLE_LIMIT)
    tag = f"idle-{uuid.uuid4().hex[:8]}"

    async def session_ended() -> bool:
        name = db.settings.application_name
        return await count_connections(test_database_url, application_name=name) == 0

    try:
        with pytest.raises(NotCommittedError, match="nothing was saved"):
            async with db.unit_of_work() as uow:
                await uow.session.execute(
                    text("INSERT INTO fault_items (tag) VALUES (:tag)"), {"tag": tag}
                )
                # The server ends the session, idle in its transaction for IDLE_LIMIT.
                await wait_until(session_ended, timeout=10, message="the session was not ended")
                await uow.commit()
        async with db.unit_of_work() as uow:  # the pool replaced the connection
            assert await uow.session.scalar(text("SELECT 1")) == 1
    finally:
        await db.dispose()
    assert await saved(test_database_url, tag) == 0


async def test_request_whose_session_the_server_ended_answers_503_not_committed(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    await create_table(plain(test_database_url.set(drivername="postgresql")))
    db = make_database(pool_size=1, idle_in_transaction_session_timeout=IDLE_LIMIT)
    tag = f"idle-{uuid.uuid4().hex[:8]}"
    async with app_client(build_app({"main": db})) as client:
        response = await client.post(f"/items/idle?tag={tag}&seconds={IDLE_LIMIT * 4}")
        assert response.status_code == 503, response.text
        assert response.json()["outcome"] == "not_committed"
        assert "nothing was saved" in response.json()["detail"].lower()
        assert response.headers["Retry-After"] == "1"
        assert (await client.post(f"/items?tag={tag}-next")).status_code == 201
    assert await saved(test_database_url, tag) == 0


async def test_serialization_failure_in_an_ordinary_request_is_a_503_to_retry(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    await create_table(plain(test_database_url.set(drivername="postgresql")))
    async with app_client(build_app({"main": make_database(pool_size=1)})) as client:
        response = await client.get("/conflict")
        assert response.status_code == 503, response.text
        assert "conflicted with concurrent work" in response.json()["detail"]
        assert response.headers["Retry-After"] == "1"
        assert (await client.get("/count")).status_code == 200


@pytest.mark.parametrize(
    ("method", "path", "status", "pgbouncer"),
    [
        # Pooler mode reads in a transaction: closing the session rolls it back.
        ("GET", "/count/held", 200, True),
        # A refusal after a write: the middleware rolls the write back.
        ("POST", "/items/held-refused?tag=refused", 409, False),
    ],
)
async def test_an_answer_stands_when_its_connection_dies_before_the_session_is_closed(
    make_database: Callable[..., Database],
    test_database_url: URL,
    method: str,
    path: str,
    status: int,
    pgbouncer: bool,
) -> None:
    """The answer is settled; the session's rollback on a connection that died meanwhile
    fails, and that must not turn it into a 500 or a reset connection (found by the chaos
    suite, the PgBouncer restarted under load)."""
    await create_table(plain(test_database_url.set(drivername="postgresql")))
    db = make_database(pool_size=1, pgbouncer=pgbouncer)
    name = db.settings.application_name
    app = build_app({"main": db})

    async def ended() -> bool:
        return await count_connections(test_database_url, application_name=name) == 0

    async with app_client(app) as client:
        answer = asyncio.create_task(client.request(method, path))
        await asyncio.wait_for(app.state.inside.wait(), 10)
        killer = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
        try:
            await killer.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = $1 OR starts_with(application_name, $1 || ':')",
                name,
            )
        finally:
            await killer.close()
        await wait_until(ended, message="the backend was not ended")
        app.state.proceed.set()
        response = await asyncio.wait_for(answer, 10)
        assert response.status_code == status, response.text
        assert (await client.get("/count")).status_code == 200  # the pool replaced it
    assert await saved(test_database_url, "refused") == 0


async def test_a_commit_after_a_caught_failure_raises_and_saves_nothing(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    # PostgreSQL answers such a COMMIT with ROLLBACK, which the driver takes for success.
    await create_table(plain(test_database_url.set(drivername="postgresql")))
    db = make_database(pool_size=1)
    tag = f"caught-{uuid.uuid4().hex[:8]}"
    try:
        with pytest.raises(UnitOfWorkError, match=r"DivisionByZeroError.*nothing of it was saved"):
            async with db.unit_of_work() as uow:
                await uow.session.execute(
                    text("INSERT INTO fault_items (tag) VALUES (:tag)"), {"tag": tag}
                )
                with pytest.raises(InvalidValueError):
                    await uow.session.execute(text("SELECT 1 / 0"))
                await uow.commit()
        async with db.unit_of_work() as uow:  # the connection went back clean
            assert await uow.session.scalar(text("SELECT 1")) == 1
    finally:
        await db.dispose()
    assert await saved(test_database_url, tag) == 0


async def test_a_failure_rolled_back_to_its_savepoint_or_caught_before_sending_commits(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    await create_table(plain(test_database_url.set(drivername="postgresql")))
    db = make_database(pool_size=1)
    tag = f"kept-{uuid.uuid4().hex[:8]}"
    try:
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                text("INSERT INTO fault_items (tag) VALUES (:tag)"), {"tag": tag}
            )
            with pytest.raises(InvalidValueError):
                async with uow.session.begin_nested():
                    await uow.session.execute(text("SELECT 1 / 0"))
            # The driver refuses the argument before sending anything: the transaction holds.
            with pytest.raises(InvalidValueError, match="does not fit its type"):
                await uow.session.execute(text("SELECT CAST(:n AS int)"), {"n": "not a number"})
            await uow.commit()
    finally:
        await db.dispose()
    assert await saved(test_database_url, tag) == 1
