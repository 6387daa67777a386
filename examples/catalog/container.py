"""The catalog's dependency-injector container: asyncdal's, plus the product repository."""

from __future__ import annotations

import logging
from typing import Any

from dependency_injector import providers

from asyncdal.container import DatabaseContainer, repository_for
from asyncdal.outbox import outbox_pools
from asyncdal.settings import AsyncdalSettings, load_settings
from catalog.repositories import ProductRepository

__all__ = [
    "CatalogContainer",
    "load_catalog_settings",
    "reference_in_main_by_default",
    "reference_optional_by_default",
]

REFERENCE = "reference"

logger = logging.getLogger("catalog")


def reference_in_main_by_default(settings: AsyncdalSettings) -> AsyncdalSettings:
    """``settings`` with a ``reference`` database: the main database itself (same server and
    database; its tables have their own Alembic version table there) when no
    ``DB__REFERENCE__*`` says otherwise, so ``DATABASE_URL`` alone runs the whole catalog."""
    if REFERENCE in settings.databases or "main" not in settings.databases:
        return settings
    logger.info(
        "DB__REFERENCE__URL is not set: the reference database is the main database (%s)",
        settings.databases["main"].safe_url,
    )
    return settings.model_copy(
        update={"db": {**settings.db, REFERENCE: settings.databases["main"]}}
    )


def reference_optional_by_default(settings: AsyncdalSettings) -> AsyncdalSettings:
    """``settings`` with the reference database optional unless ``DB__REFERENCE__OPTIONAL``
    says otherwise.

    Only the category endpoints need it: when it is down they answer 503 while everything
    else keeps working, the app still starts, and readiness reports ``degraded``.
    """
    reference = settings.databases.get(REFERENCE)
    if reference is None or "optional" in reference.model_fields_set:
        return settings
    databases = {**settings.db, REFERENCE: reference.model_copy(update={"optional": True})}
    return settings.model_copy(update={"db": databases})


def load_catalog_settings() -> AsyncdalSettings:
    """The environment's settings (:func:`asyncdal.settings.load_settings`), with the
    catalog's defaults (:func:`reference_in_main_by_default`,
    :func:`reference_optional_by_default`)."""
    return reference_optional_by_default(reference_in_main_by_default(load_settings()))


class CatalogContainer(DatabaseContainer):
    """Settings, databases, units of work, and ``products`` (a repository factory).

    Its settings come from :func:`load_catalog_settings` unless a ``settings`` provider is
    passed or overridden.

    Example (a script):
        >>> container = CatalogContainer()
        >>> await container.init_resources()
        >>> async with await container.unit_of_work() as uow:
        ...     products = container.products(uow)    # a ProductRepository
    """

    # The catalog runs outbox workers (OUTBOX__PROCESSES of them): the budget counts their pools.
    extra_pools: providers.Provider[Any] = providers.Callable(outbox_pools)
    products: providers.Factory[ProductRepository] = providers.Factory(
        repository_for, repository_class=ProductRepository
    )

    def __new__(cls, **overriding_providers: Any) -> CatalogContainer:
        # Overriding the instance's provider (rather than redefining ``settings`` in the
        # class) keeps the providers that depend on it linked, and tests can still override.
        overriding_providers.setdefault("settings", providers.Singleton(load_catalog_settings))
        return super().__new__(cls, **overriding_providers)
