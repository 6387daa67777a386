"""Categories live in the reference database; products name theirs through it."""

from __future__ import annotations

import asyncio
import os
import re
import sys
from pathlib import Path

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from dependency_injector import providers
from httpx import AsyncClient
from sqlalchemy.engine import URL

from asyncdal import ConfigurationError
from asyncdal.testing import create_test_database, drop_test_database
from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.conftest import ROOT, database_settings, plain


async def add_categories(reference_url: URL, *names: str) -> dict[str, int]:
    connection = await asyncpg.connect(plain(reference_url.set(drivername="postgresql")))
    try:
        rows = await connection.fetch(
            "INSERT INTO categories (name) SELECT unnest($1::text[]) RETURNING id, name",
            list(names),
        )
    finally:
        await connection.close()
    return {row["name"]: row["id"] for row in rows}


async def test_categories_come_from_the_reference_database(
    client: AsyncClient, catalog_reference_url: URL
) -> None:
    await add_categories(catalog_reference_url, "Tea", "Coffee")
    response = await client.get("/categories")
    assert response.status_code == 200
    assert [category["name"] for category in response.json()] == ["Coffee", "Tea"]


async def test_products_show_their_category_name(
    client: AsyncClient, catalog_reference_url: URL
) -> None:
    ids = await add_categories(catalog_reference_url, "Kitchen", "Garden")
    body = {"sku": "K-1", "name": "Kettle", "price": "20", "category_id": ids["Kitchen"]}
    created = await client.post("/products", json=body)
    assert created.status_code == 201, created.text
    assert (created.json()["category_id"], created.json()["category"]) == (
        ids["Kitchen"],
        "Kitchen",
    )
    product_id = created.json()["id"]
    assert (await client.get(f"/products/{product_id}")).json()["category"] == "Kitchen"
    patched = await client.patch(f"/products/{product_id}", json={"category_id": ids["Garden"]})
    assert patched.json()["category"] == "Garden"
    page = (await client.get("/products")).json()
    assert [item["category"] for item in page["items"]] == ["Garden"]
    plain_product = await client.post("/products", json={"sku": "N-1", "name": "n", "price": "1"})
    assert plain_product.json()["category"] is None


async def test_unknown_category_is_422_and_nothing_is_saved(
    client: AsyncClient, catalog_reference_url: URL
) -> None:
    body = {"sku": "X-1", "name": "x", "price": "1", "category_id": 424242}
    response = await client.post("/products", json=body)
    assert response.status_code == 422
    assert "category 424242 does not exist" in response.text
    assert (await client.get("/products")).json()["total"] == 0
    created = await client.post("/products", json={"sku": "X-2", "name": "x", "price": "1"})
    patched = await client.patch(f"/products/{created.json()['id']}", json={"category_id": 424242})
    assert patched.status_code == 422


async def test_the_catalog_refuses_to_start_without_its_reference_database(
    catalog_url: URL,
) -> None:
    container = CatalogContainer()
    container.settings.override(providers.Object(database_settings(catalog_url)))
    with pytest.raises(ConfigurationError, match="DB__REFERENCE__URL"):
        async with LifespanManager(create_app(container)):
            pass


def migrate_recipe() -> list[list[str]]:
    """``make migrate``'s commands, read from the Makefile, with this virtualenv's ``$(BIN)``
    (running make itself would first run ``make install``)."""
    makefile = (ROOT / "Makefile").read_text()
    block = re.search(r"^migrate:.*\n((?:\t.+\n)+)", makefile, flags=re.MULTILINE)
    assert block is not None, "no migrate target in the Makefile"
    bin_dir = str(Path(sys.executable).parent)
    return [line.strip().replace("$(BIN)", bin_dir).split() for line in block.group(1).splitlines()]


async def tables_of(url: URL) -> set[str]:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


async def test_make_migrate_migrates_both_histories(server_url: str, tmp_path: Path) -> None:
    main = await create_test_database(server_url, prefix="migrate_main")
    reference = await create_test_database(server_url, prefix="migrate_ref")
    try:
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
        env.update(DATABASE_URL=plain(main), DB__REFERENCE__URL=plain(reference))
        for command in migrate_recipe():
            process = await asyncio.create_subprocess_exec(
                *command,
                cwd=ROOT,
                env=env,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            _, err = await process.communicate()
            assert process.returncode == 0, err.decode()[-2000:]
        assert "products" in await tables_of(main)
        assert "categories" in await tables_of(reference)
    finally:
        await drop_test_database(main)
        await drop_test_database(reference)
