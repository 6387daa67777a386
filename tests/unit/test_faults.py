"""Fault classification looks through SQLAlchemy's and asyncpg's wrappings."""

from __future__ import annotations

import asyncio

import asyncpg
from sqlalchemy import exc

from asyncdal import (
    ConflictError,
    ConnectionLostError,
    DatabaseUnavailableError,
    PoolTimeoutError,
    QueryTimeoutError,
    SerializationError,
)
from asyncdal._translate import is_conflict, is_connection_failure, sqlstate, translate


def wrapped(inner: BaseException, *, invalidated: bool = False) -> exc.DBAPIError:
    adapter = Exception("adapter")
    adapter.__cause__ = inner
    return exc.DBAPIError("SELECT 1", None, adapter, connection_invalidated=invalidated)


def test_sqlstate_is_found_through_the_wrappings() -> None:
    error = wrapped(asyncpg.SerializationError("could not serialize"))
    assert sqlstate(error) == "40001"
    assert is_conflict(error)
    assert is_conflict(wrapped(asyncpg.DeadlockDetectedError("deadlock")))
    assert not is_conflict(wrapped(asyncpg.UniqueViolationError("dup")))
    assert sqlstate(ValueError("x")) is None


def test_connection_failures() -> None:
    assert is_connection_failure(ConnectionRefusedError())
    assert is_connection_failure(TimeoutError())
    assert is_connection_failure(DatabaseUnavailableError("down", database="main"))
    assert is_connection_failure(wrapped(ValueError("x"), invalidated=True))
    assert is_connection_failure(wrapped(asyncpg.CannotConnectNowError("starting up")))
    assert is_connection_failure(wrapped(asyncpg.AdminShutdownError("terminated")))
    assert is_connection_failure(wrapped(asyncpg.ConnectionDoesNotExistError("gone")))
    assert is_connection_failure(wrapped(asyncpg.TooManyConnectionsError("full")))


def test_not_connection_failures() -> None:
    # A pool checkout timeout: the server is fine, the pool is busy.
    assert not is_connection_failure(exc.TimeoutError("QueuePool limit"))
    assert not is_connection_failure(wrapped(asyncpg.UniqueViolationError("dup")))
    assert not is_connection_failure(wrapped(asyncpg.QueryCanceledError("statement timeout")))
    assert not is_connection_failure(
        wrapped(asyncpg.InterfaceError("another operation is in progress"))
    )


def test_translate_leaves_cancellation_and_unknown_errors_alone() -> None:
    # SQLAlchemy marks a cancelled statement as a disconnect: it must stay a cancellation.
    assert translate(asyncio.CancelledError(), database="main", disconnected=True) is None
    assert translate(wrapped(asyncpg.UndefinedTableError("no table")), database="main") is None
    already = ConflictError("ours", database="main")
    assert translate(already, database="main") is None


def test_translate_names_the_problem() -> None:
    pool = translate(
        exc.TimeoutError(
            "QueuePool limit of size 5 overflow 10 reached, connection timed out, timeout 30.00"
        ),
        database="main",
    )
    assert isinstance(pool, PoolTimeoutError)
    assert "waited 30 s; pool size 5, overflow 10" in str(pool)
    assert not is_connection_failure(pool)
    lost = translate(wrapped(ValueError("x")), database="main/replica-1", disconnected=True)
    assert isinstance(lost, ConnectionLostError)
    assert lost.database == "main/replica-1"
    assert isinstance(translate(TimeoutError(), database="main"), QueryTimeoutError)
    conflict = translate(wrapped(asyncpg.SerializationError("x")), database="main")
    assert isinstance(conflict, SerializationError)
    # The classifiers see the translated error as they saw the original.
    conflict.__cause__ = wrapped(asyncpg.SerializationError("x"))
    assert sqlstate(conflict) == "40001"
    assert is_conflict(ConflictError("ours", database="main"))
