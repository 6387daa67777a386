"""Repository CRUD against the real server, inside asyncdal.testing's per-test rollback."""

from __future__ import annotations

from decimal import Decimal

import pytest

from asyncdal import Database, InvalidQueryError
from catalog.models import Product
from catalog.repositories import ProductRepository


def product(sku: str, name: str = "thing", price: str = "1.00") -> Product:
    return Product(sku=sku, name=name, price=Decimal(price))


async def test_add_get_update_delete(rollback_database: Database) -> None:
    async with rollback_database.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        added = await products.add(product("A-1", "Lamp", "12.00"))
        assert added.id is not None
        assert added.created_at is not None
        assert await products.get(added.id) is added
        updated = await products.update(added.id, name="Desk lamp", price=Decimal("13.50"))
        assert updated is not None
        assert (updated.name, updated.price) == ("Desk lamp", Decimal("13.50"))
        assert await products.update(10**9, name="none") is None
        assert await products.delete(added.id) is True
        assert await products.delete(added.id) is False
        assert await products.get(added.id) is None


async def test_get_takes_a_key_its_column_holds_and_refuses_others(
    rollback_database: Database,
) -> None:
    async with rollback_database.read_only_unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        # BIGINT's bounds are keys no row has; one past them, or text, is the caller's error.
        assert await products.get(2**63 - 1) is None
        assert await products.get(-(2**63)) is None
        for wrong in (2**63, -(2**63) - 1, "7", 1.5):
            with pytest.raises(InvalidQueryError, match="id"):
                await products.get(wrong)


async def test_get_many_keeps_the_order_asked_for(rollback_database: Database) -> None:
    async with rollback_database.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        a, _, c = await products.add_many([product("A"), product("B"), product("C")])
        found = await products.get_many([c.id, 10**9, a.id])
        assert [item.sku for item in found] == ["C", "A"]
        assert await products.get_many([]) == []


async def test_list_filters_orders_and_pages(rollback_database: Database) -> None:
    async with rollback_database.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        await products.add_many(
            [product("A", "x", "5"), product("B", "y", "1"), product("C", "x", "3")]
        )
        by_price = await products.list(order_by="-price")
        assert [p.sku for p in by_price] == ["A", "C", "B"]
        cheap = await products.list(filters={"price__lt": Decimal("4")}, order_by="price")
        assert [p.sku for p in cheap] == ["B", "C"]
        named_x = await products.list(filters={"name": "x"}, order_by=["name", "-price"])
        assert [p.sku for p in named_x] == ["A", "C"]
        chosen = await products.list(filters={"sku__in": ["A", "B"]})
        assert [p.sku for p in chosen] == ["A", "B"]
        assert [p.sku for p in await products.list(limit=1, offset=1)] == ["B"]
        assert await products.count() == 3
        assert await products.count(filters={"price__gte": Decimal("3")}) == 2


@pytest.mark.parametrize(
    "call",
    [
        {"order_by": "name; drop table products"},
        {"order_by": "-created_at, id"},
        {"filters": {"id": 1}},
        {"filters": {"price__like": 1}},
        {"limit": 0},
        {"limit": ProductRepository.max_page_size + 1},
        {"offset": -1},
    ],
)
async def test_list_refuses_what_is_not_whitelisted(
    rollback_database: Database, call: dict[str, object]
) -> None:
    async with rollback_database.read_only_unit_of_work() as uow:
        with pytest.raises(InvalidQueryError):
            await uow.repository(ProductRepository).list(**call)  # type: ignore[arg-type]


async def test_update_refuses_unknown_columns(rollback_database: Database) -> None:
    async with rollback_database.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        added = await products.add(product("U"))
        with pytest.raises(InvalidQueryError, match="colour"):
            await products.update(added.id, colour="red")


async def test_uncommitted_work_is_rolled_back(rollback_database: Database) -> None:
    async with rollback_database.unit_of_work() as uow:
        await uow.repository(ProductRepository).add(product("GONE"))
    async with rollback_database.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        assert await products.count(filters={"sku": "GONE"}) == 0
        await products.add(product("KEPT"))
        await uow.commit()
    async with rollback_database.read_only_unit_of_work() as uow:
        assert await uow.repository(ProductRepository).count(filters={"sku": "KEPT"}) == 1


def test_repository_whitelist_must_name_real_columns() -> None:
    from asyncdal import Repository

    with pytest.raises(TypeError, match="unknown columns"):

        class Broken(Repository[Product]):
            sortable = frozenset({"colour"})


@pytest.mark.parametrize(
    ("filters", "named"),
    [
        ({"category_id__gt": 2**63}, "category_id__gt"),
        ({"category_id__in": [1, -(2**63) - 1]}, "category_id__in"),
        ({"price__lt": Decimal("1e10")}, "price__lt"),
        ({"sku": "a\x00b"}, "sku"),
    ],
)
async def test_a_value_the_column_cannot_hold_is_refused_naming_it(
    rollback_database: Database, filters: dict[str, object], named: str
) -> None:
    async with rollback_database.read_only_unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        with pytest.raises(InvalidQueryError, match=named):
            await products.list(filters=filters)
        with pytest.raises(InvalidQueryError, match=named):
            await products.count(filters=filters)


async def test_values_at_the_edges_of_their_columns_are_taken(rollback_database: Database) -> None:
    async with rollback_database.read_only_unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        edges = {
            "category_id__lt": 2**63 - 1,
            "category_id__gt": -(2**63),
            "price__lt": Decimal("9999999999.99"),
        }
        assert await products.list(filters=edges) == []


async def test_an_offset_past_bigint_is_refused(rollback_database: Database) -> None:
    async with rollback_database.read_only_unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        with pytest.raises(InvalidQueryError, match="offset"):
            await products.list(offset=118474687415564959744)
        assert await products.list(offset=2**63 - 1) == []
