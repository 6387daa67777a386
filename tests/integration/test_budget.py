"""The connection budget against the real server's max_connections."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL, make_url

from asyncdal import ConfigurationError, Database, Databases, DatabaseSettings
from asyncdal.orm._budget import check_budget, enforce_budget, format_budget
from tests.conftest import plain


async def server_limit(url: URL) -> int:
    (budget,) = await check_budget({"main": DatabaseSettings(url=plain(url))})
    assert budget.limit is not None
    return budget.limit


def databases(url: URL, *, pool_size: int, workers: int, strict: bool = False) -> Databases:
    main = DatabaseSettings(url=plain(url), pool_size=pool_size, strict_budget=strict)
    # The reference database on the same server counts against the same limit.
    reference = DatabaseSettings(url=plain(url), pool_size=2, replicas=(plain(url),))
    return Databases(
        {"main": Database("main", main), "reference": Database("reference", reference)},
        workers=workers,
    )


async def test_over_budget_warns(test_database_url: URL, caplog: pytest.LogCaptureFixture) -> None:
    limit = await server_limit(test_database_url)
    # limit x (1 + 2 + 2, and the replica check's connection to reference's primary and replica)
    registry = databases(test_database_url, pool_size=1, workers=limit)
    budgets = await check_budget(
        {name: db.settings for name, db in registry.items()}, registry.workers
    )
    assert [(budget.planned, budget.over) for budget in budgets] == [(limit * 7, True)]
    with caplog.at_level(logging.WARNING, logger="asyncdal.budget"):
        enforce_budget(budgets)
    assert f"may open {limit * 7} connections" in caplog.text
    assert f"allows {limit}" in caplog.text


async def test_over_budget_fails_startup_in_strict_mode(test_database_url: URL) -> None:
    limit = await server_limit(test_database_url)
    registry = databases(test_database_url, pool_size=1, workers=limit, strict=True)
    with pytest.raises(ConfigurationError, match=r"connection budget exceeded on 127\.0\.0\.1:"):
        await registry.warm_up()
    await registry.dispose()


async def test_within_budget_starts_quietly(
    test_database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    registry = databases(test_database_url, pool_size=1, workers=1, strict=True)
    with caplog.at_level(logging.WARNING, logger="asyncdal.budget"):
        await registry.warm_up()
    await registry.dispose()
    assert "budget" not in caplog.text


async def test_budget_command_prints_the_table(test_database_url: URL, tmp_path: Path) -> None:
    limit = await server_limit(test_database_url)
    # Over whatever the server's limit is: limit x (50 + 5 + two check connections).
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
    env.update(
        DATABASE_URL=plain(test_database_url),
        DB__MAIN__POOL_SIZE="50",
        DB__MAIN__REPLICAS=plain(test_database_url),
        DB__MAIN__REPLICA_POOL_SIZE="5",
        WEB_CONCURRENCY=str(limit),
    )
    process = await asyncio.create_subprocess_exec(
        str(Path(sys.executable).parent / "asyncdal"),
        "budget",
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    text = out.decode()
    assert process.returncode == 1, err.decode()
    assert "main      primary" in text
    assert "replica-1" in text
    assert "replica-1 check" in text
    assert f"{limit * 57} of {limit} allowed: OVER BUDGET" in text


async def unix_socket_folder(url: URL) -> str | None:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        folders = str(await connection.fetchval("SHOW unix_socket_directories"))
    finally:
        await connection.close()
    first = folders.split(",")[0].strip()
    return first if first.startswith("/") and Path(first).is_dir() else None


async def test_names_of_one_server_count_as_one_server(test_database_url: URL) -> None:
    limit = await server_limit(test_database_url)
    half = limit // 2 + 1
    hosts = ["127.0.0.1", "localhost"]
    urls = [test_database_url.set(host=host) for host in hosts]
    folder = await unix_socket_folder(test_database_url)
    if folder is not None:
        hosts.append(folder)
        user, port, name = (
            test_database_url.username,
            test_database_url.port,
            test_database_url.database,
        )
        urls.append(make_url(f"postgresql://{user}@:{port}/{name}?host={folder}"))
    settings = {
        f"db{index}": DatabaseSettings(url=plain(url), pool_size=half)
        for index, url in enumerate(urls)
    }
    (budget,) = await check_budget(settings)
    # Each name alone is under the limit; the server carries them all.
    assert budget.planned == half * len(hosts) > limit
    assert budget.over
    assert all(host in budget.server for host in hosts), budget.server


async def test_a_null_pool_is_flagged_unbounded(
    test_database_url: URL, caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"main": DatabaseSettings(url=plain(test_database_url), pool="null")}
    (budget,) = await check_budget(settings)
    assert budget.unbounded
    assert not budget.over
    with caplog.at_level(logging.WARNING, logger="asyncdal.budget"):
        enforce_budget([budget])
    assert "main/primary has a null pool" in caplog.text
    table = format_budget([budget])
    assert "unbounded" in table


async def test_outbox_worker_processes_count_against_the_server(
    test_database_url: URL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from asyncdal.outbox import outbox_pools
    from asyncdal.outbox._settings import OUTBOX_WORKER_POOL

    limit = await server_limit(test_database_url)
    main = {"main": DatabaseSettings(url=plain(test_database_url), pool_size=1)}
    monkeypatch.setenv("OUTBOX__HANDLER_POOL_SIZE", "5")
    monkeypatch.setenv("OUTBOX__PROCESSES", "0")
    (alone,) = await check_budget(main, 1, outbox_pools())
    assert alone.planned == 1

    processes = limit // (OUTBOX_WORKER_POOL + 5) + 1  # enough worker processes to go over
    monkeypatch.setenv("OUTBOX__PROCESSES", str(processes))
    (budget,) = await check_budget(main, 1, outbox_pools())
    assert budget.planned == 1 + processes * (OUTBOX_WORKER_POOL + 5)
    assert budget.over
    assert {line.node for line in budget.lines} == {"primary", "outbox worker", "outbox handlers"}
    assert "outbox handlers" in format_budget([budget])

    # Startup goes through the same check, with the pools its creator hands it.
    registry = Databases({"main": Database("main", main["main"])}, extra_pools=outbox_pools())
    try:
        with caplog.at_level(logging.WARNING, logger="asyncdal.budget"):
            await registry.warm_up()
    finally:
        await registry.dispose()
    assert f"may open {budget.planned} connections" in caplog.text


def test_bad_outbox_settings_leave_the_outbox_out_of_the_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from asyncdal.outbox import outbox_pools

    monkeypatch.setenv("OUTBOX__PROCESSES", "-1")
    assert outbox_pools() == []


async def test_warm_up_reads_no_outbox_settings(
    test_database_url: URL, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The database layer knows nothing of the outbox: OUTBOX__* counts only when handed over.
    limit = await server_limit(test_database_url)
    monkeypatch.setenv("OUTBOX__PROCESSES", str(limit))
    main = DatabaseSettings(url=plain(test_database_url), pool_size=1)
    registry = Databases({"main": Database("main", main)})
    try:
        with caplog.at_level(logging.WARNING, logger="asyncdal.budget"):
            await registry.warm_up()
    finally:
        await registry.dispose()
    assert "connection budget exceeded" not in caplog.text
