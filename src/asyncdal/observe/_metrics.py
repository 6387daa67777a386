"""Prometheus metrics from SQLAlchemy's pool and engine events.

One :class:`DatabaseMetrics` per app (its lifespan or container makes it; nothing is created at
import), holding its own ``CollectorRegistry``. ``instrument(database)`` attaches listeners to
every engine of the database, those built later (per event loop) included.

Metric names (labels ``database`` and ``node``: ``primary`` or ``replica-<n>``):

- ``asyncdal_connection_wait_seconds`` (histogram): time to check a connection out of the pool.
- ``asyncdal_query_seconds`` (histogram, also ``statement``: select, insert, update, delete,
  merge, other): time from sending a statement to its result. The kind is SQLAlchemy's where
  it compiled the statement, else (``text()``, driver SQL) that of
  :func:`asyncdal._sql.statement_kind`.
- ``asyncdal_pool_size``, ``asyncdal_pool_checked_out``, ``asyncdal_pool_overflow``,
  ``asyncdal_pool_idle`` (gauges, read at scrape time).
- ``asyncdal_replica_lag_seconds`` and ``asyncdal_replica_up`` (gauges per replica, from the
  background replica check).
- ``asyncdal_pool_checkout_timeouts_total``, ``asyncdal_connections_opened_total``,
  ``asyncdal_connections_invalidated_total`` (counters).
- ``asyncdal_connection_hold_seconds`` (histogram, also ``route``): how long connections stay
  checked out, by route template (with ``LEAK_DETECTION_SECONDS`` or ``IDLE_HOLD_SECONDS`` on;
  see :mod:`asyncdal.observe._holds`).
- ``asyncdal_breaker_state`` (gauge, also ``state``: 1 for the circuit breaker's current state,
  0 for the others) and ``asyncdal_breaker_transitions_total`` (counter, also ``state``: the
  state entered).

Example:
    >>> metrics = DatabaseMetrics()
    >>> for database in databases.values():
    ...     metrics.instrument(database)
    >>> text = metrics.render()          # Prometheus text format, for GET /metrics
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal._sql import STATEMENT_KINDS, StatementKind, statement_kind
from asyncdal.engine._breaker import BREAKER_STATES, BreakerState, CircuitBreaker, circuit_breaker
from asyncdal.engine._create import TimedQueuePool
from asyncdal.engine._driver import statement_hooks
from asyncdal.observe._holds import HoldMetrics
from asyncdal.orm._database import Database

__all__ = ["CONTENT_TYPE", "DatabaseMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The media type of :meth:`DatabaseMetrics.render` (Prometheus text format 0.0.4)."""
_QUERY_START = "asyncdal_query_started"
# Seconds, for both the wait for a connection and a statement's round trip.
_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)


def _statement_label(statement: str, context: Any) -> StatementKind:
    """The ``statement`` label of an executed statement: what SQLAlchemy compiled it from,
    when it did.

    A compiled INSERT, UPDATE or DELETE is what the context says, a compiled SELECT is
    ``select`` and other compiled statements (DDL) are ``other``. The text decides, read by
    :func:`asyncdal._sql.statement_kind`, for SQL written by hand: a ``text()`` (``is_text``),
    also with ``.columns()`` (compiled as a SELECT, though it may hold ``DELETE ...
    RETURNING``), and driver SQL (nothing compiled); and for a compiled SELECT with a WITH
    clause, whose CTEs may modify data without SQLAlchemy's flags saying so.

    Args:
        statement: the SQL sent to the server.
        context: its ``ExecutionContext`` (``DefaultExecutionContext``'s public attributes).
    """
    if context is not None:
        if context.isinsert:
            return "insert"
        if context.isupdate:
            return "update"
        if context.isdelete:
            return "delete"
        compiled = context.compiled
        if compiled is not None and not context.is_text:
            built = compiled.statement
            if not getattr(built, "is_select", False):
                return "other"
            if not getattr(built, "is_text", False) and not statement.startswith("WITH"):
                return "select"
    return statement_kind(statement)


class _PoolCollector(Collector):
    """Pool gauges, read from the pools when Prometheus scrapes."""

    def __init__(self, databases: list[Database]) -> None:
        self._databases = databases

    def collect(self) -> Iterator[GaugeMetricFamily]:
        families = {
            "size": GaugeMetricFamily(
                "asyncdal_pool_size", "Connections the pool keeps", labels=["database", "node"]
            ),
            "checked_out": GaugeMetricFamily(
                "asyncdal_pool_checked_out", "Connections in use", labels=["database", "node"]
            ),
            "overflow": GaugeMetricFamily(
                "asyncdal_pool_overflow",
                "Connections beyond the pool size",
                labels=["database", "node"],
            ),
            "idle": GaugeMetricFamily(
                "asyncdal_pool_idle", "Connections idle in the pool", labels=["database", "node"]
            ),
        }
        breaker_state = GaugeMetricFamily(
            "asyncdal_breaker_state",
            "1 for the circuit breaker's current state, 0 for the others",
            labels=["database", "node", "state"],
        )
        for database in self._databases:
            for breaker in _breakers(database):
                for state in BREAKER_STATES:
                    breaker_state.add_metric(
                        [database.name, breaker.node, state], float(breaker.state == state)
                    )
        yield breaker_state
        for database in self._databases:
            for engine in database.engines():
                pool: Any = engine.pool
                if not isinstance(pool, TimedQueuePool):
                    continue
                labels = [database.name, database.node_name(engine)]
                families["size"].add_metric(labels, pool.size())
                families["checked_out"].add_metric(labels, pool.checkedout())
                families["overflow"].add_metric(labels, max(0, pool.overflow()))
                families["idle"].add_metric(labels, pool.checkedin())
        yield from families.values()
        lag = GaugeMetricFamily(
            "asyncdal_replica_lag_seconds",
            "Replay lag of each replica at its last background check",
            labels=["database", "node"],
        )
        up = GaugeMetricFamily(
            "asyncdal_replica_up",
            "1 while a replica is in rotation, 0 while it is out (down or lagging)",
            labels=["database", "node"],
        )
        for database in self._databases:
            for node in database.replica_nodes():
                if node.lag_seconds is not None:
                    lag.add_metric([database.name, node.name], node.lag_seconds)
                up.add_metric([database.name, node.name], 1 if node.healthy else 0)
        yield lag
        yield up


class DatabaseMetrics:
    """The metrics of a set of databases, in a registry of their own.

    Args:
        registry: where to register; a new ``CollectorRegistry`` when omitted.
    """

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        labels = ["database", "node"]
        self.connection_wait = Histogram(
            "asyncdal_connection_wait_seconds",
            "Time to check a connection out of the pool",
            labels,
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.query_duration = Histogram(
            "asyncdal_query_seconds",
            "Time from sending a statement to its result",
            [*labels, "statement"],
            registry=self.registry,
            buckets=_BUCKETS,
        )
        self.checkout_timeouts = Counter(
            "asyncdal_pool_checkout_timeouts",
            "Checkouts that gave up after the pool timeout",
            labels,
            registry=self.registry,
        )
        self.connects = Counter(
            "asyncdal_connections_opened", "Connections opened", labels, registry=self.registry
        )
        self.invalidations = Counter(
            "asyncdal_connections_invalidated",
            "Connections invalidated (found broken)",
            labels,
            registry=self.registry,
        )
        self.retries = Counter(
            "asyncdal_retries",
            "Retries, by kind: connect (opening a connection), read (a read on a dropped "
            "connection or a failed replica), transaction (run_in_transaction on a conflict)",
            [*labels, "kind"],
            registry=self.registry,
        )
        self.breaker_transitions = Counter(
            "asyncdal_breaker_transitions",
            "Circuit breaker state changes, by the state entered",
            [*labels, "state"],
            registry=self.registry,
        )
        self.holds = HoldMetrics(self.registry)
        self._databases: list[Database] = []
        self._watched: set[int] = set()
        self.registry.register(_PoolCollector(self._databases))

    def instrument(self, database: Database) -> None:
        """Collect metrics for ``database`` (all its engines, present and future)."""
        self._databases.append(database)
        self.holds.instrument(database)
        self._watch(database.name, database.breaker)
        retries = self.retries
        database.retry_listeners.append(
            lambda kind, node: retries.labels(database.name, node, kind).inc()
        )
        database.add_engine_hook(
            lambda engine: self._attach(database.name, engine, database.node_name(engine))
        )

    def _watch(self, name: str, breaker: CircuitBreaker) -> None:
        if id(breaker) in self._watched:
            return
        self._watched.add(id(breaker))

        def changed(breaker: CircuitBreaker, old: BreakerState, new: BreakerState) -> None:
            self.breaker_transitions.labels(name, breaker.node, new).inc()

        breaker.listeners.append(changed)

    def render(self) -> bytes:
        """All metrics in Prometheus text format (serve with :data:`CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def _attach(self, name: str, engine: AsyncEngine, node: str) -> None:
        breaker = circuit_breaker(engine)
        if breaker is not None:
            self._watch(name, breaker)
        wait = self.connection_wait.labels(name, node)
        timeouts = self.checkout_timeouts.labels(name, node)
        connects = self.connects.labels(name, node)
        invalidations = self.invalidations.labels(name, node)
        queries = {kind: self.query_duration.labels(name, node, kind) for kind in STATEMENT_KINDS}
        pool = engine.sync_engine.pool
        if isinstance(pool, TimedQueuePool):

            def waited(seconds: float, timed_out: bool) -> None:
                wait.observe(seconds)
                if timed_out:
                    timeouts.inc()

            pool.wait_listeners.append(waited)

        def connected(dbapi_connection: Any, record: Any) -> None:
            connects.inc()

        def invalidated(dbapi_connection: Any, record: Any, exception: Any) -> None:
            invalidations.inc()

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            conn.info[_QUERY_START] = time.perf_counter()

        def after(
            conn: Any, cursor: Any, statement: str, parameters: Any, context: Any, *args: Any
        ) -> None:
            started = conn.info.pop(_QUERY_START, None)
            if started is not None:
                kind = _statement_label(statement, context)
                queries[kind].observe(time.perf_counter() - started)

        event.listen(pool, "connect", connected)
        event.listen(pool, "invalidate", invalidated)
        event.listen(engine.sync_engine, "before_cursor_execute", before)
        event.listen(engine.sync_engine, "after_cursor_execute", after)
        hooks = statement_hooks(engine)
        if hooks is not None:
            # Statements on the driver are compiled by SQLAlchemy and come labelled: no parsing.
            hooks.after.append(lambda statement, seconds, kind: queries[kind].observe(seconds))
            hooks.stands_in_for("before_cursor_execute", before)
            hooks.stands_in_for("after_cursor_execute", after)


def _breakers(database: Database) -> list[CircuitBreaker]:
    """The database's breaker and those of its engines (one per server), each once."""
    found = {id(database.breaker): database.breaker}
    for engine in database.engines():
        breaker = circuit_breaker(engine)
        if breaker is not None:
            found.setdefault(id(breaker), breaker)
    return list(found.values())
