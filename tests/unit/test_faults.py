"""Fault classification looks through SQLAlchemy's and asyncpg's wrappings."""

from __future__ import annotations

import asyncpg
from sqlalchemy import exc

from asyncdal import DatabaseUnavailableError
from asyncdal._translate import is_conflict, is_connection_failure, sqlstate


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
