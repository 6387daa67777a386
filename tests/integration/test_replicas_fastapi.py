"""Per-request routing in FastAPI: use_primary, and X-DB-LSN on a plain asyncdal app."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, FastAPI
from sqlalchemy import text

from asyncdal import Database, Databases, UnitOfWork
from asyncdal.fastapi import (
    databases_lifespan,
    read_only_unit_of_work_provider,
    setup,
    unit_of_work_provider,
)
from asyncdal.fastapi._consistency import prefer_replicas, use_primary
from asyncdal.testing import ReplicaPair
from tests.helpers import app_client

Reader = Annotated[UnitOfWork, Depends(read_only_unit_of_work_provider())]
Writer = Annotated[UnitOfWork, Depends(unit_of_work_provider())]


def build(database: Database) -> FastAPI:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": database})))
    setup(app)

    @app.get("/port")
    async def port(uow: Reader) -> int:
        return int(await uow.session.scalar(text("SELECT inet_server_port()")))

    @app.get("/port/primary", dependencies=[Depends(use_primary())])
    async def primary_port(uow: Reader) -> int:
        return int(await uow.session.scalar(text("SELECT inet_server_port()")))

    @app.post("/items/{item_id}")
    async def add(item_id: int, uow: Writer) -> None:
        await uow.session.execute(text("INSERT INTO items VALUES (:id, 'api')"), {"id": item_id})

    @app.post("/write-then-read/{item_id}", dependencies=[Depends(prefer_replicas())])
    async def write_then_read(item_id: int, uow: Writer) -> int:
        await uow.session.execute(text("INSERT INTO items VALUES (:id, 'api')"), {"id": item_id})
        return int(await uow.session.scalar(text("SELECT inet_server_port()")))

    @app.get("/nothing")
    async def nothing() -> None:
        return None

    return app


async def test_use_primary_and_commit_position_header(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    app = build(routed())
    async with app_client(app) as client:
        assert (await client.get("/port")).json() == pair.replica.port
        assert (await client.get("/port/primary")).json() == pair.primary.port
        assert (await client.get("/port")).json() == pair.replica.port  # only that request
        preferred = await client.post("/write-then-read/777002")
        assert preferred.json() == pair.replica.port, preferred.text
        # A request that reads only answers without a position...
        assert "X-DB-LSN" not in (await client.get("/nothing")).headers
        # ...one that committed a write answers with its commit's position...
        written = await client.post("/items/777001")
        assert written.status_code == 200, written.text
        position = written.headers["X-DB-LSN"]
        # ...and a request that sent one gets it back (clients can simply echo the last).
        echoed = await client.get("/nothing", headers={"X-DB-LSN": position})
        assert echoed.headers["X-DB-LSN"] == position
