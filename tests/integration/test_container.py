"""The dependency-injector container: the databases Resource initializes and shuts down."""

from __future__ import annotations

import uuid

from dependency_injector import providers
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Databases, load_settings
from catalog.container import CatalogContainer
from catalog.repositories import ProductRepository
from tests.conftest import plain
from tests.helpers import wait_until
from tests.integration.conftest import BackendCounter


async def test_resource_warms_up_serves_units_of_work_and_disposes(
    test_database_url: URL, backends: BackendCounter
) -> None:
    name = f"container-{uuid.uuid4().hex[:8]}"
    url = plain(test_database_url)
    settings = load_settings(db={"main": {"url": url, "pool_size": 2, "application_name": name}})
    container = CatalogContainer()
    container.settings.override(providers.Object(settings))

    await container.init_resources()
    databases = await container.databases()
    assert isinstance(databases, Databases)
    assert await backends(name) == 2  # warmed up to the pool size

    async with await container.unit_of_work() as uow:
        products = container.products(uow)
        assert isinstance(products, ProductRepository)
        assert await uow.session.scalar(text("SELECT 1")) == 1
    async with await container.read_only_unit_of_work() as uow:
        assert uow.read_only

    await container.shutdown_resources()

    async def all_closed() -> bool:
        return await backends(name) == 0

    await wait_until(all_closed, timeout=5, message="the pool's connections are still open")
