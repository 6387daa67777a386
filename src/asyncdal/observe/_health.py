"""Health of each named database: reachable or not, round-trip latency, and pool usage.

A database marked optional (``DB__<NAME>__OPTIONAL=true``) that is down makes the whole report
``degraded`` instead of ``down``, so readiness does not fail for it. Reports never contain a
password, a URL or a stack trace: errors are named by their class only. Each database's circuit
breaker state is reported too; while it is open the check fails at once instead of waiting.

Example:
    >>> report = await check_health(databases)
    >>> report.status, report.ready
    ('ok', True)
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal.orm._database import Database
from asyncdal.orm._databases import Databases
from asyncdal.replicas._routing import ReplicaNode

__all__ = ["DatabaseHealth", "HealthReport", "check_database", "check_health"]

Status = Literal["ok", "degraded", "down"]


@dataclass(frozen=True, slots=True)
class DatabaseHealth:
    """One database's health.

    Attributes:
        name: the database's name in the registry.
        status: ``ok`` or ``down``.
        optional: whether readiness tolerates it being down.
        latency_ms: round trip of ``SELECT 1`` including checkout, when it answered.
        pool: size, checked_out, overflow and idle of a queue pool (empty for a null pool).
        error: the class name of the failure, when down.
        replicas: each replica's ``status`` (``ok``, ``down``, or ``unknown`` before its
            first check), ``lag_seconds``, ``replay_lsn``, ``weight``, ``error`` and
            ``breaker`` as the background check last saw them, and ``latency_ms`` (round trip
            of ``SELECT 1`` now, None when it did not answer) and ``pool``, by node name. A
            replica that is down does not make the database down: its reads go to the other
            replicas, then the primary.
        breaker: the circuit breaker: ``state`` (``closed``, ``open``, ``half_open``),
            ``failures`` in a row, ``retry_after`` seconds until the next probe.
        holders: the connections checked out longest now (at most five, longest first): the
            ``owner`` (a request's method and route template, else the task's name),
            ``request_id``, ``node``, ``held_seconds`` and, of those, ``statement_seconds``.
            Listed with ``LEAK_DETECTION_SECONDS`` or ``IDLE_HOLD_SECONDS`` on, else empty.
    """

    name: str
    status: Status
    optional: bool
    latency_ms: float | None
    pool: dict[str, int]
    error: str | None = None
    replicas: dict[str, dict[str, Any]] = field(default_factory=dict)
    breaker: dict[str, Any] | None = None
    holders: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class HealthReport:
    """Health of every database: ``ok``, ``degraded`` (an optional one is down) or ``down``."""

    status: Status
    databases: tuple[DatabaseHealth, ...]

    @property
    def ready(self) -> bool:
        """True unless a required database is down."""
        return self.status != "down"

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready form, with databases by name."""
        return {
            "status": self.status,
            "databases": {
                health.name: {key: value for key, value in asdict(health).items() if key != "name"}
                for health in self.databases
            },
        }


def _pool_usage(engine: AsyncEngine) -> dict[str, int]:
    pool: Any = engine.pool
    if not hasattr(pool, "checkedout"):
        return {}
    return {
        "size": pool.size(),
        "checked_out": pool.checkedout(),
        "overflow": max(0, pool.overflow()),
        "idle": pool.checkedin(),
    }


async def check_database(database: Database, *, answer_within: float = 2.0) -> DatabaseHealth:
    """Run ``SELECT 1`` on ``database`` within ``answer_within`` seconds and report."""
    engine = database.engine
    replica_engines = database.replica_engines()
    # Before the check takes a connection of its own.
    holders = [
        {key: value for key, value in asdict(holder).items() if key != "database"}
        for holder in database.safety_nets.holders()
    ]
    (latency, error), *replica_latencies = await asyncio.gather(
        _round_trip(engine, answer_within),
        *(_round_trip(replica, answer_within) for replica in replica_engines.values()),
    )
    latency_of = dict(zip(replica_engines, replica_latencies, strict=True))
    return DatabaseHealth(
        name=database.name,
        status="down" if error else "ok",
        optional=database.settings.optional,
        latency_ms=latency,
        pool=_pool_usage(engine),
        error=error,
        replicas={
            node.name: _replica_status(
                database, node, replica_engines.get(node.name), latency_of.get(node.name)
            )
            for node in database.replica_nodes()
        },
        breaker=database.breaker.as_dict(),
        holders=holders,
    )


def _replica_status(
    database: Database,
    node: ReplicaNode,
    engine: AsyncEngine | None,
    latency: tuple[float | None, str | None] | None,
) -> dict[str, Any]:
    breaker = database.replica_breaker(node.name)
    return {
        **node.status(),
        "latency_ms": None if latency is None else latency[0],
        "pool": {} if engine is None else _pool_usage(engine),
        "breaker": None if breaker is None else breaker.as_dict(),
    }


async def _round_trip(engine: AsyncEngine, answer_within: float) -> tuple[float | None, str | None]:
    """Milliseconds for ``SELECT 1`` (checkout included), or None and the error's class."""
    started = time.perf_counter()
    try:
        async with asyncio.timeout(answer_within), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
    except TimeoutError:
        return None, "TimeoutError"
    except Exception as exc:  # any failure means "down"; only its class is reported
        return None, type(exc.__cause__ or exc).__name__
    return round((time.perf_counter() - started) * 1000, 2), None


async def check_health(databases: Databases, *, answer_within: float = 2.0) -> HealthReport:
    """Check every database concurrently."""
    results = await asyncio.gather(
        *(check_database(database, answer_within=answer_within) for database in databases.values())
    )
    down = [result for result in results if result.status == "down"]
    status: Status = "ok"
    if any(not result.optional for result in down):
        status = "down"
    elif down:
        status = "degraded"
    return HealthReport(status=status, databases=tuple(results))
