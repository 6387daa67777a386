"""Tell kinds of database failure apart: what may be retried, what counts against a breaker.

Errors reach asyncdal in several wrappings: asyncpg's own exceptions, ``OSError`` and
``TimeoutError`` from the socket, SQLAlchemy's adapter errors and ``DBAPIError`` around them.
These helpers look through the wrappings (``.orig`` and ``__cause__``) so callers need not.

Example:
    >>> sqlstate(error)                      # '40001' for a serialization failure
    >>> is_connection_failure(error)         # True when the server could not be reached
"""

from __future__ import annotations

from collections.abc import Iterator

from sqlalchemy import exc

from asyncdal.errors import DatabaseUnavailableError

__all__ = [
    "LOCK_NOT_AVAILABLE",
    "QUERY_CANCELED",
    "RETRYABLE_CONFLICTS",
    "SERVER_BUSY",
    "closed_before_sending",
    "is_conflict",
    "is_connection_failure",
    "sqlstate",
]

QUERY_CANCELED = "57014"
"""``statement_timeout`` (or a cancel request) stopped the statement."""
LOCK_NOT_AVAILABLE = "55P03"
"""``lock_timeout`` passed, or ``NOWAIT`` found the row locked."""
SERVER_BUSY = frozenset({"53300", "57P03"})
"""Too many connections, or the server is starting up: it answered, but took no work."""
RETRYABLE_CONFLICTS = frozenset({"40001", "40P01"})
"""Serialization failure and deadlock: the transaction was rolled back and may run again."""

# Class 08 (connection exception), 57P01-57P03 (server shutting down or starting up) and
# 53300 (too many connections): the server did not take the work, so trying later may succeed.
_CONNECTION_STATES = ("08", "57P01", "57P02", *SERVER_BUSY)
# asyncpg's errors for a connection that is gone, by name, so that no private module is needed.
_CONNECTION_ERROR_NAMES = frozenset({"ConnectionDoesNotExistError", "ConnectionFailureError"})


def _chain(error: BaseException) -> Iterator[BaseException]:
    """The error and what it wraps (``.orig``, ``__cause__``), outermost first, each once."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        orig = getattr(current, "orig", None)
        current = orig if isinstance(orig, BaseException) else current.__cause__


def sqlstate(error: BaseException) -> str | None:
    """The PostgreSQL SQLSTATE of ``error`` or of what it wraps, if it has one."""
    for inner in _chain(error):
        code = getattr(inner, "sqlstate", None) or getattr(inner, "pgcode", None)
        if isinstance(code, str):
            return code
    return None


def is_conflict(error: BaseException) -> bool:
    """True for a serialization failure (40001) or a deadlock (40P01)."""
    return sqlstate(error) in RETRYABLE_CONFLICTS


def is_connection_failure(error: BaseException) -> bool:
    """True when ``error`` means the server could not be reached or the connection broke.

    Covers refused and reset sockets, connect and command timeouts on the client side, a
    connection SQLAlchemy invalidated, asyncpg's "connection is closed", a server shutting
    down or starting up, too many connections, and :class:`DatabaseUnavailableError`. A pool
    checkout timeout (``sqlalchemy.exc.TimeoutError``) is not one: the server is fine.
    """
    if isinstance(error, exc.TimeoutError):
        return False
    for inner in _chain(error):
        if isinstance(inner, DatabaseUnavailableError | OSError | TimeoutError):
            return True
        if isinstance(inner, exc.DBAPIError) and inner.connection_invalidated:
            return True
        code = getattr(inner, "sqlstate", None)
        if isinstance(code, str) and code.startswith(_CONNECTION_STATES):
            return True
        name = type(inner).__name__
        if name in _CONNECTION_ERROR_NAMES:
            return True
        if name == "InterfaceError" and _reports_closed(inner):
            return True
    return False


def _reports_closed(error: BaseException) -> bool:
    return "connection is closed" in str(error)


def closed_before_sending(error: BaseException) -> bool:
    """True when asyncpg refused to send because it already knew the connection was closed.

    asyncpg checks ``is_closed()`` before it sends anything and raises its ``InterfaceError``
    ("connection is closed", "... the underlying connection is closed") instead; a link lost
    while a message was on its way raises other errors (``ConnectionDoesNotExistError``, an
    ``OSError``). So for a COMMIT this tells "never sent: rolled back" from "outcome unknown".
    """
    return any(
        type(inner).__name__ == "InterfaceError"
        and type(inner).__module__.startswith("asyncpg")
        and _reports_closed(inner)
        for inner in _chain(error)
    )
