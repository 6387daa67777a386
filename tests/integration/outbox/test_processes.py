"""Real worker processes (``asyncdal outbox run``) side by side: no event lost or handled by
two workers at once, crash recovery after ``kill -9``, a stalled worker fenced off, per-key
ordering, graceful SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal

import asyncpg
import httpx
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings
from asyncdal.testing import drop_test_database, spare_port
from catalog.models import Base
from tests.conftest import plain
from tests.helpers import wait_until
from tests.integration.outbox.conftest import (
    HANDLED_DDL,
    WorkerProcesses,
    dsn,
    insert_events,
    peek_stderr,
    status_counts,
)

OVERLAPS = """
SELECT count(*) FROM (
    SELECT started, lag(ended) OVER (PARTITION BY {partition} ORDER BY started) AS previous_end
    FROM handled
) AS calls
WHERE started < previous_end
"""


async def _exit_code(process: object, timeout: float = 15) -> int:
    code: int = await asyncio.to_thread(process.wait, timeout)  # type: ignore[attr-defined]
    return code


async def test_four_workers_lose_nothing_and_never_overlap(
    worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    await insert_events(sql, 10_000)
    settings = {"concurrency": 8, "max_attempts": 3}
    workers = [worker_processes.start(fail_rate=0.1, **settings) for _ in range(4)]

    async def finished() -> bool:
        counts = await status_counts(sql)
        return counts.get("done", 0) + counts.get("dead", 0) == 10_000

    await wait_until(finished, timeout=90, interval=0.25)
    for process in workers:
        process.send_signal(signal.SIGTERM)
    assert [await _exit_code(process) for process in workers] == [0, 0, 0, 0]

    counts = await status_counts(sql)
    assert set(counts) <= {"done", "dead"}
    assert sum(counts.values()) == 10_000
    assert counts.get("dead", 0) > 0  # with 10% failures and 3 attempts, about 10 die
    assert await sql.fetchval(OVERLAPS.format(partition="event_id")) == 0
    # Every done event was handled successfully; every dead one failed three times.
    assert (
        await sql.fetchval(
            "SELECT count(*) FROM asyncdal_outbox o WHERE status = 'done' AND NOT EXISTS "
            "(SELECT 1 FROM handled h WHERE h.event_id = o.id AND h.ok)"
        )
        == 0
    )
    dead_calls = await sql.fetch(
        "SELECT o.attempts, o.last_error, count(h.*) AS calls, bool_or(h.ok) AS any_ok "
        "FROM asyncdal_outbox o JOIN handled h ON h.event_id = o.id "
        "WHERE o.status = 'dead' GROUP BY o.id"
    )
    assert {(r["attempts"], r["calls"], r["any_ok"]) for r in dead_calls} == {(3, 3, False)}
    assert all(r["last_error"].startswith("RuntimeError: random failure") for r in dead_calls)
    # The work was shared (a worker that started late on a busy machine may get less).
    assert await sql.fetchval("SELECT count(DISTINCT worker) FROM handled") >= 2


async def test_events_of_a_killed_worker_are_finished_by_another(
    worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    await insert_events(sql, 5)
    hanging = worker_processes.start("hang", lease_seconds=2, heartbeat_seconds=0.5)
    await wait_until(lambda: sql.fetchval("SELECT count(*) = 5 FROM handled"), timeout=30)
    hanging.kill()  # SIGKILL: no shutdown, leases stay as they were
    assert await _exit_code(hanging) == -signal.SIGKILL
    assert await status_counts(sql) == {"leased": 5}

    rescuer = worker_processes.start("record")
    await wait_until(lambda: sql.fetchval("SELECT count(*) = 5 FROM handled WHERE ok"))
    await wait_until(lambda: _all_done(sql))
    rescuer.send_signal(signal.SIGTERM)
    assert await _exit_code(rescuer) == 0
    rows = await sql.fetch("SELECT attempts, last_error FROM asyncdal_outbox")
    assert {r["attempts"] for r in rows} == {2}
    assert all("expired" in r["last_error"] for r in rows)
    assert await sql.fetchval("SELECT array_agg(DISTINCT worker) FROM handled WHERE ok") == [
        rescuer.pid
    ]


async def _all_done(sql: asyncpg.Connection, count: int = 5) -> bool:
    return await status_counts(sql) == {"done": count}


async def test_per_key_ordering_with_four_workers(
    worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    await insert_events(sql, 1000, keys=10)
    workers = [
        worker_processes.start(ordered="true", concurrency=8, poll_interval=0.05, fail_rate=0.1)
        for _ in range(4)
    ]
    await wait_until(
        lambda: sql.fetchval("SELECT count(*) = 1000 FROM asyncdal_outbox WHERE status = 'done'"),
        timeout=60,
        interval=0.25,
    )
    for process in workers:
        process.send_signal(signal.SIGTERM)
    assert [await _exit_code(process) for process in workers] == [0, 0, 0, 0]
    # Every event succeeded once; about a tenth of the calls failed and were retried.
    assert await sql.fetchval("SELECT count(*) FROM handled WHERE ok") == 1000
    assert await sql.fetchval("SELECT count(DISTINCT event_id) FROM handled WHERE ok") == 1000
    assert await sql.fetchval("SELECT count(*) FROM handled WHERE NOT ok") > 0
    # Within a key: one at a time, and in insertion (id) order, a retry before anything
    # later of its key (failed calls included: an event may repeat, never go back).
    assert await sql.fetchval(OVERLAPS.format(partition="key")) == 0
    out_of_order = await sql.fetchval(
        "SELECT count(*) FROM (SELECT event_id, "
        "lag(event_id) OVER (PARTITION BY key ORDER BY started) AS previous FROM handled) AS c "
        "WHERE event_id < previous"
    )
    assert out_of_order == 0
    assert await sql.fetchval("SELECT count(DISTINCT worker) FROM handled") > 1


async def test_sigterm_finishes_or_releases_everything(
    worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    await sql.execute(
        "INSERT INTO asyncdal_outbox (event_type, payload) "
        "SELECT 'test.event', jsonb_build_object('sleep', CASE WHEN n <= 20 THEN 0.2 ELSE 30 END) "
        "FROM generate_series(1, 40) AS n"
    )
    port = spare_port()
    # Served on the address asked for (any 127.x.y.z is this machine's loopback).
    worker = worker_processes.start(
        concurrency=10, shutdown_timeout=1.5, metrics_port=port, metrics_address="127.0.0.2"
    )
    await wait_until(lambda: sql.fetchval("SELECT count(*) > 0 FROM handled"), timeout=30)
    done_total = 'asyncdal_outbox_done_total{event_type="test.event"}'
    async with httpx.AsyncClient() as http:

        async def scrape_after_a_settle() -> str | None:
            # A handler records its call before its outcome is settled (and counted).
            text = (await http.get(f"http://127.0.0.2:{port}/metrics")).text
            return text if done_total in text else None

        scraped = await wait_until(scrape_after_a_settle)
    assert "asyncdal_outbox_claimed_total 40.0" in scraped
    assert "asyncdal_query_seconds_bucket" in scraped  # the database metrics, same registry
    # The worker's pools, under their own names, pool gauges included.
    assert 'asyncdal_pool_size{database="main:outbox-worker",node="primary"} 4.0' in scraped
    assert 'asyncdal_pool_size{database="main:outbox-handlers",node="primary"} 10.0' in scraped
    assert 'asyncdal_query_seconds_count{database="main:outbox-handlers"' in scraped
    worker.send_signal(signal.SIGTERM)
    assert await _exit_code(worker) == 0

    rows = await sql.fetch(
        "SELECT id, status, attempts, lease_token, (payload->>'sleep')::float8 AS sleep "
        "FROM asyncdal_outbox ORDER BY id"
    )
    assert {r["status"] for r in rows} == {"done", "pending"}
    assert all(r["lease_token"] is None for r in rows)
    # Long handlers could not finish: released, with their attempt given back.
    assert all(r["status"] == "pending" for r in rows if r["sleep"] == 30)
    assert all(r["attempts"] == 0 for r in rows if r["status"] == "pending")
    done = {r["id"] for r in rows if r["status"] == "done"}
    assert done == set(await sql.fetchval("SELECT array_agg(event_id) FROM handled WHERE ok") or [])


async def test_sigterm_exits_despite_a_hung_sync_handler(
    worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    """A sync handler stuck in its thread cannot keep a stopped worker's process alive (and
    running the handler of an event it released)."""
    await insert_events(sql, 2)
    worker = worker_processes.start("synchang", concurrency=2, shutdown_timeout=0.5)
    await wait_until(
        lambda: sql.fetchval("SELECT count(*) = 2 FROM asyncdal_outbox WHERE status = 'leased'")
    )
    worker.send_signal(signal.SIGTERM)
    assert await _exit_code(worker, timeout=20) == 0  # the handlers sleep for a minute
    rows = await sql.fetch("SELECT status, attempts, lease_token FROM asyncdal_outbox")
    assert {tuple(r) for r in rows} == {("pending", 0, None)}


async def test_sigterm_does_not_start_handlers_still_waiting_for_a_slot(
    worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    """Stopping, a worker lets running handlers finish but starts none of the events it
    claimed and had not started: they are released at once."""
    await sql.execute(
        "INSERT INTO asyncdal_outbox (event_type, payload) "
        "SELECT 'test.event', '{\"sleep\": 1.0}' FROM generate_series(1, 40)"
    )
    worker = worker_processes.start(concurrency=2, batch_size=20, shutdown_timeout=30)
    # The first two handled: two more run, and about 16 claimed events wait for a slot.
    await wait_until(lambda: sql.fetchval("SELECT count(*) >= 2 FROM handled"), timeout=30)
    handled_before = await sql.fetchval("SELECT count(*) FROM handled")
    leased = await sql.fetchval("SELECT count(*) FROM asyncdal_outbox WHERE status = 'leased'")
    assert leased >= 10
    worker.send_signal(signal.SIGTERM)
    assert await _exit_code(worker, timeout=25) == 0
    # At most the two running when the count was taken, and two started just after, ran.
    handled = await sql.fetchval("SELECT count(*) FROM handled")
    assert handled <= handled_before + 4
    counts = await status_counts(sql)
    assert counts == {"done": handled, "pending": 40 - handled}
    assert await sql.fetchval(
        "SELECT bool_and(attempts = 0 AND lease_token IS NULL) FROM asyncdal_outbox "
        "WHERE status = 'pending'"
    )


async def test_worker_started_before_its_database_exists_waits_for_it(
    outbox_url: URL, worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    """A worker whose database is not there yet (not created, then not migrated) keeps
    trying, and handles events once it is."""
    late = outbox_url.set(database=f"{outbox_url.database}_late")
    worker_processes.url = late
    worker = worker_processes.start()
    try:
        await wait_until(  # it tried: its connection attempts were refused, yet it runs
            lambda: b"does not exist" in peek_stderr(worker), timeout=30
        )
        assert worker.poll() is None
        await sql.execute(f'CREATE DATABASE "{late.database}"')
        late_sql = await asyncpg.connect(dsn(late))
        try:
            await late_sql.execute(HANDLED_DDL)
            database = Database("main", DatabaseSettings(url=plain(late), pool="null"))
            async with database.engine.begin() as connection:
                await connection.run_sync(Base.metadata.create_all)
            await database.dispose()
            await insert_events(late_sql, 3)
            await wait_until(
                lambda: late_sql.fetchval(
                    "SELECT count(*) = 3 FROM asyncdal_outbox WHERE status = 'done'"
                ),
                timeout=30,
            )
        finally:
            await late_sql.close()
        worker.send_signal(signal.SIGTERM)
        assert await _exit_code(worker) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait()
        await drop_test_database(late)


async def test_a_worker_that_outlived_its_lease_changes_nothing_when_it_settles_late(
    worker_processes: WorkerProcesses, sql: asyncpg.Connection
) -> None:
    """Fenced completion: worker A stalls (SIGSTOP, as in a long GC pause or a frozen VM)
    while its handler runs; its lease expires and worker B claims the event again. When A
    wakes, its handler completes and it settles late: the token guard refuses, and the row
    B holds does not change. Two handler completions, one outcome written."""
    await insert_events(sql, 1)
    a = worker_processes.start(sleep=3.0, lease_seconds=2, heartbeat_seconds=0.5)
    await wait_until(lambda: _owned_by(sql, a.pid), timeout=30)
    os.kill(a.pid, signal.SIGSTOP)
    try:
        b = worker_processes.start(sleep=5.0, lease_seconds=2, heartbeat_seconds=0.5)
        await wait_until(lambda: _owned_by(sql, b.pid), timeout=30)  # expired, reclaimed
        held_by_b = await sql.fetchrow("SELECT * FROM asyncdal_outbox")
        assert held_by_b["attempts"] == 2
        assert await sql.fetchval("SELECT count(*) FROM handled") == 0
    finally:
        os.kill(a.pid, signal.SIGCONT)
    # A's handler ends (its sleep is long over) and A settles: refused.
    await wait_until(
        lambda: b"1 outbox outcome(s) not written: their lease was taken over" in peek_stderr(a),
        timeout=30,
    )
    assert await sql.fetchval("SELECT count(*) FROM handled WHERE worker = $1", a.pid) == 1
    # Only B's heartbeat moved its lease on: A's late settle wrote nothing.
    now = dict(await sql.fetchrow(f"SELECT {UNTOUCHED} FROM asyncdal_outbox"))
    assert now == {name: held_by_b[name] for name in now}
    # B finishes and writes the only outcome.
    await wait_until(lambda: _all_done(sql, 1), timeout=30)
    for process in (a, b):
        process.send_signal(signal.SIGTERM)
    assert [await _exit_code(process) for process in (a, b)] == [0, 0]
    calls = await sql.fetch("SELECT worker, ok FROM handled ORDER BY ended")
    assert [tuple(call) for call in calls] == [(a.pid, True), (b.pid, True)]
    row = await sql.fetchrow("SELECT status, attempts, lease_token, done_at FROM asyncdal_outbox")
    assert (row["status"], row["attempts"], row["lease_token"]) == ("done", 2, None)
    assert row["done_at"] > held_by_b["updated_at"]
    assert b"not written" not in peek_stderr(b)


UNTOUCHED = (
    "status, attempts, lease_owner, lease_token, available_at, last_error, updated_at, done_at"
)


async def _owned_by(sql: asyncpg.Connection, pid: int) -> bool:
    owner = await sql.fetchval("SELECT lease_owner FROM asyncdal_outbox")
    return owner is not None and owner.endswith(f":{pid}")
