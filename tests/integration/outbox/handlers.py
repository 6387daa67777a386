"""Handlers for the worker processes the outbox tests start (``OUTBOX_TEST_MODE`` picks).

- ``record``: record each call (start, end, success) in the ``handled`` table, in a
  transaction of its own, after sleeping ``payload.sleep`` or ``OUTBOX_TEST_SLEEP`` seconds;
  fail at random with probability ``OUTBOX_TEST_FAIL_RATE``.
- ``hang``: record the start, then sleep for a minute (a worker to kill while it holds events).
- ``synchang``: a sync handler that sleeps for a minute in its thread.
"""

from __future__ import annotations

import asyncio
import os
import random
import time
from typing import Any

from sqlalchemy import text

from asyncdal import Database
from asyncdal.outbox import ANY_EVENT, Handlers, OutboxEvent

_RECORD = text(
    "INSERT INTO handled (event_id, key, worker, started, ended, ok) "
    "VALUES (:event_id, :key, :worker, :started, :ended, :ok)"
)


async def _record(database: Database, event: OutboxEvent, started: float, ok: bool) -> None:
    async with database.unit_of_work() as uow:
        await uow.session.execute(
            _RECORD,
            {
                "event_id": event.id,
                "key": event.key,
                "worker": os.getpid(),
                "started": started,
                "ended": time.time(),
                "ok": ok,
            },
        )
        await uow.commit()


def build() -> Handlers:
    mode = os.environ.get("OUTBOX_TEST_MODE", "record")
    fail_rate = float(os.environ.get("OUTBOX_TEST_FAIL_RATE", "0"))
    default_sleep = float(os.environ.get("OUTBOX_TEST_SLEEP", "0"))
    handlers = Handlers()

    if mode == "synchang":

        @handlers.on(ANY_EVENT)
        def hang_in_a_thread(payload: dict[str, Any]) -> None:
            time.sleep(60)  # no timeout can stop a thread

        return handlers

    if mode == "hang":

        @handlers.on(ANY_EVENT)
        async def hang(event: OutboxEvent, database: Database) -> None:
            await _record(database, event, time.time(), ok=False)
            await asyncio.sleep(60)

        return handlers

    @handlers.on(ANY_EVENT)
    async def record(event: OutboxEvent, database: Database) -> None:
        started = time.time()
        payload: dict[str, Any] = event.payload
        pause = float(payload.get("sleep", default_sleep))
        if pause:
            await asyncio.sleep(pause)
        ok = random.random() >= fail_rate
        await _record(database, event, started, ok)
        if not ok:
            raise RuntimeError(f"random failure of event {event.id}")

    return handlers
