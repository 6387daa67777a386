"""Readiness follows a real server that stops and comes back (a cluster the test owns)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator

import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy.engine import URL

from asyncdal import Database, Databases, DatabaseSettings
from asyncdal.fastapi import databases_lifespan, health_router, setup
from asyncdal.testing import ThrowawayCluster, throwaway_cluster
from tests.conftest import plain


@pytest.fixture(scope="module")
def cluster() -> Iterator[ThrowawayCluster]:
    with throwaway_cluster() as owned:
        yield owned


async def client_for(databases: dict[str, Database]) -> AsyncIterator[AsyncClient]:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases(databases)))
    setup(app)
    app.include_router(health_router(answer_within=2))
    async with (
        LifespanManager(app) as manager,
        AsyncClient(transport=ASGITransport(app=manager.app), base_url="http://t") as client,
    ):
        yield client


async def ready(client: AsyncClient) -> tuple[int, str]:
    response = await client.get("/health/ready")
    return response.status_code, json.loads(response.text)["status"]


async def test_required_database_stopped_is_503_then_200_when_back(
    cluster: ThrowawayCluster,
) -> None:
    main = Database("main", DatabaseSettings(url=cluster.url, pool_size=2, connect_timeout=2))
    async for client in client_for({"main": main}):
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
    async for client in client_for(databases):
        assert await ready(client) == (200, "ok")
        await asyncio.to_thread(cluster.stop)
        try:
            assert await ready(client) == (200, "degraded")
        finally:
            await asyncio.to_thread(cluster.start)
        assert await ready(client) == (200, "ok")
