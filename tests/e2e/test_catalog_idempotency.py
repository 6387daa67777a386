"""POST /products with Idempotency-Key, and a connection cut while COMMIT is in flight."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from dependency_injector import providers
from httpx import AsyncClient
from sqlalchemy.engine import URL

from asyncdal import AsyncdalSettings
from asyncdal.testing import FaultProxy
from catalog.app import create_app
from catalog.container import CatalogContainer
from catalog.idempotency import request_hash
from catalog.schemas import ProductCreate
from tests.conftest import database_settings, plain
from tests.helpers import app_client

KETTLE = {"sku": "KETTLE-1", "name": "Kettle", "price": "24.50"}


async def rows_with_sku(url: URL, sku: str) -> int:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        return int(await connection.fetchval("SELECT count(*) FROM products WHERE sku = $1", sku))
    finally:
        await connection.close()


async def test_same_key_returns_the_first_answer_and_creates_one_row(
    client: AsyncClient, catalog_url: URL
) -> None:
    headers = {"Idempotency-Key": "order-42"}
    first = await client.post("/products", json=KETTLE, headers=headers)
    again = await client.post("/products", json=KETTLE, headers=headers)
    assert first.status_code == again.status_code == 201
    assert again.json() == first.json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert await rows_with_sku(catalog_url, "KETTLE-1") == 1


async def test_same_key_with_another_body_is_refused(client: AsyncClient) -> None:
    headers = {"Idempotency-Key": "order-43"}
    assert (await client.post("/products", json=KETTLE, headers=headers)).status_code == 201
    other = {**KETTLE, "sku": "KETTLE-2"}
    response = await client.post("/products", json=other, headers=headers)
    assert response.status_code == 422
    (problem,) = response.json()["detail"]
    assert problem["loc"] == ["header", "Idempotency-Key"]
    assert "different request" in problem["msg"]


async def test_concurrent_retries_with_one_key_create_one_row(
    client: AsyncClient, catalog_url: URL
) -> None:
    headers = {"Idempotency-Key": "order-44"}
    answers = await asyncio.gather(
        *(client.post("/products", json=KETTLE, headers=headers) for _ in range(5))
    )
    assert {answer.status_code for answer in answers} == {201}
    assert len({answer.json()["id"] for answer in answers}) == 1
    assert await rows_with_sku(catalog_url, "KETTLE-1") == 1


@pytest.fixture
async def proxied_client(
    catalog_settings: AsyncdalSettings, catalog_url: URL, catalog_reference_url: URL
) -> AsyncIterator[tuple[AsyncClient, FaultProxy]]:
    async with FaultProxy(catalog_url.host or "127.0.0.1", catalog_url.port or 5432) as proxy:
        container = CatalogContainer()
        container.settings.override(
            providers.Object(
                database_settings(catalog_url.set(port=proxy.port), reference=catalog_reference_url)
            )
        )
        app = create_app(container)
        async with app_client(app) as http:
            yield http, proxy


async def test_connection_cut_during_commit_is_not_retried_and_the_key_makes_retry_safe(
    proxied_client: tuple[AsyncClient, FaultProxy], catalog_url: URL
) -> None:
    client, proxy = proxied_client
    headers = {"Idempotency-Key": "order-45"}
    proxy.cut_answer_to(b"COMMIT")
    cut = await client.post("/products", json=KETTLE, headers=headers)
    assert cut.status_code == 503
    assert cut.json()["outcome"] == "unknown"
    assert cut.headers["Retry-After"] == "1"
    assert "may or may not have been saved" in cut.json()["detail"]
    assert "not retried" in cut.json()["detail"]
    # The server got COMMIT before the answer was cut: the row is there, exactly once.
    assert await rows_with_sku(catalog_url, "KETTLE-1") == 1

    proxy.heal()
    retry = await client.post("/products", json=KETTLE, headers=headers)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    assert await rows_with_sku(catalog_url, "KETTLE-1") == 1


async def test_key_claimed_without_a_recorded_answer_is_a_409_not_a_second_row(
    client: AsyncClient, catalog_url: URL
) -> None:
    fingerprint = request_hash(
        "POST", "/products", ProductCreate(**KETTLE).model_dump_json().encode()
    )
    connection = await asyncpg.connect(plain(catalog_url.set(drivername="postgresql")))
    try:
        await connection.execute(
            "INSERT INTO idempotency_keys (key, request_hash) VALUES ($1, $2)",
            "order-46",
            fingerprint,
        )
    finally:
        await connection.close()
    response = await client.post("/products", json=KETTLE, headers={"Idempotency-Key": "order-46"})
    assert response.status_code == 409
    assert "no recorded answer" in response.json()["detail"]
    assert await rows_with_sku(catalog_url, "KETTLE-1") == 0
