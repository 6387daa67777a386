"""The catalog FastAPI application, built from a container.

``uvicorn --factory catalog.app:create_app`` serves it; tests build it with a container whose
settings point at their own database.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import FastAPI

from asyncdal.container import container_lifespan
from asyncdal.errors import ConfigurationError
from asyncdal.fastapi import health_router, metrics_router, setup
from catalog.allow import add_allow_header_handler
from catalog.container import REFERENCE, CatalogContainer
from catalog.routes import categories_router, router

__all__ = ["create_app"]


def create_app(container: CatalogContainer | None = None) -> FastAPI:
    """Build the catalog app.

    Args:
        container: the wiring to use; a new :class:`CatalogContainer` (settings from the
            environment) when omitted.
    """
    container = container if container is not None else CatalogContainer()
    app = FastAPI(
        title="Catalog",
        summary="Products catalog: the asyncdal reference service.",
        version="0.1.0",
        lifespan=_needs_reference(container, container_lifespan(container)),
    )
    app.state.container = container
    setup(app)
    add_allow_header_handler(app)
    app.include_router(router)
    app.include_router(categories_router)
    app.include_router(health_router())
    app.include_router(metrics_router())
    return app


Lifespan = Callable[[Any], AbstractAsyncContextManager[dict[str, Any]]]


def _needs_reference(container: CatalogContainer, lifespan: Lifespan) -> Lifespan:
    """Refuse to start without the reference database, which categories live in: better than
    a 500 on the first request that needs it."""

    @asynccontextmanager
    async def checked(app: Any) -> AsyncIterator[dict[str, Any]]:
        if REFERENCE not in container.settings().databases:
            raise ConfigurationError(
                f"the catalog needs its {REFERENCE!r} database (categories live there): set "
                f"DB__{REFERENCE.upper()}__URL, and migrate it with "
                f"'alembic -x database={REFERENCE} upgrade head' (make migrate does both histories)"
            )
        async with lifespan(app) as state:
            yield state

    return checked
