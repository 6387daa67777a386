"""The catalog end to end: a product written through HTTP reaches the catalog worker's handler."""

from __future__ import annotations

import asyncio
import logging

import pytest
from httpx import AsyncClient

from asyncdal import AsyncdalSettings, Database
from asyncdal.outbox import OutboxSettings, OutboxWorker
from catalog.worker import build_handlers


async def test_product_events_reach_the_catalog_worker(
    client: AsyncClient,
    catalog_settings: AsyncdalSettings,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OUTBOX__RELAY_URL", raising=False)
    caplog.set_level(logging.INFO, logger="catalog.worker")
    created = await client.post("/products", json={"sku": "E2E-OB", "name": "x", "price": "2"})
    product_id = created.json()["id"]
    await client.delete(f"/products/{product_id}")

    database = Database("main", catalog_settings.databases["main"])
    worker = OutboxWorker(database, build_handlers(), OutboxSettings(poll_interval=0.1))
    task = asyncio.create_task(worker.run())
    try:
        expected = {
            f"product.created: product {product_id}",
            f"product.deleted: product {product_id}",
        }
        deadline = asyncio.get_running_loop().time() + 20
        while not expected <= {record.getMessage() for record in caplog.records}:
            assert asyncio.get_running_loop().time() < deadline, caplog.text
            assert not task.done(), task
            await asyncio.sleep(0.05)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
        await database.dispose()
