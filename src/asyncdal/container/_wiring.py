"""dependency-injector wiring: settings, databases (a Resource), units of work, repositories.

Example:
    >>> container = DatabaseContainer()
    >>> await container.init_resources()          # builds and warms up the databases
    >>> async with await container.unit_of_work() as uow:
    ...     ...
    >>> await container.shutdown_resources()      # disposes them

Subclass it to add an application's repositories::

    class CatalogContainer(DatabaseContainer):
        products = providers.Factory(repository_for, repository_class=ProductRepository)

    products = container.products(uow)           # the unit of work's ProductRepository
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import TYPE_CHECKING, Any, TypeVar

from dependency_injector import containers, providers
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal.orm._budget import ExtraPool
from asyncdal.orm._databases import Databases
from asyncdal.orm._uow import UnitOfWork
from asyncdal.settings import AsyncdalSettings, load_settings

if TYPE_CHECKING:
    from asyncdal.observe._metrics import DatabaseMetrics

__all__ = ["DatabaseContainer", "container_lifespan", "open_databases", "repository_for"]

R = TypeVar("R")


async def open_databases(
    settings: AsyncdalSettings,
    warm_up: bool = True,
    metrics: DatabaseMetrics | None = None,
    extra_pools: Sequence[ExtraPool] = (),
) -> AsyncIterator[Databases]:
    """Resource initializer: build the databases from settings, instrument them with
    ``metrics``, warm up (checking the budget, ``extra_pools`` included), and dispose at
    shutdown."""
    databases = Databases.from_settings(settings, extra_pools=extra_pools)
    if metrics is not None:
        for database in databases.values():
            metrics.instrument(database)
    try:
        if warm_up:
            await databases.warm_up()
        yield databases
    finally:
        await databases.dispose()


def _new_metrics() -> DatabaseMetrics:
    from asyncdal.observe._metrics import DatabaseMetrics

    return DatabaseMetrics()


def _unit_of_work(databases: Databases, database: str = "main") -> UnitOfWork:
    return databases[database].unit_of_work()


def _read_only_unit_of_work(databases: Databases, database: str = "main") -> UnitOfWork:
    return databases[database].read_only_unit_of_work()


def repository_for(uow: UnitOfWork, repository_class: Callable[[AsyncSession], R]) -> R:
    """The ``repository_class`` repository of ``uow``; a provider callable for containers.

    Example:
        ``products = providers.Factory(repository_for, repository_class=ProductRepository)``,
        then ``container.products(uow)`` is the unit of work's ``ProductRepository``.
    """
    return uow.repository(repository_class)


class DatabaseContainer(containers.DeclarativeContainer):
    """Settings, the databases Resource, and unit-of-work factories.

    Providers that depend on the async ``databases`` resource return awaitables, as
    dependency-injector does for async resources: ``uow = await container.unit_of_work()``.
    """

    settings: providers.Provider[AsyncdalSettings] = providers.Singleton(load_settings)
    warm_up: providers.Provider[bool] = providers.Object(True)
    metrics: providers.Provider[Any] = providers.Singleton(_new_metrics)
    extra_pools: providers.Provider[Sequence[ExtraPool]] = providers.Object(())
    """Pools of other processes on the servers, for the budget (e.g. the outbox's)."""
    databases: providers.Resource[Databases] = providers.Resource(
        open_databases,
        settings=settings,
        warm_up=warm_up,
        metrics=metrics,
        extra_pools=extra_pools,
    )
    unit_of_work: providers.Provider[Any] = providers.Factory(_unit_of_work, databases)
    read_only_unit_of_work: providers.Provider[Any] = providers.Factory(
        _read_only_unit_of_work, databases
    )


def container_lifespan(
    container: DatabaseContainer,
) -> Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]:
    """An ASGI lifespan that initializes the container's resources and shuts them down.

    It yields ``{"databases": ..., "metrics": ...}`` as lifespan state, where
    ``asyncdal.fastapi`` looks.
    """

    @asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[dict[str, Any]]:
        await _maybe_await(container.init_resources())
        try:
            databases = await container.databases()  # type: ignore[misc]
            yield {"databases": databases, "metrics": container.metrics()}
        finally:
            await _maybe_await(container.shutdown_resources())

    return lifespan


async def _maybe_await(result: Any) -> None:
    if result is not None and hasattr(result, "__await__"):
        await result
