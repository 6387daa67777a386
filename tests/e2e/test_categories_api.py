"""Categories live in the reference database; products name theirs through it."""

from __future__ import annotations

import asyncpg
from httpx import AsyncClient
from sqlalchemy.engine import URL

from tests.conftest import plain


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
