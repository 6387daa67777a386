"""The safety nets through FastAPI, on a real server: an N+1 route warned about, a route that
holds its connection reported as a leak, and a request deadline answered 504 with nothing left
running on the server."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated

import asyncpg
import pytest
from fastapi import Depends, FastAPI
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, Databases, UnitOfWork
from asyncdal.fastapi import (
    databases_lifespan,
    read_only_unit_of_work_provider,
    setup,
    unit_of_work_provider,
)
from tests.conftest import plain
from tests.helpers import app_client, wait_until

ReadOnly = Annotated[UnitOfWork, Depends(read_only_unit_of_work_provider())]
ReadWrite = Annotated[UnitOfWork, Depends(unit_of_work_provider())]


@pytest.fixture
async def observer(test_database_url: URL) -> AsyncIterator[asyncpg.Connection]:
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    try:
        yield connection
    finally:
        await connection.close()


def build_app(db: Database) -> FastAPI:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": db})))
    setup(app)

    @app.get("/items/{count}")
    async def n_plus_one(count: int, uow: ReadOnly) -> dict[str, int]:
        await uow.session.execute(text("SELECT 1"))
        for item in range(count):
            await uow.session.execute(text("SELECT CAST(:item AS int) AS item"), {"item": item})
        return {"ran": count + 1}

    @app.get("/hold")
    async def hold(uow: ReadOnly, seconds: float = 0.5) -> dict[str, bool]:
        await uow.session.execute(text("SELECT 1"))
        await asyncio.sleep(seconds)  # an HTTP call, say, with the connection held
        return {"held": True}

    @app.get("/sleep/read")
    async def sleep_read(uow: ReadOnly, seconds: float = 30) -> dict[str, bool]:
        await uow.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
        return {"slept": True}

    @app.post("/sleep/write")
    async def sleep_write(uow: ReadWrite, seconds: float = 30) -> dict[str, bool]:
        await uow.session.execute(text("CREATE TEMP TABLE IF NOT EXISTS t (x int)"))
        await uow.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
        return {"slept": True}

    return app


async def test_a_request_past_max_queries_logs_one_warning_naming_route_and_statement(
    make_database: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncdal.queries")
    db = make_database(max_queries_per_request=5)
    async with app_client(build_app(db)) as client:
        assert (await client.get("/items/4")).status_code == 200  # 5 statements: fine
        assert [r for r in caplog.records if r.name == "asyncdal.queries"] == []
        assert (await client.get("/items/12")).status_code == 200
    records = [r for r in caplog.records if r.name == "asyncdal.queries"]
    assert len(records) == 1
    message = records[0].getMessage()
    assert "GET /items/{count} ran 13 statements" in message
    assert "12 times" in message
    assert "SELECT CAST($1 AS int) AS item" in message
    assert records[0].route == "/items/{count}"  # type: ignore[attr-defined]


async def test_a_connection_held_past_the_threshold_is_reported_once_with_its_stack(
    make_database: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncdal.leaks")
    db = make_database(leak_detection_seconds=0.2)
    async with app_client(build_app(db)) as client:
        request_id = uuid.uuid4().hex
        answer = await client.get(
            "/hold", params={"seconds": 0.6}, headers={"X-Request-ID": request_id}
        )
        assert answer.status_code == 200
        assert (await client.get("/hold", params={"seconds": 0})).status_code == 200
    leaks = [r for r in caplog.records if r.name == "asyncdal.leaks"]
    assert len(leaks) == 1
    leak = leaks[0]
    message = leak.getMessage()
    assert "GET /hold" in message
    assert request_id in message
    assert leak.held_seconds >= 0.2  # type: ignore[attr-defined]
    assert leak.statement_seconds < leak.held_seconds  # type: ignore[attr-defined]
    # The stack shows where the route took the connection, not only SQLAlchemy's insides.
    assert "test_safety_requests.py" in message
    assert "in hold" in message
    # The line that took the connection: the route's first statement.
    assert 'await uow.session.execute(text("SELECT 1"))' in message


async def test_the_longest_holders_are_listed_while_they_hold(
    make_database: Callable[..., Database],
) -> None:
    db = make_database(leak_detection_seconds=30)
    async with app_client(build_app(db)) as client:
        request = asyncio.create_task(client.get("/hold", params={"seconds": 30}))
        try:
            holders = await wait_until(db.safety_nets.holders)
            assert holders[0].owner == "GET /hold"
            assert holders[0].database == "main"
        finally:
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
        await wait_until(lambda: not db.safety_nets.holders())


async def test_a_wait_between_statements_while_holding_is_reported(
    make_database: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="asyncdal.leaks")
    db = make_database(idle_hold_seconds=0.2)
    async with app_client(build_app(db)) as client:
        assert (await client.get("/hold", params={"seconds": 0.4})).status_code == 200
        assert (await client.get("/hold", params={"seconds": 0})).status_code == 200
    idle = [r for r in caplog.records if r.name == "asyncdal.leaks"]
    assert len(idle) == 1
    assert "after its last statement" in idle[0].getMessage()
    assert "GET /hold" in idle[0].getMessage()


async def _running(observer: asyncpg.Connection, application_name: str) -> list[str]:
    rows = await observer.fetch(
        "SELECT query FROM pg_stat_activity WHERE application_name = $1 AND state <> 'idle'",
        application_name,
    )
    return [row["query"] for row in rows]


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/sleep/read"), ("POST", "/sleep/write")], ids=["read", "write"]
)
async def test_a_statement_past_the_request_deadline_is_a_504_and_cancelled_on_the_server(
    make_database: Callable[..., Database],
    observer: asyncpg.Connection,
    method: str,
    path: str,
) -> None:
    # Long enough that a busy machine still reaches the statement within it.
    db = make_database(request_timeout=1.5, pool_size=1)
    name = db.settings.application_name
    pids = "SELECT array_agg(pid) FROM pg_stat_activity WHERE application_name = $1"
    async with app_client(build_app(db)) as client:
        before = await observer.fetchval(pids, name)  # the pool's one connection, warmed up
        answer = await client.request(method, path)
        assert answer.status_code == 504
        assert "deadline" in answer.json()["detail"]
        # Cancelled on the server, not just given up on: nothing of it runs there any more.
        assert await _running(observer, name) == []
        # The connection went back to the pool clean and works (a pool of one).
        answer = await client.request(method, path, params={"seconds": 0})
        assert answer.status_code == 200
        assert answer.json() == {"slept": True}
        # The same connection: cancelled on the server, not discarded by the client.
        assert await observer.fetchval(pids, name) == before
    stale = await observer.fetchval(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = $1 "
        "AND state = 'idle in transaction'",
        name,
    )
    assert stale == 0


async def test_the_deadline_covers_the_wait_for_a_connection(
    make_database: Callable[..., Database],
) -> None:
    db = make_database(request_timeout=0.5, pool_size=1, pool_timeout=30)
    taken, release = asyncio.Event(), asyncio.Event()

    async def hold_the_only_connection() -> None:
        async with db.background_unit_of_work() as held:
            await held.session.execute(text("SELECT 1"))
            taken.set()
            await release.wait()

    async with app_client(build_app(db)) as client:
        # In a task of its own: the client runs the app in this task, where a request's unit
        # of work would join one open here.
        holder = asyncio.create_task(hold_the_only_connection())
        await taken.wait()
        answer = await client.get("/items/1", headers={"X-Request-ID": "waited-too-long"})
        assert answer.status_code == 504
        assert "deadline" in answer.json()["detail"]
        # Answered by the one middleware, with the request's headers like any other answer.
        assert answer.headers["x-request-id"] == "waited-too-long"
        release.set()
        await holder
        assert (await client.get("/items/1")).status_code == 200


async def test_health_ready_and_the_metric_show_who_holds_connections(
    make_database: Callable[..., Database],
) -> None:
    from asyncdal.fastapi import health_router, metrics_router
    from asyncdal.metrics import DatabaseMetrics

    db = make_database(leak_detection_seconds=30)
    app = FastAPI(
        lifespan=databases_lifespan(lambda: Databases({"main": db}), metrics=DatabaseMetrics())
    )
    setup(app)
    app.include_router(health_router())
    app.include_router(metrics_router())

    @app.get("/hold")
    async def hold(uow: ReadOnly, seconds: float) -> None:
        await uow.session.execute(text("SELECT 1"))
        await asyncio.sleep(seconds)

    async with app_client(app) as client:
        request = asyncio.create_task(
            client.get("/hold", params={"seconds": 30}, headers={"X-Request-ID": "held-1"})
        )
        try:
            await wait_until(db.safety_nets.holders)
            ready = (await client.get("/health/ready")).json()
            holders = ready["databases"]["main"]["holders"]
            assert holders[0]["owner"] == "GET /hold"
            assert holders[0]["request_id"] == "held-1"
            assert holders[0]["held_seconds"] >= holders[0]["statement_seconds"]
        finally:
            request.cancel()
            await asyncio.gather(request, return_exceptions=True)
        assert (await client.get("/hold", params={"seconds": 0})).status_code == 200
        metrics = (await client.get("/metrics")).text
    assert (
        'asyncdal_connection_hold_seconds_count{database="main",node="primary",route="/hold"}'
        in metrics
    )
