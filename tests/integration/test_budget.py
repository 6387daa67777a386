"""The connection budget against the real server's max_connections."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

import pytest
from sqlalchemy.engine import URL

from asyncdal import ConfigurationError, Database, Databases, DatabaseSettings
from asyncdal.budget import check_budget
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
    registry = databases(test_database_url, pool_size=1, workers=limit)  # limit x (1 + 2 + 2)
    budgets = await check_budget(
        {name: db.settings for name, db in registry.items()}, registry.workers
    )
    assert [(budget.planned, budget.over) for budget in budgets] == [(limit * 5, True)]
    with caplog.at_level(logging.WARNING, logger="asyncdal.budget"):
        from asyncdal.budget import enforce_budget

        enforce_budget(budgets)
    assert f"may open {limit * 5} connections" in caplog.text
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
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
    env.update(
        DATABASE_URL=plain(test_database_url),
        DB__MAIN__POOL_SIZE="50",
        DB__MAIN__REPLICAS=plain(test_database_url),
        DB__MAIN__REPLICA_POOL_SIZE="5",
        WEB_CONCURRENCY="4",
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
    assert "220 of" in text  # 4 x (50 + 5)
    assert "OVER BUDGET" in text
