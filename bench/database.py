"""The throwaway database both parts run against: created, migrated, seeded, always dropped.

The schema comes from the repository's own Alembic migrations (as ``make migrate`` builds it),
not from ``metadata.create_all``, so the benchmark reads the table production reads.
"""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import asyncpg
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from asyncdal import load_settings
from bench.runner import run

__all__ = [
    "ROOT",
    "ConnectionCounter",
    "connection_counter",
    "remove_written",
    "safe_url",
    "throwaway_database",
]

ROOT = Path(__file__).resolve().parents[1]


def safe_url(url: str) -> str:
    """``url`` with its password masked, for output."""
    return make_url(url).render_as_string(hide_password=True)


def _with_database(url: str, name: str) -> str:
    """``url`` pointing at database ``name``, as a plain ``postgresql://`` URL asyncpg accepts."""
    return (
        make_url(url)
        .set(drivername="postgresql", database=name)
        .render_as_string(hide_password=False)
    )


async def _create(server_url: str) -> str:
    name = f"bench_{secrets.token_hex(6)}"
    connection = await asyncpg.connect(_with_database(server_url, "postgres"))
    try:
        await connection.execute(f'CREATE DATABASE "{name}"')
    finally:
        await connection.close()
    return _with_database(server_url, name)


async def _drop(url: str) -> None:
    name = make_url(url).database
    connection = await asyncpg.connect(_with_database(url, "postgres"))
    try:
        # FORCE ends sessions a killed server may have left open, so the drop never blocks.
        await connection.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def _migrate(url: str) -> None:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["settings"] = load_settings(db={"main": {"url": url}})
    # Keep alembic.ini's logging setup out of the benchmark's output.
    config.attributes["configure_logger"] = False
    command.upgrade(config, "head")


async def _seed(url: str, products: int) -> None:
    connection = await asyncpg.connect(url)
    try:
        await connection.execute(
            """
            INSERT INTO products (sku, name, price)
            SELECT 'SKU-' || g, 'Product number ' || g, (g % 500) + 0.99
            FROM generate_series(1, $1::int) AS g
            """,
            products,
        )
        await connection.execute("ANALYZE products")
        span = await connection.fetchrow("SELECT min(id), max(id), count(*) FROM products")
    finally:
        await connection.close()
    # The load generators pick ids in 1..products; a gap would turn requests into 404s.
    if span is None or tuple(span) != (1, products, products):
        raise RuntimeError(f"seeding gave (min id, max id, rows) {span}, not 1..{products}")


async def remove_written(url: str, products: int) -> None:
    """Delete what the write paths added (products past the seeded ones, outbox events), and
    vacuum, so that every round reads (and counts) the same table."""
    connection = await asyncpg.connect(url)
    try:
        await connection.execute("DELETE FROM products WHERE id > $1", products)
        await connection.execute("DELETE FROM asyncdal_outbox")
        await connection.execute("VACUUM (ANALYZE) products, asyncdal_outbox")
    finally:
        await connection.close()


@contextmanager
def throwaway_database(server_url: str, products: int) -> Iterator[str]:
    """A new ``bench_<random>`` database, migrated and seeded with ``products`` products.

    Yields its ``postgresql://`` URL; the database is dropped on the way out, whatever happened
    (an error, Ctrl-C, SIGTERM).
    """
    url = run(_create(server_url))
    try:
        _migrate(url)
        run(_seed(url, products))
        yield url
    finally:
        run(_drop(url))


class ConnectionCounter:
    """How many connections have been opened to one database, from ``pg_stat_database``.

    The paths are measured one at a time, so the difference around a run is what that path's
    pool opened during it: a pool that keeps closing and reopening connections under load
    (churn) shows up here, and can explain a throughput gap.
    """

    def __init__(self, connection: asyncpg.Connection, name: str) -> None:
        self._connection = connection
        self._name = name

    async def opened(self) -> int:
        """Sessions started on the database so far (PostgreSQL 14 or later)."""
        # Statistics are cached per transaction; drop the cache to read fresh numbers.
        await self._connection.execute("SELECT pg_stat_clear_snapshot()")
        sessions = await self._connection.fetchval(
            "SELECT sessions FROM pg_stat_database WHERE datname = $1", self._name
        )
        return int(sessions or 0)


@asynccontextmanager
async def connection_counter(url: str) -> AsyncIterator[ConnectionCounter]:
    """A :class:`ConnectionCounter` for the database at ``url``, on a connection of its own."""
    connection = await asyncpg.connect(url)
    try:
        yield ConnectionCounter(connection, str(make_url(url).database))
    finally:
        await connection.close()
