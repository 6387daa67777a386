"""The catalog's products API through HTTP, with its lifespan and a real database."""

from __future__ import annotations

from decimal import Decimal

from dependency_injector import providers
from httpx import AsyncClient

from asyncdal import AsyncdalSettings
from asyncdal.testing import override
from catalog.app import create_app
from catalog.container import CatalogContainer
from catalog.models import Product
from catalog.repositories import ProductRepository
from tests.helpers import app_client


async def create(client: AsyncClient, sku: str, name: str = "Thing", price: str = "9.99") -> dict:
    response = await client.post("/products", json={"sku": sku, "name": name, "price": price})
    assert response.status_code == 201, response.text
    return response.json()


async def test_create_then_get(client: AsyncClient) -> None:
    created = await create(client, "SKU-1", "Kettle", "24.50")
    response = await client.get(f"/products/{created['id']}")
    assert response.status_code == 200
    body = response.json()
    assert body["sku"] == "SKU-1"
    assert body["name"] == "Kettle"
    assert body["price"] == "24.50"
    assert body["created_at"]
    assert body["updated_at"]


async def test_missing_product_is_404(client: AsyncClient) -> None:
    assert (await client.get("/products/999999")).status_code == 404


async def test_ids_outside_bigint_are_422(client: AsyncClient) -> None:
    for product_id in ("99999999999999999999", "0", "-1", "abc"):
        assert (await client.get(f"/products/{product_id}")).status_code == 422, product_id


async def test_duplicate_sku_is_409_and_first_row_is_kept(client: AsyncClient) -> None:
    await create(client, "DUP", "First")
    response = await client.post("/products", json={"sku": "DUP", "name": "Second", "price": "1"})
    assert response.status_code == 409
    page = (await client.get("/products")).json()
    assert [item["name"] for item in page["items"]] == ["First"]


async def test_invalid_bodies_are_422(client: AsyncClient) -> None:
    bad = [
        {"sku": "A", "name": "x", "price": "-1"},
        {"sku": "", "name": "x", "price": "1"},
        {"sku": "A", "price": "1"},
        {"sku": "A", "name": "x", "price": "1", "extra": True},
        {"sku": "A", "name": "x", "price": "1.001"},
    ]
    for body in bad:
        assert (await client.post("/products", json=body)).status_code == 422, body


async def test_patch_changes_only_given_fields(client: AsyncClient) -> None:
    created = await create(client, "P-1", "Old", "5.00")
    response = await client.patch(f"/products/{created['id']}", json={"name": "New"})
    assert response.status_code == 200
    body = response.json()
    assert (body["name"], body["price"], body["sku"]) == ("New", "5.00", "P-1")
    assert body["updated_at"] >= created["updated_at"]
    assert (await client.get(f"/products/{created['id']}")).json()["name"] == "New"


async def test_patch_rejects_null_and_missing(client: AsyncClient) -> None:
    created = await create(client, "P-2")
    response = await client.patch(f"/products/{created['id']}", json={"name": None})
    assert response.status_code == 422
    assert (await client.patch("/products/424242", json={"name": "x"})).status_code == 404


async def test_patch_to_duplicate_sku_is_409(client: AsyncClient) -> None:
    await create(client, "TAKEN")
    other = await create(client, "FREE")
    response = await client.patch(f"/products/{other['id']}", json={"sku": "TAKEN"})
    assert response.status_code == 409
    assert (await client.get(f"/products/{other['id']}")).json()["sku"] == "FREE"


async def test_delete(client: AsyncClient) -> None:
    created = await create(client, "DEL")
    assert (await client.delete(f"/products/{created['id']}")).status_code == 204
    assert (await client.get(f"/products/{created['id']}")).status_code == 404
    assert (await client.delete(f"/products/{created['id']}")).status_code == 404


async def test_list_sorts_and_pages(client: AsyncClient) -> None:
    for sku, name, price in [("A", "b", "3"), ("B", "a", "1"), ("C", "c", "2")]:
        await create(client, sku, name, price)
    page = (await client.get("/products", params={"sort": "-price", "limit": 2})).json()
    assert [item["sku"] for item in page["items"]] == ["A", "C"]
    assert (page["total"], page["limit"], page["offset"]) == (3, 2, 0)
    page = (await client.get("/products", params={"sort": "name", "offset": 1})).json()
    assert [item["name"] for item in page["items"]] == ["b", "c"]


async def test_sort_injection_is_422_never_sql(client: AsyncClient) -> None:
    await create(client, "SAFE")
    for sort in ["name; drop table products", "nope", "-", "price desc"]:
        response = await client.get("/products", params={"sort": sort})
        assert response.status_code == 422, sort
    assert (await client.get("/products")).json()["total"] == 1


async def test_page_size_is_bounded(client: AsyncClient) -> None:
    assert (await client.get("/products", params={"limit": 101})).status_code == 422
    assert (await client.get("/products", params={"limit": 0})).status_code == 422
    assert (await client.get("/products", params={"offset": -1})).status_code == 422


async def test_an_offset_past_what_postgresql_takes_is_a_422_naming_it(client: AsyncClient) -> None:
    # Found by a fuzzer: asyncpg's int64 overflow was a 500.
    response = await client.get("/products", params={"offset": "118474687415564959744"})
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["loc"] == ["query", "offset"]
    last = await client.get("/products", params={"offset": str(2**63 - 1)})
    assert last.status_code == 200, last.text
    assert last.json()["items"] == []


async def test_openapi_lists_the_products_api(client: AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert {"/products", "/products/{product_id}"} <= set(paths)
    assert (await client.get("/docs")).status_code == 200


async def test_health_endpoints(client: AsyncClient) -> None:
    assert (await client.get("/health/live")).json() == {"status": "ok"}
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json()["databases"]["main"]["status"] == "ok"


async def test_metrics_endpoint(client: AsyncClient) -> None:
    await create(client, "MET")
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    body = response.text
    for name in (
        "asyncdal_connection_wait_seconds_count",
        'asyncdal_query_seconds_count{database="main",node="primary",statement="insert"}',
        "asyncdal_pool_size",
        "asyncdal_pool_checked_out",
        "asyncdal_connections_opened_total",
    ):
        assert name in body, name


async def test_the_catalogs_routes_honour_dependency_overrides(
    catalog_settings: AsyncdalSettings,
) -> None:
    # The products' routes are the app's own (not an included router): a test's override
    # of their repository must still reach them, on the read path and the write path.
    container = CatalogContainer()
    container.settings.override(providers.Object(catalog_settings))
    app = create_app(container)
    uow = override(app, ProductRepository)
    fake = uow.repository(ProductRepository)
    await fake.add(Product(id=7, sku="FAKE-7", name="From the fake", price=Decimal("1.00")))
    async with app_client(app, base_url="http://catalog") as client:
        answer = await client.get("/products/7")
        assert answer.status_code == 200, answer.text
        assert answer.json()["sku"] == "FAKE-7"
        page = (await client.get("/products")).json()
        assert [item["sku"] for item in page["items"]] == ["FAKE-7"]
