"""The catalog with its reference database down: by default only the category endpoints fail."""

from __future__ import annotations

import statistics
import time
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from httpx import AsyncClient
from sqlalchemy.engine import URL

from asyncdal.testing import FaultProxy
from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.conftest import TEST_APPLICATION_NAME, empty_tables, plain
from tests.helpers import app_client, assert_documented


async def median_latency(client: AsyncClient, path: str, n: int = 30) -> float:
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get(path)
        durations.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return statistics.median(durations)


@pytest.fixture
async def reference_proxied(
    catalog_url: URL,
    catalog_reference_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> AsyncIterator[tuple[AsyncClient, FaultProxy]]:
    """The catalog built from the environment (as in production), its reference database
    behind a fault proxy."""
    await empty_tables(catalog_url, "products", "idempotency_keys")
    await empty_tables(catalog_reference_url, "categories")
    async with FaultProxy(
        catalog_reference_url.host or "127.0.0.1", catalog_reference_url.port or 5432
    ) as proxy:
        # Nothing says DB__REFERENCE__OPTIONAL, so the catalog's default applies (and no
        # developer's .env is read: it is looked for in the working directory).
        monkeypatch.chdir(tmp_path)
        for name in ("DATABASE_URL", "DB__REFERENCE__OPTIONAL", "DB__MAIN__OPTIONAL"):
            monkeypatch.delenv(name, raising=False)
        monkeypatch.setenv("DB__MAIN__URL", plain(catalog_url))
        monkeypatch.setenv("DB__MAIN__APPLICATION_NAME", TEST_APPLICATION_NAME)
        monkeypatch.setenv("DB__REFERENCE__URL", plain(catalog_reference_url.set(port=proxy.port)))
        monkeypatch.setenv("DB__REFERENCE__APPLICATION_NAME", TEST_APPLICATION_NAME)
        monkeypatch.setenv("DB__REFERENCE__CONNECT_TIMEOUT", "1")
        monkeypatch.setenv("DB__REFERENCE__BREAKER_FAILURE_THRESHOLD", "2")
        monkeypatch.setenv("DB__REFERENCE__BREAKER_COOL_DOWN", "30")
        app = create_app(CatalogContainer())
        try:
            async with app_client(app) as client:
                yield client, proxy
        finally:
            proxy.heal()


async def test_reference_down_fails_only_category_endpoints_fast_and_readiness_degrades(
    reference_proxied: tuple[AsyncClient, FaultProxy],
) -> None:
    client, proxy = reference_proxied
    created = await client.post("/products", json={"sku": "MUG-1", "name": "Mug", "price": "4.00"})
    assert created.status_code == 201, created.text
    path = f"/products/{created.json()['id']}"
    assert (await client.get("/categories")).status_code == 200
    before = await median_latency(client, path)

    proxy.reset()  # the reference database is gone, pooled connections included
    first_fail = []
    for _ in range(3):
        started = time.perf_counter()
        response = await client.get("/categories")
        first_fail.append(time.perf_counter() - started)
        assert response.status_code == 503, response.text
        assert "Retry-After" in response.headers
    fast = []
    for _ in range(10):
        started = time.perf_counter()
        response = await client.get("/categories")
        fast.append(time.perf_counter() - started)
        assert response.status_code == 503
        assert "circuit breaker is open" in response.json()["detail"]
    after = await median_latency(client, path)
    listed = await client.get("/products")
    again = await client.post("/products", json={"sku": "MUG-2", "name": "Mug 2", "price": "4.00"})
    ready = await client.get("/health/ready")
    print(
        f"\ncatalog, reference down: main-only median before {before * 1000:.2f} ms, after "
        f"{after * 1000:.2f} ms; /categories 503 max {max(first_fail) * 1000:.1f} ms, then "
        f"median {statistics.median(fast) * 1000:.2f} ms"
    )
    assert listed.status_code == 200
    assert again.status_code == 201
    assert after < before * 3 + 0.01
    assert max(first_fail) < 1.0 + 0.5
    assert statistics.median(fast) < 0.05
    assert ready.status_code == 200
    body = ready.json()
    assert body["status"] == "degraded"
    assert body["databases"]["reference"]["breaker"]["state"] == "open"
    assert body["databases"]["main"]["status"] == "ok"


async def test_idempotent_replay_needs_no_reference_database(
    reference_proxied: tuple[AsyncClient, FaultProxy], catalog_reference_url: URL
) -> None:
    client, proxy = reference_proxied
    connection = await asyncpg.connect(plain(catalog_reference_url.set(drivername="postgresql")))
    try:
        category = await connection.fetchval(
            "INSERT INTO categories (name) VALUES ('Kitchen') RETURNING id"
        )
    finally:
        await connection.close()
    product = {"sku": "POT-1", "name": "Pot", "price": "9.00", "category_id": category}
    headers = {"Idempotency-Key": "order-ref-1"}
    first = await client.post("/products", json=product, headers=headers)
    assert first.status_code == 201, first.text
    proxy.reset()  # the reference database is gone
    replay = await client.post("/products", json=product, headers=headers)
    assert replay.status_code == 201, replay.text
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.json() == first.json()


async def test_the_answers_with_the_reference_database_down_match_the_document(
    reference_proxied: tuple[AsyncClient, FaultProxy],
) -> None:
    client, proxy = reference_proxied
    document = (await client.get("/openapi.json")).json()
    proxy.reset()  # the reference database is gone
    unavailable = await client.get("/categories")
    assert unavailable.status_code == 503, unavailable.text
    assert_documented(document, "/categories", "get", unavailable)
    named = await client.post(
        "/products", json={"sku": "C-1", "name": "c", "price": "1", "category_id": 1}
    )
    assert named.status_code == 503, named.text
    assert_documented(document, "/products", "post", named)
    degraded = await client.get("/health/ready")
    assert_documented(document, "/health/ready", "get", degraded)
