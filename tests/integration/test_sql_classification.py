"""The SQL classifier where it decides, against the real server: the read-only unit of work's
guard and the routing session (keywords in literals do not make a read a write; a write behind
``text().columns()`` is still one)."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest
from sqlalchemy import column, text

from asyncdal import Database, ReadOnlyError
from asyncdal.replicas._routing import node_used

MakeDatabase = Callable[..., Database]

READS_WITH_KEYWORDS_INSIDE = [
    "WITH x AS (SELECT 1) SELECT 'what to do' FROM x",
    "WITH x AS (SELECT 1) SELECT 'update pending' FROM x",
    'WITH x AS (SELECT 1 AS "delete") SELECT "delete" || \' done\' FROM x',
    "WITH x AS (SELECT 1) /* then insert */ SELECT E'it\\'s a merge' FROM x -- or do",
    "WITH x AS (SELECT $$update$$ AS v) SELECT v || $tag$ do $tag$ FROM x",
]


@pytest.mark.parametrize("snapshot", [False, True])
@pytest.mark.parametrize("sql", READS_WITH_KEYWORDS_INSIDE)
async def test_a_read_only_unit_of_work_runs_reads_with_keywords_in_literals(
    make_database: MakeDatabase, sql: str, snapshot: bool
) -> None:
    db = make_database()
    try:
        async with db.read_only_unit_of_work(snapshot=snapshot) as uow:
            assert await uow.session.scalar(text(sql)) is not None
    finally:
        await db.dispose()


async def test_the_regression_what_to_do_reads_its_literal(make_database: MakeDatabase) -> None:
    # Once refused: the word "do" inside the literal was taken for a DO block.
    db = make_database()
    try:
        async with db.read_only_unit_of_work() as uow:
            found = await uow.session.scalar(
                text("WITH x AS (SELECT 1) SELECT 'what to do' FROM x")
            )
            assert found == "what to do"
    finally:
        await db.dispose()


async def test_a_read_only_unit_of_work_refuses_a_write_given_columns(
    make_database: MakeDatabase,
) -> None:
    # text().columns() makes a TextualSelect, which SQLAlchemy counts as a SELECT: the guard
    # reads its SQL all the same (in autocommit, the delete would be permanent at once).
    db = make_database()
    sku = f"guard-{uuid.uuid4().hex[:8]}"
    try:
        async with db.unit_of_work() as uow:
            await uow.session.execute(
                text("INSERT INTO products (sku, name, price) VALUES (:sku, 'g', 1)"), {"sku": sku}
            )
            await uow.commit()
        delete = text("DELETE FROM products WHERE sku = :sku RETURNING id").columns(column("id"))
        async with db.read_only_unit_of_work() as uow:
            with pytest.raises(ReadOnlyError):
                await uow.session.execute(delete, {"sku": sku})
            count = text("SELECT count(*) FROM products WHERE sku = :sku")
            assert await uow.session.scalar(count, {"sku": sku}) == 1
    finally:
        async with db.unit_of_work() as uow:
            await uow.session.execute(text("DELETE FROM products WHERE sku = :sku"), {"sku": sku})
            await uow.commit()
        await db.dispose()


async def test_routing_sends_reads_with_keywords_in_literals_to_replicas_and_writes_to_the_primary(
    make_database: MakeDatabase, test_database_url: object
) -> None:
    from tests.conftest import plain

    # The primary server as its own replica: its replica connections are READ ONLY all the same.
    db = make_database(replicas=[plain(test_database_url)])  # type: ignore[arg-type]
    sku = f"route-{uuid.uuid4().hex[:8]}"
    try:
        async with db.unit_of_work() as uow, db.prefer_replicas():
            sync_session = uow.session.sync_session
            for sql in READS_WITH_KEYWORDS_INSIDE:
                await uow.session.execute(text(sql))
                assert node_used(sync_session) == "replica-1", sql
            await uow.session.execute(
                text("INSERT INTO products (sku, name, price) VALUES (:sku, 'r', 1)"), {"sku": sku}
            )
            assert node_used(sync_session) == "primary"
            # A write behind .columns() goes to the primary too (a replica would refuse it).
            delete = text("DELETE FROM products WHERE sku = :sku RETURNING id").columns(
                column("id")
            )
            assert (await uow.session.execute(delete, {"sku": sku})).scalar() is not None
            assert node_used(sync_session) == "primary"
    finally:
        await db.dispose()
