"""Exactly-once effects: remember which events a consumer has applied, in its transaction.

The worker delivers at least once; a handler whose effect must happen once records the event in
the inbox table inside the same transaction as the effect, and skips an event already there.

Example:
    >>> @handlers.on("order.paid")
    ... async def credit_points(event: OutboxEvent, uow: UnitOfWork) -> None:
    ...     if not await first_delivery(uow, event, consumer="points"):
    ...         return                                  # applied before: nothing to do
    ...     await uow.session.execute(update(Account)...)
"""

from __future__ import annotations

from sqlalchemy import text

from asyncdal.errors import ReadOnlyError
from asyncdal.orm._uow import UnitOfWork
from asyncdal.outbox._event import OutboxEvent
from asyncdal.outbox._table import INBOX_TABLE

__all__ = ["first_delivery"]

_RECORD = text(
    f"INSERT INTO {INBOX_TABLE} (consumer, event_id) VALUES (:consumer, :event_id) "
    "ON CONFLICT DO NOTHING RETURNING 1"
)


async def first_delivery(uow: UnitOfWork, event: OutboxEvent | int, *, consumer: str) -> bool:
    """Record ``event`` as applied by ``consumer`` in ``uow``'s transaction.

    Returns True the first time (apply the effect), False when it was recorded before (skip).
    A concurrent delivery of the same event waits on the row lock and then gets False once the
    first commits (or True if it rolled back).

    Args:
        uow: the unit of work the effect is written in.
        event: the event or its id.
        consumer: a stable name for the effect (one handler may have several).
    """
    if uow.read_only:
        raise ReadOnlyError("the inbox needs a read-write unit of work")
    event_id = event.id if isinstance(event, OutboxEvent) else int(event)
    result = await uow.session.execute(_RECORD, {"consumer": consumer, "event_id": event_id})
    return result.first() is not None
