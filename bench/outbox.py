"""Outbox benchmark: events/s burned down from a pre-filled table, and LISTEN wake-up delay.

Each round fills the outbox with ``--outbox-events`` events and empties it three ways, in
interleaved rounds, in this one process (uvloop):

(raw)   raw asyncpg: claim 200 per ``UPDATE ... FOR UPDATE SKIP LOCKED``, settle them all in one
        ``UPDATE``, no handler at all: the floor the worker's SQL allows
(noop)  asyncdal's ``OutboxWorker`` with a no-op handler (one worker)
(write) the worker with a handler that writes one row in the unit of work it is given: up to
        ``OUTBOX__TRANSACTION_SIZE`` (50) events per transaction, settled in it
(write1) the same with ``transaction_size=1``: a transaction per event, settled apart (the
        worker before transactions were shared)

Then the delay from a producer's commit to the handler's start, at low load (events one at a
time, ~50/s), with the worker idle between them: the ``LISTEN``/``NOTIFY`` path.
"""

from __future__ import annotations

import asyncio
import logging
import statistics
import time
from dataclasses import dataclass
from typing import Any

import asyncpg
from sqlalchemy import text

from asyncdal import Database, DatabaseSettings, UnitOfWork
from asyncdal.outbox import Handlers, Outbox, OutboxSettings, OutboxWorker
from bench.report import print_summary, rate

__all__ = ["OutboxBenchSettings", "run_outbox"]

LABELS = {
    "raw": "(raw) asyncpg claim 200 + settle in 1 UPDATE",
    "noop": "(noop) OutboxWorker, no-op handler",
    "write": "(write) OutboxWorker, handler writes 1 row",
    "write1": "(write1) the same, a transaction per event",
}
RATIOS = [("noop", "raw"), ("write", "raw"), ("write", "write1")]
WRITE_GOAL = 5000.0
"""Issue 15: events/s of a handler writing one row, in one worker process."""

_RAW_CLAIM = """
UPDATE asyncdal_outbox SET status = 'leased', attempts = attempts + 1
WHERE id = ANY(ARRAY(
    SELECT id FROM asyncdal_outbox WHERE status = 'pending' AND available_at <= now()
    ORDER BY id LIMIT 200 FOR UPDATE SKIP LOCKED
))
RETURNING id, payload::text
"""
_RAW_SETTLE = """
UPDATE asyncdal_outbox SET status = 'done', done_at = now(), updated_at = now()
WHERE id = ANY($1::bigint[])
"""


@dataclass(frozen=True)
class OutboxBenchSettings:
    """How much to measure."""

    rounds: int = 3
    events: int = 20_000
    delay_samples: int = 100


async def _fill(connection: asyncpg.Connection, count: int) -> None:
    await connection.execute("TRUNCATE asyncdal_outbox, bench_writes")
    await connection.execute(
        "INSERT INTO asyncdal_outbox (event_type, key, payload) "
        "SELECT 'bench.event', (n % 100)::text, jsonb_build_object('n', n, 'sku', 'SKU-' || n) "
        "FROM generate_series(1, $1) AS n",
        count,
    )
    await connection.execute("VACUUM ANALYZE asyncdal_outbox")


async def _raw(url: str, count: int) -> float:
    connection = await asyncpg.connect(url)
    try:
        started = time.perf_counter()
        done = 0
        while True:
            rows = await connection.fetch(_RAW_CLAIM)
            if not rows:
                break
            await connection.execute(_RAW_SETTLE, [row[0] for row in rows])
            done += len(rows)
        elapsed = time.perf_counter() - started
    finally:
        await connection.close()
    assert done == count, (done, count)
    return done / elapsed


async def _worker(
    database: Database, handlers: Handlers, count: int, *, transaction_size: int = 50
) -> float:
    settings = OutboxSettings(
        poll_interval=0.05,
        retention_seconds=None,
        maintenance_seconds=60,
        transaction_size=transaction_size,
    )
    worker = OutboxWorker(database, handlers, settings)
    task = asyncio.create_task(worker.run())
    await worker.started.wait()
    started = time.perf_counter()
    while worker.stats.done < count:
        if task.done():
            task.result()
        await asyncio.sleep(0.005)
    elapsed = time.perf_counter() - started
    worker.stop()
    await task
    return count / elapsed


async def _noop(payload: dict[str, Any]) -> None:
    return None


_WRITE = text("INSERT INTO bench_writes (n) VALUES (:n)")


async def _write_one_row(payload: dict[str, Any], uow: UnitOfWork) -> None:
    await uow.session.execute(_WRITE, {"n": payload["n"]})


async def _delay(database: Database, samples: int) -> list[float]:
    """Seconds from a producer's commit to its handler's start, one event at a time."""
    arrived: asyncio.Queue[float] = asyncio.Queue()

    # perf_counter, not loop.time(): uvloop's clock counts whole milliseconds.
    async def mark(payload: dict[str, Any]) -> None:
        arrived.put_nowait(time.perf_counter())

    # Polling every 10 s: anything faster came through LISTEN.
    settings = OutboxSettings(poll_interval=10, retention_seconds=None)
    worker = OutboxWorker(database, Handlers({"bench.ping": mark}), settings)
    task = asyncio.create_task(worker.run())
    await worker.started.wait()
    delays = []
    try:
        for _ in range(samples):
            async with database.unit_of_work() as uow:
                await Outbox.of(uow).add("bench.ping", {})
                await uow.commit()
            committed = time.perf_counter()
            delays.append(await asyncio.wait_for(arrived.get(), 10) - committed)
            await asyncio.sleep(0.02)  # ~50 events/s: the worker is idle when the next comes
    finally:
        worker.stop()
        await task
    return delays


async def run_outbox(url: str, settings: OutboxBenchSettings) -> dict[str, float]:
    """Run the outbox paths in interleaved rounds; print medians, ratios and the delay."""
    print(
        f"\n== Outbox: {settings.events:,} pre-filled events per path per round, "
        f"{settings.rounds} rounds, one worker, defaults (batch 200, concurrency 32)"
    )
    # The handlers' pool is meant to be fully used here; its 90% warning would only be noise.
    logging.getLogger("asyncdal.pool").setLevel(logging.ERROR)
    plain = url
    connection = await asyncpg.connect(plain)
    await connection.execute("CREATE TABLE IF NOT EXISTS bench_writes (n bigint NOT NULL)")
    database = Database("main", DatabaseSettings(url=plain, application_name="bench-outbox"))
    results: dict[str, list[float]] = {key: [] for key in LABELS}
    width = max(len(label) for label in LABELS.values())
    try:
        for round_number in range(1, settings.rounds + 1):
            print(f"round {round_number}/{settings.rounds}")
            for key in LABELS:
                await _fill(connection, settings.events)
                if key == "raw":
                    per_second = await _raw(plain, settings.events)
                elif key == "noop":
                    per_second = await _worker(
                        database, Handlers({"bench.event": _noop}), settings.events
                    )
                else:
                    per_second = await _worker(
                        database,
                        Handlers({"bench.event": _write_one_row}),
                        settings.events,
                        transaction_size=50 if key == "write" else 1,
                    )
                    written = await connection.fetchval("SELECT count(*) FROM bench_writes")
                    assert written == settings.events, written
                results[key].append(per_second)
                print(f"  {LABELS[key]:<{width}} {rate(per_second):>8} events/s", flush=True)
        medians = print_summary(
            f"Outbox summary over {settings.rounds} rounds", "events/s", LABELS, results, RATIOS
        )
        verdict = "met" if medians["write"] >= WRITE_GOAL else "NOT met"
        print(
            f"issue 15: a handler writing one row at {rate(medians['write'])} events/s in one "
            f"worker process (goal {rate(WRITE_GOAL)}): {verdict}"
        )
        await connection.execute("TRUNCATE asyncdal_outbox")
        delays = sorted(await _delay(database, settings.delay_samples))
        p50 = statistics.median(delays) * 1000
        p95 = delays[int(len(delays) * 0.95) - 1] * 1000
        print(
            f"\nLISTEN wake-up, commit to handler start, {len(delays)} events one at a time: "
            f"p50 {p50:.1f} ms, p95 {p95:.1f} ms, max {delays[-1] * 1000:.1f} ms"
        )
        medians["delay_p50_ms"] = p50
        return medians
    finally:
        await database.dispose()
        await connection.close()
