"""run_in_transaction re-runs a whole unit of work on a serialization failure."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, SerializationError, UnitOfWork, UnitOfWorkError
from tests.conftest import plain


@pytest.fixture
async def accounts(test_database_url: URL) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    await connection.execute(
        """
        DROP TABLE IF EXISTS rit_accounts, rit_ledger;
        CREATE TABLE rit_accounts (id int PRIMARY KEY, balance int NOT NULL);
        CREATE TABLE rit_ledger (tag text NOT NULL, seen int NOT NULL);
        INSERT INTO rit_accounts VALUES (1, 100), (2, 100);
        """
    )
    try:
        yield connection
    finally:
        await connection.execute("DROP TABLE rit_accounts, rit_ledger")
        await connection.close()


def write_skew(
    attempts: dict[str, int], barrier: asyncio.Barrier, name: str, account: int
) -> Callable[[UnitOfWork], object]:
    """Read both balances, then take from one: two of these conflict under SERIALIZABLE."""

    async def work(uow: UnitOfWork) -> int:
        attempts[name] += 1
        total = int(await uow.session.scalar(text("SELECT sum(balance) FROM rit_accounts")) or 0)
        if attempts[name] == 1:
            await barrier.wait()  # both have read before either writes
        await uow.session.execute(
            text("INSERT INTO rit_ledger (tag, seen) VALUES (:tag, :seen)"),
            {"tag": name, "seen": total},
        )
        await uow.session.execute(
            text("UPDATE rit_accounts SET balance = balance - 10 WHERE id = :id"), {"id": account}
        )
        return total

    return work


async def test_conflicting_units_of_work_both_commit_exactly_once(
    make_database: Callable[..., Database], accounts: asyncpg.Connection
) -> None:
    db = make_database(retry_attempts=5, retry_base_delay=0.01, retry_max_delay=0.05)
    attempts = {"a": 0, "b": 0}
    barrier = asyncio.Barrier(2)
    totals = await asyncio.gather(
        db.run_in_transaction(
            write_skew(attempts, barrier, "a", 1), idempotent=True, isolation_level="SERIALIZABLE"
        ),
        db.run_in_transaction(
            write_skew(attempts, barrier, "b", 2), idempotent=True, isolation_level="SERIALIZABLE"
        ),
    )
    assert sorted(attempts.values()) == [1, 2]  # exactly one was re-run
    assert sorted(totals) == [190, 200]  # the re-run saw the other's committed write
    ledger = await accounts.fetch("SELECT tag, count(*) AS n FROM rit_ledger GROUP BY tag")
    assert {row["tag"]: row["n"] for row in ledger} == {"a": 1, "b": 1}
    assert await accounts.fetchval("SELECT sum(balance) FROM rit_accounts") == 180
    await db.dispose()


async def test_not_idempotent_runs_once_and_the_conflict_propagates(
    make_database: Callable[..., Database], accounts: asyncpg.Connection
) -> None:
    db = make_database()
    attempts = {"a": 0, "b": 0}
    barrier = asyncio.Barrier(2)
    results = await asyncio.gather(
        db.run_in_transaction(
            write_skew(attempts, barrier, "a", 1), idempotent=False, isolation_level="SERIALIZABLE"
        ),
        db.run_in_transaction(
            write_skew(attempts, barrier, "b", 2), idempotent=False, isolation_level="SERIALIZABLE"
        ),
        return_exceptions=True,
    )
    failed = [result for result in results if isinstance(result, Exception)]
    assert len(failed) == 1
    assert isinstance(failed[0], SerializationError)
    assert getattr(failed[0].__cause__, "sqlstate", None) == "40001"
    assert attempts == {"a": 1, "b": 1}
    assert await accounts.fetchval("SELECT count(*) FROM rit_ledger") == 1
    await db.dispose()


async def test_refused_inside_an_open_unit_of_work(
    make_database: Callable[..., Database],
) -> None:
    db = make_database(application_name=f"rit-{uuid.uuid4().hex[:8]}")

    async def work(uow: UnitOfWork) -> None:
        return None

    async with db.unit_of_work():
        with pytest.raises(UnitOfWorkError, match="must own the transaction"):
            await db.run_in_transaction(work, idempotent=True)
    await db.dispose()


async def test_deadlock_is_retried(
    make_database: Callable[..., Database], accounts: asyncpg.Connection
) -> None:
    db = make_database(retry_attempts=3, retry_base_delay=0.01, retry_max_delay=0.05)
    attempts = {"a": 0, "b": 0}
    barrier = asyncio.Barrier(2)

    def lock_in_order(name: str, first: int, second: int) -> Callable[[UnitOfWork], object]:
        async def work(uow: UnitOfWork) -> None:
            attempts[name] += 1
            update = text("UPDATE rit_accounts SET balance = balance + 1 WHERE id = :id")
            await uow.session.execute(update, {"id": first})
            if attempts[name] == 1:
                await barrier.wait()  # each holds one row and wants the other's
            await uow.session.execute(update, {"id": second})

        return work

    await asyncio.gather(
        db.run_in_transaction(lock_in_order("a", 1, 2), idempotent=True),
        db.run_in_transaction(lock_in_order("b", 2, 1), idempotent=True),
    )
    assert sorted(attempts.values()) == [1, 2]
    assert await accounts.fetchval("SELECT sum(balance) FROM rit_accounts") == 204
    await db.dispose()
