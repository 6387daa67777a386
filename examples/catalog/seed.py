"""A few demo products for a fresh database."""

from __future__ import annotations

from decimal import Decimal

from asyncdal import Database
from catalog.models import Category, Product
from catalog.repositories import CategoryRepository, ProductRepository

__all__ = ["DEMO_CATEGORIES", "DEMO_PRODUCTS", "seed_categories", "seed_products"]

DEMO_CATEGORIES = ("Coffee", "Kitchen")
DEMO_PRODUCTS = (
    ("KETTLE-1", "Electric kettle", Decimal("24.90")),
    ("MUG-2", "Stoneware mug", Decimal("7.50")),
    ("PRESS-3", "French press", Decimal("31.00")),
    ("GRINDER-4", "Burr coffee grinder", Decimal("89.00")),
)


async def seed_products(database: Database) -> int:
    """Insert the demo products when the table is empty; return how many were added."""
    async with database.unit_of_work() as uow:
        products = uow.repository(ProductRepository)
        if await products.count():
            return 0
        await products.add_many(
            Product(sku=sku, name=name, price=price) for sku, name, price in DEMO_PRODUCTS
        )
        await uow.commit()
    return len(DEMO_PRODUCTS)


async def seed_categories(database: Database) -> int:
    """Insert the demo categories (in the reference database) when there are none."""
    async with database.unit_of_work() as uow:
        categories = uow.repository(CategoryRepository)
        if await categories.count():
            return 0
        await categories.add_many(Category(name=name) for name in DEMO_CATEGORIES)
        await uow.commit()
    return len(DEMO_CATEGORIES)
