"""Health checks against a real server and a closed port: ok, degraded, down; no secrets."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI

from asyncdal import Database, Databases, DatabaseSettings
from asyncdal.fastapi import databases_lifespan, health_router, setup
from asyncdal.testing import spare_port
from tests.helpers import app_client

SECRET = "p@ss:/%#?w0rd"


def unreachable(name: str, *, optional: bool) -> Database:
    settings = DatabaseSettings(
        host="127.0.0.1",
        port=spare_port(),
        user="app",
        password=SECRET,
        name="nowhere",
        optional=optional,
        connect_timeout=1,
    )
    return Database(name, settings)


@asynccontextmanager
async def ready(databases: dict[str, Database]) -> AsyncIterator[tuple[int, str]]:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases(databases), warm_up=False))
    setup(app)
    app.include_router(health_router(answer_within=2))
    async with app_client(app) as client:
        live = await client.get("/health/live")
        assert (live.status_code, live.json()) == (200, {"status": "ok"})
        response = await client.get("/health/ready")
        yield response.status_code, response.text


async def test_all_up_is_ok_with_latency_and_pool(make_database: Callable[..., Database]) -> None:
    import json

    async with ready({"main": make_database(pool_size=3)}) as (status, body):
        report = json.loads(body)
        assert status == 200
        assert report["status"] == "ok"
        main = report["databases"]["main"]
        assert main["status"] == "ok"
        assert main["latency_ms"] > 0
        assert main["pool"]["size"] == 3
        assert main["pool"]["checked_out"] == 0
        assert main["error"] is None


async def test_optional_database_down_is_degraded_not_unready(
    make_database: Callable[..., Database],
) -> None:
    import json

    databases = {"main": make_database(), "reference": unreachable("reference", optional=True)}
    async with ready(databases) as (status, body):
        report = json.loads(body)
        assert status == 200
        assert report["status"] == "degraded"
        reference = report["databases"]["reference"]
        assert (reference["status"], reference["optional"]) == ("down", True)
        assert reference["error"] == "ConnectionRefusedError"
        assert "p@ss" not in body
        assert "nowhere" not in body  # no URL parts at all


async def test_required_database_down_is_503(make_database: Callable[..., Database]) -> None:
    import json

    async with ready({"main": unreachable("main", optional=False)}) as (status, body):
        assert status == 503
        assert json.loads(body)["status"] == "down"
        assert "p@ss" not in body
        assert "Traceback" not in body
