"""The apps under test; each serves the catalog's three benchmarked endpoints with the same JSON.

The endpoints: ``GET /products/{product_id}`` (one product), ``GET /products?limit=50`` (a page
and the total count) and ``POST /products`` (a product and its ``product.created`` outbox event,
inserted in one transaction).

(a) ``asyncpg_app``: a raw asyncpg pool: ``fetchrow``; ``fetch`` + ``fetchval`` on one
    connection; two inserts in ``connection.transaction()``.
(s) ``asyncpg_setup_app``: (a) with ``asyncdal.fastapi.setup(app)`` added and nothing else: what
    asyncdal's middlewares and error handlers cost an endpoint that does not use them.
(b) ``sqlalchemy_app``: the FastAPI docs pattern, ``create_async_engine`` with default settings,
    ``async_sessionmaker``, a yield dependency giving a session; ``session.get``; ``scalars`` +
    ``scalar``; ``add`` + ``flush`` + ``execute`` (the outbox insert) + ``commit``.
(c) ``asyncdal_app``: the catalog service itself, built by ``catalog.app.create_app``, with
    metrics, request ids, the slow-statement log and JSON logging on.
(d) ``asyncdal_unobserved_app``: the same with those off, for the observability cost (c/d).
(e) ``asyncdal_tagged_app``: (c) with the request id put into ``application_name`` (e/d).
(f) ``asyncdal_safety_app``: (c) with every safety net on (:data:`SAFETY_NETS_ON`), for what
    they cost the documented read path (f/c).

All are FastAPI apps whose routes have the catalog's ``response_model`` and status codes, so the
framework, validation and serialization are the same and only the data path differs. The outbox
insert is the SQL of asyncdal's writer (with its ``pg_notify``), so the server does the same work
for each app. Pools and engines are built in each app's lifespan, never at import time.

This module deliberately has no ``from __future__ import annotations``: FastAPI reads the
route signatures at runtime.
"""

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import asyncpg
from dependency_injector import providers
from fastapi import Depends, FastAPI, HTTPException, Query, Request, status
from sqlalchemy import func, select, text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine

from asyncdal import configure_logging, load_settings
from asyncdal.fastapi import setup
from asyncdal.outbox._table import NOTIFY_CHANNEL, OUTBOX_TABLE
from asyncdal.settings import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from catalog.app import create_app
from catalog.container import CatalogContainer
from catalog.models import Product
from catalog.schemas import ProductCreate, ProductPage, ProductRead

__all__ = [
    "APPS",
    "ASYNCPG_MAX_SIZE",
    "ASYNCPG_MIN_SIZE",
    "COUNT_SQL",
    "INSERT_SQL",
    "OUTBOX_SQL",
    "OUTBOX_TEXT",
    "PAGE_SQL",
    "PRODUCT_SQL",
    "SAFETY_NETS_ON",
    "asyncdal_app",
    "asyncdal_safety_app",
    "asyncdal_tagged_app",
    "asyncdal_unobserved_app",
    "asyncpg_app",
    "asyncpg_setup_app",
    "event_payload",
    "sqlalchemy_app",
    "sqlalchemy_url",
]

_COLUMNS = "id, sku, name, price, category_id, created_at, updated_at"
PRODUCT_SQL = f"SELECT {_COLUMNS} FROM products WHERE id = $1"
PAGE_SQL = f"SELECT {_COLUMNS} FROM products ORDER BY id LIMIT $1 OFFSET $2"
COUNT_SQL = "SELECT count(*) FROM products"
INSERT_SQL = (
    f"INSERT INTO products (sku, name, price, category_id) VALUES ($1, $2, $3, $4) "
    f"RETURNING {_COLUMNS}"
)
# The statement asyncdal's Outbox.add runs (asyncdal.outbox._writer), in asyncpg's and in
# SQLAlchemy's parameter style.
_OUTBOX = (
    f"INSERT INTO {OUTBOX_TABLE} (event_type, key, payload) "
    "SELECT {}, {}, CAST({} AS jsonb) "
    f"FROM (SELECT pg_notify('{NOTIFY_CHANNEL}', '')) AS wake RETURNING id"
)
OUTBOX_SQL = _OUTBOX.format("$1", "$2", "$3")
OUTBOX_TEXT = text(_OUTBOX.format(":event_type", ":key", ":payload"))

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


def event_payload(shown: ProductRead) -> str:
    """The ``product.created`` event's JSON, as the catalog and asyncdal's writer make it."""
    return json.dumps(shown.model_dump(mode="json"), default=str)


Limit = Annotated[int, Query(ge=1, le=100)]
Offset = Annotated[int, Query(ge=0)]


def asyncpg_app(url: str) -> FastAPI:
    """(a) Raw asyncpg: records turned into dicts and models by hand."""

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

    @app.get("/products", response_model=ProductPage)
    async def list_products(request: Request, limit: Limit = 50, offset: Offset = 0) -> Any:
        pool: asyncpg.Pool = request.state.pool
        async with pool.acquire() as connection:
            rows = await connection.fetch(PAGE_SQL, limit, offset)
            total = await connection.fetchval(COUNT_SQL)
        items = [dict(row) for row in rows]
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.post("/products", response_model=ProductRead, status_code=status.HTTP_201_CREATED)
    async def create_product(body: ProductCreate, request: Request) -> ProductRead:
        pool: asyncpg.Pool = request.state.pool
        async with pool.acquire() as connection, connection.transaction():
            row = await connection.fetchrow(
                INSERT_SQL, body.sku, body.name, body.price, body.category_id
            )
            assert row is not None  # INSERT ... RETURNING returns the row
            shown = ProductRead.model_validate(dict(row))
            await connection.fetchval(
                OUTBOX_SQL, "product.created", str(shown.id), event_payload(shown)
            )
        return shown

    return app


def asyncpg_setup_app(url: str) -> FastAPI:
    """(s) (a) with ``asyncdal.fastapi.setup(app)``: its middlewares and error handlers only."""
    app = asyncpg_app(url)
    setup(app)
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

    @app.get("/products", response_model=ProductPage)
    async def list_products(session: SessionDep, limit: Limit = 50, offset: Offset = 0) -> Any:
        page = select(Product).order_by(Product.id).limit(limit).offset(offset)
        items = list(await session.scalars(page))
        total = await session.scalar(select(func.count()).select_from(Product))
        return {"items": items, "total": total, "limit": limit, "offset": offset}

    @app.post("/products", response_model=ProductRead, status_code=status.HTTP_201_CREATED)
    async def create_product(body: ProductCreate, session: SessionDep) -> ProductRead:
        product = Product(**body.model_dump())
        session.add(product)
        await session.flush()
        shown = ProductRead.model_validate(product)
        await session.execute(
            OUTBOX_TEXT,
            {
                "event_type": "product.created",
                "key": str(shown.id),
                "payload": event_payload(shown),
            },
        )
        await session.commit()
        return shown

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


SAFETY_NETS_ON: dict[str, Any] = {
    "lazy_loads": "raise",
    "max_queries_per_request": 50,
    "leak_detection_seconds": 30.0,
    "idle_hold_seconds": 5.0,
    "request_timeout": 30.0,
}
"""Issue 16's three safety nets, all switched on: lazy loads raise, N+1 warnings, leak and
idle-hold detection, a request deadline (thresholds no benchmarked request reaches)."""


def asyncdal_safety_app(url: str) -> FastAPI:
    """(f) (c) with every safety net on."""
    configure_logging("json", level="INFO")
    _, app = _catalog(url, slow_query_seconds=1.0, **SAFETY_NETS_ON)
    return app


APPS: dict[str, Callable[[str], FastAPI]] = {
    "asyncpg": asyncpg_app,
    "asyncpg_setup": asyncpg_setup_app,
    "sqlalchemy": sqlalchemy_app,
    "asyncdal": asyncdal_app,
    "asyncdal_unobserved": asyncdal_unobserved_app,
    "asyncdal_tagged": asyncdal_tagged_app,
    "asyncdal_safety": asyncdal_safety_app,
}
"""The app factories by name, in the order every round runs them."""
