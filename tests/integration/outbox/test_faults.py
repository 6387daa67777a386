"""The worker under database faults (issue 13): its connections are replaced rather than reused
after anything but an ordinary SQL error, its loops ride out backends killed in a tight loop,
and only a bug stops it, its leases released."""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal import Database
from asyncdal.outbox import Handlers, OutboxSettings, OutboxWorker
from asyncdal.outbox._connection import DATABASE_ERRORS, WorkerConnection, WorkerConnectionError
from asyncdal.outbox._resilience import OutboxWorkerCrashedError
from tests.conftest import plain
from tests.helpers import wait_until
from tests.integration.outbox.conftest import FAST, insert_events, status_counts

PID = "SELECT pg_backend_pid()"


def checked_out(database: Database) -> int:
    return int(database.engine.pool.checkedout())  # type: ignore[attr-defined]


async def backend_exists(sql: asyncpg.Connection, pid: int) -> bool:
    return bool(await sql.fetchval("SELECT count(*) FROM pg_stat_activity WHERE pid = $1", pid))


async def sleeping_on(sql: asyncpg.Connection, pid: int) -> bool:
    return bool(
        await sql.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND query LIKE '%pg_sleep%' "
            "AND state = 'active'",
            pid,
        )
    )


async def test_a_cancelled_operation_never_leaves_its_connection_to_the_next(
    database: Database, sql: asyncpg.Connection
) -> None:
    """A statement cancelled mid-way (a timeout, a shutdown) may still run, with a cancel
    request in flight: the next operation gets another connection, and the old backend ends."""
    connection = WorkerConnection(database)
    try:
        first = await connection.run(lambda c: c.fetchval(PID))
        task = asyncio.create_task(connection.run(lambda c: c.execute("SELECT pg_sleep(30)")))
        await wait_until(lambda: sleeping_on(sql, first))
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        second = await asyncio.wait_for(connection.run(lambda c: c.fetchval(PID)), 5)
        assert second != first
        await wait_until(lambda: _gone(sql, first))
        assert checked_out(database) == 1  # the new one; the old slot was given back
    finally:
        await connection.close()
    assert checked_out(database) == 0


async def _gone(sql: asyncpg.Connection, pid: int) -> bool:
    return not await backend_exists(sql, pid)


async def test_a_cancellation_during_the_discard_still_gives_the_slot_back(
    database: Database, sql: asyncpg.Connection
) -> None:
    connection = WorkerConnection(database)
    first = await connection.run(lambda c: c.fetchval(PID))
    task = asyncio.create_task(connection.run(lambda c: c.execute("SELECT pg_sleep(30)")))
    await wait_until(lambda: sleeping_on(sql, first))
    task.cancel()
    await asyncio.sleep(0)  # into the discard
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await wait_until(lambda: checked_out(database) == 0)
    await wait_until(lambda: _gone(sql, first))
    await connection.close()


async def test_a_driver_protocol_error_replaces_the_connection(
    database: Database, sql: asyncpg.Connection
) -> None:
    """asyncpg's ``InternalClientError`` (its protocol left mid-operation, as when a backend
    is terminated while idle and a statement starts before the socket's end is read) is a
    database fault the worker retries after, on a new connection."""
    connection = WorkerConnection(database)
    try:
        first = await connection.run(lambda c: c.fetchval(PID))

        async def broken(c: asyncpg.Connection) -> None:
            raise asyncpg.InternalClientError(
                "cannot switch to state 12; another operation (2) is in progress"
            )

        with pytest.raises(DATABASE_ERRORS):
            await connection.run(broken)
        assert await connection.run(lambda c: c.fetchval(PID)) != first
        await wait_until(lambda: _gone(sql, first))

        async def odd(c: asyncpg.Connection) -> None:
            raise AttributeError("'NoneType' object has no attribute 'write'")

        # Whatever else fails on the connection is the connection's fault too: wrapped.
        before = await connection.run(lambda c: c.fetchval(PID))
        with pytest.raises(WorkerConnectionError) as raised:
            await connection.run(odd)
        assert isinstance(raised.value.__cause__, AttributeError)
        assert await connection.run(lambda c: c.fetchval(PID)) != before
    finally:
        await connection.close()


async def test_an_ordinary_sql_error_keeps_the_connection(database: Database) -> None:
    connection = WorkerConnection(database)
    try:
        first = await connection.run(lambda c: c.fetchval(PID))
        with pytest.raises(asyncpg.DivisionByZeroError):
            await connection.run(lambda c: c.fetchval("SELECT 1 / 0"))
        assert await connection.run(lambda c: c.fetchval(PID)) == first
    finally:
        await connection.close()


async def test_close_ends_an_operation_in_flight_and_refuses_more(
    database: Database, sql: asyncpg.Connection
) -> None:
    connection = WorkerConnection(database)
    first = await connection.run(lambda c: c.fetchval(PID))
    task = asyncio.create_task(connection.run(lambda c: c.execute("SELECT pg_sleep(30)")))
    await wait_until(lambda: sleeping_on(sql, first))
    await asyncio.wait_for(connection.close(), 5)  # not after the 30 s statement
    with pytest.raises(DATABASE_ERRORS):
        await task
    assert checked_out(database) == 0
    with pytest.raises(WorkerConnectionError):
        await connection.run(lambda c: c.fetchval(PID))
    await wait_until(lambda: _gone(sql, first))


async def test_worker_rides_out_backends_killed_in_a_tight_loop(
    database: Database, sql: asyncpg.Connection
) -> None:
    """Every backend of the worker terminated every few tens of ms while it claims, settles,
    extends leases and listens: it never stops, and once the kills end every event is done.

    Before the fix the worker died here about every other run, of asyncpg's
    ``InternalClientError: cannot switch to state 12; another operation (2) is in progress``.
    """
    deliveries: collections.Counter[int] = collections.Counter()

    async def handle(payload: dict[str, Any]) -> None:
        deliveries[payload["n"]] += 1
        await asyncio.sleep(random.random() * 0.005)

    app = database.settings.application_name
    await insert_events(sql, 2000)
    worker = OutboxWorker(
        database,
        Handlers({"test.event": handle}),
        OutboxSettings(**{**FAST, "batch_size": 50, "heartbeat_seconds": 0.1}),
    )
    task = asyncio.create_task(worker.run())
    kills = 0
    loop = asyncio.get_running_loop()
    until = loop.time() + 6.0
    while loop.time() < until:
        assert not task.done(), task
        kills += await sql.fetchval(
            "SELECT count(*) FROM (SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE application_name LIKE $1 || '%') AS killed",
            app,
        )
        await asyncio.sleep(random.uniform(0.01, 0.06))
    assert kills > 50

    async def all_done() -> bool:
        assert not task.done(), task
        return await status_counts(sql) == {"done": 2000}

    await wait_until(all_done, timeout=60, interval=0.2)
    worker.stop()
    await asyncio.wait_for(task, 20)
    assert set(deliveries) == set(range(1, 2001))  # at least once each


async def test_a_bug_stops_the_worker_and_releases_its_leases(
    database: Database, sql: asyncpg.Connection, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only a bug stops the worker: it says so, releases its leases (attempts given back)
    and raises :class:`OutboxWorkerCrashedError`."""
    started = asyncio.Event()

    async def hang(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.Event().wait()

    await insert_events(sql, 3)
    worker = OutboxWorker(
        database,
        Handlers({"test.event": hang}),
        OutboxSettings(**{**FAST, "shutdown_timeout": 0.2}),
    )
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(started.wait(), 10)

    async def broken_round() -> None:
        raise ZeroDivisionError("a bug in the maintenance round")

    monkeypatch.setattr(worker._maintenance, "once", broken_round)
    with pytest.raises(OutboxWorkerCrashedError) as raised:
        await asyncio.wait_for(task, 15)
    assert isinstance(raised.value.__cause__, ZeroDivisionError)
    rows = await sql.fetch("SELECT status, attempts, lease_token FROM asyncdal_outbox")
    assert {tuple(row) for row in rows} == {("pending", 0, None)}


async def test_the_command_exits_non_zero_after_a_bug(
    outbox_url: URL, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``asyncdal outbox run`` exits with status 1 (a process manager restarts it)."""
    import argparse

    from asyncdal.outbox._cli import _run_worker

    async def crash(self: OutboxWorker) -> None:
        raise OutboxWorkerCrashedError("outbox worker failed") from ZeroDivisionError()

    monkeypatch.setenv("DATABASE_URL", plain(outbox_url))
    monkeypatch.setattr(OutboxWorker, "run", crash)
    arguments = argparse.Namespace(handlers="tests.integration.outbox.handlers:build")
    assert await _run_worker(arguments, OutboxSettings()) == 1
