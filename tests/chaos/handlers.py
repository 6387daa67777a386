"""The chaos worker's handlers: every event has an effect that must happen exactly once.

The first delivery records the event in the inbox (:func:`~asyncdal.outbox.first_delivery`)
and applies the effect (a row in ``chaos_effects``); a repeated delivery (a lease expired, a
worker killed after the effect and before its settle) applies nothing and leaves a row in
``chaos_repeats``, so the suite can say how often that happened. Both ways the worker runs
handlers are under fire:

- ``product.created`` and the churn's events go to a handler given a unit of work: up to
  ``OUTBOX__TRANSACTION_SIZE`` of them share a transaction that also settles them, so their
  effect and their completion commit together;
- every other event (``product.updated``) goes to a handler given the database, which opens
  and commits its own unit of work per delivery, settled apart afterwards;
  ``CHAOS_HANDLER_SLEEP`` seconds of sleep after its commit widen the window between the
  effect and the settle.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text

from asyncdal import Database, UnitOfWork
from asyncdal.outbox import ANY_EVENT, Handlers, OutboxEvent, first_delivery

__all__ = ["build"]

_EFFECT = text("INSERT INTO chaos_effects (event_id) VALUES (:event_id)")
_REPEAT = text("INSERT INTO chaos_repeats (event_id) VALUES (:event_id)")


async def _apply(uow: UnitOfWork, event: OutboxEvent) -> None:
    if await first_delivery(uow, event, consumer="chaos"):
        await uow.session.execute(_EFFECT, {"event_id": event.id})
    else:
        await uow.session.execute(_REPEAT, {"event_id": event.id})


def build() -> Handlers:
    pause = float(os.environ.get("CHAOS_HANDLER_SLEEP", "0"))
    handlers = Handlers()

    async def apply_with_its_settle(event: OutboxEvent, uow: UnitOfWork) -> None:
        await _apply(uow, event)

    handlers.add("product.created", apply_with_its_settle)
    handlers.add("chaos.churn", apply_with_its_settle)

    @handlers.on(ANY_EVENT)
    async def apply_then_settle(event: OutboxEvent, database: Database) -> None:
        async with database.unit_of_work() as uow:
            await _apply(uow, event)
            await uow.commit()
        if pause:
            # After the commit: a worker killed now has applied the effect and not settled
            # the event, which is then delivered again.
            await asyncio.sleep(pause)

    return handlers
