"""Background units of work: never the request's session, one per task, clean on cancel."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest
from sqlalchemy import text

from asyncdal import Database
from tests.helpers import count_connections
from tests.integration.conftest import BackendCounter


async def test_background_units_of_work_never_join_and_get_one_session_each(
    make_database: Callable[..., Database],
) -> None:
    db = make_database(pool_size=4)
    try:
        async with db.unit_of_work() as request_uow:

            async def task() -> object:
                async with db.background_unit_of_work() as uow:
                    assert not uow.joined
                    await uow.session.execute(text("SELECT pg_sleep(0.05)"))
                    return uow.session

            sessions = await asyncio.gather(task(), task(), task())
            # Even in the request's own task the door gives a session of its own.
            async with db.background_unit_of_work() as inline:
                assert inline.session is not request_uow.session
            request_session = request_uow.session
        assert len({id(session) for session in [*sessions, request_session]}) == 4
    finally:
        await db.dispose()


async def test_cancelled_background_task_leaks_nothing(
    make_database: Callable[..., Database], backends: BackendCounter
) -> None:
    db = make_database(pool_size=2)
    started = asyncio.Event()

    async def slow_write() -> None:
        async with db.background_unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1 FROM products FOR UPDATE"))
            started.set()
            await uow.session.execute(text("SELECT pg_sleep(30)"))

    try:
        task = asyncio.create_task(slow_write())
        await asyncio.wait_for(started.wait(), 5)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]
        stuck = await count_connections(
            db.settings.sqlalchemy_url(),
            application_name=db.settings.application_name,
            state=("idle in transaction", "active"),
        )
        assert stuck == 0
    finally:
        await db.dispose()
    assert await backends(db.settings.application_name) == 0
