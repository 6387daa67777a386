"""The connection budget: will every pool on a server fit in its connection limit?

Per server (host and port), it adds up worker processes x (pool size + max overflow) over every
engine pointing at it (each named database's primary and each replica), and compares the sum
with what the server allows clients: ``max_connections - superuser_reserved_connections``
(``- reserved_connections`` on PostgreSQL 16 and later). Worker processes come from
``WEB_CONCURRENCY`` (default 1), the variable uvicorn and gunicorn read.

Over budget is a warning on the ``asyncdal.budget`` logger, or a :class:`ConfigurationError`
at startup when a database on that server has ``DB__<NAME>__STRICT_BUDGET=true``.
``asyncdal budget`` prints the table.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import text

from asyncdal.engine import create_engine
from asyncdal.errors import ConfigurationError
from asyncdal.settings import DatabaseSettings

__all__ = ["BudgetLine", "ServerBudget", "check_budget", "enforce_budget", "format_budget"]

logger = logging.getLogger("asyncdal.budget")

_LIMIT_QUERY = text(
    "SELECT current_setting('max_connections')::int"
    " - current_setting('superuser_reserved_connections')::int"
    " - COALESCE(NULLIF(current_setting('reserved_connections', true), ''), '0')::int"
)


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
        """The most connections this engine can hold open, over all workers."""
        return self.workers * (self.pool_size + self.max_overflow)


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
    def strict(self) -> bool:
        """True when a database on this server asked for a startup error when over."""
        return any(line.strict for line in self.lines)


def _server(settings: DatabaseSettings) -> str:
    url = settings.sqlalchemy_url()
    host = url.host or str(url.query.get("host") or "localhost")
    return f"{host}:{url.port or 5432}"


def budget_lines(databases: Mapping[str, DatabaseSettings], workers: int) -> list[BudgetLine]:
    """One line per engine the settings make: each database's primary and replicas."""
    lines = []
    for name, settings in databases.items():
        nodes = [("primary", settings)] + [
            (f"replica-{index}", replica)
            for index, replica in enumerate(settings.replica_settings(), 1)
        ]
        for node, node_settings in nodes:
            lines.append(
                BudgetLine(
                    server=_server(node_settings),
                    database=name,
                    node=node,
                    pool=node_settings.pool_class,
                    pool_size=node_settings.effective_pool_size,
                    max_overflow=node_settings.effective_max_overflow,
                    workers=workers,
                    strict=settings.strict_budget,
                )
            )
    return lines


async def _limit(settings: DatabaseSettings) -> int:
    engine = create_engine(settings.model_copy(update={"pool": "null"}))
    try:
        async with asyncio.timeout(settings.connect_timeout), engine.connect() as connection:
            return int((await connection.execute(_LIMIT_QUERY)).scalar_one())
    finally:
        await engine.dispose()


async def check_budget(
    databases: Mapping[str, DatabaseSettings], workers: int = 1
) -> list[ServerBudget]:
    """Compute the budget of every server the settings name (one connection to each)."""
    lines = budget_lines(databases, workers)
    by_server: dict[str, list[BudgetLine]] = {}
    for line in lines:
        by_server.setdefault(line.server, []).append(line)
    settings_of = {
        line.server: (
            databases[line.database]
            if line.node == "primary"
            else databases[line.database].replica_settings()[int(line.node.split("-")[1]) - 1]
        )
        for line in reversed(lines)
    }

    async def one(server: str) -> ServerBudget:
        try:
            limit: int | None = await _limit(settings_of[server])
            error = None
        except Exception as exc:  # an unreachable server has no known limit; health says more
            limit, error = None, type(exc.__cause__ or exc).__name__
        return ServerBudget(server, tuple(by_server[server]), limit, error)

    return list(await asyncio.gather(*(one(server) for server in by_server)))


def enforce_budget(budgets: list[ServerBudget]) -> None:
    """Warn about each server over budget; raise when one of them is strict.

    Raises:
        ConfigurationError: a server is over budget and a database on it has
            ``STRICT_BUDGET=true``.
    """
    strict_failures = []
    for budget in budgets:
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
                    str(line.connections),
                )
            )
        if budget.limit is None:
            verdict = f"limit unknown ({budget.error})"
        else:
            verdict = f"of {budget.limit} allowed: " + ("OVER BUDGET" if budget.over else "ok")
        rows.append((budget.server, "total", "", "", "", "", "", f"{budget.planned} {verdict}"))
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]) - 1)]
    return "\n".join(
        "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths, strict=False)), row[-1]])
        for row in rows
    )
