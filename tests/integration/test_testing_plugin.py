"""asyncdal.testing.plugin's per-test rollback: nothing a test commits is seen outside it."""

from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal import Database, UnitOfWorkError
from catalog.models import Product
from catalog.repositories import ProductRepository
from tests.conftest import plain


async def outside_count(url: URL, sku: str) -> int:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM products WHERE sku = $1", sku))
    finally:
        await connection.close()


async def test_commits_stay_inside_the_test_even_after_dispose(
    rollback_database: Database, test_database_url: URL
) -> None:
    await rollback_database.dispose()  # as an app's lifespan would on shutdown
    async with rollback_database.unit_of_work() as uow:
        await uow.repository(ProductRepository).add(
            Product(sku="PINNED", name="p", price=Decimal(1))
        )
        await uow.commit()
    async with rollback_database.read_only_unit_of_work() as uow:
        assert await uow.repository(ProductRepository).count(filters={"sku": "PINNED"}) == 1
    assert await outside_count(test_database_url, "PINNED") == 0


async def test_use_from_another_event_loop_is_refused_clearly(
    rollback_database: Database,
) -> None:
    errors: list[BaseException] = []

    async def use() -> None:
        async with rollback_database.unit_of_work():
            pass

    def in_other_loop() -> None:
        try:
            asyncio.run(use())
        except BaseException as error:
            errors.append(error)

    thread = threading.Thread(target=in_other_loop)
    thread.start()
    thread.join()
    assert len(errors) == 1
    assert isinstance(errors[0], UnitOfWorkError)
    assert "another event loop" in str(errors[0])


def test_the_plugin_is_loaded_by_its_entry_point(pytestconfig: pytest.Config) -> None:
    """Loaded by the ``pytest11`` entry point ``asyncdal`` alone: tests/conftest.py does not
    list it (pytest would refuse it twice)."""
    import asyncdal.testing.plugin

    assert pytestconfig.pluginmanager.get_plugin("asyncdal") is asyncdal.testing.plugin
    assert not pytestconfig.pluginmanager.has_plugin("asyncdal.testing.plugin")
