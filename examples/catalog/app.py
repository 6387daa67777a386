"""The catalog FastAPI application, built from a container.

``uvicorn --factory catalog.app:create_app`` serves it; tests build it with a container whose
settings point at their own database.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from fastapi import APIRouter, FastAPI
from fastapi.routing import APIRoute

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
    add_routes_of(app, router)
    add_routes_of(app, categories_router)
    app.include_router(health_router())
    app.include_router(metrics_router())
    return app


def add_routes_of(app: FastAPI, router: APIRouter) -> None:
    """Add ``router``'s routes to ``app`` as its own, as if declared with ``app.get`` & co.

    Rather than ``app.include_router``: FastAPI (0.165) resolves an included router again for
    every request, which cost the catalog's ``GET /products/{id}`` about 60,000 instructions of
    some 1,020,000 (``python -m bench.instructions asyncdal``, 2026-12-06). Each route is added
    with everything it was declared with (the router's prefix and tags are in it already)
    through the public ``add_api_route``, so ``app.dependency_overrides`` reach it.
    """
    for route in router.routes:
        if not isinstance(route, APIRoute):
            raise TypeError(f"{route!r} is not a FastAPI route; include its router instead")
        declared = {name: getattr(route, name) for name in _DECLARED if hasattr(route, name)}
        app.router.add_api_route(route.path, route.endpoint, **declared)


# What a route was declared with, by the names add_api_route takes (the ones FastAPI's route
# keeps); not its path and endpoint (given first), nor the route class (the app's own).
_DECLARED = tuple(
    name
    for name in inspect.signature(APIRouter.add_api_route).parameters
    if name not in {"self", "path", "endpoint", "route_class_override"}
)


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
