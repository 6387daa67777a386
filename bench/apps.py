"""The apps under test; each serves ``GET /products/{product_id}`` with the same JSON.

(a) ``asyncpg_app``: a raw asyncpg pool and one ``fetchrow``.
(b) ``sqlalchemy_app``: the FastAPI docs pattern, ``create_async_engine`` with default settings,
    ``async_sessionmaker``, a yield dependency giving a session, and ``session.get``.
(c) ``asyncdal_app``: the catalog service itself, built by ``catalog.app.create_app``, with
    metrics, request-id tagging, the slow-statement log and JSON logging on.
(d) ``asyncdal_unobserved_app``: the same with those off, for the observability cost (c/d).
(e) ``asyncdal_tagged_app``: (c) with the request id put into ``application_name`` (e/d).

All three are FastAPI apps whose route has ``response_model=ProductRead``, so the framework,
validation and serialization are the same and only the data path differs. Pools and engines are
built in each app's lifespan, never at import time.

This module deliberately has no ``from __future__ import annotations``: FastAPI reads the
route signatures at runtime.
"""

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from dependency_injector import providers
from fastapi import Depends, FastAPI, HTTPException, Request, status
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from asyncdal import configure_logging, load_settings
from asyncdal.settings import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from catalog.app import create_app
from catalog.container import CatalogContainer
from catalog.models import Product
from catalog.schemas import ProductRead

__all__ = [
    "APPS",
    "ASYNCPG_MAX_SIZE",
    "ASYNCPG_MIN_SIZE",
    "PRODUCT_SQL",
    "asyncdal_app",
    "asyncdal_tagged_app",
    "asyncdal_unobserved_app",
    "asyncpg_app",
    "sqlalchemy_app",
    "sqlalchemy_url",
]

PRODUCT_SQL = "SELECT id, sku, name, price, created_at, updated_at FROM products WHERE id = $1"

# SQLAlchemy's default QueuePool (b) keeps 5 connections and may open 10 more under load; the
# asyncpg pool gets the same floor and ceiling. asyncdal (c) runs with its own defaults, a fixed
# pool of 10: fewer connections at peak than (a) and (b), so it cannot win by holding more.
ASYNCPG_MIN_SIZE = 5
ASYNCPG_MAX_SIZE = 15


def sqlalchemy_url(url: str) -> str:
    """``url`` with the ``postgresql+asyncpg`` driver SQLAlchemy needs."""
    return make_url(url).set(drivername="postgresql+asyncpg").render_as_string(hide_password=False)


def _not_found(product_id: int) -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, f"product {product_id} not found")


def asyncpg_app(url: str) -> FastAPI:
    """(a) Raw asyncpg: ``pool.fetchrow`` and the record as a dict."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        pool = await asyncpg.create_pool(url, min_size=ASYNCPG_MIN_SIZE, max_size=ASYNCPG_MAX_SIZE)
        try:
            yield {"pool": pool}
        finally:
            await pool.close()

    app = FastAPI(lifespan=lifespan)

    @app.get("/products/{product_id}", response_model=ProductRead)
    async def get_product(product_id: int, request: Request) -> dict[str, Any]:
        pool: asyncpg.Pool = request.state.pool
        row = await pool.fetchrow(PRODUCT_SQL, product_id)
        if row is None:
            raise _not_found(product_id)
        return dict(row)

    return app


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """(b)'s yield dependency: one session per request, closed after the response."""
    sessions: async_sessionmaker[AsyncSession] = request.state.sessions
    async with sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]


def sqlalchemy_app(url: str) -> FastAPI:
    """(b) Plain SQLAlchemy as the FastAPI docs show it, with the engine's default settings."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        engine = create_async_engine(sqlalchemy_url(url))
        try:
            yield {"sessions": async_sessionmaker(engine, expire_on_commit=False)}
        finally:
            await engine.dispose()

    app = FastAPI(lifespan=lifespan)

    @app.get("/products/{product_id}", response_model=ProductRead)
    async def get_product(product_id: int, session: SessionDep) -> Product:
        product = await session.get(Product, product_id)
        if product is None:
            raise _not_found(product_id)
        return product

    return app


def _catalog(url: str, **database: object) -> tuple[CatalogContainer, FastAPI]:
    # The catalog refuses to start without its reference database. The benchmark's products
    # have no category, so it is never queried: the same database, with a pool of one.
    settings = load_settings(
        db={"main": {"url": url, **database}, "reference": {"url": url, "pool_size": 1}}
    )
    main = settings.databases["main"]
    # load_settings also reads .env; a pool setting from there would make (c) unlike (b).
    if (main.pool.effective_size, main.pool.effective_max_overflow) != (
        DEFAULT_POOL_SIZE,
        DEFAULT_MAX_OVERFLOW,
    ) or main.flat_fields_set != {"url", *database}:
        print(
            f"bench: warning: (c) does not run with asyncdal's default settings; it also sets "
            f"{sorted(main.flat_fields_set - {'url', *database})} (from .env?)",
            file=sys.stderr,
        )
    container = CatalogContainer()
    container.settings.override(providers.Object(settings))
    return container, create_app(container)


def asyncdal_app(url: str) -> FastAPI:
    """(c) The catalog's real app and endpoint, observed as in production with the defaults:
    Prometheus metrics, request ids, a slow-statement threshold, and JSON logs."""
    configure_logging("json", level="INFO")
    _, app = _catalog(url, slow_query_seconds=1.0)
    return app


def asyncdal_unobserved_app(url: str) -> FastAPI:
    """(d) The same catalog with metrics and the slow-statement log off and logging left alone."""
    container, app = _catalog(url)
    container.metrics.override(providers.Object(None))
    return app


def asyncdal_tagged_app(url: str) -> FastAPI:
    """(e) (c) plus ``TAG_REQUESTS=true``: the request id put into ``application_name``."""
    configure_logging("json", level="INFO")
    _, app = _catalog(url, slow_query_seconds=1.0, tag_requests=True)
    return app


APPS: dict[str, Callable[[str], FastAPI]] = {
    "asyncpg": asyncpg_app,
    "sqlalchemy": sqlalchemy_app,
    "asyncdal": asyncdal_app,
    "asyncdal_unobserved": asyncdal_unobserved_app,
    "asyncdal_tagged": asyncdal_tagged_app,
}
"""The app factories by name, in the order every round runs them."""
