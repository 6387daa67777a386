"""The write side: an event exists if and only if its unit of work committed."""

from __future__ import annotations

import asyncio
import json

import asyncpg
import pytest
from httpx import AsyncClient
from sqlalchemy import event
from sqlalchemy.engine import URL
from sqlalchemy.orm import ORMExecuteState

from asyncdal import Database, ReadOnlyError, UnitOfWorkError
from asyncdal.outbox import NOTIFY_CHANNEL, Outbox
from tests.conftest import plain


async def test_rolled_back_unit_of_work_leaves_no_event(
    database: Database, sql: asyncpg.Connection
) -> None:
    async with database.unit_of_work() as uow:
        await Outbox.of(uow).add("thing.happened", {"n": 1}, key="k1")
        assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox") == 0  # not yet visible
        await uow.rollback()
    async with database.unit_of_work() as uow:
        await Outbox.of(uow).add("thing.happened", {"n": 2})
        # leaving without commit rolls back too
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox") == 0

    async with database.unit_of_work() as uow:
        event_id = await Outbox.of(uow).add("thing.happened", {"n": 3, "at": 1.5}, key=42)
        await uow.commit()
    row = await sql.fetchrow("SELECT * FROM asyncdal_outbox")
    assert row["id"] == event_id
    assert (row["event_type"], row["key"], row["status"], row["attempts"]) == (
        "thing.happened",
        "42",
        "pending",
        0,
    )
    assert json.loads(row["payload"]) == {"n": 3, "at": 1.5}


async def test_notify_is_sent_on_commit_only(database: Database, sql: asyncpg.Connection) -> None:
    heard: asyncio.Queue[str] = asyncio.Queue()
    await sql.add_listener(NOTIFY_CHANNEL, lambda *args: heard.put_nowait(args[2]))
    async with database.unit_of_work() as uow:
        await Outbox.of(uow).add("thing.happened", {})
        await uow.rollback()
    async with database.unit_of_work() as uow:
        await Outbox.of(uow).add("thing.happened", {})
        await Outbox.of(uow).add("thing.happened", {})
        await uow.commit()
    assert await asyncio.wait_for(heard.get(), 5) == NOTIFY_CHANNEL
    # One commit, however many events: PostgreSQL folds identical notifications together,
    # and the rolled-back one never arrives. The connection is idle, so a stray one would be
    # delivered by the round trip below.
    await sql.fetchval("SELECT 1")
    assert heard.empty()


async def test_read_only_unit_of_work_refuses_events(database: Database) -> None:
    async with database.read_only_unit_of_work() as uow:
        with pytest.raises(ReadOnlyError, match="outbox"):
            await Outbox.of(uow).add("thing.happened", {})


async def test_catalog_writes_emit_product_events(client: AsyncClient, catalog_url: URL) -> None:
    connection = await asyncpg.connect(plain(catalog_url.set(drivername="postgresql")))
    try:
        before = await connection.fetchval("SELECT coalesce(max(id), 0) FROM asyncdal_outbox")
    finally:
        await connection.close()
    created = (
        await client.post("/products", json={"sku": "OB-1", "name": "Outbox", "price": "3.50"})
    ).json()
    await client.patch(f"/products/{created['id']}", json={"price": "4.00"})
    await client.delete(f"/products/{created['id']}")
    # A refused write (duplicate sku) emits nothing.
    await client.post("/products", json={"sku": "OB-2", "name": "a", "price": "1"})
    conflict = await client.post("/products", json={"sku": "OB-2", "name": "b", "price": "1"})
    assert conflict.status_code == 409

    connection = await asyncpg.connect(plain(catalog_url.set(drivername="postgresql")))
    try:
        rows = await connection.fetch(
            "SELECT event_type, key, payload::text FROM asyncdal_outbox WHERE id > $1 ORDER BY id",
            before,
        )
    finally:
        await connection.close()
    events = [(row[0], row[1], json.loads(row[2])) for row in rows]
    key = str(created["id"])
    assert [(kind, k) for kind, k, _ in events[:3]] == [
        ("product.created", key),
        ("product.updated", key),
        ("product.deleted", key),
    ]
    assert events[0][2]["sku"] == "OB-1"
    assert events[1][2]["price"] == "4.00"
    assert events[1][2]["changed"] == ["price"]
    assert events[2][2] == {"id": created["id"]}
    assert [kind for kind, _, _ in events[3:]] == ["product.created"]


async def test_idempotent_replay_emits_no_second_event(
    client: AsyncClient, catalog_url: URL
) -> None:
    connection = await asyncpg.connect(plain(catalog_url.set(drivername="postgresql")))
    try:
        before = await connection.fetchval("SELECT coalesce(max(id), 0) FROM asyncdal_outbox")
        body = {"sku": "OB-IDEM", "name": "once", "price": "1.00"}
        headers = {"Idempotency-Key": "outbox-idem-1"}
        first = await client.post("/products", json=body, headers=headers)
        again = await client.post("/products", json=body, headers=headers)
        assert (first.status_code, again.status_code) == (201, 201)
        assert again.headers.get("Idempotent-Replayed") == "true"
        rows = await connection.fetch(
            "SELECT event_type, key FROM asyncdal_outbox WHERE id > $1", before
        )
    finally:
        await connection.close()
    assert [tuple(row) for row in rows] == [("product.created", str(first.json()["id"]))]


async def test_events_of_a_joined_unit_of_work_follow_the_outer_transaction(
    database: Database, sql: asyncpg.Connection
) -> None:
    """An inner unit of work joins the outer one: its events commit, or roll back, with the
    outer transaction."""
    async with database.unit_of_work() as outer:
        async with database.unit_of_work() as inner:
            assert inner.joined
            await Outbox.of(inner).add("thing.happened", {"n": 1})
            await inner.commit()
        await outer.rollback()
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox") == 0

    # A failed inner unit of work dooms the outer one: its commit is refused.
    with pytest.raises(UnitOfWorkError):
        async with database.unit_of_work() as outer:
            with pytest.raises(RuntimeError, match="inner failure"):
                async with database.unit_of_work() as inner:
                    await Outbox.of(inner).add("thing.happened", {"n": 2})
                    raise RuntimeError("inner failure")
            await Outbox.of(outer).add("thing.happened", {"n": 3})
            await outer.commit()
    assert await sql.fetchval("SELECT count(*) FROM asyncdal_outbox") == 0

    async with database.unit_of_work() as outer:
        async with database.unit_of_work() as inner:
            await Outbox.of(inner).add("thing.happened", {"n": 4})
        await outer.commit()
    rows = await sql.fetch("SELECT payload::text FROM asyncdal_outbox")
    assert [json.loads(row[0]) for row in rows] == [{"n": 4}]


async def test_an_application_statement_listener_sees_the_event_insert(
    database: Database, sql: asyncpg.Connection
) -> None:
    # The insert skips the ORM's statement handling only when no listener of the application
    # would miss it.
    seen: list[str] = []

    def listener(state: ORMExecuteState) -> None:
        seen.append(str(state.statement))

    async with database.unit_of_work() as uow:
        event.listen(uow.session.sync_session, "do_orm_execute", listener)
        event_id = await Outbox.of(uow).add("thing.happened", {"n": 1})
        event.remove(uow.session.sync_session, "do_orm_execute", listener)
        second = await Outbox.of(uow).add("thing.happened", {"n": 2})
        await uow.commit()
    assert len(seen) == 1
    assert "asyncdal_outbox" in seen[0]
    assert second > event_id
    rows = await sql.fetch("SELECT id, payload FROM asyncdal_outbox ORDER BY id")
    assert [(row["id"], json.loads(row["payload"])) for row in rows] == [
        (event_id, {"n": 1}),
        (second, {"n": 2}),
    ]
