"""The catalog FastAPI application, built from a container.

``uvicorn --factory catalog.app:create_app`` serves it; tests build it with a container whose
settings point at their own database.
"""

from __future__ import annotations

from fastapi import FastAPI

from asyncdal.container import container_lifespan
from asyncdal.fastapi import health_router, metrics_router, setup
from catalog.container import CatalogContainer
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
        lifespan=container_lifespan(container),
    )
    app.state.container = container
    setup(app)
    app.include_router(router)
    app.include_router(categories_router)
    app.include_router(health_router())
    app.include_router(metrics_router())
    return app
