"""The background replica check against real servers: lag against the primary, its own
connections, its own context, and what it reports before and after its first look."""

from __future__ import annotations

import asyncio
import contextvars
import json
import logging
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, current_request_id, request_id_scope
from asyncdal.testing import ReplicaPair
from asyncdal.testing._faultproxy import FaultProxy
from tests.conftest import plain
from tests.helpers import wait_until
from tests.integration.test_replicas import new_id, served_by


async def on_replica(pair: ReplicaPair, *statements: str) -> str:
    """Run ``statements`` on the replica; the last one's value as text."""
    connection = await asyncpg.connect(pair.replica.url)
    try:
        result = ""
        for statement in statements:
            result = str(await connection.fetchval(statement))
        return result
    finally:
        await connection.close()


async def test_a_replica_whose_stream_broke_falls_behind_and_leaves_rotation(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    pair = asyncdal_replica_pair
    database = routed(max_replica_lag=1)
    await database.warm_up()
    (node,) = database.replica_nodes()
    assert node.healthy
    conninfo = await on_replica(pair, "SHOW primary_conninfo")
    # The WAL receiver stops: the replica has replayed all it received, and receives nothing.
    await on_replica(pair, "ALTER SYSTEM SET primary_conninfo = ''", "SELECT pg_reload_conf()")
    try:

        async def receiver_stopped() -> bool:
            return await on_replica(pair, "SELECT count(*) FROM pg_stat_wal_receiver") == "0"

        await wait_until(receiver_stopped, timeout=10, message="the WAL receiver runs on")
        async with database.unit_of_work() as uow:
            await uow.session.execute(text("INSERT INTO items VALUES (:id, 'x')"), {"id": new_id()})
            await uow.commit()
        await wait_until(lambda: not node.healthy, timeout=5, message="the lag went unnoticed")
        assert "lag" in str(node.error)
        assert await served_by(database) == pair.primary.port
    finally:
        quoted = conninfo.replace("'", "''")
        await on_replica(
            pair, f"ALTER SYSTEM SET primary_conninfo = '{quoted}'", "SELECT pg_reload_conf()"
        )
    await pair.caught_up()
    await wait_until(lambda: node.healthy, timeout=10, message="the replica did not return")


async def test_a_busy_pool_does_not_take_a_healthy_replica_out(
    routed: Callable[..., Database], asyncdal_replica_pair: ReplicaPair
) -> None:
    database = routed(replica_pool_size=1, pool_timeout=5)
    await database.warm_up()
    (node,) = database.replica_nodes()
    # Every connection of the replica's pool is taken by a request...
    async with database.read_only_unit_of_work(snapshot=True) as busy:
        port = await busy.session.scalar(text("SELECT inet_server_port()"))
        assert port == asyncdal_replica_pair.replica.port
        # ...and the check still gets through at once, on a connection of its own.
        await database.check_replicas(answer_within=1)
        assert node.healthy, node.error
        assert node.error is None


async def test_the_check_never_warns_of_pool_exhaustion(
    routed: Callable[..., Database], caplog: pytest.LogCaptureFixture
) -> None:
    database = routed(replica_pool_size=1)
    await database.warm_up()
    with caplog.at_level(logging.WARNING, logger="asyncdal.pool"):
        for _ in range(3):
            await database.check_replicas()
    assert "nearly exhausted" not in caplog.text


async def test_the_check_task_does_not_inherit_its_starters_context(
    routed: Callable[..., Database],
) -> None:
    loop = asyncio.get_running_loop()
    contexts: list[tuple[asyncio.Task[Any], contextvars.Context]] = []

    def factory(
        loop: asyncio.AbstractEventLoop, coro: Any, context: contextvars.Context | None = None
    ) -> asyncio.Task[Any]:
        # What a task runs in: the context it was given, else a copy of its creator's.
        context = contextvars.copy_context() if context is None else context
        task = asyncio.Task(coro, loop=loop, context=context)
        contexts.append((task, context))
        return task

    database = routed()
    previous = loop.get_task_factory()
    loop.set_task_factory(factory)
    try:
        # The first use builds the engines and starts the check, here in a request's context.
        with request_id_scope("request-that-started-it"), database.primary():
            database.engine  # noqa: B018
    finally:
        loop.set_task_factory(previous)
    (context,) = [c for task, c in contexts if task.get_name() == "asyncdal-replica-check-main"]
    assert context.run(current_request_id) is None
    # No routing override either: the task's context holds no variable at all.
    assert len(context) == 0


async def test_a_replica_is_unknown_until_checked(
    make_database: Callable[..., Database], test_database_url: URL
) -> None:
    database = make_database(replicas=[plain(test_database_url)], replica_check_interval=60)
    try:
        (node,) = database.replica_nodes() or [None]
        assert node is None  # nothing built yet
        database.engine  # noqa: B018 - builds the engines; the first check is under way
        (node,) = database.replica_nodes()
        assert node.status()["status"] == "unknown"
        await database.check_replicas()
        assert node.status()["status"] == "ok"
    finally:
        await database.dispose()


async def test_health_command_reports_a_blackholed_replica_down(
    test_database_url: URL, tmp_path: Path
) -> None:
    async with FaultProxy(
        test_database_url.host or "127.0.0.1", test_database_url.port or 5432
    ) as proxy:
        proxy.blackhole()
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
        env.pop("DATABASE_URL", None)
        env.update(
            DATABASE_URL=plain(test_database_url),
            DB__MAIN__REPLICAS=proxy.url(database=test_database_url.database or ""),
            DB__MAIN__CONNECT_TIMEOUT="1",
        )
        process = await asyncio.create_subprocess_exec(
            str(Path(sys.executable).parent / "asyncdal"),
            "health",
            "--answer-within",
            "1",
            env=env,
            cwd=tmp_path,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await process.communicate()
        proxy.heal()
    report = json.loads(out)
    replica = report["databases"]["main"]["replicas"]["replica-1"]
    assert replica["status"] == "down", err.decode()
    assert replica["error"].startswith("TimeoutError")
    assert replica["latency_ms"] is None
    # The primary answers, so the service is ready (its reads go to the primary).
    assert report["databases"]["main"]["status"] == "ok"
    assert process.returncode == 0
