"""The worker checks that its wake-ups arrive: a NOTIFY it sends itself must come back on its
LISTEN connection. Through a transaction-mode PgBouncer it does not, and the worker says so
once and goes on by polling."""

from __future__ import annotations

import logging
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings
from asyncdal.outbox import Handlers, OutboxWorker
from asyncdal.testing import run_pgbouncer
from tests.conftest import plain
from tests.helpers import wait_until
from tests.integration.outbox.conftest import insert_events, running_worker, status_counts

DEAF = "outbox wake-ups (LISTEN/NOTIFY) do not arrive"


def deaf_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith(DEAF)]


async def test_wake_ups_through_a_transaction_pooler_fall_back_to_polling(
    server_url: str,
    outbox_url: URL,
    sql: asyncpg.Connection,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Pooler mode not set (nobody told the worker there is a PgBouncer in between): LISTEN
    succeeds and hears nothing. One server connection behind the pooler keeps asyncpg's
    prepared statements working, so only the notifications are missing."""
    caplog.set_level(logging.INFO, logger="asyncdal.outbox")
    seen: list[int] = []

    async def handle(payload: dict[str, Any]) -> None:
        seen.append(payload["n"])

    with run_pgbouncer(server_url, pool_size=1) as port:
        bounced = Database(
            "main",
            DatabaseSettings(url=plain(outbox_url.set(host="127.0.0.1", port=port))),
        )
        try:
            async with running_worker(
                bounced, Handlers({"test.event": handle}), listen_check_seconds=0.5
            ) as worker:
                await wait_until(lambda: worker.hears_notifications is False)
                await wait_until(lambda: checks(worker) >= 3)  # several checks, one line
                await insert_events(sql, 20)
                await wait_until(lambda: len(seen) == 20)  # polling (every 0.2 s here)
                assert worker.hears_notifications is False
        finally:
            await bounced.dispose()
    assert len(deaf_warnings(caplog)) == 1, caplog.text
    assert deaf_warnings(caplog)[0].endswith("polling every 0.2 s")
    assert await status_counts(sql) == {"done": 20}


def checks(worker: OutboxWorker) -> int:
    """Conclusive checks of the worker's LISTEN so far."""
    return worker._listener.checks


async def test_wake_ups_straight_to_the_server_arrive(
    database: Database, sql: asyncpg.Connection, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="asyncdal.outbox")
    handlers = Handlers({"test.event": lambda payload: None})
    async with running_worker(
        database, handlers, listen_check_seconds=0.3, poll_interval=30
    ) as worker:
        await wait_until(lambda: worker.hears_notifications is True)
        # Probes wake no claimer: with a 30 s poll, an event inserted without a NOTIFY
        # stays pending while probe after probe arrives.
        await insert_events(sql, 1)
        await wait_until(lambda: checks(worker) >= 4)
        assert worker.stats.claimed == 0
        assert await status_counts(sql) == {"pending": 1}
    assert deaf_warnings(caplog) == []
