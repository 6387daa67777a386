"""Shared fixtures: the test server, a migrated catalog database, and the catalog app client.

The server is ``TEST_DATABASE_URL`` (default: the local one at 127.0.0.1:5432). When none
answers, the embedded PostgreSQL is started instead, except with ``CI=true``, where a missing
server fails the run: a green run that never reached a real database proves nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from alembic import command
from alembic.config import Config
from dependency_injector import providers
from httpx import AsyncClient
from sqlalchemy.engine import URL, make_url

from asyncdal import AsyncdalSettings, load_settings
from asyncdal.testing import DEFAULT_TEST_DATABASE_URL, create_test_database, drop_test_database
from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.helpers import app_client

ROOT = Path(__file__).resolve().parent.parent
TEST_APPLICATION_NAME = "asyncdal-tests"


def plain(url: URL) -> str:
    """A URL string with its password, for settings and drivers (never for output)."""
    return url.render_as_string(hide_password=False)


async def _answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(
            make_url(url).set(drivername="postgresql").render_as_string(hide_password=False),
            timeout=3,
        )
    except (TimeoutError, OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


@pytest.fixture(scope="session")
async def server_url() -> str:
    """A PostgreSQL server the tests may create databases on."""
    configured = os.environ.get("TEST_DATABASE_URL")
    url = configured or DEFAULT_TEST_DATABASE_URL
    if await _answers(url):
        return url
    if os.environ.get("CI") == "true" or configured:
        pytest.fail(
            f"no PostgreSQL answers at {make_url(url).render_as_string(hide_password=True)} "
            "(set TEST_DATABASE_URL, or start the server)"
        )
    from catalog.embedded import start_embedded_postgres

    return plain(start_embedded_postgres(ROOT / ".data" / "test-postgres", database="postgres"))


@pytest.fixture(scope="session")
def asyncdal_test_url(server_url: str) -> str:
    """Point the fixtures of asyncdal.testing.plugin at the same server."""
    return server_url


def alembic_config(settings: AsyncdalSettings) -> Config:
    """Alembic's config for this repository, with settings handed over in memory."""
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["settings"] = settings
    config.attributes["configure_logger"] = False
    return config


def database_settings(
    url: URL, *, reference: URL | None = None, **overrides: object
) -> AsyncdalSettings:
    """Settings with a ``main`` database at ``url`` (and a ``reference`` one, when given)."""
    main = {"url": plain(url), "application_name": TEST_APPLICATION_NAME, **overrides}
    databases: dict[str, object] = {"main": main}
    if reference is not None:
        databases["reference"] = {
            "url": plain(reference),
            "application_name": TEST_APPLICATION_NAME,
        }
    return load_settings(db=databases)


def reference_alembic_config(settings: AsyncdalSettings) -> Config:
    """Alembic's config for the reference history (``-x database=reference``)."""
    config = alembic_config(settings)
    config.cmd_opts = argparse.Namespace(x=["database=reference"])
    return config


@pytest.fixture(scope="session")
async def catalog_url(server_url: str) -> AsyncIterator[URL]:
    """A throwaway database migrated to the latest revision; dropped after the session."""
    url = await create_test_database(server_url, prefix="catalog_test")
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(database_settings(url)), "head")
        yield url
    finally:
        await drop_test_database(url)


@pytest.fixture(scope="session")
async def catalog_reference_url(server_url: str) -> AsyncIterator[URL]:
    """The catalog's reference database (a second database on the same server), migrated
    with its own history; dropped after the session."""
    url = await create_test_database(server_url, prefix="catalog_reference")
    try:
        settings = database_settings(url, reference=url)
        await asyncio.to_thread(command.upgrade, reference_alembic_config(settings), "head")
        yield url
    finally:
        await drop_test_database(url)


async def empty_tables(url: URL, *tables: str) -> None:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        await connection.execute(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY")
    finally:
        await connection.close()


@pytest.fixture
async def catalog_settings(catalog_url: URL, catalog_reference_url: URL) -> AsyncdalSettings:
    """Settings for the catalog's main and reference databases, their tables emptied first."""
    await empty_tables(catalog_url, "products", "idempotency_keys")
    await empty_tables(catalog_reference_url, "categories")
    return database_settings(catalog_url, reference=catalog_reference_url)


@pytest.fixture
async def client(catalog_settings: AsyncdalSettings) -> AsyncIterator[AsyncClient]:
    """An HTTP client on the catalog app, with its lifespan running."""
    container = CatalogContainer()
    container.settings.override(providers.Object(catalog_settings))
    async with app_client(create_app(container), base_url="http://catalog") as http:
        yield http
