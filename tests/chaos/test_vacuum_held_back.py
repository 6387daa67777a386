"""Scenario 5: vacuum held back while the outbox churns. A long ``REPEATABLE READ`` reader and
two sessions idle in a transaction (each with a transaction id) keep the server's xmin horizon
where it was, so no row version the churn leaves behind can be removed; meanwhile events are
written in batches (a bounded backlog) and the worker runs through them, with the usual HTTP
load alongside. Reported: the throughput over time and the outbox table's size."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from tests.chaos.invariants import verify
from tests.chaos.processes import chaos_stack
from tests.chaos.scenario import Parameters, Row, under_load

BATCH = 500
BACKLOG = 2000  # events waiting at most: the churn follows the worker, never runs far ahead
CHURN_SECONDS = 600.0  # a bound, far above what the churn takes at any scale run here
INSERT = """
INSERT INTO asyncdal_outbox (event_type, key, payload)
SELECT 'chaos.churn', NULL, jsonb_build_object('n', n)
FROM generate_series(1, $1) AS n, (SELECT pg_notify('asyncdal_outbox', '')) AS wake
"""
SIZE = "SELECT pg_total_relation_size('asyncdal_outbox')"
DEAD = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'asyncdal_outbox'"
DONE = "SELECT count(*) FROM asyncdal_outbox WHERE status = 'done'"


def megabytes(size: int) -> str:
    return f"{size / 2**20:.1f} MB"


async def hold_back_vacuum(url: str) -> list[asyncpg.Connection]:
    """A REPEATABLE READ reader with its snapshot taken, and two sessions idle in a
    transaction that has an id."""
    reader = await asyncpg.connect(url)
    await reader.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    await reader.fetchval("SELECT count(*) FROM asyncdal_outbox")
    idle = [await asyncpg.connect(url) for _ in range(2)]
    for connection in idle:
        await connection.execute("BEGIN")
        await connection.fetchval("SELECT txid_current()")
    return [reader, *idle]


async def test_outbox_churns_while_vacuum_is_held_back(
    tmp_path: Path, parameters: Parameters, report: Callable[[Row], None]
) -> None:
    started = time.monotonic()
    notes: list[str] = []
    async with chaos_stack(tmp_path) as stack:
        observer = await stack.connect()
        holders = await hold_back_vacuum(stack.direct_url)
        try:
            size_before = await observer.fetchval(SIZE)
            samples: list[tuple[float, int]] = []  # (seconds, events done)

            async def churn() -> None:
                loop = asyncio.get_running_loop()
                begun = loop.time()
                deadline = begun + CHURN_SECONDS
                written = 0
                while True:
                    done = await observer.fetchval(DONE)
                    samples.append((loop.time() - begun, done))
                    if written < parameters.churn and written - done < BACKLOG:
                        batch = min(BATCH, parameters.churn - written)
                        await observer.execute(INSERT, batch)
                        written += batch
                    elif written >= parameters.churn and done >= written:
                        return
                    assert stack.worker.alive, stack.logs()
                    assert loop.time() < deadline, f"churn: {done} of {written} done"
                    await asyncio.sleep(0.5)

            # The churn is the fault; the HTTP load runs alongside it.
            load, recover = await under_load(stack, parameters, churn, lead=0.0)
            size_held = await observer.fetchval(SIZE)
            dead_held = await observer.fetchval(DEAD)
        finally:
            for holder in holders:
                await holder.close()
        await observer.execute("VACUUM asyncdal_outbox")
        size_vacuumed = await observer.fetchval(SIZE)
        await observer.close()
        checked = await verify(stack, load)
    notes.append(
        f"throughput, events/s per fifth of the churn: {throughput(samples, parts=5)}; "
        f"{parameters.churn} events in {samples[-1][0]:.0f} s"
    )
    notes.append(
        f"outbox table {megabytes(size_before)} -> {megabytes(size_held)} held back "
        f"({dead_held} dead row versions) -> {megabytes(size_vacuumed)} after VACUUM"
    )
    report(
        Row(
            5,
            "vacuum held back, churn",
            load,
            checked.events,
            checked.repeats,
            recover,
            checked.drain,
            time.monotonic() - started,
            notes=notes,
        )
    )


def throughput(samples: list[tuple[float, int]], *, parts: int) -> str:
    """Events done per second in each of ``parts`` equal spans of the churn's time."""
    end = samples[-1][0]
    rates = []
    for part in range(parts):
        low, high = end * part / parts, end * (part + 1) / parts
        inside = [(t, done) for t, done in samples if low <= t <= high]
        if len(inside) < 2 or inside[-1][0] == inside[0][0]:
            rates.append("-")
            continue
        rate = (inside[-1][1] - inside[0][1]) / (inside[-1][0] - inside[0][0])
        rates.append(f"{rate:.0f}")
    return ", ".join(rates)
