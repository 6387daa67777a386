"""Data-level benchmark: the same read by primary key, in-process, without HTTP.

Paths, each run by ``concurrency`` tasks looping over random ids for a fixed time:

(a)          asyncpg ``pool.fetchrow``
(b)          plain SQLAlchemy: ``async_sessionmaker`` session and ``session.get``
(c)          asyncdal ``read_only_unit_of_work()`` (autocommit, the default) and
             ``uow.repository(ProductRepository).get``
(c_snapshot) the same in ``read_only_unit_of_work(snapshot=True)`` (a READ ONLY, REPEATABLE READ
             transaction)
(c_uow)      the same in a normal ``unit_of_work()``, left without a commit (as (b)'s session
             is), so it ends in a rollback

The three asyncdal variants show which read path is cheapest; (a) and (b) frame them. Rounds are
interleaved like the HTTP part's.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass

import asyncpg
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from asyncdal import Database, DatabaseSettings, UnitOfWork
from bench.apps import ASYNCPG_MAX_SIZE, ASYNCPG_MIN_SIZE, PRODUCT_SQL, sqlalchemy_url
from bench.database import connection_counter
from bench.report import print_summary, rate
from catalog.models import Product
from catalog.repositories import ProductRepository

__all__ = ["DataSettings", "measure", "run_data"]

LABELS = {
    "a": "(a) asyncpg fetchrow",
    "b": "(b) SQLAlchemy session.get",
    "c": "(c) asyncdal read-only (autocommit)",
    "c_snapshot": "(c_snapshot) asyncdal read-only snapshot",
    "c_uow": "(c_uow) asyncdal unit_of_work",
}
RATIOS = [
    ("c", "a"),
    ("c", "b"),
    ("b", "a"),
    ("c_snapshot", "c"),
    ("c_uow", "c"),
    ("c_uow", "b"),
]

Operation = Callable[[int], Awaitable[object]]
"""Reads the product with this id and returns it (None when missing)."""


@dataclass(frozen=True, slots=True)
class DataSettings:
    """How long and how concurrently to run each path."""

    rounds: int
    duration: float
    """Seconds per path per round."""
    warmup: float
    """Seconds of unreported work per path before the first round (0 skips it)."""
    concurrency: int
    products: int
    """Ids are drawn from 1..products."""


def _asyncpg_get(pool: asyncpg.Pool) -> Operation:
    async def get(product_id: int) -> object:
        return await pool.fetchrow(PRODUCT_SQL, product_id)

    return get


def _sqlalchemy_get(sessions: async_sessionmaker[AsyncSession]) -> Operation:
    async def get(product_id: int) -> object:
        async with sessions() as session:
            return await session.get(Product, product_id)

    return get


def _asyncdal_get(open_unit_of_work: Callable[[], UnitOfWork]) -> Operation:
    async def get(product_id: int) -> object:
        async with open_unit_of_work() as uow:
            return await uow.repository(ProductRepository).get(product_id)

    return get


async def measure(operation: Operation, products: int, concurrency: int, seconds: float) -> float:
    """Operations per second of ``concurrency`` tasks calling ``operation`` for ``seconds``.

    Each task is its own asyncio task, like a request, so asyncdal never joins one task's unit
    of work from another.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds

    async def worker(seed: int) -> int:
        ids = random.Random(seed)
        done = 0
        while loop.time() < deadline:
            await operation(ids.randint(1, products))
            done += 1
        return done

    started = loop.time()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(worker(seed)) for seed in range(concurrency)]
    return sum(task.result() for task in tasks) / (loop.time() - started)


async def run_data(database_url: str, settings: DataSettings) -> dict[str, float]:
    """Run the data-level benchmark against the seeded database; return median ops/s by path."""
    print(
        f"\n== Data level (no HTTP): get by id, {settings.rounds} rounds x {settings.duration:g}s "
        f"per path, {settings.concurrency} concurrent tasks, uvloop"
    )
    print("  (new conns: connections the path's pool opened during the run, from pg_stat_database)")
    async with AsyncExitStack() as stack:
        # Same pool sizes as the HTTP apps: asyncpg 5..15, SQLAlchemy's 5 + 10, asyncdal's defaults.
        pool = await asyncpg.create_pool(
            database_url, min_size=ASYNCPG_MIN_SIZE, max_size=ASYNCPG_MAX_SIZE
        )
        stack.push_async_callback(pool.close)
        engine = create_async_engine(sqlalchemy_url(database_url))
        stack.push_async_callback(engine.dispose)
        database = Database("main", DatabaseSettings(url=database_url))
        stack.push_async_callback(database.dispose)
        counter = await stack.enter_async_context(connection_counter(database_url))

        operations: dict[str, Operation] = {
            "a": _asyncpg_get(pool),
            "b": _sqlalchemy_get(async_sessionmaker(engine, expire_on_commit=False)),
            "c": _asyncdal_get(database.read_only_unit_of_work),
            "c_snapshot": _asyncdal_get(lambda: database.read_only_unit_of_work(snapshot=True)),
            "c_uow": _asyncdal_get(database.unit_of_work),
        }
        for key, operation in operations.items():
            if await operation(1) is None:
                raise RuntimeError(f"{LABELS[key]} did not find product 1")
        if settings.warmup:
            print(f"  warming up each path for {settings.warmup:g}s (not reported)")
            for operation in operations.values():
                await measure(operation, settings.products, settings.concurrency, settings.warmup)

        results: dict[str, list[float]] = {key: [] for key in operations}
        opened: dict[str, list[int]] = {key: [] for key in operations}
        width = max(len(label) for label in LABELS.values())
        for round_number in range(1, settings.rounds + 1):
            print(f"round {round_number}/{settings.rounds}")
            for key, operation in operations.items():
                before = await counter.opened()
                per_second = await measure(
                    operation, settings.products, settings.concurrency, settings.duration
                )
                opened[key].append(await counter.opened() - before)
                results[key].append(per_second)
                print(
                    f"  {LABELS[key]:<{width}} {rate(per_second):>8} ops/s"
                    f"   new conns {opened[key][-1]:>4}",
                    flush=True,
                )
    return print_summary(
        f"Data-level summary over {settings.rounds} rounds",
        "ops/s",
        LABELS,
        results,
        RATIOS,
        opened,
    )
