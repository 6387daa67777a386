"""Each replica has its own circuit breaker: a dead replica opens its own, not the primary's."""

from __future__ import annotations

from collections.abc import Callable

from asyncdal import Database
from asyncdal.observe._metrics import DatabaseMetrics
from asyncdal.testing import spare_port
from tests.conftest import plain
from tests.helpers import app_client, wait_until
from tests.integration.faultapp import build_app, create_table


async def test_dead_replica_opens_its_own_breaker_seen_in_health_and_metrics(
    make_database: Callable[..., Database],
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{spare_port()}/postgres"
    db = make_database(
        replicas=[nowhere],
        replica_check_interval=0.2,
        pool_size=2,
        connect_timeout=1,
        retry_attempts=1,
        breaker_failure_threshold=2,
        breaker_cool_down=30,
    )
    await create_table(plain(db.settings.sqlalchemy_url().set(drivername="postgresql")))
    metrics = DatabaseMetrics()
    async with app_client(build_app({"main": db}, metrics=metrics)) as client:

        async def replica_breaker_open() -> bool:
            if getattr(db.replica_breaker("replica-1"), "state", None) == "open":
                return True
            # Reads keep working meanwhile: the primary serves them.
            assert (await client.get("/count")).status_code == 200
            return False

        await wait_until(
            replica_breaker_open, timeout=10, message="the replica's breaker did not open"
        )
        assert db.breaker.state == "closed"
        assert (await client.get("/count")).status_code == 200

        ready = await client.get("/health/ready")
        assert ready.status_code == 200
        body = ready.json()["databases"]["main"]
        assert body["replicas"]["replica-1"]["breaker"]["state"] == "open"
        assert body["breaker"]["state"] == "closed"
        scrape = (await client.get("/metrics")).text
        assert 'asyncdal_breaker_state{database="main",node="replica-1",state="open"} 1.0' in scrape
        assert 'asyncdal_breaker_state{database="main",node="primary",state="closed"} 1.0' in scrape
