"""Outbox fixtures: a fresh database per test with the catalog's tables (outbox included),
and helpers to run worker processes and in-process workers against it."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings
from asyncdal.outbox import Handlers, OutboxMetrics, OutboxSettings, OutboxWorker
from asyncdal.testing import create_test_database, drop_test_database
from catalog.models import Base
from tests.conftest import plain

ROOT = Path(__file__).resolve().parents[3]
# Fast settings for tests: short backoffs, frequent maintenance. Leases stay long enough that
# a busy machine never lets one expire under a running handler; tests of expiry shorten them.
FAST = {
    "poll_interval": 0.2,
    "lease_seconds": 10.0,
    "backoff_initial": 0.01,
    "backoff_max": 0.05,
    "maintenance_seconds": 0.3,
    "shutdown_timeout": 2.0,
}

# Each worker process appends one row per handler call here (see tests/.../handlers.py).
HANDLED_DDL = """
CREATE TABLE handled (
    event_id bigint NOT NULL, key text, worker int NOT NULL,
    started float8 NOT NULL, ended float8 NOT NULL, ok bool NOT NULL
)
"""


def dsn(url: URL) -> str:
    return plain(url.set(drivername="postgresql"))


@pytest.fixture
async def outbox_url(server_url: str) -> AsyncIterator[URL]:
    """A throwaway database with the products, outbox, inbox and ``handled`` tables."""
    url = await create_test_database(server_url, prefix="outbox_test")
    try:
        database = Database("main", DatabaseSettings(url=plain(url), pool="null"))
        async with database.engine.begin() as connection:
            await connection.run_sync(Base.metadata.create_all)
        await database.dispose()
        connection = await asyncpg.connect(dsn(url))
        try:
            await connection.execute(HANDLED_DDL)
        finally:
            await connection.close()
        yield url
    finally:
        await drop_test_database(url)


@pytest.fixture
async def sql(outbox_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection to the test database, for setting up and checking."""
    connection = await asyncpg.connect(dsn(outbox_url))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def database(outbox_url: URL) -> AsyncIterator[Database]:
    """A ``Database`` on the test database, with a unique application_name."""
    db = Database(
        "main",
        DatabaseSettings(url=plain(outbox_url), application_name=f"ob-{uuid.uuid4().hex[:8]}"),
    )
    try:
        yield db
    finally:
        await db.dispose()


async def insert_events(
    connection: asyncpg.Connection, count: int, *, keys: int = 0, event_type: str = "test.event"
) -> None:
    """Insert ``count`` events at once (keys ``k0``..``k{keys-1}`` round robin when keys)."""
    key = "'k' || (n % $3)" if keys else "NULL"
    await connection.execute(
        f"INSERT INTO asyncdal_outbox (event_type, key, payload) "
        f"SELECT $1, {key}, jsonb_build_object('n', n) FROM generate_series(1, $2) AS n",
        event_type,
        count,
        *([keys] if keys else []),
    )


async def status_counts(connection: asyncpg.Connection) -> dict[str, int]:
    rows = await connection.fetch("SELECT status, count(*) FROM asyncdal_outbox GROUP BY status")
    return {row[0]: row[1] for row in rows}


@contextlib.asynccontextmanager
async def running_worker(
    database: Database, handlers: Handlers, metrics: OutboxMetrics | None = None, **settings: Any
) -> AsyncIterator[OutboxWorker]:
    """Run an in-process worker in a task; stop it (gracefully) at the end."""
    worker = OutboxWorker(
        database, handlers, OutboxSettings(**{**FAST, **settings}), metrics=metrics
    )
    task = asyncio.create_task(worker.run())
    started = asyncio.create_task(worker.started.wait())
    done, _ = await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if task in done:
        started.cancel()
        task.result()  # raises why it stopped
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 15)


@dataclass
class WorkerProcesses:
    """Worker processes started by a test; killed at the end if still running."""

    url: URL
    processes: list[subprocess.Popen[bytes]]

    def start(
        self,
        mode: str = "record",
        *,
        fail_rate: float = 0.0,
        sleep: float = 0.0,
        **settings: Any,
    ) -> subprocess.Popen[bytes]:
        """Start ``asyncdal outbox run`` with the test handlers in ``mode`` (``sleep``: the
        seconds a ``record`` handler sleeps when the payload does not say)."""
        environment = {
            **os.environ,
            "DATABASE_URL": plain(self.url),
            "DB__MAIN__APPLICATION_NAME": "outbox-test-worker",
            "OUTBOX_TEST_MODE": mode,
            "OUTBOX_TEST_FAIL_RATE": str(fail_rate),
            "OUTBOX_TEST_SLEEP": str(sleep),
            "PYTHONPATH": str(ROOT),
        }
        for name, value in {**FAST, **settings}.items():
            environment[f"OUTBOX__{name.upper()}"] = str(value)
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "asyncdal",
                "outbox",
                "run",
                "--handlers",
                "tests.integration.outbox.handlers:build",
                "--log-level",
                "WARNING",
            ],
            cwd=ROOT,
            env=environment,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.processes.append(process)
        return process

    def stop(self, process: subprocess.Popen[bytes], timeout: float = 15) -> int:
        process.send_signal(signal.SIGTERM)
        return process.wait(timeout)


@pytest.fixture
def worker_processes(outbox_url: URL) -> Iterator[WorkerProcesses]:
    processes = WorkerProcesses(outbox_url, [])
    try:
        yield processes
    finally:
        for process in processes.processes:
            if process.poll() is None:
                process.kill()
            process.wait()
            if process.stderr is not None:
                process.stderr.close()


def peek_stderr(process: subprocess.Popen[bytes]) -> bytes:
    """What the process wrote to stderr so far (read without blocking)."""
    assert process.stderr is not None
    os.set_blocking(process.stderr.fileno(), False)
    chunk = process.stderr.read() or b""
    seen: bytes = getattr(process, "_seen_stderr", b"") + chunk
    process._seen_stderr = seen  # type: ignore[attr-defined]
    return seen
