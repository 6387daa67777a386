"""Providers are their own stable keys, and ``asyncdal.testing.override`` replaces them by name
with fakes the commit middleware settles (no database: the app's registry is empty)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI, HTTPException
from httpx import ASGITransport, AsyncClient

from asyncdal import Databases, UnitOfWork
from asyncdal.fastapi import (
    read_only_unit_of_work_provider,
    repository_provider,
    session_provider,
    setup,
    unit_of_work_provider,
)
from asyncdal.testing import FakeUnitOfWork, InMemoryRepository, override
from asyncdal.testing._client import _Lifespan
from catalog.idempotency import IdempotencyKeys
from catalog.models import Product
from catalog.repositories import CategoryRepository, ProductRepository
from tests.helpers import app_client

Products = Annotated[ProductRepository, Depends(repository_provider(ProductRepository))]
ReadProducts = Annotated[
    ProductRepository, Depends(repository_provider(ProductRepository, read_only=True))
]
Work = Annotated[UnitOfWork, Depends(unit_of_work_provider())]


def test_providers_with_the_same_arguments_are_equal() -> None:
    assert repository_provider(ProductRepository) == repository_provider(ProductRepository)
    assert hash(repository_provider(ProductRepository)) == hash(
        repository_provider(ProductRepository, database="MAIN")
    )
    assert unit_of_work_provider() == unit_of_work_provider("main")
    assert session_provider("audit") == session_provider("audit")
    different = [
        repository_provider(ProductRepository),
        repository_provider(ProductRepository, read_only=True),
        repository_provider(ProductRepository, database="reference"),
        repository_provider(CategoryRepository),
        unit_of_work_provider(),
        read_only_unit_of_work_provider(),
        read_only_unit_of_work_provider(snapshot=True),
        session_provider(),
    ]
    assert len(set(different)) == len(different)


@asynccontextmanager
async def no_databases(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
    yield {"databases": Databases({})}


def shop() -> FastAPI:
    app = FastAPI(lifespan=no_databases)
    setup(app)

    @app.post("/products", status_code=201)
    async def add(sku: str, products: Products, uow: Work) -> dict[str, object]:
        if await products.count(filters={"sku": sku}):
            raise HTTPException(409, "taken")
        # The handler's repository and its unit of work are one fake's.
        assert uow.repository(ProductRepository) is products
        product = await products.add(Product(sku=sku, name=sku, price=Decimal(1)))
        return {"id": product.id}

    @app.get("/products")
    async def skus(products: ReadProducts) -> list[str]:
        return [product.sku for product in await products.list()]

    return app


async def test_a_raw_override_keyed_by_the_provider_replaces_it() -> None:
    app = shop()
    products = InMemoryRepository.like(ProductRepository)
    await products.add(Product(sku="A", name="a", price=Decimal(1)))
    app.dependency_overrides[repository_provider(ProductRepository, read_only=True)] = lambda: (
        products
    )
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://test") as client:
        assert (await client.get("/products")).json() == ["A"]


async def test_an_override_is_committed_after_a_2xx_once_per_request() -> None:
    app = shop()
    uow = override(app, ProductRepository)
    async with app_client(app) as client:
        response = await client.post("/products", params={"sku": "A"})
        assert response.status_code == 201, response.text
        assert uow.committed
        assert uow.commits == 1  # two providers, one registration
        assert (await client.get("/products")).json() == ["A"]
        assert await uow.repository(ProductRepository).count() == 1


async def test_an_override_is_rolled_back_after_an_error() -> None:
    app = shop()
    uow = override(app, ProductRepository)
    await uow.repository(ProductRepository).add(Product(sku="A", name="a", price=Decimal(1)))
    async with app_client(app) as client:
        assert (await client.post("/products", params={"sku": "A"})).status_code == 409
    assert not uow.committed
    assert uow.rollbacks == 1


async def test_overrides_of_one_database_share_one_fake_unit_of_work() -> None:
    app = FastAPI()
    given = FakeUnitOfWork()
    assert override(app, UnitOfWork, given) is given
    keys = InMemoryRepository.like(ProductRepository)
    assert override(app, ProductRepository) is given
    assert override(app, IdempotencyKeys, keys) is given
    assert given.repository(IdempotencyKeys) is keys
    # Overriding again keeps the fake the test may hold already.
    products = given.repository(ProductRepository)
    override(app, ProductRepository)
    assert given.repository(ProductRepository) is products
    # Another database has a fake of its own.
    assert override(app, CategoryRepository, database="reference") is not given


def test_override_refuses_what_cannot_fit() -> None:
    app = FastAPI()
    override(app, ProductRepository)
    with pytest.raises(ValueError, match="override UnitOfWork first"):
        override(app, UnitOfWork, FakeUnitOfWork())
    with pytest.raises(ValueError, match="FakeUnitOfWork"):
        override(FastAPI(), UnitOfWork, object())
    with pytest.raises(ValueError, match="no asyncdal Repository"):
        override(app, IdempotencyKeys)


async def test_the_client_lifespan_raises_the_apps_startup_error() -> None:
    shut_down: list[bool] = []

    @asynccontextmanager
    async def failing(app: FastAPI) -> AsyncIterator[None]:
        raise RuntimeError("no database today")
        yield

    with pytest.raises(RuntimeError) as raised:
        async with _Lifespan(FastAPI(lifespan=failing)):
            pass
    assert raised.value.args == ("no database today",)  # the app's own error, not a summary

    @asynccontextmanager
    async def working(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        yield {"databases": Databases({})}
        shut_down.append(True)

    async with _Lifespan(FastAPI(lifespan=working)) as lifespan:
        assert isinstance(lifespan.state["databases"], Databases)
        assert shut_down == []
    assert shut_down == [True]
