"""asyncdal.testing's fakes follow the same rules as the real repository and unit of work."""

from __future__ import annotations

from decimal import Decimal

import pytest

from asyncdal import InvalidQueryError, ReadOnlyError
from asyncdal.testing import FakeUnitOfWork, InMemoryRepository
from catalog.models import Product
from catalog.repositories import ProductRepository


def product(sku: str, name: str = "n", price: str = "1") -> Product:
    return Product(sku=sku, name=name, price=Decimal(price))


async def test_in_memory_repository_crud_and_queries() -> None:
    products = InMemoryRepository.like(ProductRepository)
    a, b, c = await products.add_many(
        [product("A", "x", "5"), product("B", "y", "1"), product("C", "x", "3")]
    )
    assert (a.id, b.id, c.id) == (1, 2, 3)
    assert await products.get(2) is b
    assert [p.sku for p in await products.list(order_by="-price")] == ["A", "C", "B"]
    assert [
        p.sku for p in await products.list(filters={"name": "x"}, order_by=["name", "price"])
    ] == ["C", "A"]
    assert [p.sku for p in await products.list(filters={"price__lt": Decimal(4)})] == ["B", "C"]
    assert await products.count(filters={"sku__in": ["A", "Z"]}) == 1
    assert (await products.update(1, name="z")).name == "z"  # type: ignore[union-attr]
    assert await products.delete(1) is True
    assert await products.delete(1) is False
    assert [p.sku for p in await products.get_many([3, 1, 2])] == ["C", "B"]


async def test_in_memory_repository_enforces_the_whitelists() -> None:
    products = InMemoryRepository.like(ProductRepository)
    with pytest.raises(InvalidQueryError):
        await products.list(order_by="name; drop table products")
    with pytest.raises(InvalidQueryError):
        await products.list(filters={"id": 1})
    with pytest.raises(InvalidQueryError):
        await products.list(limit=ProductRepository.max_page_size + 1)
    with pytest.raises(InvalidQueryError):
        await products.update(1, colour="red")


async def test_fake_unit_of_work_records_commits_and_rollbacks() -> None:
    products = InMemoryRepository.like(ProductRepository)
    uow = FakeUnitOfWork({ProductRepository: products})
    async with uow:
        await uow.repository(ProductRepository).add(product("A"))
        await uow.commit()
    assert (uow.committed, uow.commits, uow.rollbacks) == (True, 1, 0)

    failed = FakeUnitOfWork({ProductRepository: products})
    with pytest.raises(RuntimeError):
        async with failed:
            raise RuntimeError
    assert (failed.committed, failed.rollbacks) == (False, 1)

    with pytest.raises(ReadOnlyError):
        await FakeUnitOfWork(read_only=True).commit()
    with pytest.raises(KeyError, match="no fake"):
        FakeUnitOfWork().repository(ProductRepository)


async def test_fake_unit_of_work_stands_in_for_the_real_type() -> None:
    from asyncdal import UnitOfWork, UnitOfWorkError

    async def rename(uow: UnitOfWork, product_id: int, name: str) -> None:
        async with uow:
            await uow.repository(ProductRepository).update(product_id, name=name)
            await uow.commit()

    products = InMemoryRepository.like(ProductRepository)
    await products.add(product("A", "old"))
    fake = FakeUnitOfWork({ProductRepository: products})
    await rename(fake, 1, "new")
    assert fake.committed
    assert (await products.get(1)).name == "new"  # type: ignore[union-attr]
    with pytest.raises(UnitOfWorkError, match="no session"):
        _ = fake.session
