"""The catalog on a primary with a streaming replica: X-DB-LSN gives read-your-writes."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import asyncpg
import pytest
from alembic import command
from dependency_injector import providers
from httpx import AsyncClient
from sqlalchemy.engine import URL

from asyncdal import load_settings
from asyncdal.testing import ReplicaPair, create_test_database, drop_test_database
from asyncdal.testing._faultproxy import FaultProxy
from catalog.app import create_app
from catalog.container import CatalogContainer
from tests.conftest import alembic_config, database_settings, empty_tables, plain
from tests.helpers import app_client, wait_until


@pytest.fixture(scope="session")
async def replicated_catalog_url(asyncdal_replica_pair: ReplicaPair) -> AsyncIterator[URL]:
    """A migrated catalog database on the pair's primary, replicated to its replica."""
    url = await create_test_database(asyncdal_replica_pair.primary.url, prefix="catalog_rep")
    try:
        await asyncio.to_thread(command.upgrade, alembic_config(database_settings(url)), "head")
        yield url
    finally:
        await drop_test_database(url)


@pytest.fixture
async def replicated_client(
    asyncdal_replica_pair: ReplicaPair, replicated_catalog_url: URL, catalog_reference_url: URL
) -> AsyncIterator[AsyncClient]:
    await empty_tables(replicated_catalog_url, "products")
    await asyncdal_replica_pair.caught_up()
    replica = f"postgresql://postgres@127.0.0.1:{asyncdal_replica_pair.replica.port}"
    settings = load_settings(
        db={
            "main": {
                "url": plain(replicated_catalog_url),
                "replicas": [replica],
                "replica_check_interval": 0.2,
                "pool_size": 3,
            },
            # The reference database on another server than main.
            "reference": {"url": plain(catalog_reference_url), "pool_size": 2},
        }
    )
    container = CatalogContainer()
    container.settings.override(providers.Object(settings))
    app = create_app(container)
    async with app_client(app, base_url="http://catalog") as http:
        yield http


async def test_x_db_lsn_reads_your_writes_while_replay_is_paused(
    replicated_client: AsyncClient, asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    await pair.pause_replay()
    try:
        created = await replicated_client.post(
            "/products", json={"sku": "LSN-1", "name": "Fresh", "price": "1.00"}
        )
        assert created.status_code == 201, created.text
        lsn = created.headers["X-DB-LSN"]
        path = f"/products/{created.json()['id']}"
        # With the position: served where the write is visible (the primary).
        with_header = await replicated_client.get(path, headers={"X-DB-LSN": lsn})
        assert with_header.status_code == 200, with_header.text
        assert with_header.headers["X-DB-LSN"] == lsn
        # Without it: the paused replica serves the read, and it has not seen the write.
        assert (await replicated_client.get(path)).status_code == 404
    finally:
        await pair.resume_replay()
    await pair.wait_for_replay(lsn)

    async def shown() -> bool:
        return (await replicated_client.get(path)).status_code == 200

    await wait_until(shown, timeout=10, message="replica never showed the write")
    assert (await replicated_client.get(path, headers={"X-DB-LSN": lsn})).status_code == 200


async def test_patch_and_delete_without_x_db_lsn_work_while_replay_is_paused(
    replicated_client: AsyncClient, asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    await pair.pause_replay()
    try:
        created = await replicated_client.post(
            "/products", json={"sku": "RW-1", "name": "Fresh", "price": "1.00"}
        )
        assert created.status_code == 201, created.text
        path = f"/products/{created.json()['id']}"
        # The replica has not seen the product; a plain read says so...
        assert (await replicated_client.get(path)).status_code == 404
        # ...but a write's own reads run on the primary: no header needed to change it.
        changed = await replicated_client.patch(path, json={"name": "Changed"})
        assert changed.status_code == 200, changed.text
        assert changed.json()["name"] == "Changed"
        deleted = await replicated_client.delete(path)
        assert deleted.status_code == 204, deleted.text
        assert (
            await replicated_client.get(path, headers={"X-DB-LSN": deleted.headers["X-DB-LSN"]})
        ).status_code == 404
    finally:
        await pair.resume_replay()


async def test_a_write_whose_commit_position_is_lost_is_still_a_201(
    asyncdal_replica_pair: ReplicaPair, replicated_catalog_url: URL, catalog_reference_url: URL
) -> None:
    pair = asyncdal_replica_pair
    await empty_tables(replicated_catalog_url, "products")
    async with FaultProxy("127.0.0.1", pair.primary.port) as proxy:
        settings = load_settings(
            db={
                "main": {
                    "url": plain(replicated_catalog_url.set(port=proxy.port)),
                    "replicas": [f"postgresql://postgres@127.0.0.1:{pair.replica.port}"],
                    "pool_size": 2,
                },
                "reference": {"url": plain(catalog_reference_url), "pool_size": 1},
            }
        )
        container = CatalogContainer()
        container.settings.override(providers.Object(settings))
        app = create_app(container)
        async with app_client(app) as client:
            # COMMIT goes through; the connection is cut as its position is read.
            proxy.cut_answer_to(b"pg_current_wal_insert_lsn")
            created = await client.post(
                "/products", json={"sku": "LOST-LSN", "name": "Kept", "price": "1.00"}
            )
            assert created.status_code == 201, created.text
            assert "X-DB-LSN" not in created.headers
    connection = await asyncpg.connect(plain(replicated_catalog_url.set(drivername="postgresql")))
    try:
        assert (
            await connection.fetchval("SELECT name FROM products WHERE sku = 'LOST-LSN'") == "Kept"
        )
    finally:
        await connection.close()


async def test_a_bad_x_db_lsn_is_a_400(replicated_client: AsyncClient) -> None:
    response = await replicated_client.get("/products/1", headers={"X-DB-LSN": "yesterday"})
    assert response.status_code == 400
    assert "X-DB-LSN" in response.json()["detail"]


async def test_readiness_reports_the_replica(replicated_client: AsyncClient) -> None:
    body = (await replicated_client.get("/health/ready")).json()
    replica = body["databases"]["main"]["replicas"]["replica-1"]
    assert replica["status"] == "ok"
    assert replica["lag_seconds"] is not None
    # Like the primary's entry: a round trip measured now, and the replica pool's usage.
    assert isinstance(replica["latency_ms"], float)
    assert replica["pool"]["size"] == 3
    assert set(replica["pool"]) == {"size", "checked_out", "overflow", "idle"}
    metrics = (await replicated_client.get("/metrics")).text
    assert 'asyncdal_replica_lag_seconds{database="main",node="replica-1"}' in metrics
    assert 'asyncdal_pool_size{database="main",node="replica-1"} 3.0' in metrics
