"""Real server faults: backends terminated, the server restarted, a reference database stopped.

Restarts use a cluster the module owns (``asyncdal.testing.throwaway_cluster``).
"""

from __future__ import annotations

import asyncio
import statistics
import time
import uuid
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings
from asyncdal.testing import ThrowawayCluster, throwaway_cluster
from tests.conftest import plain
from tests.helpers import app_client, wait_until
from tests.integration.faultapp import build_app, create_table


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    with throwaway_cluster() as owned:
        yield owned


def settings(url: str, **overrides: object) -> DatabaseSettings:
    options: dict[str, object] = {
        "url": url,
        "application_name": f"faults-{uuid.uuid4().hex[:10]}",
        "pool_size": 4,
        "connect_timeout": 2,
        "command_timeout": 5,
        "pool_timeout": 5,
        "retry_base_delay": 0.05,
        "retry_max_delay": 0.2,
        "breaker_cool_down": 0.5,
        **overrides,
    }
    return DatabaseSettings.model_validate(options)


async def test_every_pooled_connection_terminated_between_requests(
    test_database_url: URL,
) -> None:
    dsn = plain(test_database_url.set(drivername="postgresql"))
    await create_table(dsn)
    main = Database("main", settings(plain(test_database_url)))
    name = main.settings.application_name
    async with app_client(build_app({"main": main})) as client:
        # Fill the pool: four concurrent requests hold four connections.
        responses = await asyncio.gather(*(client.get("/slow?seconds=0.2") for _ in range(4)))
        assert [r.status_code for r in responses] == [200] * 4
        observer = await asyncpg.connect(dsn)
        try:
            killed = await observer.fetchval(
                "SELECT array_agg(pid) FROM pg_stat_activity "
                "WHERE (application_name = $1 OR application_name LIKE $1 || ':%')",
                name,
            )
            assert len(killed) == 4
            terminated = await observer.fetchval(
                "SELECT count(*) FROM unnest($1::int[]) AS pid WHERE pg_terminate_backend(pid)",
                killed,
            )
            assert terminated == 4
            # pg_terminate_backend only signals: wait until those backends have exited (and
            # so have closed their sockets), with a deadline.
            await wait_until(
                lambda: observer.fetchval(
                    "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = ANY($1::int[])", killed
                ),
                timeout=5,
                interval=0.02,
                message="the terminated backends did not exit",
            )
        finally:
            await observer.close()
        # Reads, writes, and reads again: every one succeeds, none sees a dead connection.
        for _ in range(3):
            assert (await client.get("/count")).status_code == 200
            assert (await client.post("/items?tag=after-kill")).status_code == 201
        responses = await asyncio.gather(*(client.get("/count") for _ in range(8)))
        assert [r.status_code for r in responses] == [200] * 8
        assert main.breaker.state == "closed"


async def test_server_restarted_between_requests_and_during_a_transaction(
    cluster: ThrowawayCluster,
) -> None:
    await create_table(cluster.url)
    main = Database("main", settings(cluster.url))
    app = build_app({"main": main})
    async with app_client(app) as client:
        assert (await client.post("/items?tag=before")).status_code == 201
        assert (await client.get("/count")).status_code == 200

        # Between requests: the pooled connections die with the old server.
        await asyncio.to_thread(cluster.restart)
        started = time.perf_counter()
        assert (await client.get("/count")).status_code == 200
        assert (await client.post("/items?tag=after-restart")).status_code == 201
        print(
            f"\nfirst request after a restart between requests: "
            f"{time.perf_counter() - started:.3f} s"
        )

        # During a transaction: that request fails clearly, nothing of it is saved.
        held = asyncio.create_task(client.post("/items/held?tag=lost"))
        await asyncio.wait_for(app.state.inside.wait(), 10)
        await asyncio.to_thread(cluster.restart)
        app.state.proceed.set()
        response = await held
        assert response.status_code == 503
        assert "connection to the database was lost" in response.json()["detail"]
        assert "Retry-After" in response.headers

        started = time.perf_counter()
        assert (await client.get("/count")).status_code == 200
        assert (await client.post("/items?tag=next")).status_code == 201
        print(
            f"first request after a restart during a transaction: "
            f"{time.perf_counter() - started:.3f} s"
        )
        tags = await _tags(cluster.url)
        assert "lost" not in tags
        assert tags.count("after-restart") == 1
        assert tags.count("next") == 1


async def _tags(dsn: str) -> list[str]:
    connection = await asyncpg.connect(dsn)
    try:
        return [row["tag"] for row in await connection.fetch("SELECT tag FROM fault_items")]
    finally:
        await connection.close()


async def _median_latency(client, path: str, n: int = 30) -> float:  # type: ignore[no-untyped-def]
    durations = []
    for _ in range(n):
        started = time.perf_counter()
        response = await client.get(path)
        durations.append(time.perf_counter() - started)
        assert response.status_code == 200, response.text
    return statistics.median(durations)


async def test_reference_database_stopped_does_not_slow_main_endpoints(
    cluster: ThrowawayCluster, test_database_url: URL
) -> None:
    main = Database("main", settings(plain(test_database_url)))
    reference = Database("reference", settings(cluster.url, optional=True, breaker_cool_down=30))
    async with app_client(build_app({"main": main, "reference": reference})) as client:
        assert (await client.get("/reference")).status_code == 200
        before = await _median_latency(client, "/main-only")

        await asyncio.to_thread(cluster.stop)
        try:
            # The first reference requests find the server gone; once the breaker is open
            # they fail fast.
            first_fail = []
            for _ in range(reference.settings.breaker.failure_threshold + 1):
                started = time.perf_counter()
                response = await client.get("/reference")
                first_fail.append(time.perf_counter() - started)
                assert response.status_code == 503
                assert "Retry-After" in response.headers
            assert reference.breaker.state == "open"
            fast = []
            for _ in range(20):
                started = time.perf_counter()
                response = await client.get("/reference")
                fast.append(time.perf_counter() - started)
                assert response.status_code == 503
                assert "circuit breaker is open" in response.json()["detail"]
            after = await _median_latency(client, "/main-only")
            ready = await client.get("/health/ready")
        finally:
            await asyncio.to_thread(cluster.start)
        print(
            f"\nmain-only median before {before * 1000:.2f} ms, with reference down "
            f"{after * 1000:.2f} ms; reference 503 while closed: max "
            f"{max(first_fail) * 1000:.1f} ms, while open: median "
            f"{statistics.median(fast) * 1000:.2f} ms"
        )
        # Generous bounds: the point is that nothing waits for the connect timeout (2 s).
        assert after < before * 3 + 0.01
        assert statistics.median(fast) < 0.05
        assert max(first_fail) < reference.settings.timeouts.connect
        assert ready.status_code == 200
        body = ready.json()
        assert body["status"] == "degraded"
        assert body["databases"]["reference"]["breaker"]["state"] == "open"
        assert body["databases"]["main"]["breaker"]["state"] == "closed"


async def test_app_starts_and_serves_main_while_an_optional_database_is_down(
    cluster: ThrowawayCluster, test_database_url: URL
) -> None:
    main = Database("main", settings(plain(test_database_url)))
    reference = Database("reference", settings(cluster.url, optional=True))
    await asyncio.to_thread(cluster.stop)
    try:
        app = build_app({"main": main, "reference": reference}, warm_up=True)
        async with app_client(app) as client:
            assert (await client.get("/main-only")).status_code == 200
            assert (await client.get("/reference")).status_code == 503
    finally:
        await asyncio.to_thread(cluster.start)
