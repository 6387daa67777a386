"""Read/write routing against a real primary and a real streaming replica."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import asyncpg
import pytest
from sqlalchemy import select, text
from sqlalchemy.engine import URL

from asyncdal import Database, ReadOnlyError, read_your_writes
from asyncdal.testing import ReplicaPair, replica_pair
from tests.conftest import plain
from tests.helpers import new_id, wait_until

PORT = text("SELECT inet_server_port()")


async def served_by(database: Database) -> int:
    async with database.read_only_unit_of_work() as uow:
        return int(await uow.session.scalar(PORT))


async def primary_count(url: URL, where: str = "true") -> int:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        return int(await connection.fetchval(f"SELECT count(*) FROM items WHERE {where}"))
    finally:
        await connection.close()


async def test_read_only_reads_go_to_the_replica_and_a_read_write_unit_wholly_to_the_primary(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    database = routed()
    await database.warm_up()
    assert await served_by(database) == pair.replica.port
    async with database.unit_of_work() as uow:
        # A read-write unit of work reads on the primary from the start: what it reads may
        # feed what it writes (read-modify-write, locks), so it must not be stale...
        assert await uow.session.scalar(PORT) == pair.primary.port
        assert await uow.session.scalar(text("SELECT pg_is_in_recovery()")) is False
        await uow.session.execute(
            text("INSERT INTO items VALUES (:id, 'sticky')"), {"id": new_id()}
        )
        assert await uow.session.scalar(PORT) == pair.primary.port
        await uow.commit()
        assert uow.commit_lsn is not None
        assert await uow.session.scalar(PORT) == pair.primary.port
    async with database.background_unit_of_work() as uow:
        assert await uow.session.scalar(PORT) == pair.primary.port
    # ...unless it asks for replicas.
    async with database.unit_of_work() as uow, database.prefer_replicas():
        assert await uow.session.scalar(PORT) == pair.replica.port


async def test_a_read_modify_write_sees_the_latest_data_while_replay_is_paused(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair, replica_database: URL
) -> None:
    pair = asyncdal_replica_pair
    database = routed()
    await database.warm_up()
    item = new_id()
    await pair.pause_replay()
    try:
        async with database.unit_of_work() as uow:
            await uow.session.execute(text("INSERT INTO items VALUES (:id, 'a')"), {"id": item})
            await uow.commit()
        # A new unit of work (another request) reads the row to change it: on a stale replica
        # it would not find it.
        async with database.unit_of_work() as uow:
            name = await uow.session.scalar(
                text("SELECT name FROM items WHERE id = :id"), {"id": item}
            )
            assert name == "a"
            await uow.session.execute(
                text("UPDATE items SET name = :name WHERE id = :id"), {"id": item, "name": name * 2}
            )
            # An advisory lock taken in a unit of work is the primary's.
            await uow.session.execute(text("SELECT pg_advisory_xact_lock(42)"))
            await uow.commit()
    finally:
        await pair.resume_replay()
    assert await primary_count(replica_database, f"id = {item} AND name = 'aa'") == 1


async def test_select_for_update_goes_to_the_primary(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    database = routed()
    async with database.unit_of_work() as uow:
        await uow.session.execute(select(text("1")).with_for_update())
        assert await uow.session.scalar(PORT) == asyncdal_replica_pair.primary.port


async def test_primary_and_prefer_replicas_overrides(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    database = routed()
    await database.warm_up()
    async with database.primary():
        assert await served_by(database) == pair.primary.port
        with database.prefer_replicas():
            assert await served_by(database) == pair.replica.port
    assert await served_by(database) == pair.replica.port
    async with database.unit_of_work() as uow:
        await uow.session.execute(text("INSERT INTO items VALUES (:id, 'x')"), {"id": new_id()})
        async with database.prefer_replicas():
            assert await uow.session.scalar(PORT) == pair.replica.port
        assert await uow.session.scalar(PORT) == pair.primary.port


async def test_read_your_writes_with_replay_paused(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair, replica_database: URL
) -> None:
    pair = asyncdal_replica_pair
    database = routed()
    await database.warm_up()
    item = new_id()
    await pair.pause_replay()
    try:
        async with database.unit_of_work() as uow:
            await uow.session.execute(text("INSERT INTO items VALUES (:id, 'new')"), {"id": item})
            await uow.commit()
        lsn = uow.commit_lsn
        assert lsn is not None
        query = text("SELECT count(*) FROM items WHERE id = :id").bindparams(id=item)
        async with database.read_only_unit_of_work() as reader:
            assert await reader.session.scalar(query) == 0  # the paused replica: stale
        with read_your_writes(lsn):
            async with database.read_only_unit_of_work() as reader:
                assert await reader.session.scalar(query) == 1  # a node that has it
                assert await reader.session.scalar(PORT) == pair.primary.port
    finally:
        await pair.resume_replay()
    await pair.wait_for_replay(lsn)

    async def replica_serves_it() -> bool:
        with read_your_writes(lsn):
            async with database.read_only_unit_of_work() as reader:
                port = await reader.session.scalar(PORT)
                return port == pair.replica.port and await reader.session.scalar(query) == 1

    # Once the cached replay position catches up (background check), the replica serves it.
    await wait_until(replica_serves_it, timeout=10, message="the replica never served the write")


async def test_text_write_on_a_read_path_fails_and_writes_nothing(
    routed: Callable[..., Database], replica_database: URL
) -> None:
    database = routed()
    await database.warm_up()
    before = await primary_count(replica_database)
    async with database.read_only_unit_of_work() as uow:
        with pytest.raises(ReadOnlyError, match="read-only"):
            await uow.session.execute(text("UPDATE items SET name = 'changed'"))
    # A SELECT that writes passes the client-side check; the replica connection refuses it.
    async with database.read_only_unit_of_work() as uow:
        with pytest.raises(ReadOnlyError, match="read-only replica connection"):
            await uow.session.execute(text("SELECT sneaky_write()"))
    # A read-write unit of work that asked for replicas: its reads there are read-only too.
    async with database.unit_of_work() as uow, database.prefer_replicas():
        with pytest.raises(ReadOnlyError, match=r"db\.primary\(\)"):
            await uow.session.execute(text("SELECT sneaky_write()"))
    assert await primary_count(replica_database) == before
    assert await primary_count(replica_database, "name = 'changed'") == 0


async def test_a_replica_that_is_the_primary_server_is_still_read_only(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    same_node = plain(test_database_url)
    database = make_database(replicas=[same_node])
    try:
        async with database.read_only_unit_of_work() as uow:
            with pytest.raises(ReadOnlyError, match="replica-1"):
                await uow.session.execute(text("SELECT nextval('products_id_seq')"))
    finally:
        await database.dispose()


async def test_lagging_replica_leaves_rotation_and_returns(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    database = routed(max_replica_lag=0.3)
    await database.warm_up()
    (node,) = database.replica_nodes()
    assert node.healthy
    await pair.pause_replay()
    try:
        async with database.unit_of_work() as uow:
            await uow.session.execute(text("INSERT INTO items VALUES (:id, 'l')"), {"id": new_id()})
            await uow.commit()
        await wait_until(lambda: not node.healthy, timeout=10, message="the lag went unnoticed")
        assert "lag" in str(node.error)
        assert await served_by(database) == pair.primary.port
    finally:
        await pair.resume_replay()
    await wait_until(lambda: node.healthy, timeout=10, message="the replica did not return")
    assert await served_by(database) == pair.replica.port


async def test_stopped_replica_reads_keep_working_and_it_rejoins() -> None:
    # A pair of its own: stopping the session's replica would disturb the other tests.
    from asyncdal import DatabaseSettings

    interval = 0.3
    with replica_pair() as pair:
        database = Database(
            "main",
            DatabaseSettings(
                url=pair.primary.url,
                replicas=(pair.replica.url,),
                replica_check_interval=interval,
                connect_timeout=2,
            ),
        )
        try:
            await database.warm_up()
            (node,) = database.replica_nodes()
            assert await served_by(database) == pair.replica.port
            await asyncio.to_thread(pair.replica.stop)
            started = asyncio.get_running_loop().time()
            # The pooled replica connections are dead: the read is retried on the primary.
            assert await served_by(database) == pair.primary.port
            await wait_until(
                lambda: not node.healthy,
                timeout=interval * 3 + 2,
                message="the stopped replica was not taken out",
            )
            assert asyncio.get_running_loop().time() - started < interval * 3 + 2
            for _ in range(5):
                assert await served_by(database) == pair.primary.port
            await asyncio.to_thread(pair.replica.start)
            await wait_until(lambda: node.healthy, timeout=10, message="the replica did not rejoin")

            async def replica_serves() -> bool:
                return await served_by(database) == pair.replica.port

            await wait_until(replica_serves, timeout=10, message="the replica serves no reads")
        finally:
            await database.dispose()


async def test_a_replica_down_at_startup_is_out_and_reads_use_the_primary(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    from asyncdal import check_database
    from asyncdal.testing import spare_port

    nowhere = plain(test_database_url.set(host="127.0.0.1", port=spare_port()))
    database = make_database(replicas=[nowhere], replica_check_interval=0.2)
    try:
        await database.warm_up()  # a replica that is down is not fatal
        (node,) = database.replica_nodes()
        assert not node.healthy
        # Refused, then (once its breaker opened) failing fast.
        assert node.error in {"ConnectionRefusedError", "DatabaseUnavailableError"}
        async with database.read_only_unit_of_work() as uow:
            assert await uow.session.scalar(text("SELECT current_database()")) == (
                test_database_url.database
            )
        health = await check_database(database)
        assert health.status == "ok"
        assert health.replicas["replica-1"]["status"] == "down"
        assert nowhere.split("@")[-1] not in str(health)  # no URL in the report
    finally:
        await database.dispose()


async def test_a_statement_timeout_on_a_replica_is_not_a_node_failure(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    from asyncdal import QueryTimeoutError

    # No background check in the test's time: only the read itself could take the node out.
    database = routed(command_timeout=0.3, replica_check_interval=60)
    await database.warm_up()
    (node,) = database.replica_nodes()
    async with database.read_only_unit_of_work() as uow:
        with pytest.raises(QueryTimeoutError):
            await uow.session.execute(text("SELECT pg_sleep(2)"))
    # One slow statement says nothing about the replica: it stays in rotation.
    assert node.healthy
    assert node.error is None
    assert await served_by(database) == asyncdal_replica_pair.replica.port


async def test_a_commit_whose_position_cannot_be_read_is_still_committed(
    asyncdal_replica_pair: ReplicaPair, replica_database: URL
) -> None:
    from asyncdal import DatabaseSettings
    from asyncdal.replicas._lsn import current_commit_lsns
    from asyncdal.testing._faultproxy import FaultProxy

    pair = asyncdal_replica_pair
    async with FaultProxy("127.0.0.1", pair.primary.port) as proxy:
        database = Database(
            "main",
            DatabaseSettings(
                url=proxy.url(database=replica_database.database or ""),
                replicas=(f"postgresql://postgres@127.0.0.1:{pair.replica.port}",),
                replica_check_interval=0.2,
            ),
        )
        try:
            await database.warm_up()
            assert await served_by(database) == pair.replica.port
            item = new_id()
            # COMMIT goes through; the connection is cut as the commit position is read.
            proxy.cut_answer_to(b"pg_current_wal_insert_lsn")
            with current_commit_lsns() as committed:
                async with database.unit_of_work() as uow:
                    await uow.session.execute(
                        text("INSERT INTO items VALUES (:id, 'kept')"), {"id": item}
                    )
                    await uow.commit()  # no error: the data is committed
                assert uow.commit_lsn is None
                assert committed == {}
                # Without a position to wait for, the rest of the request reads the primary.
                assert await served_by(database) == pair.primary.port
            assert await primary_count(replica_database, f"id = {item}") == 1
            assert await served_by(database) == pair.replica.port  # only that request
        finally:
            await database.dispose()
