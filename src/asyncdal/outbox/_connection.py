"""A connection the worker keeps for itself: one statement at a time, reopened when broken.

The worker holds two (claiming, and settling plus lease upkeep), so a batch can be claimed
while the previous one is settled. They come from the worker's own pool, are never lent to a
handler, and are used through asyncpg directly: the claim and settle statements are the hot
path, and asyncpg's prepared statements are their cheapest form.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncConnection

from asyncdal.errors import (
    ConflictError,
    ConstraintViolationError,
    InvalidValueError,
    LockTimeoutError,
    PoolTimeoutError,
    StatementTimeoutError,
)
from asyncdal.orm._database import Database
from asyncdal.outbox._table import OUTBOX_TABLE

__all__ = ["CONNECTION_ERRORS", "DATABASE_ERRORS", "WorkerConnection", "describe_database_error"]

CONNECTION_ERRORS = (OSError, asyncpg.InterfaceError, asyncpg.PostgresConnectionError)
"""Errors after which the connection is dropped and opened again at the next use."""

DATABASE_ERRORS = (
    OSError,
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    DBAPIError,
    PoolTimeoutError,
    StatementTimeoutError,
    LockTimeoutError,
    ConflictError,
    ConstraintViolationError,
    InvalidValueError,
)
"""What the worker logs and retries after: the statements' own errors, and opening a
connection or running a statement through the engine (which raises asyncdal's errors where it
has a name for them, SQLAlchemy's ``DBAPIError`` otherwise); asyncdal's
``DatabaseUnavailableError`` and ``QueryTimeoutError`` are ``OSError`` subclasses."""


def describe_database_error(error: BaseException) -> str:
    """One line on what went wrong: no SQL, no traceback, no password."""
    cause: BaseException = error
    if isinstance(error, DBAPIError) and error.orig is not None:
        cause = error.orig
        if isinstance(cause.__cause__, asyncpg.PostgresError | OSError):
            cause = cause.__cause__  # the driver's own error, not SQLAlchemy's adapter
    code = getattr(cause, "sqlstate", None) or getattr(cause, "pgcode", None)
    if code == "42P01":  # undefined_table
        return f"outbox table {OUTBOX_TABLE} missing: run the migrations"
    lines = str(cause).splitlines()
    return f"{type(cause).__name__}: {lines[0] if lines else ''}"


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

    async def _open(self) -> asyncpg.Connection:
        if self._connection is None or self._connection.is_closed():
            await self.close(broken=self._connection is not None)
            self._holder = await self._database.engine.connect()
            raw = await self._holder.get_raw_connection()
            self._connection = cast("asyncpg.Connection", raw.driver_connection)
        return self._connection

    async def run(self, call: Callable[[asyncpg.Connection], Awaitable[Any]]) -> Any:
        """Run ``call`` on the connection, alone; a broken connection is replaced next time."""
        async with self._lock:
            connection = await self._open()
            try:
                return await call(connection)
            except CONNECTION_ERRORS:
                await self.close(broken=True)
                raise

    async def close(self, *, broken: bool = False) -> None:
        """Give the connection back to the pool (or discard it when ``broken``)."""
        holder, self._holder, self._connection = self._holder, None, None
        if holder is not None:
            with contextlib.suppress(Exception):
                if broken:
                    await holder.invalidate()
                await holder.close()
