"""Data-level benchmark: the catalog's reads and writes, in-process, without HTTP.

Paths, each run by ``concurrency`` tasks looping for a fixed time, with the process's CPU time
per operation measured alongside (``time.process_time``: the benchmark's own process is the
client, the server runs elsewhere):

get by primary key (a random id):

(a)          asyncpg ``pool.fetchrow``
(b)          plain SQLAlchemy: ``async_sessionmaker`` session and ``session.get``
(b_core)     SQLAlchemy Core: ``engine.connect()`` and a ``select`` of the table
(c)          asyncdal ``read_only_unit_of_work()`` (autocommit, the default) and
             ``uow.repository(ProductRepository).get``
(c_snapshot) the same in ``read_only_unit_of_work(snapshot=True)`` (a READ ONLY, REPEATABLE READ
             transaction)
(c_uow)      the same in a normal ``unit_of_work()``, left without a commit (as (b)'s session
             is), so it ends in a rollback

a page of 50 and the total count (what ``GET /products`` reads): (a_list) asyncpg ``fetch`` and
``fetchval`` on one connection; (b_list) a session's ``scalars`` and ``scalar``; (c_list)
asyncdal's read-only ``repository.list`` and ``count``.

a product and its outbox event in one transaction (what ``POST /products`` writes): (a_write)
asyncpg in ``connection.transaction()``; (b_write) a session's ``add``, ``flush``, ``execute``
and ``commit``; (c_write) asyncdal's ``unit_of_work()``, ``repository.add``,
``Outbox.of(uow).add`` and ``commit``. The rows written are deleted after each round.

Rounds are interleaved like the HTTP part's.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import secrets
import time
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from decimal import Decimal

import asyncpg
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from asyncdal import Database, DatabaseSettings, UnitOfWork
from asyncdal.outbox import Outbox
from bench.apps import (
    ASYNCPG_MAX_SIZE,
    ASYNCPG_MIN_SIZE,
    COUNT_SQL,
    INSERT_SQL,
    OUTBOX_SQL,
    OUTBOX_TEXT,
    PAGE_SQL,
    PRODUCT_SQL,
    event_payload,
    sqlalchemy_url,
)
from bench.database import connection_counter, remove_written
from bench.report import print_summary, rate
from catalog.models import Product
from catalog.repositories import ProductRepository
from catalog.schemas import ProductRead

__all__ = ["DataSettings", "Measurement", "measure", "run_data", "timed"]

LABELS = {
    "a": "(a) asyncpg fetchrow",
    "b": "(b) SQLAlchemy session.get",
    "b_core": "(b_core) SQLAlchemy Core connect + select",
    "c": "(c) asyncdal read-only (autocommit)",
    "c_snapshot": "(c_snapshot) asyncdal read-only snapshot",
    "c_uow": "(c_uow) asyncdal unit_of_work",
    "a_list": "(a_list) asyncpg page + count",
    "b_list": "(b_list) SQLAlchemy page + count",
    "c_list": "(c_list) asyncdal read-only list + count",
    "c_rows": "(c_rows) asyncdal read-only list_and_count, rows",
    "a_write": "(a_write) asyncpg product + event",
    "b_write": "(b_write) SQLAlchemy product + event",
    "c_write": "(c_write) asyncdal product + event",
}
RATIOS = [
    ("c", "a"),
    ("c", "b"),
    ("b", "a"),
    ("b_core", "b"),
    ("c_snapshot", "c"),
    ("c_uow", "c"),
    ("c_uow", "b"),
    ("c_list", "a_list"),
    ("c_list", "b_list"),
    ("c_rows", "a_list"),
    ("c_rows", "b_list"),
    ("c_write", "a_write"),
    ("c_write", "b_write"),
]
_PAGE = 50

Operation = Callable[[int], Awaitable[object]]
"""Does one operation for this random number (the id to read); returns what it read or wrote."""


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


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one timed run of a path measured."""

    per_second: float
    cpu_us: float
    """This process's CPU microseconds per operation."""


def _asyncpg_get(pool: asyncpg.Pool) -> Operation:
    async def get(product_id: int) -> object:
        return await pool.fetchrow(PRODUCT_SQL, product_id)

    return get


def _sqlalchemy_get(sessions: async_sessionmaker[AsyncSession]) -> Operation:
    async def get(product_id: int) -> object:
        async with sessions() as session:
            return await session.get(Product, product_id)

    return get


def _core_get(engine: AsyncEngine) -> Operation:
    table = Product.__table__

    async def get(product_id: int) -> object:
        async with engine.connect() as connection:
            result = await connection.execute(select(table).where(table.c.id == product_id))
            return result.first()

    return get


def _asyncdal_get(open_unit_of_work: Callable[[], UnitOfWork]) -> Operation:
    async def get(product_id: int) -> object:
        async with open_unit_of_work() as uow:
            return await uow.repository(ProductRepository).get(product_id)

    return get


def _asyncpg_list(pool: asyncpg.Pool) -> Operation:
    async def page(_: int) -> object:
        async with pool.acquire() as connection:
            rows = await connection.fetch(PAGE_SQL, _PAGE, 0)
            return rows, await connection.fetchval(COUNT_SQL)

    return page


def _sqlalchemy_list(sessions: async_sessionmaker[AsyncSession]) -> Operation:
    async def page(_: int) -> object:
        async with sessions() as session:
            items = list(await session.scalars(select(Product).order_by(Product.id).limit(_PAGE)))
            return items, await session.scalar(select(func.count()).select_from(Product))

    return page


def _asyncdal_list(database: Database) -> Operation:
    async def page(_: int) -> object:
        async with database.read_only_unit_of_work() as uow:
            products = uow.repository(ProductRepository)
            return await products.list(limit=_PAGE), await products.count()

    return page


def _asyncdal_rows(database: Database) -> Operation:
    """The catalog's list: the page as rows (plain dicts) and the count, in one statement."""

    async def page(_: int) -> object:
        async with database.read_only_unit_of_work() as uow:
            products = uow.repository(ProductRepository)
            return await products.list_and_count(limit=_PAGE, rows=True)

    return page


def _skus() -> Callable[[], str]:
    """A maker of skus no other path or round uses."""
    prefix = f"d{secrets.token_hex(4)}-"
    counter = itertools.count()
    return lambda: f"{prefix}{next(counter)}"


def _asyncpg_write(pool: asyncpg.Pool) -> Operation:
    sku = _skus()

    async def write(_: int) -> object:
        async with pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                INSERT_SQL, sku(), "Data product", Decimal("9.99"), None
            )
            assert row is not None  # INSERT ... RETURNING returns the row
            shown = ProductRead.model_validate(dict(row))
            await connection.fetchval(
                OUTBOX_SQL, "product.created", str(shown.id), event_payload(shown)
            )
        return shown

    return write


def _sqlalchemy_write(sessions: async_sessionmaker[AsyncSession]) -> Operation:
    sku = _skus()

    async def write(_: int) -> object:
        async with sessions() as session:
            product = Product(sku=sku(), name="Data product", price=Decimal("9.99"))
            session.add(product)
            await session.flush()
            shown = ProductRead.model_validate(product)
            parameters = {
                "event_type": "product.created",
                "key": str(shown.id),
                "payload": event_payload(shown),
            }
            await session.execute(OUTBOX_TEXT, parameters)
            await session.commit()
        return shown

    return write


def _asyncdal_write(database: Database) -> Operation:
    sku = _skus()

    async def write(_: int) -> object:
        async with database.unit_of_work() as uow:
            product = Product(sku=sku(), name="Data product", price=Decimal("9.99"))
            await uow.repository(ProductRepository).add(product)
            shown = ProductRead.model_validate(product)
            await Outbox.of(uow).add(
                "product.created", shown.model_dump(mode="json"), key=product.id
            )
            await uow.commit()
        return shown

    return write


async def timed(
    operation: Operation, products: int, concurrency: int, seconds: float
) -> Measurement:
    """Operations per second of ``concurrency`` tasks calling ``operation`` for ``seconds``,
    and this process's CPU time per operation.

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

    started, cpu_started = loop.time(), time.process_time()
    async with asyncio.TaskGroup() as group:
        tasks = [group.create_task(worker(seed)) for seed in range(concurrency)]
    elapsed, cpu = loop.time() - started, time.process_time() - cpu_started
    done = sum(task.result() for task in tasks)
    return Measurement(done / elapsed, cpu * 1e6 / max(1, done))


async def measure(operation: Operation, products: int, concurrency: int, seconds: float) -> float:
    """Operations per second of ``concurrency`` tasks calling ``operation`` for ``seconds``
    (see :func:`timed`)."""
    return (await timed(operation, products, concurrency, seconds)).per_second


async def run_data(database_url: str, settings: DataSettings) -> dict[str, float]:
    """Run the data-level benchmark against the seeded database; return median ops/s by path."""
    print(
        f"\n== Data level (no HTTP): get by id, a page + count, a product + event; "
        f"{settings.rounds} rounds x {settings.duration:g}s per path, {settings.concurrency} "
        "concurrent tasks, uvloop"
    )
    print(
        "  (CPU us/op: this process's CPU time per operation; new conns: connections the "
        "path's pool opened during the run, from pg_stat_database)"
    )
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
        sessions = async_sessionmaker(engine, expire_on_commit=False)

        operations: dict[str, Operation] = {
            "a": _asyncpg_get(pool),
            "b": _sqlalchemy_get(sessions),
            "b_core": _core_get(engine),
            "c": _asyncdal_get(database.read_only_unit_of_work),
            "c_snapshot": _asyncdal_get(lambda: database.read_only_unit_of_work(snapshot=True)),
            "c_uow": _asyncdal_get(database.unit_of_work),
            "a_list": _asyncpg_list(pool),
            "b_list": _sqlalchemy_list(sessions),
            "c_list": _asyncdal_list(database),
            "c_rows": _asyncdal_rows(database),
            "a_write": _asyncpg_write(pool),
            "b_write": _sqlalchemy_write(sessions),
            "c_write": _asyncdal_write(database),
        }
        for key, operation in operations.items():
            if not await operation(1):
                raise RuntimeError(f"{LABELS[key]} did not find product 1")
        await remove_written(database_url, settings.products)
        if settings.warmup:
            print(f"  warming up each path for {settings.warmup:g}s (not reported)")
            for operation in operations.values():
                await measure(operation, settings.products, settings.concurrency, settings.warmup)
            await remove_written(database_url, settings.products)

        results: dict[str, list[float]] = {key: [] for key in operations}
        cpu: dict[str, list[float]] = {key: [] for key in operations}
        opened: dict[str, list[int]] = {key: [] for key in operations}
        width = max(len(label) for label in LABELS.values())
        for round_number in range(1, settings.rounds + 1):
            print(f"round {round_number}/{settings.rounds}")
            for key, operation in operations.items():
                before = await counter.opened()
                measured = await timed(
                    operation, settings.products, settings.concurrency, settings.duration
                )
                opened[key].append(await counter.opened() - before)
                results[key].append(measured.per_second)
                cpu[key].append(measured.cpu_us)
                print(
                    f"  {LABELS[key]:<{width}} {rate(measured.per_second):>8} ops/s"
                    f"  {measured.cpu_us:6,.0f} CPU us/op   new conns {opened[key][-1]:>4}",
                    flush=True,
                )
            await remove_written(database_url, settings.products)
    return print_summary(
        f"Data-level summary over {settings.rounds} rounds",
        "ops/s",
        LABELS,
        results,
        RATIOS,
        opened,
        cpu,
    )
