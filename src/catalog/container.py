"""The catalog's dependency-injector container: asyncdal's, plus the product repository."""

from __future__ import annotations

from dependency_injector import providers

from asyncdal.container import DatabaseContainer, repository_for
from catalog.repositories import ProductRepository

__all__ = ["CatalogContainer"]


class CatalogContainer(DatabaseContainer):
    """Settings, databases, units of work, and ``products`` (a repository factory).

    Example (a script):
        >>> container = CatalogContainer()
        >>> await container.init_resources()
        >>> async with await container.unit_of_work() as uow:
        ...     products = container.products(uow)    # a ProductRepository
    """

    products: providers.Factory[ProductRepository] = providers.Factory(
        repository_for, repository_class=ProductRepository
    )
