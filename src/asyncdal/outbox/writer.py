"""The write side: ``uow.outbox.add(...)`` records an event in the unit of work's transaction.

The event commits with the data or not at all. Each insert also sends a ``NOTIFY`` in the same
statement, which PostgreSQL delivers only at commit (and collapses within one transaction), so
an idle worker wakes at once and never hears of an event that was rolled back.

Example:
    >>> async with db.unit_of_work() as uow:
    ...     product = await uow.repository(ProductRepository).add(Product(...))
    ...     await uow.outbox.add("product.created", {"id": product.id}, key=str(product.id))
    ...     await uow.commit()
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from asyncdal.errors import ReadOnlyError
from asyncdal.outbox.table import NOTIFY_CHANNEL, OUTBOX_TABLE

if TYPE_CHECKING:
    from asyncdal.uow import UnitOfWork

__all__ = ["Outbox"]

# One round trip: the notification rides on the insert. The unreferenced-looking subquery is
# evaluated once per statement, so there is exactly one pg_notify per add.
_INSERT = text(
    f"INSERT INTO {OUTBOX_TABLE} (event_type, key, payload) "
    "SELECT :event_type, :key, CAST(:payload AS jsonb) "
    f"FROM (SELECT pg_notify('{NOTIFY_CHANNEL}', '')) AS wake RETURNING id"
)


class Outbox:
    """The outbox of one unit of work (``uow.outbox``).

    Args:
        uow: the unit of work whose transaction the events join.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    async def add(
        self, event_type: str, payload: Mapping[str, Any], *, key: str | int | None = None
    ) -> int:
        """Record an event, committed (or rolled back) with the unit of work.

        Args:
            event_type: what happened, e.g. ``product.created``; handlers register by it.
            payload: JSON-serialisable data (``default=str`` turns decimals, dates, UUIDs
                into strings).
            key: the aggregate key; events of one key are handled in order when the worker
                runs with ``OUTBOX__ORDERED=true``.

        Returns:
            The event's id.

        Raises:
            ReadOnlyError: on a read-only unit of work.
            ValueError: an empty event type.
        """
        if self._uow.read_only:
            raise ReadOnlyError("a read-only unit of work cannot add outbox events")
        if not event_type:
            raise ValueError("event_type must not be empty")
        result = await self._uow.session.execute(
            _INSERT,
            {
                "event_type": event_type,
                "key": None if key is None else str(key),
                "payload": json.dumps(dict(payload), default=str),
            },
        )
        return int(result.scalar_one())
