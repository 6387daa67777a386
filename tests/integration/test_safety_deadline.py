"""``asyncdal.deadline`` without FastAPI, on a real server: a statement past it is cancelled on
the server and the connection stays in the pool; a statement after it is never sent."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, DeadlineExceededError, deadline
from asyncdal.engine import _cancel as cancel_module
from tests.conftest import plain


async def _backends(url: URL, application_name: str) -> list[tuple[int, str]]:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        rows = await connection.fetch(
            "SELECT pid, state FROM pg_stat_activity WHERE application_name = $1 ORDER BY pid",
            application_name,
        )
    finally:
        await connection.close()
    return [(row["pid"], row["state"]) for row in rows]


@pytest.mark.parametrize("read_only", [True, False], ids=["read-only", "read-write"])
async def test_a_statement_past_the_deadline_is_cancelled_and_the_connection_kept(
    make_database: Callable[..., Database], test_database_url: URL, read_only: bool
) -> None:
    db = make_database(pool_size=1)
    name = db.settings.application_name
    try:
        await db.warm_up()
        before = await _backends(test_database_url, name)
        with pytest.raises(DeadlineExceededError, match="server cancelled") as caught:
            # Long enough that a busy machine still reaches the statement within it.
            async with deadline(1.5):
                uow = db.read_only_unit_of_work() if read_only else db.unit_of_work()
                async with uow:
                    await uow.session.execute(text("SELECT pg_sleep(30)"))
        assert caught.value.seconds == 1.5
        # Nothing runs any more, nothing waits in a transaction, and it is the same backend.
        assert await _backends(test_database_url, name) == [(before[0][0], "idle")]
        async with db.unit_of_work() as uow:
            assert (await uow.session.execute(text("SELECT 1"))).scalar() == 1
    finally:
        await db.dispose()


async def test_a_statement_after_the_deadline_is_not_sent(
    make_database: Callable[..., Database],
) -> None:
    db = make_database(pool_size=1, max_overflow=0)
    backend = text("SELECT pg_backend_pid()")
    try:
        async with db.unit_of_work() as uow:
            before = (await uow.session.execute(backend)).scalar()
            with pytest.raises(DeadlineExceededError, match="before a statement"):
                async with deadline(0.2) as budget:
                    # Not a database wait: the deadline leaves it alone while in a statement...
                    await uow.session.execute(text("SELECT 2"))
                    budget.at = 0  # ...and as if the time had gone by now
                    await uow.session.execute(text("SELECT 3"))
        # The connection was not used for it: kept, not discarded (SQLAlchemy would take the
        # error, a TimeoutError, for a disconnect).
        async with db.read_only_unit_of_work() as uow:
            assert (await uow.session.execute(backend)).scalar() == before
    finally:
        await db.dispose()


async def test_time_running_out_between_statements_cancels_the_block(
    make_database: Callable[..., Database],
) -> None:
    db = make_database()
    try:
        with pytest.raises(DeadlineExceededError, match="between statements"):
            async with deadline(0.2), db.unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))
                await asyncio.sleep(30)
        assert asyncio.current_task().cancelling() == 0  # type: ignore[union-attr]
    finally:
        await db.dispose()


async def test_deadlines_nest_and_the_earlier_counts() -> None:
    async with deadline(30) as outer:
        async with deadline(60) as inner:
            assert inner.at == outer.at
        async with deadline(0.5) as tighter:
            assert tighter.at < outer.at


async def test_a_deadline_needs_a_positive_budget() -> None:
    with pytest.raises(ValueError, match="positive"):
        deadline(0)


async def test_a_cancel_from_outside_is_not_taken_for_the_deadline() -> None:
    async def work() -> None:
        async with deadline(30):
            await asyncio.sleep(30)

    task = asyncio.create_task(work())
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def _timeout_shown(uow: object) -> str:
    return str(await uow.session.scalar(text("SHOW statement_timeout")))  # type: ignore[attr-defined]


async def _timeout_ms(uow: object) -> int:
    """``statement_timeout`` in milliseconds (SHOW says ``4999ms``, ``5s`` or ``0``)."""
    shown = await _timeout_shown(uow)
    for unit, factor in (("ms", 1), ("s", 1000), ("min", 60_000)):
        if shown.endswith(unit):
            return int(shown[: -len(unit)]) * factor
    return int(shown)


@pytest.mark.parametrize("snapshot", [False, True], ids=["read-write", "snapshot"])
async def test_in_a_transaction_statement_timeout_is_set_from_the_time_left(
    make_database: Callable[..., Database], snapshot: bool
) -> None:
    db = make_database(pool_size=1, max_overflow=0)
    try:
        async with deadline(20):
            uow = db.read_only_unit_of_work(snapshot=True) if snapshot else db.unit_of_work()
            async with uow:
                shown = await _timeout_ms(uow)
                if not snapshot:
                    await uow.commit()  # SET LOCAL ends with it, where a plain SET would stay
        # Rounded up to the millisecond, from what was left when SHOW ran.
        assert 19_000 < shown <= 20_000, shown
        # SET LOCAL ended with the transaction: the next checkout has the server's default.
        async with db.unit_of_work() as uow:
            assert await _timeout_shown(uow) == "0"
    finally:
        await db.dispose()


async def test_in_autocommit_statement_timeout_is_left_alone(
    make_database: Callable[..., Database],
) -> None:
    db = make_database()
    try:
        async with deadline(20), db.read_only_unit_of_work() as uow:
            assert await _timeout_shown(uow) == "0"  # the cancel request bounds these
    finally:
        await db.dispose()


async def test_the_server_stops_a_statement_at_the_deadline_without_the_cancel(
    make_database: Callable[..., Database],
    test_database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asyncdal.engine._cancel import ServerCancel

    # No cancel request leaves the client: only statement_timeout can stop the statement in
    # time (else the task is cancelled two seconds later, with another message).
    monkeypatch.setattr(ServerCancel, "request", lambda self, driver_connection: None)
    db = make_database(pool_size=1, max_overflow=0)
    name = db.settings.application_name
    try:
        await db.warm_up()
        before = await _backends(test_database_url, name)
        with pytest.raises(DeadlineExceededError, match="server cancelled"):
            async with deadline(1.5), db.unit_of_work() as uow:
                await uow.session.execute(text("SELECT pg_sleep(30)"))
        assert await _backends(test_database_url, name) == [(before[0][0], "idle")]
        async with db.unit_of_work() as uow:
            assert await _timeout_shown(uow) == "0"
    finally:
        await db.dispose()


async def test_the_applications_own_statement_timeout_is_never_loosened(
    make_database: Callable[..., Database],
) -> None:
    from asyncdal import StatementTimeoutError

    db = make_database(statement_timeout=0.3)
    try:
        async with deadline(20), db.unit_of_work() as uow:
            assert await _timeout_ms(uow) == 300
            # Its own limit, not the deadline's: the error says so.
            with pytest.raises(StatementTimeoutError):
                await uow.session.execute(text("SELECT pg_sleep(5)"))
        async with deadline(20), db.unit_of_work() as uow:
            await uow.session.execute(text("SET LOCAL statement_timeout = 250"))
            assert await _timeout_ms(uow) == 250
        async with deadline(0.2), db.unit_of_work() as uow:
            assert await _timeout_ms(uow) <= 200  # the deadline is tighter
    finally:
        await db.dispose()


async def test_statement_timeout_is_set_again_once_it_reaches_too_far(
    make_database: Callable[..., Database],
) -> None:
    db = make_database()
    try:
        async with deadline(20), db.unit_of_work() as uow:
            first = await _timeout_ms(uow)
            # Within a tenth of the budget: the value set stays (no round trip more).
            assert await _timeout_ms(uow) == first
            async with deadline(5):  # an inner, tighter one: set for it
                assert await _timeout_ms(uow) <= 5000
            # Back under the outer one: not left at the inner's value, which would stop a
            # statement the outer deadline allows.
            assert await _timeout_ms(uow) > 15_000
            savepoint = await uow.session.begin_nested()
            async with deadline(3):
                assert await _timeout_ms(uow) <= 3000
            await savepoint.rollback()  # undoes that SET: set again
            assert await _timeout_ms(uow) > 15_000
    finally:
        await db.dispose()


async def test_a_late_cancel_never_reaches_the_next_statement_on_the_connection(
    make_database: Callable[..., Database], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The deadline runs out while a read runs; its cancel request is slow to reach the server
    # (a busy machine), and the read ends first. The request must not land on whatever the
    # connection runs next: here another read, without a deadline, on the one pooled connection.
    real = cancel_module.cancel_request

    def slow_cancel_request(driver_connection: object) -> Any:
        send = real(driver_connection)

        async def late() -> None:
            await asyncio.sleep(0.4)
            await send

        return late()

    monkeypatch.setattr(cancel_module, "cancel_request", slow_cancel_request)
    db = make_database(pool_size=1, max_overflow=0)
    try:
        await db.warm_up()
        with pytest.raises(DeadlineExceededError):
            async with deadline(0.1), db.read_only_unit_of_work() as uow:
                # Ends after the deadline's timer fired, before its cancel arrives.
                await uow.session.execute(text("SELECT pg_sleep(0.3)"))
                await uow.session.execute(text("SELECT 1"))  # past the deadline: not sent
        async with db.read_only_unit_of_work() as uow:
            slept = await uow.session.execute(text("SELECT pg_sleep(0.6), 'finished'"))
            assert slept.one()[1] == "finished"
    finally:
        await db.dispose()
