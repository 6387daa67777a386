"""The write side: ``Outbox.of(uow).add(...)`` records an event in the unit of work's transaction.

The event commits with the data or not at all. Each insert also sends a ``NOTIFY`` in the same
statement, which PostgreSQL delivers only at commit (and collapses within one transaction), so
an idle worker wakes at once and never hears of an event that was rolled back.

Example:
    >>> async with db.unit_of_work() as uow:
    ...     product = await uow.repository(ProductRepository).add(Product(...))
    ...     await Outbox.of(uow).add("product.created", {"id": product.id}, key=str(product.id))
    ...     await uow.commit()
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, cast
from weakref import WeakKeyDictionary

from sqlalchemy import (
    Text,
    bindparam,
    column,
    func,
    insert,
    literal_column,
    select,
    table,
)
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import Session

from asyncdal.engine._driver import DECLINED, fetchrow_in_transaction
from asyncdal.errors import ReadOnlyError
from asyncdal.outbox._table import NOTIFY_CHANNEL, OUTBOX_TABLE

if TYPE_CHECKING:
    from asyncdal.orm._uow import UnitOfWork

__all__ = ["Outbox"]

# One round trip: the notification rides on the insert. The unreferenced-looking subquery is
# evaluated once per statement, so there is exactly one pg_notify per add. Built with Core
# rather than text(): an INSERT SQLAlchemy compiled says what it is (the query metrics label it
# and the replica routing sends it to the primary without reading its SQL).
_outbox = table(OUTBOX_TABLE, column("id"), column("event_type"), column("key"), column("payload"))
_wake = select(func.pg_notify(literal_column(f"'{NOTIFY_CHANNEL}'"), literal_column("''")))
_INSERT = (
    insert(_outbox)
    .from_select(
        ["event_type", "key", "payload"],
        select(
            bindparam("event_type", type_=Text()),
            bindparam("key", type_=Text()),
            sql_cast(bindparam("payload", type_=Text()), JSONB),
        ).select_from(_wake.subquery("wake")),
    )
    .returning(_outbox.c.id)
)


class Outbox:
    """The outbox of one unit of work: events added here commit with its transaction.

    Get it with :meth:`of`, which also hands out the stand-in of a fake unit of work.

    Args:
        uow: the unit of work whose transaction the events join.
    """

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    @classmethod
    def of(cls, uow: UnitOfWork) -> Outbox:
        """The outbox of ``uow``: its ``outbox_stand_in`` when it has one (the fake unit of
        work of ``asyncdal.testing`` does), else one writing in its transaction.

        Example:
            >>> await Outbox.of(uow).add("product.created", {"id": 7}, key=7)
        """
        stand_in = getattr(uow, "outbox_stand_in", None)
        return cls(uow) if stand_in is None else cast("Outbox", stand_in)

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
        parameters = {
            "event_type": event_type,
            "key": None if key is None else str(key),
            "payload": json.dumps(dict(payload), default=str),
        }
        session = self._uow.session
        if not _only_asyncdal_listens(session.sync_session.dispatch.do_orm_execute):
            # The application's own listener (a tenant's criteria, a statement log) sees
            # every statement the session runs: this one too.
            result = await session.execute(_INSERT, parameters)
            return int(result.scalar_one())
        return int(await session.run_sync(_insert, parameters))


def _insert(session: Session, parameters: dict[str, Any]) -> Any:
    """The insert on the session's connection (what ``session.execute`` does without the ORM's
    statement handling, which this INSERT does not need: measured about a third of the add's
    CPU), on its driver connection when the engine's statement listeners all have stand-ins
    there (``asyncdal.engine._driver``), else through the engine."""
    connection = session.connection(bind_arguments={"clause": _INSERT})
    compiled = _compiled.get(connection.dialect)
    if compiled is None:
        done = _INSERT.compile(dialect=connection.dialect)
        compiled = _compiled[connection.dialect] = (str(done), tuple(done.positiontup or ()))
    sql, names = compiled
    row = fetchrow_in_transaction(
        connection, sql, [parameters[name] for name in names], kind="insert"
    )
    if row is DECLINED:
        return connection.execute(_INSERT, parameters).scalar_one()
    return row[0]


# The INSERT's SQL and its parameters' order, by dialect (one per engine configuration).
_compiled: WeakKeyDictionary[Dialect, tuple[str, tuple[str, ...]]] = WeakKeyDictionary()


def _only_asyncdal_listens(listeners: Any) -> bool:
    """True when every ``do_orm_execute`` listener of the session is asyncdal's own (none of
    which has anything to do with an INSERT of the outbox)."""
    return all(
        getattr(listener, "__module__", "").startswith("asyncdal.") for listener in listeners
    )
