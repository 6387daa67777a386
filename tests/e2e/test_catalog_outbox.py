"""The catalog end to end: a product written through HTTP reaches the catalog worker's handler;
``make worker``'s command runs against a fresh database."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from httpx import AsyncClient
from sqlalchemy.engine import URL

from asyncdal import AsyncdalSettings, Database, DatabaseSettings, UnitOfWork
from asyncdal.outbox import Outbox, OutboxSettings, OutboxWorker
from catalog.worker import build_handlers
from tests.conftest import plain
from tests.helpers import wait_until

ROOT = Path(__file__).resolve().parents[2]


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

        def all_handled() -> bool:
            if expected <= {record.getMessage() for record in caplog.records}:
                return True
            assert not task.done(), task
            return False

        await wait_until(all_handled, timeout=20, message=lambda: caplog.text)
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)
        await database.dispose()


async def test_make_worker_migrates_a_fresh_database_and_handles_product_events(
    server_url: str, tmp_path: Path
) -> None:
    """``make worker``'s command, ``python -m catalog.worker``, against an empty database:
    it migrates it, then handles a product event committed afterwards."""
    from asyncdal.testing import create_test_database, drop_test_database

    url = await create_test_database(server_url, prefix="catalog_worker_test")
    log = tmp_path / "worker.log"
    environment = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DB__", "OUTBOX__")) and name != "DATABASE_URL"
    }
    environment |= {
        "DATABASE_URL": plain(url),
        "OUTBOX__POLL_INTERVAL": "0.2",
        "PYTHONPATH": str(ROOT),
    }
    try:
        with log.open("wb") as output:
            # From an empty folder: no .env of the repository's.
            process = subprocess.Popen(
                [sys.executable, "-m", "catalog.worker"],
                cwd=tmp_path,
                env=environment,
                stdout=output,
                stderr=subprocess.STDOUT,
            )
        try:
            connection = await _connect_when_migrated(url, process, log)
            try:
                async with _unit_of_work(url) as uow:
                    product_id = await Outbox.of(uow).add("product.created", {"id": 4242}, key=4242)
                    await uow.commit()
                deadline = asyncio.get_running_loop().time() + 30

                def handled() -> bool:
                    if "product.created: product 4242" in log.read_text():
                        return True
                    assert process.poll() is None, log.read_text()
                    return False

                await wait_until(handled, timeout=30, message=log.read_text)

                async def settled() -> bool:
                    status = await connection.fetchval(
                        "SELECT status FROM asyncdal_outbox WHERE id = $1", product_id
                    )
                    return status == "done"

                left = deadline - asyncio.get_running_loop().time()
                await wait_until(settled, timeout=left, message="the event is not done")
            finally:
                await connection.close()
            process.send_signal(signal.SIGTERM)
            assert await asyncio.to_thread(process.wait, 15) == 0, log.read_text()
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
    finally:
        await drop_test_database(url)


async def _connect_when_migrated(
    url: URL, process: subprocess.Popen[bytes], log: Path
) -> asyncpg.Connection:
    """A connection to ``url`` once the worker's migrations created the outbox table."""
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))

    async def migrated() -> bool:
        if await connection.fetchval("SELECT to_regclass('asyncdal_outbox') IS NOT NULL"):
            return True
        assert process.poll() is None, log.read_text()
        return False

    await wait_until(migrated, timeout=60, message=log.read_text)
    return connection


@contextlib.asynccontextmanager
async def _unit_of_work(url: URL) -> AsyncIterator[UnitOfWork]:
    database = Database("main", DatabaseSettings(url=plain(url), pool="null"))
    try:
        async with database.unit_of_work() as uow:
            yield uow
    finally:
        await database.dispose()
