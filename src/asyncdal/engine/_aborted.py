"""No COMMIT that PostgreSQL turns into a rollback while the caller is told it committed.

After a statement fails in a transaction, PostgreSQL refuses every statement of it until it
ends, and answers its COMMIT with ``ROLLBACK``. The driver takes that answer as success, and
so does SQLAlchemy: code that catches a failed statement and goes on to commit is told the
transaction committed, and everything it wrote before the failure is gone without a word
(found by trying it: a table created, a failing statement caught, COMMIT returned normally,
no table).

Here a statement's failure in a transaction is noted on its connection, and the COMMIT of
that transaction first asks the server whether the transaction is still good (one round trip,
only after a failure: a driver's error may have come from the client, before anything was
sent, and left the transaction as it was). When it is not, the commit raises
:class:`~asyncdal.errors.UnitOfWorkError` instead, and the unit of work rolls back. A rollback
to a savepoint made before the failure (``begin_nested()`` leaving on an error) makes the
transaction good again, and forgets the failure.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Connection, ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal.engine._sqlalchemy import await_in_greenlet
from asyncdal.errors import UnitOfWorkError

__all__ = ["note_failed_statement", "refuse_commits_after_failures"]

_FAILED = "asyncdal_failed_in"
# SQLSTATE 25P02, in_failed_sql_transaction: what the server answers in a failed transaction.
_IN_FAILED_TRANSACTION = "25P02"


def refuse_commits_after_failures(engine: AsyncEngine, database: str) -> None:
    """Make the COMMIT of a transaction in which a statement failed raise instead of
    reporting success (see the module's docstring).

    Args:
        engine: an engine of ``create_engine`` (which calls this).
        database: the name in the error's message.
    """
    dbapi_error = engine.dialect.loaded_dbapi.Error

    def failed(context: ExceptionContext) -> None:
        connection = context.connection
        if (
            connection is None
            or context.is_disconnect
            or context.is_pre_ping
            # Ours (a deadline already past), raised before the statement was sent.
            or not isinstance(context.original_exception, dbapi_error)
        ):
            return
        # The driver's own error (DivisionByZeroError) says more than its DB-API wrapper's.
        original = context.original_exception
        note_failed_statement(connection, original.__cause__ or original)

    def rolled_back_to_savepoint(connection: Connection, name: str, context: Any) -> None:
        connection.info.pop(_FAILED, None)

    def committing(connection: Connection) -> None:
        failure = connection.info.pop(_FAILED, None)
        if failure is None or failure[0] is not connection.get_transaction():
            return
        if _still_good(connection):
            return
        # Ended here: SQLAlchemy takes a transaction whose COMMIT raised for ended as well,
        # and would give the connection back to the pool still in it.
        dbapi_connection: Any = connection.connection.dbapi_connection
        dbapi_connection.rollback()
        raise UnitOfWorkError(
            f"a statement failed earlier in this transaction on {database!r} "
            f"({failure[1]}) and the error was caught, so PostgreSQL would roll the "
            "transaction back on COMMIT: nothing of it was saved. Let the error end the unit "
            "of work, or run the statement that may fail in a savepoint "
            "(session.begin_nested())"
        )

    event.listen(engine.sync_engine, "handle_error", failed)
    event.listen(engine.sync_engine, "rollback_savepoint", rolled_back_to_savepoint)
    event.listen(engine.sync_engine, "commit", committing)


def note_failed_statement(connection: Connection, error: BaseException) -> None:
    """A statement under ``connection`` failed with ``error`` (the driver's) and left the
    connection usable: its transaction, if it has one, may be aborted on the server. Also
    what statements run on the driver within SQLAlchemy's transaction report
    (:func:`asyncdal.engine._driver.fetchrow_in_transaction`)."""
    transaction = connection.get_transaction()
    if transaction is None or _autocommit(connection):
        return
    info = connection.info
    noted = info.get(_FAILED)
    if noted is not None and noted[0] is transaction:
        return  # the first failure is the one to name: the later ones only follow from it
    # The transaction object itself, not a flag: the pooled connection's info outlives the
    # transaction, and a later transaction must not see this one's failure.
    info[_FAILED] = (transaction, type(error).__name__)


def _autocommit(connection: Connection) -> bool:
    """Whether the driver connection runs each statement in a transaction of its own."""
    return bool(getattr(connection.connection.dbapi_connection, "autocommit", False))


def _still_good(connection: Connection) -> bool:
    """Ask the server (in SQLAlchemy's greenlet) whether the transaction takes statements."""
    driver: Any = connection.connection.driver_connection
    try:
        await_in_greenlet(driver.execute("SELECT 1"))
    except Exception as error:
        if getattr(error, "sqlstate", None) == _IN_FAILED_TRANSACTION:
            return False
        raise
    return True
