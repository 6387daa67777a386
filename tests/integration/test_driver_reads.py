"""Reads on the driver: the default read-only path's get, list and count, with every feature."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Any

import asyncpg
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import delete, event, inspect, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import ORMExecuteState, Session, with_loader_criteria

from asyncdal import Database, Databases, DeadlineExceededError, deadline
from asyncdal.engine._driver import DriverReads, statement_hooks
from asyncdal.engine._safety import SafetyNets
from asyncdal.engine._scope import RequestScope, request_scope
from asyncdal.fastapi import databases_lifespan, repository_provider, setup
from asyncdal.observe._metrics import DatabaseMetrics
from asyncdal.orm._driver_reads import DRIVER_READS, ORM_READ
from asyncdal.testing import assert_max_queries
from catalog.models import Product
from catalog.repositories import ProductRepository
from tests.conftest import plain
from tests.helpers import app_client, metric_value, wait_until


@pytest.fixture
async def stocked(
    make_database: Callable[..., Database],
) -> AsyncIterator[tuple[Database, list[int]]]:
    async with _stocked(make_database(slow_query_seconds=0.000001)) as stock:
        yield stock


@pytest.fixture
async def guarded(
    make_database: Callable[..., Database],
) -> AsyncIterator[tuple[Database, list[int]]]:
    """A database with every safety net on (a pool of one: the same connection throughout)."""
    db = make_database(
        pool_size=1,
        max_overflow=0,
        max_queries_per_request=2,
        leak_detection_seconds=60,
        idle_hold_seconds=60,
        request_timeout=60,
    )
    async with _stocked(db) as stock:
        yield stock


@asynccontextmanager
async def _stocked(db: Database) -> AsyncIterator[tuple[Database, list[int]]]:
    prefix = f"dr-{uuid.uuid4().hex[:8]}-"
    async with db.unit_of_work() as uow:
        added = await uow.repository(ProductRepository).add_many(
            [Product(sku=f"{prefix}{n}", name=f"n{n}", price=Decimal(f"{n}.25")) for n in range(3)]
        )
        await uow.commit()
    try:
        yield db, [product.id for product in added]
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(delete(Product).where(Product.sku.startswith(prefix)))
            await uow.commit()
        await db.dispose()


def _hiding(product_id: int) -> Callable[[ORMExecuteState], None]:
    """An application's ``do_orm_execute`` listener that filters every select (as a
    multi-tenant app does with ``with_loader_criteria``): the product ``product_id`` is hidden."""

    def only_visible(state: ORMExecuteState) -> None:
        if state.is_select:
            state.statement = state.statement.options(
                with_loader_criteria(Product, Product.id != product_id)
            )

    return only_visible


def _columns(product: Product) -> dict[str, Any]:
    return {key: getattr(product, key) for key in inspect(Product).columns.keys()}  # noqa: SIM118


async def test_get_gives_the_orm_instance_persistent_in_the_session(
    stocked: tuple[Database, list[int]],
) -> None:
    db, ids = stocked
    async with db.unit_of_work() as uow:
        expected = _columns(await uow.repository(ProductRepository).get(ids[1]))
    async with db.read_only_unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        found = await products.get(ids[1])
        assert ORM_READ not in uow.session.info  # it took the driver path
        assert isinstance(found, Product)
        assert _columns(found) == expected
        assert isinstance(found.price, Decimal)
        state = inspect(found)
        assert state.persistent
        assert found in uow.session
        assert not uow.session.dirty
        assert await products.get(ids[1]) is found  # the identity map's, as session.get
        assert await products.get(10**12) is None


async def test_list_and_count_match_the_orm(stocked: tuple[Database, list[int]]) -> None:
    db, _ = stocked
    async with db.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        expected = [_columns(p) for p in await products.list(order_by="-id", limit=5, offset=1)]
        expected_count = await products.count()
    async with db.read_only_unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        page = await products.list(order_by="-id", limit=5, offset=1)
        assert await products.count() == expected_count
        assert ORM_READ not in uow.session.info
        assert [_columns(p) for p in page] == expected
        assert all(inspect(p).persistent for p in page)


async def test_list_and_count_is_one_statement_with_instances_or_rows(
    stocked: tuple[Database, list[int]],
) -> None:
    db, _ = stocked
    async with db.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        expected = [_columns(p) for p in await products.list(order_by="-id", limit=5, offset=1)]
        expected_count = await products.count()
    async with db.read_only_unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        with assert_max_queries(1, db):
            items, total = await products.list_and_count(order_by="-id", limit=5, offset=1)
        assert ([_columns(p) for p in items], total) == (expected, expected_count)
        assert all(inspect(p).persistent for p in items)
        with assert_max_queries(1, db):
            rows, total = await products.list_and_count(
                order_by="-id", limit=5, offset=1, rows=True
            )
        assert (rows, total) == (expected, expected_count)
        assert all(type(row) is dict and isinstance(row["price"], Decimal) for row in rows)
        assert await products.list(order_by="-id", limit=5, offset=1, rows=True) == expected
        # Past the end no row carries the count: a second statement counts.
        assert await products.list_and_count(offset=10**6, rows=True) == ([], expected_count)
        assert ORM_READ not in uow.session.info  # all of it on the driver
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).list(limit=5, rows=True)
        assert len(uow.session.identity_map) == 0  # rows are not tracked by the session


def _selects(metrics: DatabaseMetrics) -> float:
    return metric_value(metrics, "asyncdal_query_seconds_count", statement="select")


async def test_reads_on_the_driver_are_measured_and_logged(
    stocked: tuple[Database, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    db, ids = stocked
    metrics = DatabaseMetrics()
    metrics.instrument(db)
    caplog.set_level(logging.WARNING, logger="asyncdal.slow_query")
    count_before = _selects(metrics)
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[0])
        assert ORM_READ not in uow.session.info
    assert _selects(metrics) == count_before + 1
    logged = [r for r in caplog.records if r.name == "asyncdal.slow_query"]
    assert logged
    assert "products" in logged[-1].getMessage()


async def test_a_listener_it_cannot_stand_in_for_sends_reads_the_usual_way(
    stocked: tuple[Database, list[int]],
) -> None:
    db, ids = stocked
    seen: list[str] = []

    def listener(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[0])  # builds the engine
    event.listen(db.engine.sync_engine, "before_cursor_execute", listener)
    async with db.read_only_unit_of_work() as uow:
        found = await uow.repository(ProductRepository).get(ids[2])
        assert found is not None
        assert ORM_READ in uow.session.info
    assert any("products" in statement for statement in seen)


async def test_a_listener_in_the_place_of_one_it_stands_in_for_sends_reads_the_usual_way(
    stocked: tuple[Database, list[int]],
) -> None:
    """As many statement listeners as before, one of them not asyncdal's: the driver path
    declines (it looks at the listeners again when they changed, not only at their count)."""
    db, ids = stocked
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[0])
        assert ORM_READ not in uow.session.info
    engine = db.engine.sync_engine
    hooks = statement_hooks(db.engine)
    assert hooks is not None
    ours = next(
        listener
        for name, listener in hooks.replaces
        if name == "after_cursor_execute" and event.contains(engine, name, listener)
    )
    seen: list[str] = []

    def theirs(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.remove(engine, "after_cursor_execute", ours)
    event.listen(engine, "after_cursor_execute", theirs)
    try:
        async with db.read_only_unit_of_work() as uow:
            assert await uow.repository(ProductRepository).get(ids[1]) is not None
            assert ORM_READ in uow.session.info
        assert any("products" in statement for statement in seen)
    finally:
        event.remove(engine, "after_cursor_execute", theirs)
        event.listen(engine, "after_cursor_execute", ours)
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[2])
        assert ORM_READ not in uow.session.info


async def test_an_orm_listener_in_the_place_of_asyncdals_sends_reads_the_orm_way(
    stocked: tuple[Database, list[int]],
) -> None:
    """An application's ``do_orm_execute`` listener that came in the place of one of
    asyncdal's (as many listeners as when they were last found harmless) is seen."""
    db, ids = stocked
    hidden = ids[0]

    def harmless(state: ORMExecuteState) -> None: ...

    harmless.__module__ = "asyncdal.testing"  # one of asyncdal's, as far as reads can tell

    only_visible = _hiding(hidden)

    event.listen(Session, "do_orm_execute", harmless)
    try:
        async with db.read_only_unit_of_work() as uow:
            assert await uow.repository(ProductRepository).get(ids[1]) is not None
            assert ORM_READ not in uow.session.info  # on the driver, harmless seen
        event.remove(Session, "do_orm_execute", harmless)
        event.listen(Session, "do_orm_execute", only_visible)
        async with db.read_only_unit_of_work() as uow:
            assert await uow.repository(ProductRepository).get(hidden) is None
    finally:
        for listener in (harmless, only_visible):
            if event.contains(Session, "do_orm_execute", listener):
                event.remove(Session, "do_orm_execute", listener)


async def test_a_sessions_own_load_listener_sends_its_reads_the_orm_way(
    stocked: tuple[Database, list[int]],
) -> None:
    """A ``loaded_as_persistent`` listener of one session (not of its class) is called: that
    session's reads decline the driver path, the next session's take it again."""
    db, ids = stocked
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[0])  # the class's listeners known
    loaded: list[Any] = []
    async with db.read_only_unit_of_work() as uow:
        event.listen(
            uow.session.sync_session,
            "loaded_as_persistent",
            lambda session, instance: loaded.append(instance),
        )
        found = await uow.repository(ProductRepository).get(ids[1])
        assert loaded == [found]
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[2])
        assert ORM_READ not in uow.session.info


async def test_a_load_listener_that_came_during_a_read_sends_it_the_orm_way(
    stocked: tuple[Database, list[int]],
) -> None:
    """A listener the ORM's loading would call, added while the rows were on their way (by
    another task, say): the rows are not made instances on the driver path; the read runs
    the ORM's way, which calls it."""
    db, ids = stocked
    hooks = statement_hooks(db.engine)
    assert hooks is not None
    loaded: list[Any] = []
    listening: list[Session] = []

    async def listen_meanwhile(driver: Any, info: dict[Any, Any]) -> None:
        for session in listening:
            event.listen(
                session, "loaded_as_persistent", lambda s, instance: loaded.append(instance)
            )
        listening.clear()

    hooks.before.append(listen_meanwhile)
    try:
        async with db.read_only_unit_of_work() as uow:
            listening.append(uow.session.sync_session)
            found = await uow.repository(ProductRepository).get(ids[0])
            assert found is not None
            assert loaded == [found]
            assert ORM_READ in uow.session.info
    finally:
        hooks.before.remove(listen_meanwhile)


async def test_a_dropped_connection_is_read_again(stocked: tuple[Database, list[int]]) -> None:
    db, ids = stocked
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[0])
    async with db.engine.connect() as connection:
        await connection.execute(
            text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE application_name = :name AND pid <> pg_backend_pid()"
            ),
            {"name": db.settings.application_name},
        )
    async with db.read_only_unit_of_work() as uow:
        found = await uow.repository(ProductRepository).get(ids[0])
    assert found is not None
    assert found.id == ids[0]


def _safety_listeners(db: Database) -> list[tuple[str, Any]]:
    """The safety nets' statement listeners on ``db``'s engine, which the hooks stand in for."""
    hooks = statement_hooks(db.engine)
    assert hooks is not None
    return [
        (name, listener)
        for name, listener in hooks.replaces
        if listener.__qualname__.startswith(f"{SafetyNets.attach.__qualname__}.")
        and event.contains(db.engine.sync_engine, name, listener)
    ]


async def test_the_safety_nets_keep_the_driver_path_and_do_their_bookkeeping(
    guarded: tuple[Database, list[int]],
) -> None:
    db, ids = guarded
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[0])  # builds the engine
        reads = uow.session.info[DRIVER_READS]
        assert isinstance(reads, DriverReads)
    # The nets' listeners are on the engine, and the driver path still runs.
    assert sorted(name for name, _ in _safety_listeners(db)) == [
        "after_cursor_execute",
        "before_cursor_execute",
    ]
    assert reads.usable() is not None
    request = RequestScope()
    with request_scope(request), assert_max_queries(3) as log:
        async with deadline(60) as budget, db.read_only_unit_of_work() as uow:
            products = uow.repository(ProductRepository)
            found = await products.get(ids[1])
            assert await products.count() >= 3
            assert len(await products.list(limit=2)) == 2
            assert ORM_READ not in uow.session.info  # all three on the driver
        assert found is not None
        assert found.id == ids[1]
        assert budget.running == {}  # each read left the deadline's watch once done
    # assert_max_queries and MAX_QUERIES_PER_REQUEST saw the three statements.
    assert len(log.statements) == 3
    assert all("products" in statement for statement in log.statements)
    assert request.total == 3
    assert request.limit == 2
    assert sorted(request.counts.values()) == [1, 1, 1]
    # The holds were followed and ended with each checkin.
    assert db.safety_nets.holds == {}


async def test_assert_max_queries_fails_on_a_read_on_the_driver(
    guarded: tuple[Database, list[int]],
) -> None:
    db, ids = guarded
    with (
        pytest.raises(AssertionError, match="1 statements ran, more than 0") as caught,
        assert_max_queries(0, db),
    ):
        async with db.read_only_unit_of_work() as uow:
            assert await uow.repository(ProductRepository).get(ids[0]) is not None
            assert ORM_READ not in uow.session.info
    assert "products" in str(caught.value)


async def test_a_read_on_the_driver_after_the_deadline_is_not_sent(
    guarded: tuple[Database, list[int]],
) -> None:
    db, ids = guarded
    await db.warm_up()
    with pytest.raises(DeadlineExceededError, match="before a statement"):
        async with deadline(60) as budget, db.read_only_unit_of_work() as uow:
            budget.at = 0  # as if the time had gone by now
            try:
                await uow.repository(ProductRepository).get(ids[0])
            finally:
                assert ORM_READ not in uow.session.info  # refused on the driver path
    # The connection was not touched: it is the pool's one, and it works.
    async with db.read_only_unit_of_work() as uow:
        assert await uow.repository(ProductRepository).get(ids[0]) is not None


async def _locked(url: URL) -> asyncpg.Connection:
    """A connection whose open transaction locks the products table against any read."""
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    await connection.execute("BEGIN; LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
    return connection


async def test_a_read_on_the_driver_past_the_deadline_is_cancelled_on_the_server(
    guarded: tuple[Database, list[int]], test_database_url: URL
) -> None:
    db, ids = guarded
    name = db.settings.application_name
    await db.warm_up()
    observer = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    pids = "SELECT array_agg(pid) FROM pg_stat_activity WHERE application_name = $1"
    locker = await _locked(test_database_url)
    try:
        before = await observer.fetchval(pids, name)
        with pytest.raises(DeadlineExceededError, match="server cancelled") as caught:
            # Long enough that a busy machine still reaches the statement within it.
            async with deadline(1.5), db.read_only_unit_of_work() as uow:
                try:
                    await uow.repository(ProductRepository).get(ids[0])  # waits for the lock
                finally:
                    assert ORM_READ not in uow.session.info  # on the driver path
        assert caught.value.seconds == 1.5
        # Cancelled on the server: nothing of it runs or waits there any more...
        running = await observer.fetchval(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'",
            name,
        )
        assert running == 0
    finally:
        await locker.close()
    try:
        # ...and the connection went back to the pool, the same one, and works.
        async with db.read_only_unit_of_work() as uow:
            assert await uow.repository(ProductRepository).get(ids[0]) is not None
            assert ORM_READ not in uow.session.info
        assert await observer.fetchval(pids, name) == before
    finally:
        await observer.close()


async def test_a_read_on_the_driver_counts_as_a_statement_while_it_holds_the_connection(
    guarded: tuple[Database, list[int]], test_database_url: URL
) -> None:
    db, ids = guarded
    await db.warm_up()
    locker = await _locked(test_database_url)
    try:
        async with db.read_only_unit_of_work() as uow:
            read = asyncio.create_task(uow.repository(ProductRepository).get(ids[0]))
            await wait_until(lambda: len(db.safety_nets.holds) == 1)
            (hold,) = db.safety_nets.holds.values()
            await wait_until(lambda: hold.statement_started is not None)
            await locker.execute("COMMIT")
            assert await read is not None
            assert ORM_READ not in uow.session.info
        assert hold.statement_started is None
        assert hold.statement_seconds > 0
        assert db.safety_nets.holds == {}
    finally:
        await locker.close()


async def test_a_request_counts_its_reads_on_the_driver_against_max_queries(
    guarded: tuple[Database, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    db, ids = guarded
    caplog.set_level(logging.WARNING, logger="asyncdal.queries")
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": db})))
    setup(app)
    products = Depends(repository_provider(ProductRepository, read_only=True))

    @app.get("/twice/{product_id}")
    async def twice(product_id: int, repository: ProductRepository = products) -> dict[str, Any]:
        first = await repository.get(product_id)
        await repository.count()
        await repository.count()
        return {"found": first is not None, "driver": ORM_READ not in repository.session.info}

    async with app_client(app) as client:
        answer = await client.get(f"/twice/{ids[0]}")
    assert answer.json() == {"found": True, "driver": True}
    (record,) = [r for r in caplog.records if r.name == "asyncdal.queries"]
    assert "GET /twice/{product_id} ran 3 statements" in record.getMessage()
    assert "2 times" in record.getMessage()
    assert "count(*)" in record.getMessage()


async def test_a_request_past_its_deadline_in_a_read_on_the_driver_is_a_504(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    # Long enough that a busy machine still reaches the statement within it.
    db = make_database(pool_size=1, max_overflow=0, request_timeout=1.5)
    async with _stocked(db) as (_, ids):
        app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": db})))
        setup(app)
        products = Depends(repository_provider(ProductRepository, read_only=True))

        @app.get("/products/{product_id}")
        async def one(product_id: int, repository: ProductRepository = products) -> dict[str, Any]:
            found = await repository.get(product_id)
            return {"found": found is not None, "driver": ORM_READ not in repository.session.info}

        async with app_client(app) as client:
            assert (await client.get(f"/products/{ids[0]}")).json()["driver"]
            locker = await _locked(test_database_url)
            try:
                answer = await client.get(f"/products/{ids[0]}")  # waits for the lock
            finally:
                await locker.close()
            assert answer.status_code == 504
            assert "deadline" in answer.json()["detail"]
            # The pool's one connection came back clean: the next read runs on the driver.
            assert (await client.get(f"/products/{ids[0]}")).json() == {
                "found": True,
                "driver": True,
            }


async def test_an_applications_own_orm_listener_sends_reads_the_orm_way(
    stocked: tuple[Database, list[int]],
) -> None:
    """A ``do_orm_execute`` listener of the application's (here ``with_loader_criteria``, as a
    multi-tenant app filters every query) must see every read: the driver path declines."""
    db, ids = stocked
    hidden = ids[0]

    only_visible = _hiding(hidden)

    event.listen(Session, "do_orm_execute", only_visible)
    try:
        async with db.read_only_unit_of_work() as uow:
            products = uow.repository(ProductRepository)
            assert await products.get(hidden) is None
            assert await products.get(ids[1]) is not None
            assert hidden not in {p.id for p in await products.list(limit=100)}
    finally:
        event.remove(Session, "do_orm_execute", only_visible)
    async with db.read_only_unit_of_work() as uow:
        assert await uow.repository(ProductRepository).get(hidden) is not None
