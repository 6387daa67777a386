"""Alembic: upgrade and downgrade work, and the models match the migrated schema."""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import MetaData, inspect
from sqlalchemy.engine import URL

from asyncdal import Database
from catalog.models import Base, ReferenceBase
from tests.conftest import ROOT, alembic_config, database_settings, reference_alembic_config


@pytest.fixture
async def empty_url(server_url: str) -> AsyncIterator[URL]:
    from asyncdal.testing import create_test_database, drop_test_database

    url = await create_test_database(server_url, prefix="migrations_test")
    try:
        yield url
    finally:
        await drop_test_database(url)


async def tables(url: URL) -> set[str]:
    db = Database("main", database_settings(url).databases["main"])
    try:
        async with db.engine.connect() as connection:
            return set(await connection.run_sync(lambda sync: inspect(sync).get_table_names()))
    finally:
        await db.dispose()


async def differences(
    url: URL, metadata: MetaData = Base.metadata, version_table: str = "alembic_version"
) -> list[object]:
    db = Database("main", database_settings(url).databases["main"])
    try:
        async with db.engine.connect() as connection:
            return await connection.run_sync(
                lambda sync: compare_metadata(
                    MigrationContext.configure(
                        sync, opts={"compare_type": True, "version_table": version_table}
                    ),
                    metadata,
                )
            )
    finally:
        await db.dispose()


async def test_upgrade_head_then_downgrade_base(empty_url: URL) -> None:
    config = alembic_config(database_settings(empty_url))
    await asyncio.to_thread(command.upgrade, config, "head")
    assert {"products", "alembic_version"} <= await tables(empty_url)
    await asyncio.to_thread(command.downgrade, config, "base")
    assert await tables(empty_url) == {"alembic_version"}
    await asyncio.to_thread(command.upgrade, config, "head")  # and back up again
    assert "products" in await tables(empty_url)


async def test_autogenerate_finds_no_difference(empty_url: URL) -> None:
    await asyncio.to_thread(command.upgrade, alembic_config(database_settings(empty_url)), "head")
    assert await differences(empty_url) == []


async def test_the_check_can_see_a_difference(empty_url: URL) -> None:
    """Guard for the test above: an unmigrated database must show differences."""
    assert await differences(empty_url) != []


async def test_alembic_command_reads_the_apps_settings(empty_url: URL) -> None:
    """`alembic upgrade head` from the shell takes DATABASE_URL, like the app does."""
    import os
    import sys
    from pathlib import Path

    from tests.conftest import ROOT, plain

    alembic = Path(sys.executable).parent / "alembic"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
    env["DATABASE_URL"] = plain(empty_url)
    process = await asyncio.create_subprocess_exec(
        str(alembic),
        "upgrade",
        "head",
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert "products" in await tables(empty_url)


async def test_reference_history_is_its_own(empty_url: URL) -> None:
    """The reference database's tables come from their own history and version table, even
    when it shares a database with main."""
    settings = database_settings(empty_url, reference=empty_url)
    await asyncio.to_thread(command.upgrade, reference_alembic_config(settings), "head")
    assert await tables(empty_url) == {"categories", "alembic_version_reference"}
    assert await differences(empty_url, ReferenceBase.metadata, "alembic_version_reference") == []
    await asyncio.to_thread(command.upgrade, alembic_config(settings), "head")
    assert {"products", "alembic_version"} <= await tables(empty_url)
    await asyncio.to_thread(command.downgrade, reference_alembic_config(settings), "base")
    assert "categories" not in await tables(empty_url)
    assert "products" in await tables(empty_url)


async def test_alembic_command_migrates_the_reference_database(empty_url: URL) -> None:
    """`alembic -x database=reference upgrade head`, as the migrations page shows."""
    import os
    import sys
    from pathlib import Path

    from tests.conftest import ROOT, plain

    alembic = Path(sys.executable).parent / "alembic"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
    env.pop("DATABASE_URL", None)
    env["DB__REFERENCE__URL"] = plain(empty_url)
    process = await asyncio.create_subprocess_exec(
        *(str(alembic), "-x", "database=reference", "upgrade", "head"),
        cwd=ROOT,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    assert await tables(empty_url) == {"categories", "alembic_version_reference"}


@pytest.mark.parametrize(
    ("arguments", "folder", "parent"),
    [
        (("-x", "database=reference"), "reference_versions", "r0001"),
        ((), "versions", "0005"),
    ],
)
async def test_a_new_revision_lands_in_its_databases_history(
    tmp_path: Path, arguments: tuple[str, ...], folder: str, parent: str
) -> None:
    """`alembic -x database=reference revision -m ...` writes into the reference history, on
    top of its head; without ``-x`` into main's. Neither needs a database: writing a blank
    revision asks nothing of one (no DATABASE_URL here)."""
    shutil.copy(ROOT / "alembic.ini", tmp_path)
    shutil.copytree(ROOT / "migrations", tmp_path / "migrations")
    before = {path.name for path in (tmp_path / "migrations").rglob("*.py")}
    alembic = Path(sys.executable).parent / "alembic"
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("DB__")}
    env.pop("DATABASE_URL", None)
    process = await asyncio.create_subprocess_exec(
        *(str(alembic), *arguments, "revision", "-m", "add colour"),
        cwd=tmp_path,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await process.communicate()
    assert process.returncode == 0, output.decode()
    (new,) = [path for path in (tmp_path / "migrations").rglob("*.py") if path.name not in before]
    assert new.parent == tmp_path / "migrations" / folder, output.decode()
    assert f"\nRevises: {parent}\n" in new.read_text()
