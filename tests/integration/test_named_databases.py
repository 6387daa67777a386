"""Seed 001's three bugs, against real servers: the reference database must use its own
server and database (bug 2), its own pool size and overflow (bug 1), and its own environment
variables, never falling back to main's values (bug 3)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, Databases, PoolTimeoutError, load_settings
from asyncdal.settings import DEFAULT_MAX_OVERFLOW, DEFAULT_POOL_SIZE
from asyncdal.testing import ReplicaPair, create_test_database, drop_test_database
from tests.conftest import plain


@pytest.fixture
async def second_server_url(asyncdal_replica_pair: ReplicaPair) -> AsyncIterator[URL]:
    """A database on another server than the main test server: the pair's primary."""
    url = await create_test_database(asyncdal_replica_pair.primary.url, prefix="reference")
    try:
        yield url
    finally:
        await drop_test_database(url)


@pytest.fixture
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    for name in list(os.environ):
        if name.upper().startswith("DB__") or name.upper() == "DATABASE_URL":
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)  # no .env from the repository
    return monkeypatch


async def where(database: Database) -> tuple[str, int]:
    async with database.read_only_unit_of_work() as uow:
        row = (
            await uow.session.execute(text("SELECT current_database(), inet_server_port()"))
        ).one()
    return str(row[0]), int(row[1])


async def can_hold(database: Database, connections: int) -> bool:
    """True when ``connections`` connections can be checked out at once."""
    engine = database.engine
    held = []
    try:
        for _ in range(connections):
            held.append(await engine.connect())
    except PoolTimeoutError:
        return False
    finally:
        for connection in held:
            await connection.close()
    return True


async def test_each_database_connects_to_its_own_server_and_database(
    clean_environment: pytest.MonkeyPatch, test_database_url: URL, second_server_url: URL
) -> None:
    clean_environment.setenv("DB__MAIN__URL", plain(test_database_url))
    clean_environment.setenv("DB__REFERENCE__URL", plain(second_server_url))
    databases = Databases.from_settings(load_settings())
    try:
        main, reference = await asyncio.gather(
            where(databases["main"]), where(databases["reference"])
        )
    finally:
        await databases.dispose()
    assert main == (test_database_url.database, test_database_url.port or 5432)
    assert reference == (second_server_url.database, second_server_url.port)
    assert main != reference


async def test_each_database_has_its_own_pool_size_and_overflow(
    clean_environment: pytest.MonkeyPatch, test_database_url: URL, second_server_url: URL
) -> None:
    clean_environment.setenv("DB__MAIN__URL", plain(test_database_url))
    clean_environment.setenv("DB__MAIN__POOL_SIZE", "4")
    clean_environment.setenv("DB__MAIN__MAX_OVERFLOW", "3")
    clean_environment.setenv("DB__REFERENCE__URL", plain(second_server_url))
    clean_environment.setenv("DB__REFERENCE__POOL_SIZE", "1")
    clean_environment.setenv("DB__REFERENCE__MAX_OVERFLOW", "1")
    clean_environment.setenv("DB__REFERENCE__POOL_TIMEOUT", "0.3")
    databases = Databases.from_settings(load_settings())
    try:
        main, reference = databases["main"], databases["reference"]
        assert main.engine.pool.size() == 4  # type: ignore[attr-defined]
        assert reference.engine.pool.size() == 1  # type: ignore[attr-defined]
        assert await can_hold(reference, 2)  # 1 + 1 overflow
        assert not await can_hold(reference, 3)  # not main's 4 + 3
        assert await can_hold(main, 7)
    finally:
        await databases.dispose()


async def test_a_missing_setting_falls_back_to_the_databases_own_default(
    clean_environment: pytest.MonkeyPatch, test_database_url: URL, second_server_url: URL
) -> None:
    clean_environment.setenv("DATABASE_URL", plain(test_database_url))
    clean_environment.setenv("DB__MAIN__POOL_SIZE", "3")
    clean_environment.setenv("DB__MAIN__MAX_OVERFLOW", "2")
    clean_environment.setenv("DB__MAIN__APPLICATION_NAME", "main-app")
    clean_environment.setenv("DB__REFERENCE__URL", plain(second_server_url))
    databases = Databases.from_settings(load_settings())
    try:
        reference = databases["reference"]
        assert reference.engine.pool.size() == DEFAULT_POOL_SIZE  # type: ignore[attr-defined]
        assert reference.settings.pool.effective_max_overflow == DEFAULT_MAX_OVERFLOW
        async with reference.read_only_unit_of_work() as uow:
            name = await uow.session.scalar(text("SHOW application_name"))
        assert name == "asyncdal"  # its own default, not main's "main-app"
        assert databases["main"].engine.pool.size() == 3  # type: ignore[attr-defined]
    finally:
        await databases.dispose()
