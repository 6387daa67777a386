"""asyncdal.fastapi answers data the database refused: a duplicate key or a missing parent is
a 409 naming the constraint, in the handler (a flush) or at the middleware's COMMIT (a deferred
constraint); an invalid value is a 422; any other exception a JSON 500. Every answer carries
``X-Request-ID``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

import asyncpg
import pytest
from asgi_lifespan import LifespanManager
from fastapi import Depends, FastAPI
from httpx import ASGITransport, AsyncClient
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal import Database, Databases
from asyncdal.fastapi import databases_lifespan, session_provider, setup
from tests.conftest import plain

# At module level: FastAPI resolves the (string) annotations in the module's namespace.
Session = Annotated[AsyncSession, Depends(session_provider())]
AuditSession = Annotated[AsyncSession, Depends(session_provider("audit"))]
SECRET = "s3cret-sku-0b7e"


@pytest.fixture
async def raw(test_database_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """Tables with an immediate and a deferred unique constraint, and a foreign key."""
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    await connection.execute(
        """
        DROP TABLE IF EXISTS fe_items, fe_groups;
        CREATE TABLE fe_groups (id int PRIMARY KEY);
        CREATE TABLE fe_items (
            id int PRIMARY KEY,
            sku text NOT NULL CONSTRAINT fe_items_sku_key UNIQUE,
            slot int CONSTRAINT fe_items_slot_key UNIQUE DEFERRABLE INITIALLY DEFERRED,
            grp int CONSTRAINT fe_items_grp_fk REFERENCES fe_groups (id),
            qty int CONSTRAINT fe_items_qty_positive CHECK (qty > 0)
        );
        INSERT INTO fe_groups VALUES (1);
        """
    )
    try:
        yield connection
    finally:
        await connection.execute("DROP TABLE fe_items, fe_groups")
        await connection.close()


def build_app(databases: dict[str, Database]) -> FastAPI:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases(databases), warm_up=False))
    setup(app)

    @app.post("/items/{item_id}", status_code=201)
    async def add(
        item_id: int,
        session: Session,
        sku: str,
        slot: int | None = None,
        grp: int | None = None,
        qty: int | None = None,
    ) -> dict[str, int]:
        await session.execute(
            text("INSERT INTO fe_items VALUES (:id, :sku, :slot, :grp, :qty)"),
            {"id": item_id, "sku": sku, "slot": slot, "grp": grp, "qty": qty},
        )
        return {"id": item_id}

    @app.get("/sum")
    async def add_numbers(session: Session, big: int) -> dict[str, int]:
        value = await session.scalar(text("SELECT CAST(:big AS bigint) + 1"), {"big": big})
        return {"sum": int(value or 0)}

    @app.post("/both/{item_id}", status_code=201)
    async def both(item_id: int, main: Session, audit: AuditSession) -> None:
        await main.execute(
            text("INSERT INTO fe_items (id, sku) VALUES (:id, :sku)"),
            {"id": item_id, "sku": f"main-{item_id}"},
        )
        # A slot already taken: the deferred constraint fails at audit's COMMIT, after main's.
        await audit.execute(
            text("INSERT INTO fe_items (id, sku, slot) VALUES (:id, :sku, 1)"),
            {"id": item_id + 1, "sku": f"audit-{item_id}"},
        )

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("something the service did not expect")

    return app


async def serve(app: FastAPI, *, raise_app_exceptions: bool = True) -> AsyncIterator[AsyncClient]:
    async with LifespanManager(app) as manager:
        transport = ASGITransport(app=manager.app, raise_app_exceptions=raise_app_exceptions)
        async with AsyncClient(transport=transport, base_url="http://t") as client:
            yield client


@pytest.fixture
def main(make_database: Callable[..., Database]) -> Database:
    return make_database()


async def test_a_duplicate_key_in_the_handler_is_a_409_naming_the_constraint(
    main: Database, raw: asyncpg.Connection
) -> None:
    async for client in serve(build_app({"main": main})):
        assert (await client.post("/items/1", params={"sku": SECRET})).status_code == 201
        response = await client.post("/items/2", params={"sku": SECRET})
        assert response.status_code == 409
        assert response.headers["content-type"] == "application/json"
        body = response.json()
        assert body["constraint"] == "fe_items_sku_key"
        assert "fe_items_sku_key" in body["detail"]
        assert SECRET not in response.text
        assert response.headers["X-Request-ID"]
        # The same primary key: another constraint, named as such.
        response = await client.post("/items/1", params={"sku": "other"})
        assert response.status_code == 409
        assert response.json()["constraint"] == "fe_items_pkey"
    assert await raw.fetchval("SELECT count(*) FROM fe_items") == 1


async def test_a_duplicate_key_found_at_commit_is_a_409_naming_the_constraint(
    main: Database, raw: asyncpg.Connection
) -> None:
    async for client in serve(build_app({"main": main})):
        assert (await client.post("/items/1", params={"sku": "a", "slot": 7})).status_code == 201
        # The deferred unique constraint lets the INSERT through; COMMIT refuses it, and the
        # middleware commits before the response starts: a 409, never a 201.
        response = await client.post("/items/2", params={"sku": "b", "slot": 7})
        assert response.status_code == 409, response.text
        assert response.json()["constraint"] == "fe_items_slot_key"
        assert "fe_items_slot_key" in response.json()["detail"]
        assert response.headers["content-type"] == "application/json"
        assert response.headers["X-Request-ID"]
        assert "Retry-After" not in response.headers
        assert (await client.post("/items/3", params={"sku": "c", "slot": 8})).status_code == 201
    assert await raw.fetchval("SELECT count(*) FROM fe_items") == 2


async def test_a_missing_parent_is_a_409_naming_the_foreign_key(
    main: Database, raw: asyncpg.Connection
) -> None:
    async for client in serve(build_app({"main": main})):
        response = await client.post("/items/1", params={"sku": "a", "grp": 404})
        assert response.status_code == 409
        assert response.json()["constraint"] == "fe_items_grp_fk"
        assert "does not exist" in response.json()["detail"]
        assert "404" not in response.json()["detail"]
    assert await raw.fetchval("SELECT count(*) FROM fe_items") == 0


async def test_a_check_constraint_is_a_422_naming_it(
    main: Database, raw: asyncpg.Connection
) -> None:
    async for client in serve(build_app({"main": main})):
        response = await client.post("/items/1", params={"sku": "a", "qty": -1})
        assert response.status_code == 422
        assert response.json()["constraint"] == "fe_items_qty_positive"


async def test_an_invalid_value_is_a_422(main: Database, raw: asyncpg.Connection) -> None:
    async for client in serve(build_app({"main": main})):
        response = await client.get("/sum", params={"big": 2**63 - 1})
        assert response.status_code == 422
        detail = response.json()["detail"]
        assert isinstance(detail, str)
        assert "out of range" in detail
        assert str(2**63 - 1) not in detail
        assert (await client.get("/sum", params={"big": 41})).json() == {"sum": 42}


async def test_a_refusal_at_the_second_commit_says_what_was_committed(
    make_database: Callable[..., Database], raw: asyncpg.Connection
) -> None:
    main, audit = make_database(), make_database(name="audit")
    await raw.execute("INSERT INTO fe_items (id, sku, slot) VALUES (100, 'taken', 1)")
    async for client in serve(build_app({"main": main, "audit": audit})):
        response = await client.post("/both/10")
    assert response.status_code == 409
    body = response.json()
    assert body["constraint"] == "fe_items_slot_key"
    assert "nothing was saved on 'audit'" in body["detail"]
    assert "'main' already were" in body["detail"]
    assert await raw.fetchval("SELECT count(*) FROM fe_items") == 2  # 'taken' and main's


async def test_an_unhandled_exception_is_a_json_500_with_the_request_id(main: Database) -> None:
    async for client in serve(build_app({"main": main}), raise_app_exceptions=False):
        response = await client.get("/boom", headers={"X-Request-ID": "req-500-check"})
        assert response.status_code == 500
        assert response.headers["X-Request-ID"] == "req-500-check"
        assert response.json() == {"detail": "Internal Server Error", "request_id": "req-500-check"}

        generated = await client.get("/boom")
        assert generated.status_code == 500
        assert generated.headers["X-Request-ID"] == generated.json()["request_id"]
        assert len(generated.headers["X-Request-ID"]) == 32
