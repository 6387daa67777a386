"""The catalog's repositories."""

from __future__ import annotations

from asyncdal import Repository
from catalog.models import Product

__all__ = ["ProductRepository"]


class ProductRepository(Repository[Product]):
    """Products, sortable and filterable by the columns a client may reasonably ask for."""

    sortable = frozenset({"id", "sku", "name", "price", "created_at", "updated_at"})
    filterable = frozenset({"sku", "name", "price"})
