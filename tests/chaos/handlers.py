"""The chaos worker's handler: every event has an effect that must happen exactly once.

Each delivery runs in a unit of work of its own, committed before the handler returns: the
first records the event in the inbox
(:func:`~asyncdal.outbox.first_delivery`) and applies the effect (a row in ``chaos_effects``);
a repeated delivery (a lease expired, a worker killed after the effect and before its settle)
applies nothing and leaves a row in ``chaos_repeats``, so the suite can say how often that
happened. ``CHAOS_HANDLER_SLEEP`` seconds of sleep after the commit widen the window between the
effect and the settle.
"""

from __future__ import annotations

import asyncio
import os

from sqlalchemy import text

from asyncdal import Database
from asyncdal.outbox import ANY_EVENT, Handlers, OutboxEvent, first_delivery

__all__ = ["build"]

_EFFECT = text("INSERT INTO chaos_effects (event_id) VALUES (:event_id)")
_REPEAT = text("INSERT INTO chaos_repeats (event_id) VALUES (:event_id)")


def build() -> Handlers:
    pause = float(os.environ.get("CHAOS_HANDLER_SLEEP", "0"))
    handlers = Handlers()

    @handlers.on(ANY_EVENT)
    async def apply_once(event: OutboxEvent, database: Database) -> None:
        async with database.unit_of_work() as uow:
            if await first_delivery(uow, event, consumer="chaos"):
                await uow.session.execute(_EFFECT, {"event_id": event.id})
            else:
                await uow.session.execute(_REPEAT, {"event_id": event.id})
            await uow.commit()
        if pause:
            # After the commit: a worker killed now has applied the effect and not settled
            # the event, which is then delivered again.
            await asyncio.sleep(pause)

    return handlers
