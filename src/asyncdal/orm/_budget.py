"""The connection budget: will every pool on a server fit in its connection limit?

Per server, it adds up worker processes x (pool size + max overflow) over every engine pointing
at it (each named database's primary and each replica, and the replica check's own connection
to each node of a database with replicas), and compares the sum with what the server allows
clients: ``max_connections - superuser_reserved_connections`` (``- reserved_connections`` on
PostgreSQL 16 and later). Worker processes come from ``WEB_CONCURRENCY`` (default 1), the
variable uvicorn and gunicorn read.

A server is identified by asking it (its port and the time its postmaster started), not by the
host string of a URL: ``127.0.0.1``, ``localhost`` and a Unix socket folder naming the same
server count as one. A ``null`` pool opens a connection per concurrent use, without bound: it is
flagged ``unbounded`` and warned about, as the budget cannot cover it.

Over budget is a warning on the ``asyncdal.budget`` logger, or a :class:`ConfigurationError`
at startup when a database on that server has ``DB__<NAME>__STRICT_BUDGET=true``.
``asyncdal budget`` prints the table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import text

from asyncdal.engine._create import create_engine
from asyncdal.errors import ConfigurationError
from asyncdal.settings import DatabaseSettings

__all__ = [
    "CHECK_POOL",
    "BudgetLine",
    "ExtraPool",
    "ServerBudget",
    "check_budget",
    "enforce_budget",
    "format_budget",
]

logger = logging.getLogger("asyncdal.budget")

_LIMIT_QUERY = text(
    "SELECT current_setting('max_connections')::int"
    " - current_setting('superuser_reserved_connections')::int"
    " - COALESCE(NULLIF(current_setting('reserved_connections', true), ''), '0')::int"
    " AS limit, current_setting('port') || '@' || pg_postmaster_start_time()::text AS identity"
)

CHECK_POOL = {"pool": "queue", "pool_size": 1, "max_overflow": 0}
"""The pool of the replica check's own engine to each node (``DatabaseSettings.replace``)."""


@dataclass(frozen=True, slots=True)
class ExtraPool:
    """Connections that processes other than the app's own workers hold on a database's server
    (an outbox worker, a job runner), for the budget to count.

    The database layer does not know who they are: whoever starts them says so, e.g.
    ``Databases.from_settings(settings, extra_pools=outbox_pools(outbox_settings))``.

    Attributes:
        database: the named database whose server they connect to.
        label: what the budget table calls them (``outbox worker``); not ``replica-<n>``.
        pool_size: connections each process holds at most.
        processes: how many such processes run.
    """

    database: str
    label: str
    pool_size: int
    processes: int


@dataclass(frozen=True, slots=True)
class BudgetLine:
    """One engine's share: ``workers x (pool_size + max_overflow)`` connections at most."""

    server: str
    database: str
    node: str
    pool: str
    pool_size: int
    max_overflow: int
    workers: int
    strict: bool

    @property
    def connections(self) -> int:
        """The most connections this engine can hold open, over all workers (0 counted for
        an unbounded null pool)."""
        return self.workers * (self.pool_size + self.max_overflow)

    @property
    def unbounded(self) -> bool:
        """True for a null pool: one connection per concurrent use, with no upper bound."""
        return self.pool == "null"


@dataclass(frozen=True, slots=True)
class ServerBudget:
    """The engines on one server, and the server's limit (None when it could not be read)."""

    server: str
    lines: tuple[BudgetLine, ...]
    limit: int | None
    error: str | None = None

    @property
    def planned(self) -> int:
        """Connections all engines may open together."""
        return sum(line.connections for line in self.lines)

    @property
    def over(self) -> bool:
        """True when the engines may open more connections than the server allows."""
        return self.limit is not None and self.planned > self.limit

    @property
    def unbounded(self) -> bool:
        """True when an engine on this server has a null pool, which the budget cannot bound."""
        return any(line.unbounded for line in self.lines)

    @property
    def strict(self) -> bool:
        """True when a database on this server asked for a startup error when over."""
        return any(line.strict for line in self.lines)


def _server(settings: DatabaseSettings) -> str:
    url = settings.sqlalchemy_url()
    host = url.host or str(url.query.get("host") or "localhost")
    return f"{host}:{url.port or 5432}"


def budget_lines(
    databases: Mapping[str, DatabaseSettings], workers: int, extra: Sequence[ExtraPool] = ()
) -> list[BudgetLine]:
    """One line per engine the settings make: each database's primary and replicas, the
    replica check's connection to each of those nodes when the database has replicas, and each
    of the ``extra`` pools of other processes."""
    lines = []
    for pool in extra:
        if not pool.processes or pool.database not in databases:
            continue
        settings = databases[pool.database]
        lines.append(
            BudgetLine(
                server=_server(settings),
                database=pool.database,
                node=pool.label,
                pool="queue",
                pool_size=pool.pool_size,
                max_overflow=0,
                workers=pool.processes,
                strict=settings.strict_budget,
            )
        )
    for name, settings in databases.items():
        nodes = [("primary", settings)] + [
            (f"replica-{index}", replica)
            for index, replica in enumerate(settings.replica_settings(), 1)
        ]
        for node, node_settings in nodes:
            engines = [(node, node_settings)]
            if settings.replicas:
                engines.append((f"{node} check", node_settings.replace(**CHECK_POOL)))
            for label, engine_settings in engines:
                lines.append(
                    BudgetLine(
                        server=_server(engine_settings),
                        database=name,
                        node=label,
                        pool=engine_settings.pool.effective_kind,
                        pool_size=engine_settings.pool.effective_size,
                        max_overflow=engine_settings.pool.effective_max_overflow,
                        workers=workers,
                        strict=settings.strict_budget,
                    )
                )
    return lines


def _settings_of(databases: Mapping[str, DatabaseSettings], line: BudgetLine) -> DatabaseSettings:
    node = line.node.removesuffix(" check")
    if not node.startswith("replica-"):
        return databases[line.database]
    return databases[line.database].replica_settings()[int(node.split("-")[1]) - 1]


async def _ask(settings: DatabaseSettings) -> tuple[int, str]:
    """The server's connection limit for clients, and what identifies the server."""
    engine = create_engine(settings.with_null_pool(log=False))
    try:
        async with asyncio.timeout(settings.timeouts.connect), engine.connect() as connection:
            row = (await connection.execute(_LIMIT_QUERY)).one()
            return int(row.limit), str(row.identity)
    finally:
        await engine.dispose()


async def check_budget(
    databases: Mapping[str, DatabaseSettings],
    workers: int = 1,
    extra: Sequence[ExtraPool] = (),
) -> list[ServerBudget]:
    """Compute the budget of every server the settings name (one connection to each address;
    addresses that reach the same server are merged into one), the ``extra`` pools of other
    processes included."""
    lines = budget_lines(databases, workers, extra)
    by_address: dict[str, list[BudgetLine]] = {}
    for line in lines:
        by_address.setdefault(line.server, []).append(line)
    settings_of = {line.server: _settings_of(databases, line) for line in reversed(lines)}

    async def ask(address: str) -> tuple[int | None, str | None, str]:
        try:
            limit, identity = await _ask(settings_of[address])
        except Exception as exc:  # an unreachable server has no known limit; health says more
            return None, type(exc.__cause__ or exc).__name__, address
        return limit, None, identity

    answers = await asyncio.gather(*(ask(address) for address in by_address))
    merged: dict[str, tuple[list[str], int | None, str | None]] = {}
    for address, (limit, error, identity) in zip(by_address, answers, strict=True):
        addresses, _, _ = merged.setdefault(identity, ([], limit, error))
        addresses.append(address)
    return [
        ServerBudget(
            " = ".join(addresses),
            tuple(line for address in addresses for line in by_address[address]),
            limit,
            error,
        )
        for addresses, limit, error in merged.values()
    ]


def enforce_budget(budgets: list[ServerBudget]) -> None:
    """Warn about each server over budget; raise when one of them is strict.

    Raises:
        ConfigurationError: a server is over budget and a database on it has
            ``STRICT_BUDGET=true``.
    """
    strict_failures = []
    for budget in budgets:
        for line in budget.lines:
            if line.unbounded:
                logger.warning(
                    "connection budget on %s: %s/%s has a null pool, whose connections are "
                    "not bounded (one per concurrent use); the budget does not cover it",
                    budget.server,
                    line.database,
                    line.node,
                    extra={"server": budget.server},
                )
        if not budget.over:
            continue
        message = (
            f"connection budget exceeded on {budget.server}: the pools may open "
            f"{budget.planned} connections ({budget.lines[0].workers} worker(s) x pool size + "
            f"max overflow, over {len(budget.lines)} engine(s)) but the server allows "
            f"{budget.limit} (max_connections minus reserved); lower DB__<NAME>__POOL_SIZE / "
            "MAX_OVERFLOW / REPLICA_POOL_SIZE or WEB_CONCURRENCY, or put a pooler in front"
        )
        if budget.strict:
            strict_failures.append(message)
        else:
            logger.warning(message, extra={"server": budget.server})
    if strict_failures:
        raise ConfigurationError("; ".join(strict_failures))


def format_budget(budgets: list[ServerBudget]) -> str:
    """The budget as a plain-text table, one block per server."""
    rows = [("server", "database", "node", "pool", "size", "overflow", "workers", "connections")]
    for budget in budgets:
        for line in budget.lines:
            rows.append(
                (
                    line.server,
                    line.database,
                    line.node,
                    line.pool,
                    str(line.pool_size),
                    str(line.max_overflow),
                    str(line.workers),
                    "unbounded" if line.unbounded else str(line.connections),
                )
            )
        if budget.limit is None:
            verdict = f"limit unknown ({budget.error})"
        else:
            verdict = f"of {budget.limit} allowed: " + ("OVER BUDGET" if budget.over else "ok")
        if budget.unbounded:
            verdict += " (plus unbounded null pools)"
        rows.append((budget.server, "total", "", "", "", "", "", f"{budget.planned} {verdict}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )
