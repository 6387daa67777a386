"""The catalog's repositories."""

from __future__ import annotations

from asyncdal import Repository
from catalog.models import Category, Product

__all__ = ["CategoryRepository", "ProductRepository"]


class ProductRepository(Repository[Product]):
    """Products, sortable and filterable by the columns a client may reasonably ask for."""

    sortable = frozenset({"id", "sku", "name", "price", "created_at", "updated_at"})
    filterable = frozenset({"sku", "name", "price", "category_id"})


class CategoryRepository(Repository[Category]):
    """Categories, in the reference database."""

    sortable = frozenset({"id", "name"})
    filterable = frozenset({"name"})
