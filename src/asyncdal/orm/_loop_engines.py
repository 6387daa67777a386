"""A database's engines for one event loop: building them, and letting go of a closed loop's.

Engines are bound to the event loop that uses them (asyncpg connections cannot move between
loops), so a ``Database`` keeps one :class:`LoopEngine` per running loop. What every loop's
engines share is kept in :class:`LoopEngines`: one circuit breaker per server and the session
classes (one set per database).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from typing import Any
from weakref import WeakSet

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from asyncdal.engine._asyncio import DependencyChanged
from asyncdal.engine._asyncpg import abandon_connection
from asyncdal.engine._breaker import CircuitBreaker
from asyncdal.engine._create import connect_arguments, create_engine
from asyncdal.engine._driver import DriverReads
from asyncdal.engine._request_tags import tag_connections_with_request_id
from asyncdal.engine._retry import RetryListener
from asyncdal.engine._safety import SafetyNets
from asyncdal.engine._statement_log import attach_query_log
from asyncdal.orm._budget import CHECK_POOL
from asyncdal.orm._driver_reads import DRIVER_READS, RoutedReads
from asyncdal.orm._lazy import guarded, with_lazy_load_guard
from asyncdal.orm._sessions import ReadOnlySession, SessionClasses, build_session_classes
from asyncdal.replicas._monitor import ReplicaMonitor
from asyncdal.replicas._routing import (
    ReplicaNode,
    Router,
    session_info,
    translate_read_only_errors,
)
from asyncdal.settings import DatabaseSettings

__all__ = ["LoopEngine", "LoopEngines"]

logger = logging.getLogger("asyncdal.database")


@dataclass(slots=True)
class LoopEngine:
    """The engine and session factories that belong to one event loop."""

    loop: asyncio.AbstractEventLoop
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    quick_reads: async_sessionmaker[AsyncSession]
    snapshot_reads: async_sessionmaker[AsyncSession]
    router: Router | None = None
    monitor: ReplicaMonitor | None = None
    replica_engines: tuple[AsyncEngine, ...] = ()
    check_engines: tuple[AsyncEngine, ...] = ()
    """The replica check's own connections (primary, then each replica): not for requests."""
    opened: WeakSet[Any] = field(default_factory=WeakSet)
    """Every asyncpg connection its engines opened and that still exists (to abandon them)."""

    def all_engines(self) -> tuple[AsyncEngine, ...]:
        """Every engine of this loop, the check's included (to dispose of them)."""
        return (self.engine, *self.replica_engines, *self.check_engines)


def flavors(
    engine: AsyncEngine, settings: DatabaseSettings, *, replica: bool
) -> dict[str, AsyncEngine]:
    """The engine as each kind of session uses it: plain (read-write units of work), quick
    (autocommit reads) and snapshot (``REPEATABLE READ, READ ONLY``)."""
    plain = engine.execution_options(postgresql_readonly=True) if replica else engine
    if settings.pooler.transaction_mode:
        # In a transaction, so that SET LOCAL statement_timeout applies to the reads too.
        quick = engine.execution_options(postgresql_readonly=True)
    else:
        quick = engine.execution_options(isolation_level="AUTOCOMMIT")
    snapshot = engine.execution_options(isolation_level="REPEATABLE READ", postgresql_readonly=True)
    return {"plain": plain, "quick": quick, "snapshot": snapshot}


class LoopEngines:
    """Builds one database's engines for each event loop, with what all loops share.

    Args:
        name: the database's name.
        settings: its settings.
        engine_options: extra ``create_async_engine`` arguments.
        on_retry: told ``(kind, node)`` before each retry.

    Attributes:
        breaker: the primary's circuit breaker, shared by the engines of every loop.
        replica_breakers: each replica's, by node name, once its first engine exists.
        node_names: ``primary`` or ``replica-<n>`` by ``id()`` of each engine built.
        classes: the session classes, built once.
    """

    def __init__(
        self,
        name: str,
        settings: DatabaseSettings,
        engine_options: dict[str, Any],
        on_retry: RetryListener,
    ) -> None:
        self.name = name
        self.settings = settings
        self.engine_options = engine_options
        self.on_retry = on_retry
        self.breaker = CircuitBreaker.from_settings(name, settings)
        self.replica_breakers: dict[str, CircuitBreaker] = {}
        self.node_names: dict[int, str] = {}
        self.classes: SessionClasses = with_lazy_load_guard(
            build_session_classes(settings, on_retry), settings
        )
        self.pinned_classes = (guarded(Session, settings), guarded(ReadOnlySession, settings))
        """The read-write and read-only session classes of ``Database.use_connection``."""
        self.safety = SafetyNets(name, settings)
        """Leak, idle-hold, deadline and query-count listeners, attached to each engine."""
        self._reported = False

    def build(self, loop: asyncio.AbstractEventLoop) -> LoopEngine:
        """The engines and session factories of a database for ``loop``."""
        settings, classes = self.settings, self.classes
        opened: WeakSet[Any] = WeakSet()
        engine = create_engine(
            settings, breaker=self.breaker, on_retry=self.on_retry, **self.engine_options
        )
        attach_query_log(engine, self.name, settings.observability.slow_query_seconds)
        self.safety.attach(engine)
        if settings.observability.tag_requests:
            tag_connections_with_request_id(engine, settings.application_name)
        self.node_names[id(engine)] = "primary"
        primary = flavors(engine, settings, replica=False)
        router: Router | None = None
        monitor: ReplicaMonitor | None = None
        replica_engines: list[AsyncEngine] = []
        check_engines: list[AsyncEngine] = []
        infos: dict[str, dict[str, Any]] = {"plain": {}, "quick": {}, "snapshot": {}}
        if settings.replicas:
            nodes: list[tuple[ReplicaNode, AsyncEngine]] = []
            for index, (replica_settings, weight) in enumerate(
                zip(settings.replica_settings(), settings.replicas.effective_weights, strict=True),
                1,
            ):
                replica = self._replica_engine(index, replica_settings)
                replica_engines.append(replica)
                node = ReplicaNode(
                    name=f"replica-{index}",
                    weight=weight,
                    engines={
                        key: value.sync_engine  # type: ignore[misc]
                        for key, value in flavors(replica, settings, replica=True).items()
                    },
                )
                check_engines.append(_check_engine(replica_settings))
                nodes.append((node, check_engines[-1]))
            router = Router(
                self.name,
                {key: value.sync_engine for key, value in primary.items()},  # type: ignore[misc]
                [node for node, _ in nodes],
                on_retry=self.on_retry,
            )
            check_engines.insert(0, _check_engine(settings))
            monitor = ReplicaMonitor(
                self.name,
                nodes,
                primary=check_engines[0],
                interval=settings.replicas.check_interval,
                max_lag=settings.replicas.max_lag,
                breakers=self.replica_breakers,
            )
            infos = {flavor: session_info(router, flavor) for flavor in infos}  # type: ignore[arg-type]
            if not settings.pooler.transaction_mode:
                # Autocommit reads on the driver of the node the router picks.
                infos["quick"][DRIVER_READS] = RoutedReads(
                    {
                        router.primary["quick"]: DriverReads(engine, self.name),
                        **{
                            node.engines["quick"]: DriverReads(replica, self.name)
                            for (node, _), replica in zip(nodes, replica_engines, strict=True)
                        },
                    }
                )
        elif not settings.pooler.transaction_mode:
            # Autocommit reads on the driver (behind a transaction-mode pooler each read runs
            # in a transaction, for SET LOCAL timeouts).
            infos["quick"] = {DRIVER_READS: DriverReads(engine, self.name)}
        for each in (engine, *replica_engines, *check_engines):
            _remember_connections(each, opened)
        # expire_on_commit=False: objects stay readable after commit without a lazy load,
        # which async code cannot do implicitly.
        return LoopEngine(
            loop=loop,
            engine=engine,
            sessions=async_sessionmaker(
                engine,
                expire_on_commit=False,
                sync_session_class=classes.writer,
                info=infos["plain"],
            ),
            quick_reads=async_sessionmaker(
                primary["quick"],
                expire_on_commit=False,
                sync_session_class=classes.quick,
                info=infos["quick"],
            ),
            snapshot_reads=async_sessionmaker(
                primary["snapshot"],
                expire_on_commit=False,
                sync_session_class=classes.reader,
                info=infos["snapshot"],
            ),
            router=router,
            monitor=monitor,
            replica_engines=tuple(replica_engines),
            check_engines=tuple(check_engines),
            opened=opened,
        )

    def _replica_engine(self, index: int, settings: DatabaseSettings) -> AsyncEngine:
        arguments = connect_arguments(settings)
        if not settings.pooler.transaction_mode:
            # Every transaction on a replica connection is READ ONLY, so a write that slips
            # past the routing fails loudly, even on a node that is not a standby.
            arguments["server_settings"]["default_transaction_read_only"] = "on"
        node = f"replica-{index}"
        breaker = self.replica_breakers.get(node)
        if breaker is None:
            breaker = self.replica_breakers[node] = CircuitBreaker.from_settings(
                f"{self.name}/{node}", settings, node=node
            )
        engine = create_engine(
            settings,
            breaker=breaker,
            on_retry=self.on_retry,
            **{"connect_args": arguments, **self.engine_options},
        )
        attach_query_log(engine, self.name, settings.observability.slow_query_seconds, node=node)
        self.safety.attach(engine, node)
        if settings.observability.tag_requests:
            tag_connections_with_request_id(engine, settings.application_name)
        translate_read_only_errors(engine.sync_engine, self.name, node)
        self.node_names[id(engine)] = node
        return engine

    def abandon(self, bound: LoopEngine) -> None:
        """Let go of the engines of a loop that is closed, closing their connections at once.

        Closing an asyncpg connection the normal way needs its loop, which is gone; left
        alone, the connections (and their backends on the server) would linger until garbage
        collection, which warns. Should asyncpg or asyncio have changed shape, an error is
        logged once per database, not raised: this runs when the database is next used or
        disposed of, which it would break, for a cleanup that garbage collection does late.
        """
        problems: list[str] = []
        for connection in list(bound.opened):
            try:
                abandon_connection(connection)
            except DependencyChanged as error:
                problems.append(str(error))
        for engine in bound.all_engines():
            engine.sync_engine.dispose(close=False)
        if problems and not self._reported:
            self._reported = True
            logger.error(
                "database %r: %d connection(s) of a closed event loop are left to garbage "
                "collection (%s)",
                self.name,
                len(problems),
                problems[0],
                extra={"database": self.name},
            )


def _check_engine(settings: DatabaseSettings) -> AsyncEngine:
    """An engine of one connection for the replica check, apart from the request pool (so
    a busy pool cannot make a healthy replica look down; counted in the budget)."""
    # No connect retries and no breaker to speak of: the check itself says up or down each
    # interval; either would only delay seeing a replica go or come back.
    update = {**CHECK_POOL, "retry_attempts": 1, "breaker_failure_threshold": 1 << 30}
    return create_engine(settings.replace(**update))


def _remember_connections(engine: AsyncEngine, opened: WeakSet[Any]) -> None:
    """Add each asyncpg connection ``engine`` opens to ``opened`` (SQLAlchemy's public pool
    events, rather than its pool's private queue, which holds only the idle ones)."""

    def connected(dbapi_connection: Any, record: ConnectionPoolEntry) -> None:
        opened.add(record.driver_connection)

    event.listen(engine.sync_engine, "connect", connected)
