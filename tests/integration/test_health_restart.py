"""Readiness follows a real server that stops and comes back (a cluster the test owns)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator

import pytest
from fastapi import FastAPI
from httpx import AsyncClient
from sqlalchemy.engine import URL

from asyncdal import Database, Databases, DatabaseSettings
from asyncdal.fastapi import databases_lifespan, health_router, setup
from asyncdal.testing import ThrowawayCluster, throwaway_cluster
from tests.conftest import plain
from tests.helpers import app_client


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    with throwaway_cluster() as owned:
        yield owned


def health_app(databases: dict[str, Database]) -> FastAPI:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases(databases)))
    setup(app)
    app.include_router(health_router(answer_within=2))
    return app


async def ready(client: AsyncClient) -> tuple[int, str]:
    response = await client.get("/health/ready")
    return response.status_code, json.loads(response.text)["status"]


async def test_required_database_stopped_is_503_then_200_when_back(
    cluster: ThrowawayCluster,
) -> None:
    main = Database("main", DatabaseSettings(url=cluster.url, pool_size=2, connect_timeout=2))
    async with app_client(health_app({"main": main})) as client:
        assert await ready(client) == (200, "ok")
        await asyncio.to_thread(cluster.stop)
        try:
            assert await ready(client) == (503, "down")
        finally:
            await asyncio.to_thread(cluster.start)
        assert await ready(client) == (200, "ok")
        # A restart between two checks kills the pooled connections; readiness must not
        # mistake a dead pooled connection for a dead server.
        await asyncio.to_thread(cluster.restart)
        assert await ready(client) == (200, "ok")


async def test_optional_database_stopped_is_degraded_but_ready(
    cluster: ThrowawayCluster, test_database_url: URL
) -> None:
    databases = {
        "main": Database("main", DatabaseSettings(url=plain(test_database_url))),
        "reference": Database(
            "reference", DatabaseSettings(url=cluster.url, optional=True, connect_timeout=2)
        ),
    }
    async with app_client(health_app(databases)) as client:
        assert await ready(client) == (200, "ok")
        await asyncio.to_thread(cluster.stop)
        try:
            assert await ready(client) == (200, "degraded")
        finally:
            await asyncio.to_thread(cluster.start)
        assert await ready(client) == (200, "ok")
