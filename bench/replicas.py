"""Replica benchmark: what spreading reads over a replica gives, and what routing costs.

It starts its own primary + streaming replica pair (``asyncdal.testing.replica_pair``), puts a
migrated, seeded ``bench_<random>`` database on it, and measures in-process, interleaved like
the other parts, reads by primary key through ``read_only_unit_of_work()``:

(primary)       no replicas configured: every read on the primary (routing off)
(routed_same)   the primary named as its own replica: routing on, same node as (primary), so
                the difference is the routing's own cost
(spread)        reads spread over the replica and the primary (both named as replicas)

and a small write unit of work (an UPDATE, committed):

(write_plain)   no replicas configured
(write_routed)  replicas configured: the commit also reads the WAL position (one round trip)

On one machine both servers share the same cores, so (spread) cannot show the gain a second
machine would bring; the routing overhead is the number to watch (target: under 5%).
"""

from __future__ import annotations

import random
from collections.abc import Callable

from sqlalchemy import update

from asyncdal import Database, DatabaseSettings
from asyncdal.testing import replica_pair
from bench.data import DataSettings, Operation, measure
from bench.database import throwaway_database
from bench.report import print_summary, rate
from bench.runner import run
from catalog.models import Product
from catalog.repositories import ProductRepository

__all__ = ["run_replicas"]

LABELS = {
    "primary": "(primary) reads, no replicas",
    "routed_same": "(routed_same) reads, routing on, same node",
    "spread": "(spread) reads over replica + primary",
    "write_plain": "(write_plain) writes, no replicas",
    "write_routed": "(write_routed) writes, replicas on",
}
RATIOS = [
    ("routed_same", "primary"),
    ("spread", "primary"),
    ("write_routed", "write_plain"),
]


def _read(database: Database) -> Operation:
    async def get(product_id: int) -> object:
        async with database.read_only_unit_of_work() as uow:
            return await uow.repository(ProductRepository).get(product_id)

    return get


def _write(database: Database) -> Operation:
    async def write(product_id: int) -> object:
        async with database.unit_of_work() as uow:
            await uow.session.execute(
                update(Product).where(Product.id == product_id).values(name=f"n{product_id}")
            )
            await uow.commit()
        return product_id

    return write


async def _measure_all(primary_url: str, replica_url: str, settings: DataSettings) -> None:
    makers: dict[str, Callable[[], Database]] = {
        "primary": lambda: Database("plain", DatabaseSettings(url=primary_url)),
        "routed_same": lambda: Database(
            "same", DatabaseSettings(url=primary_url, replicas=(primary_url,))
        ),
        "spread": lambda: Database(
            "spread", DatabaseSettings(url=primary_url, replicas=(replica_url, primary_url))
        ),
    }
    databases = {key: make() for key, make in makers.items()}
    try:
        for database in databases.values():
            await database.warm_up()
        operations: dict[str, Operation] = {key: _read(db) for key, db in databases.items()}
        operations["write_plain"] = _write(databases["primary"])
        operations["write_routed"] = _write(databases["routed_same"])
        for operation in operations.values():
            await measure(operation, settings.products, settings.concurrency, settings.warmup)
        results: dict[str, list[float]] = {key: [] for key in operations}
        width = max(len(label) for label in LABELS.values())
        for round_number in range(1, settings.rounds + 1):
            print(f"round {round_number}/{settings.rounds}")
            order = list(operations)
            random.shuffle(order)  # no path always runs right after another
            for key in order:
                per_second = await measure(
                    operations[key], settings.products, settings.concurrency, settings.duration
                )
                results[key].append(per_second)
                print(f"  {LABELS[key]:<{width}} {rate(per_second):>8} ops/s", flush=True)
    finally:
        for database in databases.values():
            await database.dispose()
    print_summary(
        f"Replica summary over {settings.rounds} rounds", "ops/s", LABELS, results, RATIOS, None
    )


def run_replicas(settings: DataSettings) -> None:
    """Start a primary + replica pair, seed a database on it, and run the replica paths."""
    print(
        f"\n== Replicas: get by id and a small write, {settings.rounds} rounds x "
        f"{settings.duration:g}s per path, {settings.concurrency} concurrent tasks"
    )
    with replica_pair() as pair, throwaway_database(pair.primary.url, settings.products) as url:
        run(pair.caught_up(within=60))
        replica_url = f"postgresql://postgres@127.0.0.1:{pair.replica.port}"
        print(f"primary on port {pair.primary.port}, replica on port {pair.replica.port}")
        run(_measure_all(url, replica_url, settings))
