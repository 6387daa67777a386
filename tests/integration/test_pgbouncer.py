"""Pooler mode against a real PgBouncer 1.18 in transaction mode, started by the test as the
``postgres`` OS user on a spare port in front of the test server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from dependency_injector import providers
from sqlalchemy import exc, text
from sqlalchemy.engine import URL

from asyncdal import AsyncdalSettings, Database, DatabaseSettings, StatementTimeoutError
from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.conftest import database_settings, plain
from tests.helpers import app_client


@pytest.fixture(scope="module")
def pgbouncer(server_url: str) -> Iterator[int]:
    """A PgBouncer in transaction mode with a server pool of 5; yields its port."""
    from asyncdal.testing import run_pgbouncer

    with run_pgbouncer(server_url, pool_size=5) as port:
        yield port


def through(url: URL, port: int) -> URL:
    return url.set(host="127.0.0.1", port=port)


def catalog_settings_via(
    catalog_url: URL, reference_url: URL, port: int, **overrides: object
) -> AsyncdalSettings:
    return database_settings(through(catalog_url, port), reference=reference_url, **overrides)


async def storm(settings: AsyncdalSettings, requests: int = 200) -> list[int | str]:
    """``requests`` concurrent catalog calls, writes and reads mixed; status codes or errors."""
    container = CatalogContainer()
    container.settings.override(providers.Object(settings))
    app = create_app(container)
    outcomes: list[int | str] = []
    async with app_client(app) as client:

        async def one(i: int) -> int | str:
            try:
                if i % 4 == 0:
                    body = {"sku": f"PGB-{i}", "name": f"n{i}", "price": "1.00"}
                    return (await client.post("/products", json=body)).status_code
                if i % 4 == 1:
                    return (await client.get("/products", params={"sort": "-price"})).status_code
                response = await client.get(f"/products/{1 + i % 3}")
                return response.status_code
            except exc.DBAPIError as error:
                return str(error.orig)

        outcomes = await asyncio.gather(*(one(i) for i in range(requests)))
    return outcomes


async def seed(catalog_url: URL) -> None:
    db = Database("seed", database_settings(catalog_url).databases["main"])
    try:
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                text(
                    "INSERT INTO products (sku, name, price) VALUES "
                    "('S1','a',1), ('S2','b',2), ('S3','c',3)"
                )
            )
            await uow.commit()
    finally:
        await db.dispose()


async def test_pooler_mode_serves_200_concurrent_requests_without_errors(
    pgbouncer: int,
    catalog_settings: AsyncdalSettings,
    catalog_url: URL,
    catalog_reference_url: URL,
) -> None:
    await seed(catalog_url)
    outcomes = await storm(
        catalog_settings_via(catalog_url, catalog_reference_url, pgbouncer, pgbouncer=True)
    )
    assert all(isinstance(outcome, int) and outcome in (200, 201) for outcome in outcomes), [
        outcome for outcome in outcomes if outcome not in (200, 201)
    ][:5]


async def test_without_pooler_mode_the_prepared_statement_error_appears(
    pgbouncer: int,
    catalog_settings: AsyncdalSettings,
    catalog_url: URL,
    catalog_reference_url: URL,
) -> None:
    """Negative control: the positive test above exercises the real problem."""
    await seed(catalog_url)
    outcomes = await storm(catalog_settings_via(catalog_url, catalog_reference_url, pgbouncer))
    errors = [outcome for outcome in outcomes if isinstance(outcome, str)]
    assert any("prepared statement" in error for error in errors), outcomes[:10]


@pytest.mark.parametrize("read_only", [False, True])
async def test_statement_timeout_applies_through_the_pooler(
    pgbouncer: int, test_database_url: URL, read_only: bool
) -> None:
    settings = DatabaseSettings(
        url=plain(through(test_database_url, pgbouncer)), pgbouncer=True, statement_timeout=0.2
    )
    db = Database("main", settings)
    try:
        uow = db.read_only_unit_of_work() if read_only else db.unit_of_work()
        async with uow:
            assert await uow.session.scalar(text("SHOW statement_timeout")) == "200ms"
            with pytest.raises(StatementTimeoutError, match="statement_timeout"):
                await uow.session.execute(text("SELECT pg_sleep(2)"))
    finally:
        await db.dispose()


def test_pooler_mode_turns_off_caches_and_startup_timeout() -> None:
    from asyncdal.engine._create import connect_arguments

    arguments = connect_arguments(
        DatabaseSettings(url="postgresql://u@h/n", pgbouncer=True, statement_timeout=1)
    )
    assert arguments["statement_cache_size"] == 0
    assert arguments["prepared_statement_cache_size"] == 0
    names = {arguments["prepared_statement_name_func"]() for _ in range(3)}
    assert len(names) == 3
    assert "statement_timeout" not in arguments["server_settings"]


async def test_each_named_database_has_its_own_mode(pgbouncer: int, test_database_url: URL) -> None:
    from asyncdal import Databases
    from asyncdal.engine._create import connect_arguments

    direct = Database("main", DatabaseSettings(url=plain(test_database_url)))
    pooled = Database(
        "reference",
        DatabaseSettings(url=plain(through(test_database_url, pgbouncer)), pgbouncer=True),
    )
    databases = Databases({"main": direct, "reference": pooled})
    assert "statement_cache_size" not in connect_arguments(direct.settings)
    assert connect_arguments(pooled.settings)["statement_cache_size"] == 0

    async def query(db: Database, value: int) -> int:
        async with db.read_only_unit_of_work() as uow:
            return int(await uow.session.scalar(text("SELECT :v + 0"), {"v": value}) or 0)

    async with databases:
        results = await asyncio.gather(
            *(query(databases[name], i) for i in range(60) for name in ("main", "reference"))
        )
    assert sorted(results) == sorted([i for i in range(60) for _ in range(2)])
