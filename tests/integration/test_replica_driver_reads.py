"""Repository reads on the driver on a database with replicas (a real streaming replica): the
router picks the node, as for any read of a read-only unit of work."""

from __future__ import annotations

import uuid
from collections.abc import Callable

import asyncpg
from sqlalchemy import text
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from asyncdal import Database, Repository, read_your_writes
from asyncdal.observe._metrics import DatabaseMetrics
from asyncdal.orm._driver_reads import ORM_READ
from asyncdal.replicas._routing import node_used
from asyncdal.testing import ReplicaPair
from tests.helpers import metric_value, new_id, wait_until


class _Base(DeclarativeBase):
    pass


class Item(_Base):
    """The ``items`` table of the ``replica_database`` fixture."""

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str]


class Items(Repository[Item]):
    pass


async def _insert(database: Database, item: int, name: str) -> str:
    """Insert an item on the primary; its commit's WAL position."""
    async with database.unit_of_work() as uow:
        await uow.session.execute(
            text("INSERT INTO items VALUES (:id, :name)"), {"id": item, "name": name}
        )
        await uow.commit()
    assert uow.commit_lsn is not None
    return uow.commit_lsn


def _selects_measured(metrics: DatabaseMetrics, node: str) -> float:
    return metric_value(metrics, "asyncdal_query_seconds_count", node=node, statement="select")


async def _count_on_primary(database: Database) -> int:
    async with database.unit_of_work() as uow:  # a read-write unit of work reads the primary
        return int(await uow.session.scalar(text("SELECT count(*) FROM items")))


async def test_repository_reads_run_on_the_driver_of_the_node_the_router_picks(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    database = routed()
    metrics = DatabaseMetrics()
    metrics.instrument(database)
    await database.warm_up()
    (replica,) = database.replica_nodes()
    item = new_id()
    await pair.pause_replay()
    try:
        lsn = await _insert(database, item, "new")
        on_primary = await _count_on_primary(database)
        measured = {node: _selects_measured(metrics, node) for node in ("primary", replica.name)}
        async with database.read_only_unit_of_work() as uow:
            items = uow.repository(Items)
            assert await items.get(item) is None  # the paused replica's answer: stale
            assert await items.count() == on_primary - 1
            assert ORM_READ not in uow.session.info  # on the driver
            assert node_used(uow.session) == replica.name
        # Measured on the node that ran them (the metrics' stand-ins on its engine).
        assert _selects_measured(metrics, replica.name) == measured[replica.name] + 2
        assert _selects_measured(metrics, "primary") == measured["primary"]
        with read_your_writes(lsn):
            async with database.read_only_unit_of_work() as uow:
                items = uow.repository(Items)
                found = await items.get(item)  # the replica has not replayed it: the primary
                assert found is not None
                assert found.name == "new"
                assert found in uow.session
                assert await items.count() == on_primary
                assert ORM_READ not in uow.session.info
                assert node_used(uow.session) == "primary"
    finally:
        await pair.resume_replay()
    await pair.wait_for_replay(lsn)

    async def the_replica_serves_it_on_the_driver() -> bool:
        with read_your_writes(lsn):
            async with database.read_only_unit_of_work() as uow:
                found = await uow.repository(Items).get(item)
                return (
                    found is not None
                    and ORM_READ not in uow.session.info
                    and node_used(uow.session) == replica.name
                )

    # Once the cached replay position catches up (background check), the replica serves it.
    await wait_until(
        the_replica_serves_it_on_the_driver, timeout=10, message="the replica never served it"
    )


async def test_a_read_whose_replica_connection_was_dropped_is_still_answered(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    application_name = f"it-{uuid.uuid4().hex[:10]}"
    database = routed(pool_size=1, max_overflow=0, application_name=application_name)
    await database.warm_up()
    item = new_id()
    await pair.wait_for_replay(await _insert(database, item, "kept"))
    await wait_until(
        lambda: database.replica_nodes()[0].healthy, timeout=10, message="replica not in use"
    )
    async with database.read_only_unit_of_work() as uow:
        assert (await uow.repository(Items).get(item)) is not None
        assert node_used(uow.session) != "primary"
    # The pooled replica connection's backend goes away between two reads.
    replica = await asyncpg.connect(f"postgresql://postgres@127.0.0.1:{pair.replica.port}/postgres")
    try:
        ended = await replica.fetchval(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE application_name = $1",
            application_name,
        )
    finally:
        await replica.close()
    assert ended >= 1  # the pooled one (and the replica check's, if it had one open)
    async with database.read_only_unit_of_work() as uow:
        found = await uow.repository(Items).get(item)
        assert found is not None
        assert found.name == "kept"
