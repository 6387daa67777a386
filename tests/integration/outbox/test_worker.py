"""The worker in this process: delivery, retries, timeouts, dead events, database access,
the inbox, retention."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings, UnitOfWork
from asyncdal.outbox import Handlers, Outbox, OutboxEvent, OutboxMetrics, first_delivery
from tests.conftest import plain
from tests.helpers import wait_until
from tests.integration.outbox.conftest import insert_events, running_worker, status_counts


async def test_delivers_every_event_once_and_settles_done(
    database: Database, sql: asyncpg.Connection
) -> None:
    seen: list[int] = []
    handlers = Handlers({"test.event": lambda payload: seen.append(payload["n"])})
    await insert_events(sql, 500)
    async with running_worker(database, handlers, batch_size=50) as worker:
        await wait_until(lambda: worker.stats.done == 500)
    assert sorted(seen) == list(range(1, 501))
    assert await status_counts(sql) == {"done": 500}
    leftovers = await sql.fetchval(
        "SELECT count(*) FROM asyncdal_outbox WHERE lease_token IS NOT NULL OR done_at IS NULL"
    )
    assert leftovers == 0


async def test_idle_worker_wakes_on_notify(database: Database, sql: asyncpg.Connection) -> None:
    got: asyncio.Queue[float] = asyncio.Queue()
    loop = asyncio.get_running_loop()

    async def handle(payload: dict[str, Any]) -> None:
        got.put_nowait(loop.time())

    # Polling only every 30 s: an event handled within a second came through LISTEN.
    app = f"{database.settings.application_name}:outbox-worker"
    handlers = Handlers({"ping": handle})
    async with running_worker(database, handlers, poll_interval=30, maintenance_seconds=60):
        # Idle: its first claim came back empty (the claim is the last statement its
        # connection ran, maintenance being a minute away), so only a NOTIFY wakes it now.
        await wait_until(
            lambda: sql.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND state = 'idle' AND query LIKE '%SET status = ''leased''%'",
                app,
            )
        )
        async with database.unit_of_work() as uow:
            await Outbox.of(uow).add("ping", {})
            await uow.commit()
        sent = loop.time()
        handled = await asyncio.wait_for(got.get(), 5)
    assert handled - sent < 10.0  # far below the 30 s poll


async def test_claims_only_the_types_it_handles(
    database: Database, sql: asyncpg.Connection
) -> None:
    await insert_events(sql, 5, event_type="mine")
    await insert_events(sql, 5, event_type="theirs")
    async with running_worker(database, Handlers({"mine": lambda payload: None})) as worker:
        await wait_until(lambda: worker.stats.done == 5)
    rows = await sql.fetch("SELECT event_type, status, attempts FROM asyncdal_outbox")
    assert {(r[0], r[1], r[2]) for r in rows} == {("mine", "done", 1), ("theirs", "pending", 0)}


async def test_failures_back_off_then_die_with_the_last_error(
    database: Database, sql: asyncpg.Connection
) -> None:
    calls: list[int] = []

    async def flaky(event: OutboxEvent) -> None:
        calls.append(event.attempts)
        raise RuntimeError(f"boom {event.attempts}")

    metrics = OutboxMetrics()
    await insert_events(sql, 1)
    handlers = Handlers({"test.event": flaky})
    async with running_worker(database, handlers, metrics, max_attempts=3) as w:
        await wait_until(lambda: w.stats.dead == 1)
    assert calls == [1, 2, 3]
    row = await sql.fetchrow(
        "SELECT status, attempts, last_error, lease_token FROM asyncdal_outbox"
    )
    assert dict(row) == {
        "status": "dead",
        "attempts": 3,
        "last_error": "RuntimeError: boom 3",
        "lease_token": None,
    }
    assert metrics.retried.labels("test.event")._value.get() == 2
    assert metrics.dead.labels("test.event")._value.get() == 1


async def test_backoff_delays_the_retry(database: Database, sql: asyncpg.Connection) -> None:
    async def fail(payload: dict[str, Any]) -> None:
        raise ValueError("nope")

    await insert_events(sql, 1)
    async with running_worker(
        database, Handlers({"test.event": fail}), backoff_initial=60, backoff_max=60
    ) as worker:
        await wait_until(lambda: worker.stats.retried == 1)
    row = await sql.fetchrow(
        "SELECT status, attempts, extract(epoch FROM available_at - now()) AS wait "
        "FROM asyncdal_outbox"
    )
    assert (row["status"], row["attempts"]) == ("pending", 1)
    assert 0 <= row["wait"] <= 60  # full jitter below the first ceiling


async def test_handler_past_its_timeout_is_cancelled_and_retried(
    database: Database, sql: asyncpg.Connection
) -> None:
    cancelled: list[int] = []

    async def slow_first_time(event: OutboxEvent) -> None:
        if event.attempts == 1:
            try:
                await asyncio.sleep(30)
            except asyncio.CancelledError:
                cancelled.append(event.id)
                raise

    await insert_events(sql, 1)
    handlers = Handlers({"test.event": slow_first_time})
    async with running_worker(database, handlers, handler_timeout=0.3) as worker:
        await wait_until(lambda: worker.stats.done == 1)
    row = await sql.fetchrow("SELECT id, status, attempts, last_error FROM asyncdal_outbox")
    assert (row["status"], row["attempts"]) == ("done", 2)
    assert row["last_error"].startswith("TimeoutError: the handler ran longer than 0.3 s")
    assert cancelled == [row["id"]]


async def test_sync_handlers_run_in_threads(database: Database, sql: asyncpg.Connection) -> None:
    import threading

    threads: set[str] = set()

    def blocking(payload: dict[str, Any]) -> None:
        threads.add(threading.current_thread().name)

    await insert_events(sql, 20)
    async with running_worker(database, Handlers({"test.event": blocking})) as worker:
        await wait_until(lambda: worker.stats.done == 20)
    assert threads
    assert all(name.startswith("outbox-handler") for name in threads)


async def test_handler_database_access_is_its_own_pool_and_transaction(
    database: Database, sql: asyncpg.Connection
) -> None:
    """A handler's query runs on the handlers' pool, never on the worker's connection, and
    what it commits is committed before the worker settles the event."""
    marker = "outbox_handler_marker_query"
    release = asyncio.Event()
    await sql.execute("CREATE TABLE audit (event_id bigint PRIMARY KEY)")

    async def audit(event: OutboxEvent, db: Database) -> None:
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("INSERT INTO audit VALUES (:id)"), {"id": event.id})
            await uow.commit()
        async with db.read_only_unit_of_work() as uow:
            await uow.session.execute(text(f"SELECT pg_sleep(0.05) AS {marker}"))
            await release.wait()
            await uow.session.execute(text(f"SELECT pg_sleep(0.3) AS {marker}"))

    await insert_events(sql, 1)
    app = database.settings.application_name
    async with running_worker(database, Handlers({"test.event": audit})) as worker:
        # Committed by the handler while the event is still leased: its own transaction.
        await wait_until(lambda: sql.fetchval("SELECT count(*) FROM audit"))
        assert await sql.fetchval("SELECT status FROM asyncdal_outbox") == "leased"
        release.set()
        running = await wait_until(
            lambda: sql.fetch(
                "SELECT pid, application_name FROM pg_stat_activity "
                "WHERE query LIKE $1 AND state = 'active' AND pid <> pg_backend_pid()",
                f"%AS {marker}%",
            )
        )
        backends = await sql.fetch(
            "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE $1",
            f"{app}:%",
        )
        await wait_until(lambda: worker.stats.done == 1)
    worker_pids = {r["pid"] for r in backends if r["application_name"] == f"{app}:outbox-worker"}
    assert len(worker_pids) == 2  # claim/settle and LISTEN
    assert {r["application_name"] for r in running} == {f"{app}:outbox-handlers"}
    assert not worker_pids & {r["pid"] for r in running}


async def test_unit_of_work_handler_commits_on_success_and_rolls_back_on_failure(
    database: Database, sql: asyncpg.Connection
) -> None:
    await sql.execute("CREATE TABLE writes (event_id bigint, attempt int)")

    async def write(event: OutboxEvent, uow: UnitOfWork) -> None:
        await uow.session.execute(
            text("INSERT INTO writes VALUES (:id, :attempt)"),
            {"id": event.id, "attempt": event.attempts},
        )
        if event.attempts == 1:
            raise RuntimeError("the first attempt fails after writing")

    await insert_events(sql, 3)
    async with running_worker(database, Handlers({"test.event": write})) as worker:
        await wait_until(lambda: worker.stats.done == 3)
    rows = await sql.fetch("SELECT attempt FROM writes")
    assert [r[0] for r in rows] == [2, 2, 2]  # the failed attempts' writes were rolled back


async def test_inbox_applies_a_redelivered_event_once(
    database: Database, sql: asyncpg.Connection
) -> None:
    await sql.execute("CREATE TABLE points (id int PRIMARY KEY, total int NOT NULL)")
    await sql.execute("INSERT INTO points VALUES (1, 0)")
    deliveries: list[int] = []

    async def credit(event: OutboxEvent, uow: UnitOfWork) -> None:
        deliveries.append(event.id)
        if not await first_delivery(uow, event, consumer="points"):
            return
        await uow.session.execute(
            text("UPDATE points SET total = total + :n WHERE id = 1"), {"n": event.payload["n"]}
        )

    await insert_events(sql, 1)  # payload n = 1
    handlers = Handlers({"test.event": credit})
    async with running_worker(database, handlers) as worker:
        await wait_until(lambda: worker.stats.done == 1)
        # As if the worker had died after the handler committed and before it settled.
        await sql.execute("UPDATE asyncdal_outbox SET status = 'pending', done_at = NULL")
        await sql.execute("NOTIFY asyncdal_outbox")
        await wait_until(lambda: worker.stats.done == 2)
    assert len(deliveries) == 2
    assert deliveries[0] == deliveries[1]
    assert await sql.fetchval("SELECT total FROM points") == 1
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_inbox") == 1


async def test_lease_taken_over_cannot_be_overwritten(
    database: Database, sql: asyncpg.Connection
) -> None:
    """A worker whose lease was taken over (new token) writes nothing when it settles."""
    entered = asyncio.Event()
    release = asyncio.Event()

    async def wait_for_test(payload: dict[str, Any]) -> None:
        entered.set()
        await release.wait()
        raise RuntimeError("late failure of a stale worker")

    await insert_events(sql, 1)
    async with running_worker(database, Handlers({"test.event": wait_for_test})) as worker:
        await asyncio.wait_for(entered.wait(), 10)
        # Another worker took the event over and finished it.
        await sql.execute(
            "UPDATE asyncdal_outbox SET status = 'done', done_at = now(), "
            "lease_token = gen_random_uuid()"
        )
        release.set()
        await wait_until(lambda: worker.stats.lost == 1)
    row = await sql.fetchrow("SELECT status, last_error FROM asyncdal_outbox")
    assert dict(row) == {"status": "done", "last_error": None}


async def test_heartbeat_keeps_a_long_handler_leased(
    database: Database, sql: asyncpg.Connection
) -> None:
    await insert_events(sql, 1)

    async def long(payload: dict[str, Any]) -> None:
        await asyncio.sleep(2.5)

    handlers = Handlers({"test.event": long})
    async with running_worker(
        database, handlers, lease_seconds=1.0, heartbeat_seconds=0.2
    ) as worker:
        await wait_until(lambda: worker.stats.done == 1)
    # Two and a half lease lengths long, yet never reclaimed: one attempt.
    assert await sql.fetchval("SELECT attempts FROM asyncdal_outbox") == 1
    assert worker.stats.lost == 0


async def test_retention_deletes_old_done_events_and_metrics_report(
    database: Database, sql: asyncpg.Connection
) -> None:
    await insert_events(sql, 3)
    await sql.execute(
        "UPDATE asyncdal_outbox SET status = 'done', done_at = now() - interval '2 hours' "
        "WHERE id <= 2"
    )
    metrics = OutboxMetrics()
    handlers = Handlers({"other": lambda payload: None})
    async with running_worker(database, handlers, metrics, retention_seconds=3600):
        await wait_until(lambda: sql.fetchval("SELECT count(*) = 1 FROM asyncdal_outbox"))
        await wait_until(lambda: metrics.oldest_pending_age._value.get() > 0)
    assert await sql.fetchval("SELECT id FROM asyncdal_outbox") == 3
    assert b"asyncdal_outbox_oldest_pending_seconds" in metrics.render()


async def test_metrics_count_claims_done_and_delay(
    database: Database, sql: asyncpg.Connection
) -> None:
    metrics = OutboxMetrics()
    await insert_events(sql, 10)
    handlers = Handlers({"test.event": lambda payload: None})
    async with running_worker(database, handlers, metrics) as worker:
        await wait_until(lambda: worker.stats.done == 10)
    assert metrics.claimed._value.get() == 10
    assert metrics.done.labels("test.event")._value.get() == 10
    text_format = metrics.render().decode()
    assert 'asyncdal_outbox_handler_seconds_count{event_type="test.event"} 10.0' in text_format
    assert "asyncdal_outbox_delivery_delay_seconds_count 10.0" in text_format


async def test_worker_survives_losing_its_connections(
    database: Database, sql: asyncpg.Connection
) -> None:
    """Its backends terminated (as in a server restart), the worker listens again on a new
    connection and claims on a new one: an event is handled long before the 30 s poll."""
    got: asyncio.Queue[int] = asyncio.Queue()

    async def handle(event: OutboxEvent) -> None:
        got.put_nowait(event.id)

    app = f"{database.settings.application_name}:outbox-worker"
    async with running_worker(database, Handlers({"ping": handle}), poll_interval=30):
        old = await sql.fetch("SELECT pid FROM pg_stat_activity WHERE application_name = $1", app)
        assert len(old) >= 2
        await sql.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1",
            app,
        )
        await wait_until(
            lambda: sql.fetchval(
                "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
                "AND query LIKE 'LISTEN%' AND NOT pid = ANY($2::int[])",
                app,
                [row[0] for row in old],
            )
        )
        async with database.unit_of_work() as uow:
            event_id = await Outbox.of(uow).add("ping", {})
            await uow.commit()
        assert await asyncio.wait_for(got.get(), 10) == event_id


async def test_worker_behind_a_transaction_pooler(
    server_url: str, outbox_url: URL, sql: asyncpg.Connection
) -> None:
    """Through a real PgBouncer in transaction mode (pooler mode on): no LISTEN there, so the
    worker polls; claims, settles and handler transactions all work."""
    from asyncdal.testing import run_pgbouncer

    await sql.execute("CREATE TABLE seen (event_id bigint PRIMARY KEY)")

    async def record(event: OutboxEvent, uow: UnitOfWork) -> None:
        await uow.session.execute(text("INSERT INTO seen VALUES (:id)"), {"id": event.id})

    await insert_events(sql, 300)
    with run_pgbouncer(server_url, pool_size=3) as port:
        bounced = Database(
            "main",
            DatabaseSettings(
                url=plain(outbox_url.set(host="127.0.0.1", port=port)), pgbouncer=True
            ),
        )
        try:
            handlers = Handlers({"test.event": record})
            async with running_worker(bounced, handlers, batch_size=50) as worker:
                await wait_until(lambda: worker.stats.done == 300)
                # Added after the worker went idle: found by polling, as nothing listens.
                await insert_events(sql, 5)
                await wait_until(lambda: worker.stats.done == 305)
        finally:
            await bounced.dispose()
    assert await sql.fetchval("SELECT count(*) FROM seen") == 305
    assert await status_counts(sql) == {"done": 305}


async def test_sync_handler_past_its_timeout_is_retried(
    database: Database, sql: asyncpg.Connection
) -> None:
    import time

    def slow_first_time(event: OutboxEvent) -> None:
        if event.attempts == 1:
            time.sleep(1.0)  # a thread cannot be cancelled: it runs on, abandoned

    await insert_events(sql, 1)
    handlers = Handlers({"test.event": slow_first_time})
    async with running_worker(database, handlers, handler_timeout=0.2) as worker:
        await wait_until(lambda: worker.stats.done == 1)
    row = await sql.fetchrow("SELECT status, attempts, last_error FROM asyncdal_outbox")
    assert (row["status"], row["attempts"]) == ("done", 2)
    assert row["last_error"].startswith("TimeoutError")


async def test_an_event_reclaimed_while_its_handler_runs_here_is_handled_twice_only(
    database: Database, sql: asyncpg.Connection
) -> None:
    """Its lease expired under a running handler, the event is claimed again by the same
    worker: the first attempt's end must not touch the second claim's bookkeeping (its
    heartbeat, its timeout), so the second attempt finishes and nothing runs a third time."""
    first_in = asyncio.Event()
    release_first = asyncio.Event()
    second_in = asyncio.Event()
    calls: list[int] = []

    async def slow(event: OutboxEvent) -> None:
        calls.append(event.attempts)
        if event.attempts == 1:
            first_in.set()
            await release_first.wait()
        else:
            second_in.set()
            await asyncio.sleep(2.5)  # longer than the lease: only the heartbeat keeps it

    metrics = OutboxMetrics()
    await insert_events(sql, 1)
    handlers = Handlers({"test.event": slow})
    async with running_worker(
        database, handlers, metrics, lease_seconds=1.0, heartbeat_seconds=0.2
    ) as worker:
        await asyncio.wait_for(first_in.wait(), 10)
        # As if the heartbeat had not reached the database in time and maintenance had
        # reclaimed the expired lease (what RECLAIM_EXPIRED does), then woke the claimer.
        await sql.execute(
            "UPDATE asyncdal_outbox SET status = 'pending', lease_owner = NULL, "
            "lease_token = NULL, lease_expires_at = NULL, available_at = now()"
        )
        await sql.execute("NOTIFY asyncdal_outbox")
        await asyncio.wait_for(second_in.wait(), 10)
        release_first.set()
        await wait_until(lambda: worker.stats.lost == 1)  # the stale first attempt
        await wait_until(lambda: worker.stats.done == 1)
    assert calls == [1, 2]
    row = await sql.fetchrow("SELECT status, attempts, lease_token FROM asyncdal_outbox")
    assert tuple(row) == ("done", 2, None)
    # Both attempts ended normally (a KeyError would skip the second one's duration).
    assert metrics.handler_duration.labels("test.event")._sum.get() > 0
    text_format = metrics.render().decode()
    assert 'asyncdal_outbox_handler_seconds_count{event_type="test.event"} 2.0' in text_format
    assert (worker.stats.done, worker.stats.retried, worker.stats.lost) == (1, 0, 1)


async def test_outcomes_refused_by_the_token_guard_are_not_counted(
    database: Database, sql: asyncpg.Connection
) -> None:
    """Results of events whose lease was taken over are lost, not done or retried: neither
    the stats nor the metrics count them."""
    entered: set[int] = set()
    release = asyncio.Event()

    async def late(event: OutboxEvent) -> None:
        entered.add(event.id)
        await release.wait()
        if event.payload["n"] == 1:
            raise RuntimeError("late failure of a stale worker")

    metrics = OutboxMetrics()
    await insert_events(sql, 2)
    async with running_worker(database, Handlers({"test.event": late}), metrics) as worker:
        await wait_until(lambda: len(entered) == 2)
        await sql.execute("UPDATE asyncdal_outbox SET lease_token = gen_random_uuid()")
        release.set()
        await wait_until(lambda: worker.stats.lost == 2)
    assert (worker.stats.done, worker.stats.retried, worker.stats.dead) == (0, 0, 0)
    assert metrics.done.labels("test.event")._value.get() == 0
    assert metrics.retried.labels("test.event")._value.get() == 0
    assert "asyncdal_outbox_delivery_delay_seconds_count 0.0" in metrics.render().decode()
    assert await status_counts(sql) == {"leased": 2}  # the new owner's, untouched


async def test_retention_deletes_every_old_done_event_and_inbox_entry_at_once(
    database: Database, sql: asyncpg.Connection
) -> None:
    """More old rows than one delete statement takes go in one maintenance round, not a
    chunk every interval; old inbox entries go too."""
    await insert_events(sql, 12_001)
    await sql.execute(
        "UPDATE asyncdal_outbox SET status = 'done', done_at = now() - interval '2 hours' "
        "WHERE id <= 12000"
    )
    await sql.execute(
        "INSERT INTO asyncdal_inbox (consumer, event_id, received_at) "
        "SELECT 'c', n, now() - interval '2 days' FROM generate_series(1, 12000) AS n"
    )
    await sql.execute("INSERT INTO asyncdal_inbox (consumer, event_id) VALUES ('c', 99999)")
    handlers = Handlers({"other": lambda payload: None})
    # Maintenance once at start, and then not for a minute.
    async with running_worker(
        database,
        handlers,
        retention_seconds=3600,
        inbox_retention_seconds=86400,
        maintenance_seconds=60,
    ):
        await wait_until(lambda: sql.fetchval("SELECT count(*) = 1 FROM asyncdal_outbox"))
        await wait_until(lambda: sql.fetchval("SELECT count(*) = 1 FROM asyncdal_inbox"))
    assert await sql.fetchval("SELECT id FROM asyncdal_outbox") == 12001
    assert await sql.fetchval("SELECT event_id FROM asyncdal_inbox") == 99999


async def test_inbox_applies_concurrent_duplicates_once(
    database: Database, sql: asyncpg.Connection
) -> None:
    """Five deliveries of one event at the same time: one applies it, four wait on its inbox
    row and then skip."""
    await sql.execute("CREATE TABLE points (id int PRIMARY KEY, total int NOT NULL)")
    await sql.execute("INSERT INTO points VALUES (1, 0)")
    all_in_transactions = asyncio.Barrier(5)
    app = database.settings.application_name

    async def deliver() -> bool:
        async with database.background_unit_of_work() as uow:
            await uow.session.execute(text("SELECT 1"))  # its transaction (and backend) open
            await all_in_transactions.wait()
            first = await first_delivery(uow, 77, consumer="points")
            if first:
                # Commit only once the four others are blocked on this row's lock.
                await wait_until(
                    lambda: sql.fetchval(
                        "SELECT count(*) = 4 FROM pg_stat_activity "
                        "WHERE application_name = $1 AND wait_event_type = 'Lock'",
                        app,
                    )
                )
                await uow.session.execute(text("UPDATE points SET total = total + 1"))
            await uow.commit()
            return first

    results = await asyncio.gather(*(deliver() for _ in range(5)))
    assert sorted(results) == [False, False, False, False, True]
    assert await sql.fetchval("SELECT total FROM points") == 1
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_inbox") == 1


async def test_oldest_pending_age_counts_leased_events(
    database: Database, sql: asyncpg.Connection
) -> None:
    """An event whose handler hangs is not done: the age gauge shows it, though nothing is
    pending."""
    release = asyncio.Event()

    async def hang(payload: dict[str, Any]) -> None:
        await release.wait()

    await insert_events(sql, 1)
    await sql.execute("UPDATE asyncdal_outbox SET created_at = now() - interval '1 hour'")
    metrics = OutboxMetrics()
    async with running_worker(database, Handlers({"test.event": hang}), metrics) as worker:
        await wait_until(lambda: sql.fetchval("SELECT status = 'leased' FROM asyncdal_outbox"))
        metrics.oldest_pending_age.set(-1)  # measured again by a maintenance round from now
        await wait_until(lambda: metrics.oldest_pending_age._value.get() >= 3600)
        release.set()
        await wait_until(lambda: worker.stats.done == 1)
