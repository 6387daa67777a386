"""Handlers that take a unit of work share transactions with their settle
(``OUTBOX__TRANSACTION_SIZE``): their writes and their completion commit together, or nothing
of the transaction does and each event runs again alone."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import BigInteger, text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdal import Database, UnitOfWork
from asyncdal.outbox import Handlers, OutboxEvent
from tests.helpers import wait_until
from tests.integration.outbox.conftest import insert_events, running_worker, status_counts

WRITES = "CREATE TABLE writes (event_id bigint NOT NULL, attempt int NOT NULL, xid bigint)"
# The transaction's id as the rows it writes carry it in xmin (32 bits, no epoch).
_WRITE = text("INSERT INTO writes VALUES (:id, :attempt, txid_current() % 4294967296)")


async def write(event: OutboxEvent, uow: UnitOfWork) -> None:
    await uow.session.execute(_WRITE, {"id": event.id, "attempt": event.attempts})


class _Base(DeclarativeBase):
    pass


class Added(_Base):
    """A row a handler adds to its session, flushed by the worker."""

    __tablename__ = "added"
    event_id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    seen_before: Mapped[int] = mapped_column(BigInteger)


async def writes_per_event(sql: asyncpg.Connection) -> dict[int, int]:
    rows = await sql.fetch("SELECT event_id, count(*) FROM writes GROUP BY 1")
    return {row[0]: row[1] for row in rows}


async def test_writes_and_their_completion_commit_in_the_same_transactions(
    database: Database, sql: asyncpg.Connection
) -> None:
    await sql.execute(WRITES)
    await insert_events(sql, 120)
    async with running_worker(database, Handlers({"test.event": write})) as worker:
        await wait_until(lambda: worker.stats.done == 120)
    assert await writes_per_event(sql) == {n: 1 for n in range(1, 121)}
    # Each event was settled by the transaction that wrote its effect.
    apart = await sql.fetchval(
        "SELECT count(*) FROM writes AS w JOIN asyncdal_outbox AS o ON o.id = w.event_id "
        "WHERE o.xmin::text::bigint <> w.xid"
    )
    assert apart == 0
    transactions = await sql.fetchval("SELECT count(DISTINCT xid) FROM writes")
    assert transactions <= 120 // 50 + 2  # claims may split the 120 at most once more
    assert await status_counts(sql) == {"done": 120}


async def test_a_transaction_size_of_one_is_a_transaction_per_event_settled_apart(
    database: Database, sql: asyncpg.Connection
) -> None:
    await sql.execute(WRITES)
    await insert_events(sql, 20)
    handlers = Handlers({"test.event": write})
    async with running_worker(database, handlers, transaction_size=1) as worker:
        await wait_until(lambda: worker.stats.done == 20)
    assert await sql.fetchval("SELECT count(DISTINCT xid) FROM writes") == 20
    together = await sql.fetchval(
        "SELECT count(*) FROM writes AS w JOIN asyncdal_outbox AS o ON o.id = w.event_id "
        "WHERE o.xmin::text::bigint = w.xid"
    )
    assert together == 0


async def test_a_failing_handler_rolls_its_transaction_back_and_each_event_runs_alone(
    database: Database, sql: asyncpg.Connection
) -> None:
    await sql.execute(WRITES)

    async def third_fails_once(event: OutboxEvent, uow: UnitOfWork) -> None:
        await write(event, uow)
        if event.payload["n"] == 3 and event.attempts == 1:
            raise RuntimeError("the third event's first attempt fails after writing")

    await insert_events(sql, 10)
    async with running_worker(database, Handlers({"test.event": third_fails_once})) as worker:
        await wait_until(lambda: worker.stats.done == 10)
    # The shared transaction's writes were rolled back; each event's effect is there once.
    assert await writes_per_event(sql) == {n: 1 for n in range(1, 11)}
    attempts = dict(await sql.fetch("SELECT id, attempts FROM asyncdal_outbox"))
    assert attempts == {n: 2 if n == 3 else 1 for n in range(1, 11)}
    assert (worker.stats.retried, worker.stats.lost) == (1, 0)


async def test_a_handler_that_rolls_the_shared_transaction_back_costs_the_others_nothing(
    database: Database, sql: asyncpg.Connection
) -> None:
    await sql.execute(WRITES)

    async def second_changes_its_mind(event: OutboxEvent, uow: UnitOfWork) -> None:
        await write(event, uow)
        if event.payload["n"] == 2:
            await uow.rollback()  # its own write undone (alone, that is all it undoes)

    await insert_events(sql, 6)
    handlers = Handlers({"test.event": second_changes_its_mind})
    async with running_worker(database, handlers) as worker:
        await wait_until(lambda: worker.stats.done == 6)
    assert await writes_per_event(sql) == {n: 1 for n in range(1, 7) if n != 2}


async def test_a_lease_taken_over_during_the_transaction_commits_nothing_of_it(
    database: Database, sql: asyncpg.Connection
) -> None:
    """Another worker took the first event over while the shared transaction ran: the
    transaction's settle finds its token gone, nothing of it commits, and each event runs
    again alone (the first one's late settle then changes nothing)."""
    await sql.execute(WRITES)
    taken = asyncio.Event()

    async def last_sees_the_first_taken(event: OutboxEvent, uow: UnitOfWork) -> None:
        await write(event, uow)
        if event.payload["n"] == 5 and not taken.is_set():
            await sql.execute(
                "UPDATE asyncdal_outbox SET status = 'done', done_at = now(), "
                "lease_token = gen_random_uuid() WHERE id = 1"
            )
            taken.set()

    await insert_events(sql, 5)
    handlers = Handlers({"test.event": last_sees_the_first_taken})
    async with running_worker(database, handlers) as worker:
        await wait_until(lambda: worker.stats.done + worker.stats.lost == 5)
    assert (worker.stats.done, worker.stats.lost) == (4, 1)
    # Written once each, by the runs alone: the shared transaction left nothing.
    assert await writes_per_event(sql) == {n: 1 for n in range(1, 6)}
    assert await sql.fetchval("SELECT count(DISTINCT xid) FROM writes") == 5
    assert await status_counts(sql) == {"done": 5}


async def test_a_handler_past_its_timeout_in_a_shared_transaction_is_retried_alone(
    database: Database, sql: asyncpg.Connection
) -> None:
    await sql.execute(WRITES)

    async def second_hangs_at_first(event: OutboxEvent, uow: UnitOfWork) -> None:
        await write(event, uow)
        if event.payload["n"] == 2 and event.attempts == 1:
            await asyncio.Event().wait()  # until the watchdog cancels it

    await insert_events(sql, 4)
    handlers = Handlers({"test.event": second_hangs_at_first})
    async with running_worker(database, handlers, handler_timeout=0.5) as worker:
        await wait_until(lambda: worker.stats.done == 4)
    assert await writes_per_event(sql) == {n: 1 for n in range(1, 5)}
    attempts = dict(await sql.fetch("SELECT id, attempts FROM asyncdal_outbox"))
    assert attempts == {1: 1, 2: 2, 3: 1, 4: 1}


async def test_what_a_handler_adds_without_committing_is_flushed_before_the_next_runs(
    database: Database, sql: asyncpg.Connection
) -> None:
    """The worker flushes a handler's session after it returns (when it holds changes), so a
    flush failure is the handler's own, and the next handler sees its rows."""
    await sql.execute("CREATE TABLE added (event_id bigint PRIMARY KEY, seen_before bigint)")
    count = text("SELECT count(*) FROM added")

    async def add_without_commit(event: OutboxEvent, uow: UnitOfWork) -> None:
        # On the connection: a statement there does not autoflush the session.
        connection = await uow.session.connection()
        seen = (await connection.execute(count)).scalar_one()
        uow.session.add(Added(event_id=event.id, seen_before=seen))

    await insert_events(sql, 5)
    async with running_worker(database, Handlers({"test.event": add_without_commit})) as worker:
        await wait_until(lambda: worker.stats.done == 5)
    rows = dict(await sql.fetch("SELECT event_id, seen_before FROM added"))
    assert rows == {n: n - 1 for n in range(1, 6)}
    assert await status_counts(sql) == {"done": 5}
