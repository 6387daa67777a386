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

from asyncdal.container._wiring import (
    DatabaseContainer,
    container_lifespan,
    open_databases,
    repository_for,
)

__all__ = [
    "DatabaseContainer",
    "container_lifespan",
    "open_databases",
    "repository_for",
]
