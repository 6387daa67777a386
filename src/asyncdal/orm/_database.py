"""``Database``: one named database, its engines, and the doors to sessions.

Nothing here is created at import time: the app's lifespan or the container builds it (usually
through ``Databases``) and disposes it on shutdown.

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
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager, AbstractContextManager, asynccontextmanager
from dataclasses import replace
from typing import Any, TypeVar

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, AsyncSession, async_sessionmaker

from asyncdal.engine._breaker import CircuitBreaker
from asyncdal.engine._retry import RetryListener
from asyncdal.engine._safety import SafetyNets
from asyncdal.engine._statement_log import warming_up
from asyncdal.errors import UnitOfWorkError
from asyncdal.orm._loop_engines import LoopEngine, LoopEngines
from asyncdal.orm._transaction import run_in_transaction
from asyncdal.orm._uow import UnitOfWork
from asyncdal.replicas._routing import ReplicaNode, route
from asyncdal.settings import DatabaseSettings

__all__ = ["Database"]

T = TypeVar("T")

logger = logging.getLogger("asyncdal.database")


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
        self._by_loop: dict[asyncio.AbstractEventLoop, LoopEngine] = {}
        self._last: LoopEngine | None = None
        self._pinned: LoopEngine | None = None
        self._engine_hooks: list[Callable[[AsyncEngine], None]] = []
        # Breakers (one per server) and session classes are shared by every loop's engines.
        self._engines = LoopEngines(name, settings, engine_options, self.note_retry)
        self.breaker: CircuitBreaker = self._engines.breaker
        """The primary's circuit breaker."""
        self.retry_listeners: list[RetryListener] = []
        """Told ``(kind, node)`` before each retry of this database (see :meth:`note_retry`)."""

    def _bound(self) -> LoopEngine:
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
            bound = self._by_loop[loop] = self._engines.build(loop)
            for hook in self._engine_hooks:
                for engine in (bound.engine, *bound.replica_engines):
                    hook(engine)
            if bound.monitor is not None:
                bound.monitor.start()
        self._last = bound
        return bound

    @asynccontextmanager
    async def use_connection(self, connection: AsyncConnection) -> AsyncIterator[None]:
        """Route every session of this database, in this loop, through one connection.

        Sessions join the connection's transaction with savepoints, so a test can roll back
        everything it did (see ``asyncdal.testing.rollback_database``). Their ``commit()``
        releases a savepoint; the outer transaction stays the caller's.
        """
        original = self._bound()
        writer, reader = self._engines.pinned_classes  # LAZY_LOADS applies here too
        bound_sessions = async_sessionmaker(
            bind=connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
            sync_session_class=writer,
        )
        read_only_sessions = async_sessionmaker(
            bind=connection,
            expire_on_commit=False,
            join_transaction_mode="create_savepoint",
            sync_session_class=reader,
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
            self._engines.abandon(self._by_loop.pop(loop))

    def add_engine_hook(self, hook: Callable[[AsyncEngine], None]) -> None:
        """Call ``hook`` with every engine of this database: those built and those to come.

        Engines are built per event loop; instrumentation (metrics, tracing) attaches here.
        """
        self._engine_hooks.append(hook)
        for bound in self._by_loop.values():
            for engine in (bound.engine, *bound.replica_engines):
                hook(engine)

    @property
    def safety_nets(self) -> SafetyNets:
        """The leak, idle-hold, deadline and query-count listeners of this database's engines
        (the connections held now: ``safety_nets.holders()``)."""
        return self._engines.safety

    def engines(self) -> list[AsyncEngine]:
        """Every engine this database has built so far (per event loop that used it: the
        primary's, then each replica's)."""
        return [
            engine
            for bound in self._by_loop.values()
            for engine in (bound.engine, *bound.replica_engines)
        ]

    def node_name(self, engine: AsyncEngine) -> str:
        """``primary`` or ``replica-<n>``: which node ``engine`` talks to."""
        return self._engines.node_names.get(id(engine), "primary")

    def replica_nodes(self) -> list[ReplicaNode]:
        """The replicas as the background check last saw them (empty without replicas or
        before the first use)."""
        bound = self._last or next(iter(self._by_loop.values()), None)
        return [] if bound is None or bound.router is None else list(bound.router.nodes)

    def replica_engines(self) -> dict[str, AsyncEngine]:
        """Each replica's engine for the running event loop, by node name (``replica-1``...)."""
        return {self.node_name(engine): engine for engine in self._bound().replica_engines}

    async def check_replicas(self, answer_within: float | None = None) -> None:
        """Check every replica now, as the background check does each interval (nothing
        without replicas).

        Args:
            answer_within: seconds each node gets to answer (default: the check interval, at
                least 1 s); a node that does not answer in time is out of rotation.
        """
        monitor = self._bound().monitor
        if monitor is not None:
            await monitor.check_now(answer_within)

    def note_retry(self, kind: str, node: str) -> None:
        """Tell :attr:`retry_listeners` that a ``kind`` retry (``connect``, ``read``,
        ``transaction``) is about to happen on ``node``."""
        for listener in self.retry_listeners:
            listener(kind, node)

    def replica_breaker(self, node: str) -> CircuitBreaker | None:
        """The circuit breaker of replica ``node`` (``replica-1``, ...), once its engine exists."""
        return self._engines.replica_breakers.get(node)

    def primary(self) -> _Override:
        """Send every statement of this database in the block to the primary (``with`` or
        ``async with``): for reads that must see the latest data.

        Example:
            >>> async with db.primary():
            ...     async with db.read_only_unit_of_work() as uow:
            ...         ...                                 # served by the primary
        """
        return _Override(self.name, "primary")

    def prefer_replicas(self) -> _Override:
        """Send the block's reads to replicas, also those of a read-write unit of work (even
        after its writes) and inside an outer :meth:`primary` (a required ``X-DB-LSN``
        position still applies). Writes always go to the primary."""
        return _Override(self.name, "replicas")

    def with_settings(self, name: str | None = None, **changes: Any) -> Database:
        """A new :class:`Database` like this one with some settings changed: a second pool.

        The copy has its own engines (so its own pool), the same engine options and engine
        hooks (so the same instrumentation), and everything else from this database's
        settings. The caller owns it and disposes it.

        Example:
            >>> handlers_db = db.with_settings(f"{db.name}:handlers", pool_size=8)

        Args:
            name: its name (default: this database's).
            **changes: :class:`~asyncdal.settings.DatabaseSettings` settings to override, by
                their flat names (``pool_size=8``) or by group
                (:meth:`~asyncdal.settings.DatabaseSettings.replace`).

        Raises:
            pydantic.ValidationError: the changed settings are invalid.
        """
        settings = self.settings.replace(**changes)
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
        """A read-write unit of work (joins one already open in this task).

        On a database with replicas it runs wholly on the primary, reads included (what it
        reads it may write back); inside :meth:`prefer_replicas` its reads go to replicas.
        """
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

    async def run_in_transaction(
        self,
        work: Callable[[UnitOfWork], Awaitable[T]],
        *,
        idempotent: bool,
        isolation_level: str | None = None,
    ) -> T:
        """Run ``work(uow)`` in a fresh unit of work and commit it; when ``idempotent`` is
        True, run it all again on a serialization failure (40001) or deadlock (40P01).

        See :func:`asyncdal.retry.run_in_transaction`; ``idempotent`` has no default so that
        every caller states whether ``work`` may run more than once.

        Example:
            >>> async def move_stock(uow: UnitOfWork) -> None:
            ...     ...                                       # only database work in here
            >>> await db.run_in_transaction(
            ...     move_stock, idempotent=True, isolation_level="SERIALIZABLE"
            ... )
        """
        return await run_in_transaction(
            self, work, idempotent=idempotent, isolation_level=isolation_level
        )

    async def warm_up(self) -> None:
        """Open the pool's connections and check each with ``SELECT 1``.

        For a ``null`` pool this opens and checks one connection. Calling it again is harmless.
        Replicas are checked once (their state known before the first request) and their
        pools opened; a replica that is down is logged, not fatal: reads go elsewhere.
        """
        count = max(1, self.settings.pool.effective_size)
        bound = self._bound()

        async def check(engine: AsyncEngine) -> None:
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))

        with warming_up():
            await asyncio.gather(*(check(bound.engine) for _ in range(count)))
            if bound.monitor is not None:
                await bound.monitor.check_now()
                for engine, settings in zip(
                    bound.replica_engines, self.settings.replica_settings(), strict=True
                ):
                    size = max(1, settings.pool.effective_size)
                    results = await asyncio.gather(
                        *(check(engine) for _ in range(size)), return_exceptions=True
                    )
                    failures = [result for result in results if isinstance(result, BaseException)]
                    if failures:
                        logger.warning(
                            "database %r: %s did not warm up (%s); reads go to the other nodes",
                            self.name,
                            self.node_name(engine),
                            type(failures[0]).__name__,
                        )

    async def dispose(self) -> None:
        """Close every connection of this database. Calling it again is harmless.

        While pinned by :meth:`use_connection`, the pinned loop's engine is left alone: the
        connection it lends out belongs to the caller, who closes it.
        """
        running = asyncio.get_running_loop()
        by_loop, self._by_loop, self._last = self._by_loop, {}, self._pinned
        for loop, bound in by_loop.items():
            engines = bound.all_engines()
            if self._pinned is not None and loop is self._pinned.loop:
                self._by_loop[loop] = bound
                continue
            if loop is running:
                if bound.monitor is not None:
                    await bound.monitor.stop()
                for engine in engines:
                    await engine.dispose()
            elif loop.is_closed():
                self._engines.abandon(bound)
            else:
                # Another live loop owns these connections; only it may close them.
                for engine in engines:
                    engine.sync_engine.dispose(close=False)
            for engine in engines:
                self._engines.node_names.pop(id(engine), None)

    def __repr__(self) -> str:
        return (
            f"Database(name={self.name!r}, url={self.settings.safe_url!r}, "
            f"pool={self.settings.pool.effective_kind!r})"
        )


class _Override(AbstractContextManager[None], AbstractAsyncContextManager[None]):
    """A routing override usable with ``with`` and ``async with``."""

    def __init__(self, database: str, mode: Any) -> None:
        self._route = route(database, mode)

    def __enter__(self) -> None:
        self._route.__enter__()

    def __exit__(self, *exc_info: Any) -> None:
        self._route.__exit__(*exc_info)

    async def __aenter__(self) -> None:
        self._route.__enter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        self._route.__exit__(*exc_info)
