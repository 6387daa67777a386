"""A throwaway database with the blog's tables for the session, emptied after each test, and a
client on the app with its lifespan running.

Run with ``pytest -W "ignore:The declarative_mixin decorator:DeprecationWarning"
examples/blog_advanced_alchemy/tests`` here, where pytest turns warnings into errors and
advanced-alchemy 1.12 still uses a decorator SQLAlchemy 2.1 deprecates.
"""

import os
from collections.abc import AsyncIterator
from uuid import uuid4

import pytest
from advanced_alchemy.base import orm_registry
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient
from sqlalchemy import URL, make_url, text
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from blog_advanced_alchemy.app import create_app

SERVER = make_url(os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1/postgres"))


@pytest.fixture(scope="session")
async def database_url() -> AsyncIterator[URL]:
    server = create_async_engine(SERVER.set(drivername="postgresql+asyncpg"))
    server = server.execution_options(isolation_level="AUTOCOMMIT")
    name = f"blog_{uuid4().hex}"
    async with server.connect() as connection:
        await connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = server.url.set(database=name)
    engine = create_async_engine(url)
    async with engine.begin() as connection:
        await connection.run_sync(orm_registry.metadata.create_all)
    await engine.dispose()
    yield url
    async with server.connect() as connection:
        await connection.execute(text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    await server.dispose()


@pytest.fixture
async def engine(database_url: URL) -> AsyncIterator[AsyncEngine]:
    engine = create_async_engine(database_url)
    yield engine
    async with engine.begin() as connection:
        await connection.execute(text("TRUNCATE author, post, event RESTART IDENTITY CASCADE"))
    await engine.dispose()


@pytest.fixture
async def client(database_url: URL, engine: AsyncEngine) -> AsyncIterator[AsyncClient]:
    app = create_app(database_url.render_as_string(hide_password=False))
    async with LifespanManager(app) as manager:
        transport = ASGITransport(app=manager.app)
        async with AsyncClient(transport=transport, base_url="http://test") as client:
            yield client
