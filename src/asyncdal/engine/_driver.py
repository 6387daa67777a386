"""Reads run on the driver's connection, with every feature of the engine's statements.

The default read-only path (autocommit) spends most of its CPU in SQLAlchemy's execution
machinery, not in asyncpg: measured on the catalog's ``get`` (``make bench``), a pool checkout
and ``fetch`` on the asyncpg connection cost about 125 us per read, ``engine.connect()`` and
``exec_driver_sql`` of the same SQL about 360 us, the ORM's ``session.get`` about 480 us.
:class:`DriverReads` runs a statement SQLAlchemy compiled once on the pooled connection's
asyncpg connection, checked out through the same pool (so the guard, the circuit breaker, the
pool's timeout, its events and metrics all apply), and gives what the engine's statement
listeners give the other paths through :class:`StatementHooks`: the breaker's success count,
the query metrics, the slow-statement log and the request tag.

It declines (returns ``None``) whenever it cannot do all of that: a statement listener it does
not stand in for (tracing, the application's own), or a failure it would answer differently
from the engine. The caller then runs the read the usual way, which handles it (a dropped
connection is retried there, an error translated there).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import event, exc
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import PoolProxiedConnection
from sqlalchemy.util import greenlet_spawn

from asyncdal._sql import StatementKind
from asyncdal._translate import is_connection_failure, translate
from asyncdal.engine._aborted import note_failed_statement
from asyncdal.engine._cancel import ServerCancel
from asyncdal.engine._sqlalchemy import (
    await_in_greenlet,
    check_in_unused,
    cursor_listeners,
    listeners_kept,
    listeners_now,
)
from asyncdal.errors import AsyncdalError, DeadlineExceededError

__all__ = [
    "DECLINED",
    "DriverReads",
    "StatementHooks",
    "fetchrow_in_transaction",
    "statement_hooks",
]

BeforeHook = Callable[[Any, dict[Any, Any]], Awaitable[None]]
"""Runs before a statement: ``(asyncpg connection, the pooled connection's info)``."""
AfterHook = Callable[[str, float, StatementKind], None]
"""Runs after a statement that succeeded: ``(sql, seconds, kind)``, the kind as the query
metrics label it (``select``, ``insert``)."""
StartHook = Callable[[str, Any, dict[Any, Any]], None]
"""Runs first, synchronously, before a statement: ``(sql, asyncpg connection, the pooled
connection's info)``; what it raises is raised instead of sending the statement."""
EndHook = Callable[[dict[Any, Any], BaseException | None], BaseException | None]
"""Runs once the statement ended, succeeded or not, before its connection goes back to the
pool: ``(info, what it raised or None)``; returns an error to raise instead, or None."""


@dataclass(slots=True)
class StatementHooks:
    """What the engine's statement listeners do, for statements run on the driver.

    Each feature that listens to ``before_cursor_execute``/``after_cursor_execute`` registers
    its stand-in here and names its listeners in :attr:`replaces`. Per statement: every
    :attr:`start` hook, then every :attr:`before` hook, the statement, every :attr:`end` hook
    (also when something failed), the connection's return to the pool, and every :attr:`after`
    hook once it succeeded.
    """

    before: list[BeforeHook] = field(default_factory=list)
    after: list[AfterHook] = field(default_factory=list)
    start: list[StartHook] = field(default_factory=list)
    end: list[EndHook] = field(default_factory=list)
    replaces: set[tuple[str, Any]] = field(default_factory=set)
    """The engine listeners these hooks stand in for: ``(event name, function)``."""
    database: str = "?"
    """The name in translated errors (as the engine's error map has it)."""
    checked: tuple[tuple[Any, ...], int] | None = None
    """The engine's statement listeners last found all stood in for (a
    :func:`~asyncdal.engine._sqlalchemy.listeners_kept`), and how many stand-ins there were
    then (see :func:`usable`)."""

    def stands_in_for(self, event_name: str, *listeners: Any) -> None:
        """Note that these hooks do what ``listeners`` of ``event_name`` do."""
        self.replaces.update((event_name, listener) for listener in listeners)


def statement_hooks(engine: AsyncEngine) -> StatementHooks | None:
    """The hooks of ``engine``'s pool (asyncdal's pools have them), or None."""
    hooks = getattr(engine.sync_engine.pool, "statement_hooks", None)
    return hooks if isinstance(hooks, StatementHooks) else None


class DriverReads:
    """Run reads on the driver connections of one engine's pool (autocommit: no BEGIN).

    Args:
        engine: the engine whose pool lends the connections and whose listeners apply.
        database: the name in translated errors (as the engine's error map has it).
    """

    def __init__(self, engine: AsyncEngine, database: str) -> None:
        self.engine = engine
        self.database = database
        self.plans: dict[Any, Any] = {}
        """Whatever callers compiled for this engine's dialect, by their own keys."""
        self.sessions_checked: tuple[Any, ...] | None = None
        """The session listeners last found harmless to reads here (a
        :func:`~asyncdal.engine._sqlalchemy.listeners_kept`; see
        :func:`asyncdal.orm._driver_reads.driver_reads`)."""
        self.session_class_listeners: tuple[type[Any], tuple[Any, ...]] | None = None
        """A session class and its listeners' collections (a
        :func:`~asyncdal.engine._sqlalchemy.listeners_now` of one of its sessions without
        listeners of its own): what those of a session without a dispatch of its own are."""
        self._cancel = ServerCancel()

    @property
    def dialect(self) -> Any:
        """The engine's dialect (to compile statements with)."""
        return self.engine.dialect

    def usable(self) -> StatementHooks | None:
        """The hooks to run, or None when a statement listener has no stand-in here."""
        return usable(self.engine.sync_engine)

    async def fetch(
        self, sql: str, parameters: Sequence[Any], *, describe: bool = False
    ) -> tuple[list[Any], list[int] | None] | None:
        """The rows of ``sql`` and, with ``describe``, its result columns' type OIDs; None
        when the caller should run it the usual way instead.

        Raises:
            asyncdal.errors.AsyncdalError: as the engine would raise it (a statement timeout,
                ``COMMAND_TIMEOUT``, a pool timeout, an open breaker).
        """
        hooks = usable(self.engine.sync_engine)
        if hooks is None:
            return None
        raw_connection = self.engine.sync_engine.raw_connection
        before_hooks, start_hooks, end_hooks = hooks.before, hooks.start, hooks.end

        def run() -> tuple[list[Any], list[int] | None, float]:
            # Checkout, statement and checkin in one greenlet: the pool's checkout and
            # checkin may need to await (a new connection, a full queue), the rest is awaited
            # from here (one greenlet rather than three, measured cheaper).
            fairy: PoolProxiedConnection = raw_connection()
            driver: Any = fairy.driver_connection
            info = fairy.info
            try:
                for start in start_hooks:
                    start(sql, driver, info)
                for before in before_hooks:
                    await_in_greenlet(before(driver, info))
                oids: list[int] | None = None
                started = time.perf_counter()
                if describe:
                    # Once per statement: the same statement, prepared, tells its types.
                    prepared = await_in_greenlet(driver.prepare(sql))
                    rows: list[Any] = await_in_greenlet(prepared.fetch(*parameters))
                    oids = [attribute.type.oid for attribute in prepared.get_attributes()]
                else:
                    rows = await_in_greenlet(driver.fetch(sql, *parameters))
                seconds = time.perf_counter() - started
            except BaseException as error:
                raised: BaseException = error
                try:
                    for end in end_hooks:
                        raised = end(info, raised) or raised
                finally:
                    self._failed(fairy, driver, error)
                if raised is not error:
                    raise raised from error
                raise
            for end in end_hooks:
                end(info, None)
            check_in_unused(fairy)
            return rows, oids, seconds

        try:
            rows, oids, seconds = await greenlet_spawn(run)
        except BaseException as error:
            if isinstance(error, DeadlineExceededError):
                raise  # a hook's own answer (the deadline ran out): the usual path's too
            if isinstance(error, TimeoutError):
                translated = translate(error, database=self.database)
                assert translated is not None  # a TimeoutError always is
                raise translated from error
            if not isinstance(error, Exception):
                raise  # a cancellation travels on
            if is_connection_failure(error):
                return None  # the usual path retries a read whose connection dropped
            translated = translate(error, database=self.database)
            if translated is None:
                return None  # the usual path raises it as SQLAlchemy's error
            raise translated from error
        for after in hooks.after:
            after(sql, seconds, "select")
        return rows, oids

    def _failed(self, fairy: PoolProxiedConnection, driver: Any, error: BaseException) -> None:
        """Give back, or discard, the connection a statement failed on (in the greenlet)."""
        if isinstance(error, AsyncdalError):
            # A hook refused to send the statement (a deadline already run out; that error is
            # a TimeoutError too): the connection was not used.
            fairy.close()
            return
        abandoned = isinstance(error, TimeoutError | asyncio.CancelledError)
        if abandoned:
            # The statement may still run on the server: stop it there (as the guard does).
            self._cancel.request(driver)
        broken = (
            abandoned
            or driver.is_closed()
            or (isinstance(error, Exception) and is_connection_failure(error))
        )
        if broken:
            if isinstance(error, TimeoutError):
                # Nobody knows the connection's state: abort it rather than wait for a polite
                # close a silent server never answers (as the guard does).
                driver.terminate()
            fairy.invalidate(error if isinstance(error, Exception) else None)
        fairy.close()


_CURSOR_EVENTS = ("before_cursor_execute", "after_cursor_execute")

DECLINED: Any = object()
"""What :func:`fetchrow_in_transaction` returns when the statement must run the usual way."""

_cancel = ServerCancel()


def usable(engine: Engine) -> StatementHooks | None:
    """The hooks of ``engine`` (a sync engine), or None when one of its statement listeners
    has no stand-in there (the application's own, tracing, ``assert_max_queries``)."""
    hooks = getattr(engine.pool, "statement_hooks", None)
    if not isinstance(hooks, StatementHooks):
        return None
    # Asked before every statement on the driver: the listeners are looked at only when they
    # changed since they were last found all stood in for.
    checked = hooks.checked
    if (
        checked is not None
        and checked[1] == len(hooks.replaces)
        and checked[0] == listeners_now(engine.dispatch, *_CURSOR_EVENTS)
    ):
        return hooks
    # SQLAlchemy keeps wrappers of the functions listened with, so the functions are found by
    # event.contains, and counted: every listener must be one of ours.
    listeners = cursor_listeners(engine)
    ours = sum(1 for name, listener in hooks.replaces if event.contains(engine, name, listener))
    if ours != len(listeners):
        return None
    hooks.checked = (listeners_kept(engine.dispatch, *_CURSOR_EVENTS), len(hooks.replaces))
    return hooks


def fetchrow_in_transaction(
    connection: Connection, sql: str, parameters: Sequence[Any], *, kind: StatementKind
) -> Any:
    """The first row of ``sql`` run on the driver connection under ``connection`` (a
    SQLAlchemy connection in a transaction), in that transaction; :data:`DECLINED` when the
    statement must run the usual way. Called in SQLAlchemy's greenlet (``run_sync``).

    Measured on the catalog's outbox INSERT, SQLAlchemy's Core execution costs more than the
    statement on the driver: this skips it, and gives what its statement listeners give
    through the :class:`StatementHooks` (as :class:`DriverReads` does), labelled ``kind``.

    The transaction is SQLAlchemy's asyncpg adapter's: begun by it when this is the first
    statement (its BEGIN, under its lock), so its COMMIT and ROLLBACK end this statement's
    work too. A failed statement leaves it as a failed ``execute`` does: the server's
    transaction aborted (the next statement fails, ROLLBACK ends it, COMMIT raises: see
    :mod:`asyncdal.engine._aborted`), a broken connection invalidated with the SQLAlchemy
    connection.

    Raises:
        asyncdal.errors.AsyncdalError: as the engine's error map would raise it.
    """
    hooks = usable(connection.engine)
    if hooks is None:
        return DECLINED
    fairy = connection.connection
    adapter: Any = fairy.dbapi_connection
    mutex = getattr(adapter, "_execute_mutex", None)
    if mutex is None or not hasattr(adapter, "_start_transaction"):
        return DECLINED  # not SQLAlchemy's asyncpg adapter
    driver: Any = fairy.driver_connection
    info = fairy.info
    try:
        for start in hooks.start:
            start(sql, driver, info)
        for before in hooks.before:
            await_in_greenlet(before(driver, info))
        row, seconds = await_in_greenlet(_fetchrow(adapter, mutex, driver, sql, parameters))
    except BaseException as error:
        raised: BaseException = error
        broken = False
        try:
            for end in hooks.end:
                raised = end(info, raised) or raised
        finally:
            broken = _failed(connection, driver, error)
        if raised is not error:
            raise raised from error
        if not isinstance(error, Exception) or isinstance(error, AsyncdalError):
            raise  # a cancellation travels on; a hook's own answer is the engine's too
        translated = translate(error, database=hooks.database, disconnected=broken)
        if translated is None:
            # What asyncdal has no name for reaches the caller as SQLAlchemy's error, as from
            # the engine (a handler may catch DBAPIError).
            wrapped = _as_sqlalchemy_error(connection, adapter, sql, parameters, error, broken)
            raise wrapped from wrapped.orig
        translated.add_note(f"[SQL: {sql}]")
        raise translated from error
    for end in hooks.end:
        end(info, None)
    for after in hooks.after:
        after(sql, seconds, kind)
    return row


async def _fetchrow(
    adapter: Any, mutex: asyncio.Lock, driver: Any, sql: str, parameters: Sequence[Any]
) -> tuple[Any, float]:
    """What the adapter's cursor does for one statement, on the driver."""
    async with mutex:
        if adapter._transaction is None:
            await adapter._start_transaction()
        started = time.perf_counter()
        row = await driver.fetchrow(sql, *parameters)
        return row, time.perf_counter() - started


def _failed(connection: Connection, driver: Any, error: BaseException) -> bool:
    """Discard the connection a statement broke, as the engine does; True when discarded."""
    if isinstance(error, AsyncdalError):
        return False  # a hook refused to send the statement: the connection was not used
    abandoned = isinstance(error, TimeoutError | asyncio.CancelledError)
    if abandoned:
        # The statement may still run on the server: stop it there (as the guard does).
        _cancel.request(driver)
    if not (
        abandoned
        or driver.is_closed()
        or (isinstance(error, Exception) and is_connection_failure(error))
    ):
        # The server refused the statement: its transaction is aborted (COMMIT must not
        # report success), as after a failed statement through the engine.
        note_failed_statement(connection, error)
        return False
    if isinstance(error, TimeoutError):
        # Nobody knows the connection's state: abort it (as the guard does).
        driver.terminate()
    # The SQLAlchemy connection's invalidate: its transaction must then be rolled back, as
    # after a statement that broke the connection on the usual path.
    connection.invalidate(error if isinstance(error, Exception) else None)
    return True


def _as_sqlalchemy_error(
    connection: Connection,
    adapter: Any,
    sql: str,
    parameters: Sequence[Any],
    error: Exception,
    invalidated: bool,
) -> exc.StatementError:
    """``error`` as the engine raises it: the adapter's DBAPI error, wrapped in SQLAlchemy's."""
    dialect = connection.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    original: Exception = error
    if not isinstance(error, dbapi_error):
        try:
            adapter._handle_exception(error)
        except Exception as adapted:
            original = adapted
    wrapped = exc.DBAPIError.instance(
        sql,
        tuple(parameters),
        original,
        dbapi_error,
        hide_parameters=connection.engine.hide_parameters,
        connection_invalidated=invalidated,
        dialect=dialect,
        ismulti=False,
    )
    return wrapped
