"""The session classes of a database, built once per :class:`~asyncdal.Database`.

Three kinds: read-write (units of work), read-only in a snapshot (``REPEATABLE READ, READ
ONLY``), and quick reads (autocommit, each read on its own, retried when its connection
dropped). Behind a transaction-mode pooler each transaction sets its own timeouts; with
replicas the classes route reads (see :mod:`asyncdal.replicas._routing`).

They depend only on the database's settings. What belongs to one event loop's engines (the
router, the primary's engine) reaches a session through its ``info``, which each loop's session
factories set, so one set of classes, and of the event listeners on them, serves every loop.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import ORMExecuteState, Session

from asyncdal._sql import may_write
from asyncdal.engine._create import server_timeouts
from asyncdal.engine._retry import RetryListener, RetryPolicy
from asyncdal.errors import ReadOnlyError
from asyncdal.orm._driver_reads import ORM_READ
from asyncdal.orm._transaction import retry_dropped_reads
from asyncdal.replicas._lsn import track_commit_lsn
from asyncdal.replicas._routing import RoutingSession, handwritten_sql
from asyncdal.settings import DatabaseSettings

__all__ = ["ReadOnlySession", "SessionClasses", "build_session_classes"]


class ReadOnlySession(Session):
    """A session that refuses writes: the default read-only path runs in autocommit mode,
    where a write would be permanent at once."""


@event.listens_for(ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, flush_context: Any, instances: Any) -> None:
    raise ReadOnlyError("a read-only unit of work cannot write (flush refused)")


@event.listens_for(ReadOnlySession, "do_orm_execute")
def _refuse_write_statements(state: ORMExecuteState) -> None:
    # From now on the session holds a connection: reads on the driver would take another.
    state.session.info[ORM_READ] = True
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlyError("a read-only unit of work cannot run INSERT, UPDATE or DELETE")
    # A raw text() must be a plain read (asyncdal._sql: keywords inside literals and comments
    # do not count). A SELECT of a function that writes cannot be seen from here: use
    # read_only_unit_of_work(snapshot=True), or replicas, whose connections are READ ONLY, to
    # have the server refuse it.
    sql = handwritten_sql(state.statement)
    if sql is not None and may_write(sql):
        raise ReadOnlyError(
            "a read-only unit of work runs only reads (SELECT, WITH, SHOW, EXPLAIN, "
            "VALUES, TABLE); use unit_of_work() to write"
        )


@dataclass(frozen=True, slots=True)
class SessionClasses:
    """The sync session classes of one database's three kinds of session."""

    writer: type[Session]
    """Read-write units of work."""
    reader: type[Session]
    """Read-only units of work in one snapshot."""
    quick: type[Session]
    """Read-only units of work in autocommit mode (the default)."""


def build_session_classes(
    settings: DatabaseSettings, on_retry: RetryListener | None = None
) -> SessionClasses:
    """The session classes for a database with ``settings``.

    Args:
        settings: the database's settings (pooler, timeouts, retries, replicas).
        on_retry: told ``("read", node)`` before a dropped read is retried.
    """
    timeouts = server_timeouts(settings)
    writer: type[Session] = Session
    reader: type[Session] = ReadOnlySession
    if settings.pooler.transaction_mode and timeouts:
        # Behind a transaction-mode pooler a session-level setting would leak to other
        # clients' transactions, so the timeouts are set in each transaction instead.
        statements = [f"SET LOCAL {name} = {value}" for name, value in timeouts.items()]

        def set_timeouts(session: Session, transaction: Any, connection: Any) -> None:
            for statement in statements:
                connection.exec_driver_sql(statement)

        writer = type("PoolerSession", (Session,), {})
        reader = type("PoolerReadOnlySession", (ReadOnlySession,), {})
        for session_class in (writer, reader):
            event.listen(session_class, "after_begin", set_timeouts)
    quick = type("QuickReadSession", (reader,), {})
    retry_dropped_reads(quick, RetryPolicy.from_settings(settings), on_retry)
    if settings.replicas:
        writer = type("RoutingWriteSession", (RoutingSession, writer), {})
        reader = type("RoutingReadOnlySession", (RoutingSession, reader), {})
        quick = type("RoutingQuickReadSession", (RoutingSession, quick), {})
        track_commit_lsn(writer)
    return SessionClasses(writer=writer, reader=reader, quick=quick)
