"""Network faults through asyncdal.testing.FaultProxy: blackhole, reset, answers cut off."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest
from httpx import AsyncClient
from sqlalchemy import select, text
from sqlalchemy.engine import URL
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdal import Database, DatabaseSettings
from asyncdal.observe._metrics import DatabaseMetrics
from asyncdal.testing import FaultProxy
from tests.conftest import plain
from tests.helpers import app_client, wait_until
from tests.integration.faultapp import build_app, create_table

CONNECT, COMMAND, POOL = 1.0, 1.0, 1.0


@pytest.fixture
async def proxy(test_database_url: URL) -> AsyncIterator[FaultProxy]:
    await create_table(plain(test_database_url.set(drivername="postgresql")))
    async with FaultProxy(
        test_database_url.host or "127.0.0.1", test_database_url.port or 5432
    ) as p:
        yield p


def through(proxy: FaultProxy, test_database_url: URL, **overrides: object) -> Database:
    options: dict[str, object] = {
        "url": plain(test_database_url.set(port=proxy.port)),
        "application_name": f"proxy-{uuid.uuid4().hex[:10]}",
        "pool_size": 2,
        "connect_timeout": CONNECT,
        "command_timeout": COMMAND,
        "pool_timeout": POOL,
        "retry_base_delay": 0.02,
        "retry_max_delay": 0.1,
        "breaker_failure_threshold": 2,
        "breaker_cool_down": 1.0,
        **overrides,
    }
    return Database("main", DatabaseSettings.model_validate(options))


async def timed(client: AsyncClient, method: str, path: str) -> tuple[int, float, dict]:
    started = time.perf_counter()
    response = await client.request(method, path)
    return response.status_code, time.perf_counter() - started, response.json()


async def until_ok(client: AsyncClient, path: str, deadline: float) -> float:
    """Poll ``path`` until it answers 200; return how long that took."""
    started = time.perf_counter()

    async def ok() -> bool:
        return (await client.get(path)).status_code == 200

    await wait_until(ok, timeout=deadline, message=f"{path} did not recover")
    return time.perf_counter() - started


async def break_until_open(client: AsyncClient, db: Database) -> list[tuple[int, float]]:
    """Send requests until the breaker opens; each must fail in time, with a 503 or 504."""
    seen: list[tuple[int, float]] = []
    while db.breaker.state != "open":
        status, seconds, _ = await timed(client, "GET", "/count")
        seen.append((status, seconds))
        assert status in (503, 504), status
        assert seconds < CONNECT + COMMAND + POOL + 0.5
        assert len(seen) <= 6, "the breaker did not open"
    return seen


@pytest.mark.parametrize("fault", ["blackhole", "reset"])
async def test_link_fault_fails_in_time_opens_breaker_fails_fast_and_recovers(
    proxy: FaultProxy, test_database_url: URL, fault: str
) -> None:
    db = through(proxy, test_database_url)
    metrics = DatabaseMetrics()
    async with app_client(build_app({"main": db}, metrics=metrics)) as client:
        assert (await client.get("/count")).status_code == 200
        getattr(proxy, fault)()

        failures = await break_until_open(client, db)
        fast = [await timed(client, "GET", "/count") for _ in range(10)]
        assert all(status == 503 for status, _, _ in fast)
        assert all("circuit breaker is open" in body["detail"] for _, _, body in fast)
        assert max(seconds for _, seconds, _ in fast) < 0.1
        ready = await client.get("/health/ready")
        assert ready.status_code == 503
        assert ready.json()["databases"]["main"]["breaker"]["state"] == "open"
        scrape = (await client.get("/metrics")).text
        assert 'asyncdal_breaker_state{database="main",node="primary",state="open"} 1.0' in scrape
        assert (
            'asyncdal_breaker_transitions_total{database="main",node="primary",state="open"}'
            in scrape
        )

        proxy.heal()
        recovered = await until_ok(client, "/count", deadline=db.settings.breaker.cool_down + 5)
        assert db.breaker.state == "closed"
        assert (await client.post("/items?tag=healed")).status_code == 201
        print(
            f"\n{fault}: failures until open {[(s, round(t, 3)) for s, t in failures]}; "
            f"fail-fast max {max(t for _, t, _ in fast) * 1000:.2f} ms; "
            f"recovered {recovered:.2f} s after heal"
        )


async def test_read_whose_answer_is_cut_is_retried_but_a_write_is_not(
    proxy: FaultProxy, test_database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncdal.retry")
    db = through(proxy, test_database_url, breaker_failure_threshold=5)
    tag = f"cut-{uuid.uuid4().hex[:8]}"
    async with app_client(build_app({"main": db})) as client:
        assert (await client.get("/main-only")).status_code == 200
        # Not run on this connection before, so its text is sent (not a cached statement).
        proxy.cut_answer_to(b"SELECT count(*) FROM fault_items")
        response = await client.get("/count")
        assert response.status_code == 200  # retried on a new connection
        assert "read on a dropped connection" in caplog.text

        proxy.cut_answer_to(b"INSERT INTO fault_items")
        response = await client.post(f"/items?tag={tag}")
        assert response.status_code == 503
        assert "connection to the database was lost" in response.json()["detail"]
        assert (await client.post(f"/items?tag={tag}-next")).status_code == 201
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    try:
        saved = await connection.fetchval("SELECT count(*) FROM fault_items WHERE tag = $1", tag)
    finally:
        await connection.close()
    assert saved == 0  # the connection died before COMMIT: rolled back, and not retried


async def test_half_open_probe_on_a_pooled_connection_pings_it_first(
    proxy: FaultProxy, test_database_url: URL
) -> None:
    db = through(proxy, test_database_url, breaker_cool_down=0.2)

    async def after_cool_down() -> None:
        await wait_until(
            lambda: db.breaker.retry_after() <= 0,
            timeout=10,
            interval=0.02,
            message="the breaker's cool-down did not end",
        )

    async with app_client(build_app({"main": db})) as client:
        assert (await client.get("/count")).status_code == 200  # one healthy pooled connection
        proxy.blackhole()  # the pooled connection looks fine but will never answer
        for _ in range(db.breaker.failure_threshold):
            db.breaker.record_failure(OSError("simulated"))
        await after_cool_down()
        status, seconds, body = await timed(client, "GET", "/count")
        # The probe pinged the pooled connection, which did not answer: open again.
        assert status == 503
        assert "the probe failed" in body["detail"]
        assert seconds < COMMAND + 0.5
        assert db.breaker.state == "open"

        proxy.heal()
        await after_cool_down()
        healed = await client.get("/count")
        assert healed.status_code == 200, healed.text
        assert db.breaker.state == "closed"


async def test_half_open_probe_is_bounded_by_connect_timeout_not_command_timeout(
    proxy: FaultProxy, test_database_url: URL
) -> None:
    # A long COMMAND_TIMEOUT must not hold the probe: it gets CONNECT_TIMEOUT, as a connect would.
    db = through(proxy, test_database_url, command_timeout=60, breaker_cool_down=0.2)
    async with app_client(build_app({"main": db})) as client:
        assert (await client.get("/count")).status_code == 200
        proxy.blackhole()
        for _ in range(db.breaker.failure_threshold):
            db.breaker.record_failure(OSError("simulated"))
        await wait_until(
            lambda: db.breaker.retry_after() <= 0,
            timeout=10,
            interval=0.02,
            message="the breaker's cool-down did not end",
        )
        async with asyncio.timeout(CONNECT + 3):
            status, seconds, body = await timed(client, "GET", "/count")
        assert status == 503
        assert "the probe failed" in body["detail"]
        assert seconds < CONNECT + 0.5
        assert db.breaker.state == "open"
        proxy.heal()


class _Base(DeclarativeBase):
    pass


class _FaultItem(_Base):
    __tablename__ = "fault_items"
    id: Mapped[int] = mapped_column(primary_key=True)
    tag: Mapped[str]


async def test_a_retried_read_keeps_what_the_unit_of_work_read_before(
    proxy: FaultProxy, test_database_url: URL
) -> None:
    """Retrying a dropped read must not expire the objects read before it in the same unit
    of work: an expired attribute is loaded lazily when used, which in async code raises
    ``MissingGreenlet`` (a 500 in the catalog's ``GET /products``, found by the chaos suite:
    its page of products was read, the count's connection was killed, the count retried)."""
    db = through(proxy, test_database_url, breaker_failure_threshold=5)
    try:
        async with db.read_only_unit_of_work() as uow:
            item = await uow.session.scalar(select(_FaultItem).where(_FaultItem.id == 0))
            assert item is not None
            proxy.cut_answer_to(b"SELECT count(*) FROM fault_items")
            assert await uow.session.scalar(text("SELECT count(*) FROM fault_items")) >= 1
            assert item.tag == "locked"  # still loaded, not expired by the retry
    finally:
        await db.dispose()
