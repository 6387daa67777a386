"""Build an ``AsyncEngine`` from :class:`~asyncdal.settings.DatabaseSettings`.

The pool class follows the settings: ``AsyncAdaptedQueuePool`` for servers, ``NullPool`` for
AWS Lambda, scripts and migrations. asyncpg's connect arguments carry the timeouts and the
server settings (``application_name``, ``statement_timeout``).

Example:
    >>> from asyncdal import DatabaseSettings, create_engine
    >>> engine = create_engine(DatabaseSettings(url="postgresql://app@localhost/catalog"))
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext import asyncio as sqlalchemy_asyncio
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool, PoolProxiedConnection

from asyncdal._translate import translate
from asyncdal.engine._aborted import refuse_commits_after_failures
from asyncdal.engine._breaker import CircuitBreaker
from asyncdal.engine._guard import ConnectionGuard, GuardedPool, attach_guard
from asyncdal.engine._retry import RetryListener, RetryPolicy
from asyncdal.errors import AsyncdalError, PoolTimeoutError
from asyncdal.settings import DatabaseSettings

__all__ = [
    "GuardedNullPool",
    "TimedQueuePool",
    "connect_arguments",
    "create_engine",
    "server_timeouts",
    "statement_timeout_ms",
    "translate_errors",
]


class GuardedNullPool(GuardedPool, NullPool):
    """``NullPool`` behind a :class:`~asyncdal.guard.ConnectionGuard` (breaker, connect retry)."""


class TimedQueuePool(GuardedPool, AsyncAdaptedQueuePool):
    """``AsyncAdaptedQueuePool`` that reports how long each checkout took to its listeners.

    SQLAlchemy's pool events fire only once a connection is out, so the wait for one (the
    number that tells a saturated pool from slow queries) is timed here. Listeners get the
    seconds waited and whether the checkout timed out; with none, nothing is timed.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # SQLAlchemy keeps its own copy private; create_engine and recreate() pass it by name.
        self.max_overflow: int = kwargs.get("max_overflow", 10)
        """Connections it may open beyond its size."""
        self.wait_listeners: list[Callable[[float, bool], None]] = []

    def recreate(self) -> TimedQueuePool:
        fresh = super().recreate()
        assert isinstance(fresh, TimedQueuePool)
        fresh.wait_listeners = self.wait_listeners
        return fresh

    def connect(self) -> PoolProxiedConnection:
        listeners = self.wait_listeners
        if not listeners:
            return super().connect()
        started = time.perf_counter()
        try:
            connection = super().connect()
        except (PoolTimeoutError, exc.TimeoutError):  # the latter without a guard
            seconds = time.perf_counter() - started
            for listener in listeners:
                listener(seconds, True)
            raise
        # The listeners are called here rather than through a method: one Python call fewer
        # at every checkout.
        seconds = time.perf_counter() - started
        for listener in listeners:
            listener(seconds, False)
        return connection


def statement_timeout_ms(settings: DatabaseSettings) -> int | None:
    """``statement_timeout`` in milliseconds, never 0 (which PostgreSQL reads as "no limit")."""
    milliseconds = server_timeouts(settings).get("statement_timeout")
    return None if milliseconds is None else int(milliseconds)


def server_timeouts(settings: DatabaseSettings) -> dict[str, str]:
    """The server-side timeouts set, as PostgreSQL settings in milliseconds.

    ``statement_timeout``, ``lock_timeout`` and ``idle_in_transaction_session_timeout``; those
    not configured are left out (the server's defaults apply).
    """
    values = {
        "statement_timeout": settings.timeouts.statement,
        "lock_timeout": settings.timeouts.lock,
        "idle_in_transaction_session_timeout": settings.timeouts.idle_in_transaction,
    }
    # Never 0, which PostgreSQL reads as "no limit".
    return {
        name: str(max(1, round(seconds * 1000)))
        for name, seconds in values.items()
        if seconds is not None
    }


def _unique_statement_name() -> str:
    return f"__asyncdal_{uuid.uuid4().hex}__"


def connect_arguments(settings: DatabaseSettings) -> dict[str, Any]:
    """asyncpg ``connect()`` keyword arguments for these settings.

    In pooler mode (``settings.pooler.transaction_mode``) asyncpg's and SQLAlchemy's statement
    caches are off and every prepared statement gets a unique name, as a transaction-mode pooler
    hands each transaction a different server connection; the server-side timeouts are then not
    startup parameters (PgBouncer refuses those) but set per transaction by the ``Database``.
    """
    server_settings = {"application_name": settings.application_name}
    if not settings.pooler.transaction_mode:
        server_settings.update(server_timeouts(settings))
    arguments: dict[str, Any] = {
        "timeout": settings.timeouts.connect,
        "server_settings": server_settings,
    }
    if settings.pooler.transaction_mode:
        arguments.update(
            statement_cache_size=0,
            prepared_statement_cache_size=0,
            prepared_statement_name_func=_unique_statement_name,
        )
    if settings.timeouts.command is not None:
        arguments["command_timeout"] = settings.timeouts.command
    arguments.update(settings.tls_arguments())
    return arguments


def create_engine(
    settings: DatabaseSettings,
    *,
    breaker: CircuitBreaker | None = None,
    on_retry: RetryListener | None = None,
    **engine_options: Any,
) -> AsyncEngine:
    """Create an ``AsyncEngine`` whose pool and connections follow ``settings``.

    Every checkout goes through a :class:`~asyncdal.guard.ConnectionGuard`: the circuit
    breaker, and retries of opening a connection (``RETRY_*``, within ``CONNECT_TIMEOUT``).
    Failures arrive as :mod:`asyncdal.errors` where asyncdal has a name for them (see
    :func:`translate_errors`): a pool timeout, a conflict, a constraint violation, ...

    Args:
        settings: one server's settings.
        breaker: the server's circuit breaker; a new one from the settings when None. Give
            each server (primary, each replica) its own, and the same one to every engine of
            that server (one engine per event loop).
        on_retry: told ``("connect", node)`` before each retry of opening a connection.
        **engine_options: extra ``create_async_engine`` arguments; they win over the settings.

    Returns:
        A new engine; the caller owns it and must ``await engine.dispose()``.
    """
    options: dict[str, Any] = {"connect_args": connect_arguments(settings)}
    if settings.pool.effective_kind == "null":
        options["poolclass"] = GuardedNullPool
    else:
        options.update(
            poolclass=TimedQueuePool,
            pool_size=settings.pool.effective_size,
            max_overflow=settings.pool.effective_max_overflow,
            pool_timeout=settings.pool.timeout,
            pool_recycle=settings.pool.recycle,
            pool_pre_ping=settings.pool.pre_ping,
        )
    options.update(engine_options)
    # Looked up at call time, not imported by name, so that instrumentation that wraps
    # create_async_engine (OpenTelemetry's SQLAlchemyInstrumentor) sees our engines too.
    engine = sqlalchemy_asyncio.create_async_engine(settings.sqlalchemy_url(), **options)
    if breaker is None:
        breaker = CircuitBreaker.from_settings(settings.application_name, settings)
    guard = ConnectionGuard(
        breaker, RetryPolicy.from_settings(settings), settings.timeouts.connect, on_retry
    )
    attach_guard(engine, guard)
    # After the guard, whose listener decides the connection's fate (abort, keep the pool).
    translate_errors(engine, breaker.name)
    refuse_commits_after_failures(engine, breaker.name)
    return engine


def translate_errors(engine: AsyncEngine, database: str) -> None:
    """Raise :mod:`asyncdal.errors` instead of the driver's for ``engine``'s statements.

    A ``handle_error`` listener applying :func:`asyncdal._translate.translate` to every
    statement's failure, COMMIT and ROLLBACK included. SQLAlchemy raises the error a listener
    returns ``from`` the driver's exception (its ``__cause__``), after it has decided on its
    own whether the connection is broken (``is_disconnect``) and discarded it if so: that
    decision is read here, never changed. Listeners registered later may still raise an error
    of their own (a replica's :class:`~asyncdal.errors.ReadOnlyError` does).

    Args:
        engine: an engine of ``create_engine`` (which calls this).
        database: the name in the errors' messages and ``.database`` (the breaker's name:
            the database, and the node for a replica).
    """

    def handle_error(context: ExceptionContext) -> AsyncdalError | None:
        if context.is_pre_ping:
            # The pool reads a failed ping itself (a disconnect means "open another"), and
            # only from SQLAlchemy's own errors.
            return None
        translated = translate(
            context.original_exception, database=database, disconnected=context.is_disconnect
        )
        if translated is not None and context.statement:
            # SQLAlchemy chains it to the driver's error, not to its own DBAPIError that showed
            # the statement: keep that in tracebacks and logs (not the parameters: secrets).
            translated.add_note(f"[SQL: {context.statement}]")
        return translated

    event.listen(engine.sync_engine, "handle_error", handle_error)
