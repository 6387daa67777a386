"""A connection the worker keeps for itself: one operation at a time, replaced when in doubt.

The worker holds two (claiming, and settling plus lease upkeep), so a batch can be claimed
while the previous one is settled. They come from the worker's own pool, are never lent to a
handler, and are used through asyncpg directly: the claim and settle statements are the hot
path, and asyncpg's prepared statements are their cheapest form.

A connection is kept only after a statement succeeded or the server refused it with an
ordinary SQL error. After anything else it is closed (a statement still running is cancelled
on the server first) and its pool slot given back, and the next operation opens another: a
lost link, an ``InterfaceError`` or ``InternalClientError`` (asyncpg's protocol left
mid-operation, as when the server ends a backend while it sits idle and the next statement
runs before the socket's end is read), a client-side timeout, or a cancellation (the
statement may still be running, and a cancel request in flight). Reusing
such a connection is how two operations came to run on one connection at once and kill the
worker (issue 13).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncConnection

from asyncdal._translate import is_connection_failure
from asyncdal.errors import (
    CommitOutcomeUnknownError,
    ConflictError,
    ConstraintViolationError,
    InvalidValueError,
    LockTimeoutError,
    NotCommittedError,
    PoolTimeoutError,
    ReadOnlyError,
    StatementTimeoutError,
)
from asyncdal.orm._database import Database
from asyncdal.outbox._table import OUTBOX_TABLE

__all__ = [
    "DATABASE_ERRORS",
    "WorkerConnection",
    "WorkerConnectionError",
    "describe_database_error",
    "give_back",
]


class WorkerConnectionError(ConnectionError):
    """An operation on one of the worker's connections failed in a way that has no database
    error of its own (the driver's failure is the ``__cause__``), or the connection was closed
    for good. The connection was replaced; the worker logs it and tries again."""


DATABASE_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    SQLAlchemyError,
    PoolTimeoutError,
    StatementTimeoutError,
    LockTimeoutError,
    ConflictError,
    ConstraintViolationError,
    InvalidValueError,
    ReadOnlyError,
    CommitOutcomeUnknownError,
    NotCommittedError,
)
"""What the worker logs, backs off from and tries again after: the statements' own errors,
the driver's (asyncpg's ``InternalClientError`` included), and opening a connection or running
a statement through the engine (which raises asyncdal's errors where it has a name for them,
SQLAlchemy's otherwise); asyncdal's ``DatabaseUnavailableError``, ``ConnectionLostError`` and
``QueryTimeoutError``, and :class:`WorkerConnectionError`, are ``OSError`` subclasses."""


def describe_database_error(error: BaseException) -> str:
    """One line on what went wrong: no SQL, no traceback, no password."""
    cause: BaseException = error
    if isinstance(error, WorkerConnectionError) and error.__cause__ is not None:
        cause = error.__cause__
    orig = getattr(cause, "orig", None)
    if isinstance(cause, SQLAlchemyError) and isinstance(orig, BaseException):
        cause = orig
        if isinstance(cause.__cause__, asyncpg.PostgresError | OSError):
            cause = cause.__cause__  # the driver's own error, not SQLAlchemy's adapter
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if code == "42P01":  # undefined_table
        return f"outbox table {OUTBOX_TABLE} missing: run the migrations"
    lines = str(cause).splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


def _keeps_connection(error: BaseException, connection: asyncpg.Connection) -> bool:
    """True only when the server refused a statement with an ordinary SQL error and the
    connection is idle again (asyncpg raises those after the server's ReadyForQuery)."""
    return (
        isinstance(error, asyncpg.PostgresError)
        and not is_connection_failure(error)
        and not connection.is_closed()
        and not connection.is_in_transaction()
    )


# How long a discarded connection gets to have its statement cancelled on the server and to
# say goodbye before it is cut (a server that does not answer must not hold the worker up).
_CLOSE_SECONDS = 2.0


async def _end(connection: asyncpg.Connection) -> None:
    """Close ``connection``: a statement still running on the server is cancelled first
    (asyncpg sends the cancel request and waits for it), so no backend runs on for nothing;
    cut after :data:`_CLOSE_SECONDS`."""
    try:
        await connection.close(timeout=_CLOSE_SECONDS)
    except BaseException:
        connection.terminate()
        raise


async def give_back(holder: AsyncConnection, *, broken: bool) -> None:
    """Return ``holder``'s pool slot; a broken connection is discarded, never pooled again."""
    with contextlib.suppress(Exception):
        if broken:
            await holder.invalidate()
    with contextlib.suppress(Exception):
        await holder.close()


async def _discard(holder: AsyncConnection | None, connection: asyncpg.Connection | None) -> None:
    if connection is not None:
        with contextlib.suppress(Exception):
            await _end(connection)
    if holder is not None:
        await give_back(holder, broken=True)


class WorkerConnection:
    """One pooled connection of ``database``, checked out for as long as the worker runs.

    Args:
        database: the worker's own database (its pool, its settings).
    """

    def __init__(self, database: Database) -> None:
        self._database = database
        self._lock = asyncio.Lock()
        self._holder: AsyncConnection | None = None
        self._connection: asyncpg.Connection | None = None
        self._closed = False

    @property
    def backend_pid(self) -> int | None:
        """The server process of the connection held now (None when none is held)."""
        connection = self._connection
        if connection is None or connection.is_closed():
            return None
        return connection.get_server_pid()

    async def _open(self) -> asyncpg.Connection:
        if self._connection is not None and not self._connection.is_closed():
            return self._connection
        await self._discard()
        # Kept before anything else is awaited: a cancellation from here on still gives
        # the slot back (see _discard).
        self._holder = await self._database.engine.connect()
        raw = await self._holder.get_raw_connection()
        self._connection = cast("asyncpg.Connection", raw.driver_connection)
        return self._connection

    async def run(self, call: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        """Run ``call`` on the connection, alone; replace the connection unless it is sure
        to be idle and sound afterwards.

        Raises:
            WorkerConnectionError: :meth:`close` was called, or ``call`` failed with an error
                outside :data:`DATABASE_ERRORS` (the driver's is its ``__cause__``).
            asyncio.CancelledError: cancelled; the connection was replaced.
            Exception: one of :data:`DATABASE_ERRORS`, as raised.
        """
        async with self._lock:
            if self._closed:
                raise WorkerConnectionError("the outbox worker's connection is closed")
            try:
                connection = await self._open()
                return await call(connection)
            except BaseException as error:
                held = self._connection
                if held is None or not _keeps_connection(error, held):
                    await self._discard()
                if isinstance(error, Exception) and not isinstance(error, DATABASE_ERRORS):
                    raise WorkerConnectionError(
                        f"{type(error).__name__} on the outbox worker's connection: {error}"
                    ) from error
                raise

    async def _discard(self) -> None:
        """End the connection held (if any) and give its pool slot back."""
        holder, connection = self._holder, self._connection
        # Detached first: nothing runs on it again, here or (never pooled again) elsewhere.
        self._holder = self._connection = None
        if holder is not None or connection is not None:
            # Shielded: a second cancellation while it ends must not leave the slot checked
            # out for good (the worker's pool has no overflow), nor the statement running.
            await asyncio.shield(_discard(holder, connection))

    async def close(self) -> None:
        """Give the connection back to the pool, for good: :meth:`run` refuses from now on.

        An operation still in flight is cancelled (its connection ended) rather than waited
        for.
        """
        self._closed = True
        held = self._connection
        if self._lock.locked() and held is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(_end(held))
        async with self._lock:
            holder, connection = self._holder, self._connection
            self._holder = self._connection = None
            if holder is not None:
                broken = connection is None or connection.is_closed()
                await asyncio.shield(give_back(holder, broken=broken))
