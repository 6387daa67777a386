"""``Database`` (one named database and its engine) and ``Databases`` (the registry).

Nothing here is created at import time: the app's lifespan or the container builds a
``Databases`` from the settings and disposes it on shutdown.

Engines are bound to the event loop that uses them (asyncpg connections cannot move between
loops), so a ``Database`` keeps one engine per running loop and builds a new one when it is
first used from another loop. Tests with a loop per test and AWS Lambda runtimes that create a
loop per invocation therefore never see "attached to a different loop" errors.

Example:
    >>> databases = Databases.from_settings(load_settings())
    >>> async with databases:                      # warm up, and dispose at the end
    ...     async with databases.main.unit_of_work() as uow:
    ...         await uow.session.execute(text("SELECT 1"))
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, replace
from types import TracebackType
from typing import Any, Self

from sqlalchemy import event, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.sql.elements import TextClause

from asyncdal.engine import create_engine, statement_timeout_ms
from asyncdal.errors import ReadOnlyError, UnitOfWorkError, UnknownDatabaseError
from asyncdal.querylog import attach_query_log
from asyncdal.settings import AsyncdalSettings, DatabaseSettings
from asyncdal.uow import UnitOfWork

__all__ = ["Database", "Databases"]


class _ReadOnlySession(Session):
    """A session that refuses writes: the default read-only path runs in autocommit mode,
    where a write would be permanent at once."""


# Statements a raw text() may start with and still be a plain read. A WITH or EXPLAIN that
# names a data-changing command is refused too. A SELECT of a function that writes cannot be
# seen from here: use read_only_unit_of_work(snapshot=True) to have the server refuse it.
_READ_ONLY_TEXT = re.compile(r"\s*(?:\(\s*)*(select|with|show|explain|values|table)\b", re.I)
_WRITE_WORD = re.compile(r"\b(insert|update|delete|merge|truncate|copy|call|do)\b", re.I)


@event.listens_for(_ReadOnlySession, "before_flush")
def _refuse_flush(session: Session, flush_context: Any, instances: Any) -> None:
    raise ReadOnlyError("a read-only unit of work cannot write (flush refused)")


@event.listens_for(_ReadOnlySession, "do_orm_execute")
def _refuse_write_statements(state: ORMExecuteState) -> None:
    if state.is_insert or state.is_update or state.is_delete:
        raise ReadOnlyError("a read-only unit of work cannot run INSERT, UPDATE or DELETE")
    statement = state.statement
    if isinstance(statement, TextClause):
        read = _READ_ONLY_TEXT.match(statement.text)
        if read is None or (
            read.group(1).lower() in {"with", "explain"} and _WRITE_WORD.search(statement.text)
        ):
            raise ReadOnlyError(
                "a read-only unit of work runs only reads (SELECT, WITH, SHOW, EXPLAIN, "
                "VALUES, TABLE); use unit_of_work() to write"
            )


@dataclass(slots=True)
class _LoopEngine:
    """The engine and session factories that belong to one event loop."""

    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    quick_reads: async_sessionmaker[AsyncSession]
    snapshot_reads: async_sessionmaker[AsyncSession]


class Database:
    """One named database: its settings, its engine, and the doors to sessions.

    Args:
        name: the database's name in the registry (``main``, ``reference``, ...).
        settings: its connection and pool settings.
        **engine_options: extra ``create_async_engine`` arguments (e.g. ``echo=True``).
    """

    def __init__(self, name: str, settings: DatabaseSettings, **engine_options: Any) -> None:
        self.name = name
        self.settings = settings
        self._engine_options = engine_options
        self._by_loop: dict[asyncio.AbstractEventLoop, _LoopEngine] = {}
        self._last: _LoopEngine | None = None
        self._pinned: _LoopEngine | None = None
        self._engine_hooks: list[Callable[[AsyncEngine], None]] = []

    def _bound(self) -> _LoopEngine:
        loop = asyncio.get_running_loop()
        last = self._last
        if last is not None and last.loop is loop:
            return last
        if self._pinned is not None:
            if self._pinned.loop is loop:
                self._last = self._pinned
                return self._pinned
            raise UnitOfWorkError(
                f"database {self.name!r} is pinned to one connection (use_connection) in "
                "another event loop; run the app in the test's loop (e.g. httpx.AsyncClient "
                "with ASGITransport rather than starlette's TestClient)"
            )
        bound = self._by_loop.get(loop)
        if bound is None:
            self._forget_closed_loops()
            bound = self._by_loop[loop] = self._build(loop)
            for hook in self._engine_hooks:
                hook(bound.engine)
        self._last = bound
        return bound

    def _session_classes(self) -> tuple[type[Session], type[Session]]:
        """The read-write and read-only session classes for this database's settings."""
        timeout = statement_timeout_ms(self.settings)
        if not self.settings.pgbouncer or timeout is None:
            return Session, _ReadOnlySession

        # Behind a transaction-mode pooler a session-level setting would leak to other
        # clients' transactions, so the timeout is set in each transaction instead.
        def set_timeout(session: Session, transaction: Any, connection: Any) -> None:
            connection.exec_driver_sql(f"SET LOCAL statement_timeout = {timeout}")

        classes = (
            type("PoolerSession", (Session,), {}),
            type("PoolerReadOnlySession", (_ReadOnlySession,), {}),
        )
        for session_class in classes:
            event.listen(session_class, "after_begin", set_timeout)
        return classes

    def _build(self, loop: asyncio.AbstractEventLoop) -> _LoopEngine:
        engine = create_engine(self.settings, **self._engine_options)
        attach_query_log(engine, self.name, self.settings.slow_query_seconds)
        writer, reader = self._session_classes()
        # expire_on_commit=False: objects stay readable after commit without a lazy load,
        # which async code cannot do implicitly.
        sessions = async_sessionmaker(engine, expire_on_commit=False, sync_session_class=writer)
        if self.settings.pgbouncer:
            # In a transaction, so that SET LOCAL statement_timeout applies to the reads too.
            read_engine = engine.execution_options(postgresql_readonly=True)
        else:
            read_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
        snapshot = engine.execution_options(
            isolation_level="REPEATABLE READ", postgresql_readonly=True
        )
        return _LoopEngine(
            loop=loop,
            engine=engine,
            sessions=sessions,
            quick_reads=async_sessionmaker(
                read_engine, expire_on_commit=False, sync_session_class=reader
            ),
            snapshot_reads=async_sessionmaker(
                snapshot, expire_on_commit=False, sync_session_class=reader
            ),
        )

    @asynccontextmanager
    async def use_connection(self, connection: AsyncConnection) -> AsyncIterator[None]:
        """Route every session of this database, in this loop, through one connection.

        Sessions join the connection's transaction with savepoints, so a test can roll back
        everything it did (see ``asyncdal.testing.rollback_database``). Their ``commit()``
        releases a savepoint; the outer transaction stays the caller's.
        """
        original = self._bound()
        bound_sessions = async_sessionmaker(
            bind=connection, expire_on_commit=False, join_transaction_mode="create_savepoint"
        )
        read_only_sessions = async_sessionmaker(
            bind=connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
            sync_session_class=_ReadOnlySession,
        )
        # Pinned apart from the per-loop engines, so that an app's lifespan calling dispose()
        # in the middle of a test cannot unpin it.
        self._pinned = self._last = replace(
            original,
            sessions=bound_sessions,
            quick_reads=read_only_sessions,
            snapshot_reads=read_only_sessions,
        )
        try:
            yield
        finally:
            self._pinned = self._last = None

    def _forget_closed_loops(self) -> None:
        for loop in [loop for loop in self._by_loop if loop.is_closed()]:
            _abandon(self._by_loop.pop(loop).engine)

    def add_engine_hook(self, hook: Callable[[AsyncEngine], None]) -> None:
        """Call ``hook`` with every engine of this database: those built and those to come.

        Engines are built per event loop; instrumentation (metrics, tracing) attaches here.
        """
        self._engine_hooks.append(hook)
        for bound in self._by_loop.values():
            hook(bound.engine)

    def engines(self) -> list[AsyncEngine]:
        """Every engine this database has built so far (one per event loop that used it)."""
        return [bound.engine for bound in self._by_loop.values()]

    def with_settings(self, name: str | None = None, **changes: Any) -> Database:
        """A new :class:`Database` like this one with some settings changed: a second pool.

        The copy has its own engines (so its own pool), the same engine options and engine
        hooks (so the same instrumentation), and everything else from this database's
        settings. The caller owns it and disposes it.

        Example:
            >>> handlers_db = db.with_settings(f"{db.name}:handlers", pool_size=8)

        Args:
            name: its name (default: this database's).
            **changes: :class:`~asyncdal.settings.DatabaseSettings` fields to override.

        Raises:
            pydantic.ValidationError: the changed settings are invalid.
        """
        fields = {
            field: getattr(self.settings, field)
            for field in self.settings.model_fields_set | set(changes)
            if field not in changes
        }
        settings = DatabaseSettings.model_validate({**fields, **changes})
        copy = Database(name or self.name, settings, **self._engine_options)
        for hook in self._engine_hooks:
            copy.add_engine_hook(hook)
        return copy

    @property
    def engine(self) -> AsyncEngine:
        """The engine for the running event loop (built on first use in that loop)."""
        return self._bound().engine

    @property
    def session_factory(self) -> async_sessionmaker[AsyncSession]:
        """The read-write ``async_sessionmaker`` for the running event loop."""
        return self._bound().sessions

    def session(self) -> AsyncSession:
        """A new ``AsyncSession``; use it as ``async with db.session() as session:``."""
        return self._bound().sessions()

    def unit_of_work(self) -> UnitOfWork:
        """A read-write unit of work (joins one already open in this task)."""
        return UnitOfWork(self, self._bound().sessions)

    def background_unit_of_work(self) -> UnitOfWork:
        """The door for background work: a unit of work that never joins another.

        For FastAPI ``BackgroundTasks``, ``asyncio`` tasks and scripts: it always opens its own
        session (never the request's), on the same engine and settings, and returns its
        connection when the task ends or is cancelled.

        Example:
            >>> async def send_receipt(db: Database, order_id: int) -> None:
            ...     async with db.background_unit_of_work() as uow:
            ...         ...
            ...         await uow.commit()
            >>> tasks.add_task(send_receipt, db, order.id)          # in a request handler
            >>> await asyncio.gather(*(refresh(db, i) for i in ids))  # one session per task
        """
        return UnitOfWork(self, self._bound().sessions, join=False)

    def read_only_unit_of_work(self, *, snapshot: bool = False) -> UnitOfWork:
        """A unit of work for code that only reads; it never commits and refuses writes.

        Args:
            snapshot: False (the default) runs each statement in autocommit mode: no
                BEGIN/COMMIT round trips, the fastest path, right for endpoints whose reads
                need not see one snapshot. True runs a ``REPEATABLE READ, READ ONLY``
                transaction, so every statement sees the same snapshot and the server refuses
                writes.
        """
        bound = self._bound()
        factory = bound.snapshot_reads if snapshot else bound.quick_reads
        return UnitOfWork(self, factory, read_only=True)

    async def warm_up(self) -> None:
        """Open the pool's connections and check each with ``SELECT 1``.

        For a ``null`` pool this opens and checks one connection. Calling it again is harmless.
        """
        count = max(1, self.settings.effective_pool_size)
        engine = self.engine

        async def check() -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        await asyncio.gather(*(check() for _ in range(count)))

    async def dispose(self) -> None:
        """Close every connection of this database. Calling it again is harmless.

        While pinned by :meth:`use_connection`, the pinned loop's engine is left alone: the
        connection it lends out belongs to the caller, who closes it.
        """
        running = asyncio.get_running_loop()
        by_loop, self._by_loop, self._last = self._by_loop, {}, self._pinned
        for loop, bound in by_loop.items():
            if self._pinned is not None and loop is self._pinned.loop:
                self._by_loop[loop] = bound
            elif loop is running:
                await bound.engine.dispose()
            elif loop.is_closed():
                _abandon(bound.engine)
            else:
                # Another live loop owns these connections; only it may close them.
                bound.engine.sync_engine.dispose(close=False)

    def __repr__(self) -> str:
        return (
            f"Database(name={self.name!r}, url={self.settings.safe_url!r}, "
            f"pool={self.settings.pool_class!r})"
        )


def _abandon(engine: AsyncEngine) -> None:
    """Let go of an engine whose event loop is closed, closing its idle sockets directly.

    Closing an asyncpg connection the normal way needs its loop, which is gone; left alone, the
    connections would linger until garbage collection and warn there. This reaches into the
    pool and asyncpg internals on purpose, and does nothing where they are not as expected.
    """
    idle = getattr(engine.sync_engine.pool, "_pool", None)
    while idle is not None and not idle.empty():
        record = idle.get_nowait()
        raw = getattr(getattr(record, "dbapi_connection", None), "_connection", None)
        transport = getattr(raw, "_transport", None)
        sock = getattr(transport, "_sock", None)
        if sock is not None:
            sock.close()
            transport._sock = None  # type: ignore[union-attr]
            raw._aborted = True  # type: ignore[union-attr]
    engine.sync_engine.dispose(close=False)


class Databases(Mapping[str, Database]):
    """The registry of named databases; an async context manager that warms up and disposes.

    Example:
        >>> databases = Databases.from_settings(load_settings())
        >>> databases["main"] is databases.main
        True
    """

    def __init__(self, databases: Mapping[str, Database]) -> None:
        self._databases = dict(databases)

    @classmethod
    def from_settings(cls, settings: AsyncdalSettings, **engine_options: Any) -> Self:
        """One :class:`Database` per configured name."""
        return cls(
            {
                name: Database(name, database_settings, **engine_options)
                for name, database_settings in settings.databases.items()
            }
        )

    def __getitem__(self, name: str) -> Database:
        try:
            return self._databases[name.lower()]
        except KeyError:
            known = ", ".join(sorted(self._databases)) or "none"
            raise UnknownDatabaseError(
                f"no database named {name!r} is configured (configured: {known}); "
                f"set DB__{name.upper()}__URL"
            ) from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._databases)

    def __len__(self) -> int:
        return len(self._databases)

    @property
    def main(self) -> Database:
        """The database named ``main``."""
        return self["main"]

    async def warm_up(self) -> None:
        """Warm up every database concurrently."""
        await asyncio.gather(*(database.warm_up() for database in self._databases.values()))

    async def dispose(self) -> None:
        """Dispose every database; calling it again is harmless."""
        for database in self._databases.values():
            await database.dispose()

    async def __aenter__(self) -> Self:
        await self.warm_up()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.dispose()

    def __repr__(self) -> str:
        return f"Databases({list(self._databases.values())!r})"
