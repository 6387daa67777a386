"""Reads on the driver: the default read-only path's get, list and count, with every feature."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import delete, event, inspect, text

from asyncdal import Database
from asyncdal.observe._metrics import DatabaseMetrics
from asyncdal.orm._driver_reads import ORM_READ
from catalog.models import Product
from catalog.repositories import ProductRepository


@pytest.fixture
async def stocked(
    make_database: Callable[..., Database],
) -> AsyncIterator[tuple[Database, list[int]]]:
    db = make_database(slow_query_seconds=0.000001)
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


async def test_reads_on_the_driver_are_measured_and_logged(
    stocked: tuple[Database, list[int]], caplog: pytest.LogCaptureFixture
) -> None:
    db, ids = stocked
    metrics = DatabaseMetrics()
    metrics.instrument(db)
    caplog.set_level(logging.WARNING, logger="asyncdal.slow_query")
    count_before = _count(metrics)
    async with db.read_only_unit_of_work() as uow:
        await uow.repository(ProductRepository).get(ids[0])
        assert ORM_READ not in uow.session.info
    assert _count(metrics) == count_before + 1
    logged = [r for r in caplog.records if r.name == "asyncdal.slow_query"]
    assert logged
    assert "products" in logged[-1].getMessage()


def _count(metrics: DatabaseMetrics) -> float:
    for family in metrics.registry.collect():
        for sample in family.samples:
            if (
                sample.name == "asyncdal_query_seconds_count"
                and sample.labels.get("statement") == "select"
            ):
                return sample.value
    return 0.0


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
