"""What must hold after every chaos scenario, checked against the database and the processes:

- no 500 (nor any answer but 200, 201 and 503; transport failures only where the scenario
  kills the service);
- every 2xx persisted: each created product exists, each update's event was committed;
- exactly one event per change (one ``product.created`` per product, one ``product.updated``
  per update marker, none for a change that was not committed);
- every event done, none dead; every effect applied exactly once (``first_delivery``);
- no backend idle in transaction;
- the worker still running, and exiting 0 on SIGTERM;
- the pools back to their size: nothing checked out, no more server connections than the
  pools hold.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass

import asyncpg
import httpx

from tests.chaos.load import Load
from tests.chaos.processes import SERVICE_APP, WORKER_APP, Stack
from tests.helpers import count_connections, wait_until

__all__ = ["Checked", "verify"]

ANSWERS = {"200", "201", "503"}
TRANSPORT_FAILURES = {"refused", "reset", "timeout"}
DRAIN_SECONDS = 120.0


@dataclass
class Checked:
    """What the checks found, for the report."""

    events: int
    repeats: int
    drain: float


async def _unfinished(connection: asyncpg.Connection) -> int:
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM asyncdal_outbox WHERE status IN ('pending', 'leased')"
        )
    )


async def _scalar(connection: asyncpg.Connection, query: str, *arguments: object) -> int:
    return int(await connection.fetchval(query, *arguments))


def _gauge(metrics: str, name: str, database: str) -> float:
    found = re.search(rf'^{name}\{{database="{re.escape(database)}",node="primary"\}} (\S+)$',
                      metrics, flags=re.MULTILINE)  # fmt: skip
    assert found is not None, f"no {name} for {database}"
    return float(found.group(1))


def _pool_sizes(metrics: str) -> float:
    """The connections all of a process's pools may hold (their sizes, no overflow here)."""
    sizes = re.findall(r"^asyncdal_pool_size\{[^}]*\} (\S+)$", metrics, flags=re.MULTILINE)
    return sum(float(size) for size in sizes)


async def _pools_back(stack: Stack, connection: asyncpg.Connection) -> None:
    async with httpx.AsyncClient(timeout=10) as http:
        scraped: dict[str, str] = {}

        async def nothing_checked_out() -> bool:
            service = scraped["service"] = (await http.get(f"{stack.base_url}/metrics")).text
            worker = scraped["worker"] = (await http.get(f"{stack.worker_metrics}/metrics")).text
            return (
                _gauge(service, "asyncdal_pool_checked_out", "main") == 0
                and _gauge(worker, "asyncdal_pool_checked_out", "main:outbox-handlers") == 0
                # claim, settle and LISTEN are held for the worker's life
                and _gauge(worker, "asyncdal_pool_checked_out", "main:outbox-worker") <= 3
            )

        await wait_until(nothing_checked_out, timeout=30, message="a pool kept connections")
    if stack.bouncer is None:  # behind PgBouncer the server sees the pooler's connections
        held = await connection.fetch(
            "SELECT application_name, state, count(*) FROM pg_stat_activity "
            "WHERE application_name LIKE 'chaos-%' GROUP BY 1, 2"
        )
        # The catalog's main and reference pools (the same database here), the worker's own
        # pool and its handlers'.
        service = await count_connections(connection, application_name=SERVICE_APP)
        assert service <= _pool_sizes(scraped["service"]), f"service: {held}"
        worker = await count_connections(connection, application_name=WORKER_APP)
        assert worker <= _pool_sizes(scraped["worker"]), f"worker: {held}"


async def verify(stack: Stack, load: Load, *, transport_failures: bool = False) -> Checked:
    """Check every invariant; stops the worker (it must exit 0)."""
    unexpected = (
        set(load.statuses) - ANSWERS - (TRANSPORT_FAILURES if transport_failures else set())
    )
    assert not unexpected, f"unexpected answers {load.answers()}\n{stack.logs()}"
    assert load.unsent == 0, f"{load.unsent} requests never sent"
    assert stack.worker.alive, f"the worker died\n{stack.logs()}"
    connection = await stack.connect()
    try:
        loop = asyncio.get_running_loop()
        started = loop.time()

        async def drained() -> bool:
            assert stack.worker.alive, f"the worker died\n{stack.logs()}"
            return await _unfinished(connection) == 0

        await wait_until(drained, timeout=DRAIN_SECONDS, interval=0.2,
                         message=lambda: f"events not delivered\n{stack.logs()}")  # fmt: skip
        drain = loop.time() - started
        statuses: dict[str, int] = {
            row[0]: row[1]
            for row in await connection.fetch(
                "SELECT status, count(*) FROM asyncdal_outbox GROUP BY 1"
            )
        }
        assert set(statuses) <= {"done"}, f"events {statuses}\n{stack.logs()}"
        # Every 201 persisted, with exactly one product.created; none without its product.
        rows = await connection.fetch(
            "SELECT sku, id FROM products WHERE sku = ANY($1::text[])", list(load.created)
        )
        assert {row[0]: row[1] for row in rows} == load.created, "a created product is missing"
        assert not await _scalar(connection, CREATED_NOT_ONCE)
        assert not await _scalar(connection, CREATED_WITHOUT_PRODUCT)
        # Every update answered 200 committed its event; no update has two.
        markers = {row[0]: row[1] for row in await connection.fetch(UPDATE_EVENTS)}
        assert load.updated <= set(markers), "an update answered 200 has no event"
        assert set(markers.values()) <= {1}, "an update has more than one event"
        # Every effect exactly once.
        assert not await _scalar(connection, EFFECT_NOT_ONCE), "an effect not applied once"
        repeats = await _scalar(connection, "SELECT count(*) FROM chaos_repeats")
        events = sum(statuses.values())

        async def none_idle_in_transaction() -> bool:
            return await count_connections(connection, state="idle in transaction") == 0

        await wait_until(none_idle_in_transaction, timeout=15, message="idle in transaction")
        await _pools_back(stack, connection)
    finally:
        await connection.close()
    assert "Traceback" not in stack.worker.output(tail=10**7), stack.worker.output()
    assert await stack.worker.stop() == 0, stack.worker.output()
    return Checked(events=events, repeats=repeats, drain=drain)


CREATED_NOT_ONCE = """
SELECT count(*) FROM products AS p
WHERE (SELECT count(*) FROM asyncdal_outbox AS o
       WHERE o.event_type = 'product.created' AND o.key = p.id::text) <> 1
"""
CREATED_WITHOUT_PRODUCT = """
SELECT count(*) FROM asyncdal_outbox AS o
WHERE o.event_type = 'product.created'
  AND NOT EXISTS (SELECT 1 FROM products AS p WHERE p.id::text = o.key)
"""
UPDATE_EVENTS = """
SELECT payload->>'name', count(*) FROM asyncdal_outbox
WHERE event_type = 'product.updated' GROUP BY 1
"""
EFFECT_NOT_ONCE = """
SELECT count(*) FROM asyncdal_outbox AS o
WHERE (SELECT count(*) FROM chaos_effects AS e WHERE e.event_id = o.id) <> 1
"""
