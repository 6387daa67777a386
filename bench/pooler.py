"""Pooler-mode benchmark: what ``DB__<NAME>__PGBOUNCER=true`` costs, and which pool class fits.

In-process, the same read by primary key through asyncdal's read-only unit of work, and a small
write unit of work (an UPDATE, committed), interleaved like the other parts:

(direct)        straight to PostgreSQL, pooler mode off (the reference)
(direct_mode)   straight to PostgreSQL, pooler mode on: the cost of no statement caches
(bouncer_queue) through PgBouncer (transaction mode, 5 server connections), mode on,
                asyncdal's queue pool of 10 client connections
(bouncer_null)  the same with a null pool: a new client connection per unit of work
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sqlalchemy import update
from sqlalchemy.engine import make_url

from asyncdal import Database, DatabaseSettings
from asyncdal.testing import run_pgbouncer
from bench.data import DataSettings, Operation, measure
from bench.report import print_summary, rate
from catalog.models import Product
from catalog.repositories import ProductRepository

__all__ = ["run_pooler"]

LABELS = {
    "direct": "(direct) no pooler, mode off",
    "direct_mode": "(direct_mode) no pooler, mode on",
    "bouncer_queue": "(bouncer_queue) PgBouncer, queue pool",
    "bouncer_null": "(bouncer_null) PgBouncer, null pool",
}
RATIOS = [
    ("direct_mode", "direct"),
    ("bouncer_queue", "direct"),
    ("bouncer_null", "direct"),
    ("bouncer_null", "bouncer_queue"),
]


def _read_and_write(database: Database) -> Operation:
    """Three reads for every write, as a catalog sees them."""

    async def operate(product_id: int) -> object:
        if random.random() < 0.25:
            async with database.unit_of_work() as uow:
                await uow.session.execute(
                    update(Product).where(Product.id == product_id).values(name=f"n{product_id}")
                )
                await uow.commit()
                return product_id
        async with database.read_only_unit_of_work() as uow:
            return await uow.repository(ProductRepository).get(product_id)

    return operate


async def run_pooler(url: str, settings: DataSettings) -> dict[str, float]:
    """Run the pooler paths in interleaved rounds and print medians and ratios."""
    print(
        f"\n== Pooler mode: 3 reads : 1 write, {settings.rounds} rounds x {settings.duration:g}s "
        f"per path, {settings.concurrency} concurrent tasks; PgBouncer 5 server connections"
    )
    with run_pgbouncer(url, pool_size=5) as port:
        bounced = (
            make_url(url).set(host="127.0.0.1", port=port).render_as_string(hide_password=False)
        )
        makers: dict[str, Callable[[], Database]] = {
            "direct": lambda: Database("direct", DatabaseSettings(url=url)),
            "direct_mode": lambda: Database("mode", DatabaseSettings(url=url, pgbouncer=True)),
            "bouncer_queue": lambda: Database(
                "queue", DatabaseSettings(url=bounced, pgbouncer=True)
            ),
            "bouncer_null": lambda: Database(
                "null", DatabaseSettings(url=bounced, pgbouncer=True, pool="null")
            ),
        }
        databases = {key: make() for key, make in makers.items()}
        try:
            operations = {key: _read_and_write(db) for key, db in databases.items()}
            for operation in operations.values():
                await measure(operation, settings.products, settings.concurrency, settings.warmup)
            results: dict[str, list[float]] = {key: [] for key in operations}
            width = max(len(label) for label in LABELS.values())
            for round_number in range(1, settings.rounds + 1):
                print(f"round {round_number}/{settings.rounds}")
                for key, operation in operations.items():
                    per_second = await measure(
                        operation, settings.products, settings.concurrency, settings.duration
                    )
                    results[key].append(per_second)
                    print(f"  {LABELS[key]:<{width}} {rate(per_second):>8} ops/s", flush=True)
        finally:
            for database in databases.values():
                await database.dispose()
    return print_summary(
        f"Pooler summary over {settings.rounds} rounds", "ops/s", LABELS, results, RATIOS, None
    )
