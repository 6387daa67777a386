"""``asyncdal migrations init`` in a fresh project: the user's own models, migrated by the real
``alembic`` command on asyncdal's settings, for one database and for a second named one."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal.testing import create_test_database, drop_test_database
from tests.conftest import ROOT, plain
from tests.integration.projects import FreshProject

MODELS = """
from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Shelf(Base):
    __tablename__ = "shelves"
    id: Mapped[int] = mapped_column(primary_key=True)
    label: Mapped[str] = mapped_column(String(40))


class Book(Base):
    __tablename__ = "books"
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(200))
    shelf_id: Mapped[int | None] = mapped_column(ForeignKey("shelves.id"))
"""

REFERENCE_MODELS = """
from sqlalchemy import String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class ReferenceBase(DeclarativeBase):
    pass


class Country(ReferenceBase):
    __tablename__ = "countries"
    code: Mapped[str] = mapped_column(String(2), primary_key=True)
"""


@pytest.fixture
async def database(server_url: str) -> AsyncIterator[URL]:
    """A throwaway database for the project; dropped after the test."""
    url = await create_test_database(server_url, prefix="init_project")
    try:
        yield url
    finally:
        await drop_test_database(url)


@pytest.fixture
def project(tmp_path: Path) -> FreshProject:
    """A fresh project with a model module (``library/models.py``) and nothing else."""
    project = FreshProject(tmp_path / "library-service")
    project.write("library/__init__.py", "")
    project.write("library/models.py", MODELS)
    return project


async def tables(url: URL) -> set[str]:
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        rows = await connection.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    finally:
        await connection.close()
    return {row["tablename"] for row in rows}


def revisions(folder: Path) -> list[str]:
    return sorted(path.read_text() for path in folder.glob("*.py"))


async def test_init_writes_alembic_ini_and_an_async_env(project: FreshProject) -> None:
    done = await project.run(
        "asyncdal", "migrations", "init", "--metadata", "library.models:Base.metadata"
    )
    assert done.code == 0, done.output
    ini = (project.root / "alembic.ini").read_text()
    assert "script_location = %(here)s/migrations" in ini
    assert "main = library.models:Base.metadata" in ini
    assert "postgresql" not in ini.split("[asyncdal]")[0]  # no URL: the settings have it
    env = project.root / "migrations" / "env.py"
    assert "async def run_async_migrations" in env.read_text()
    assert (project.root / "migrations" / "script.py.mako").is_file()
    assert (project.root / "migrations" / "versions").is_dir()
    # The generated environment passes the architecture check as it stands.
    check = await project.run("asyncdal", "check", "migrations")
    assert check.code == 0, check.output


async def test_init_refuses_to_overwrite_anything(project: FreshProject) -> None:
    ini = project.write("alembic.ini", "[alembic]\nscript_location = elsewhere\n")
    done = await project.run(
        "asyncdal", "migrations", "init", "--metadata", "library.models:Base.metadata"
    )
    assert done.code == 2
    assert "alembic.ini" in done.output
    assert "refusing to overwrite alembic.ini: nothing was written" in done.output
    assert ini.read_text() == "[alembic]\nscript_location = elsewhere\n"
    assert not (project.root / "migrations").exists()

    ini.unlink()
    project.write("migrations/env.py", "# mine\n")
    done = await project.run(
        "asyncdal", "migrations", "init", "--metadata", "library.models:Base.metadata"
    )
    assert done.code == 2
    assert "migrations" in done.output
    assert not ini.exists()
    assert (project.root / "migrations" / "env.py").read_text() == "# mine\n"


async def test_init_takes_another_folder_and_an_empty_one(project: FreshProject) -> None:
    (project.root / "db").mkdir()
    done = await project.run(
        "asyncdal", "migrations", "init", "db", "--metadata", "library.models:Base.metadata"
    )
    assert done.code == 0, done.output
    assert "script_location = %(here)s/db" in (project.root / "alembic.ini").read_text()
    assert (project.root / "db" / "env.py").is_file()


@pytest.mark.parametrize(
    ("arguments", "said"),
    [
        (("--metadata", "library.models"), "module:attribute"),
        (("--metadata", "a:B.metadata", "--database", "reference"), "NAME=module:attribute"),
        (("--metadata", "a:B.metadata", "--database", "main=a:C.metadata"), "given twice"),
        (("--metadata", "a:B.metadata", "--database", "Bad-Name=a:C"), "NAME=module:attribute"),
    ],
)
async def test_init_refuses_bad_arguments_writing_nothing(
    project: FreshProject, arguments: tuple[str, ...], said: str
) -> None:
    done = await project.run("asyncdal", "migrations", "init", *arguments)
    assert done.code == 2
    assert said in done.output
    assert not (project.root / "alembic.ini").exists()


async def test_a_fresh_project_migrates_its_models(project: FreshProject, database: URL) -> None:
    init = await project.run(
        "asyncdal", "migrations", "init", "--metadata", "library.models:Base.metadata"
    )
    assert init.code == 0, init.output
    settings = {"DATABASE_URL": plain(database)}

    revision = await project.run("alembic", "revision", "--autogenerate", "-m", "init", **settings)
    assert revision.code == 0, revision.output
    (written,) = revisions(project.root / "migrations" / "versions")
    assert "op.create_table('shelves'" in written
    assert "op.create_table('books'" in written
    ast.parse(written)

    upgrade = await project.run("alembic", "upgrade", "head", **settings)
    assert upgrade.code == 0, upgrade.output
    assert await tables(database) == {"shelves", "books", "alembic_version"}

    # The models and the schema now agree: nothing to generate.
    again = await project.run("alembic", "check", **settings)
    assert again.code == 0, again.output

    downgrade = await project.run("alembic", "downgrade", "base", **settings)
    assert downgrade.code == 0, downgrade.output
    assert await tables(database) == {"alembic_version"}


async def test_offline_mode_prints_sql_without_any_settings(project: FreshProject) -> None:
    await project.run(
        "asyncdal", "migrations", "init", "--metadata", "library.models:Base.metadata"
    )
    project.write(
        "migrations/versions/0001_shelves.py",
        '''
        """shelves"""
        import sqlalchemy as sa
        from alembic import op

        revision = "0001"
        down_revision = None
        branch_labels = None
        depends_on = None


        def upgrade() -> None:
            op.create_table("shelves", sa.Column("id", sa.Integer, primary_key=True))


        def downgrade() -> None:
            op.drop_table("shelves")
        ''',
    )
    # No DATABASE_URL, no DB__*: offline mode needs no server.
    done = await project.run("alembic", "upgrade", "head", "--sql")
    assert done.code == 0, done.output
    assert "CREATE TABLE shelves" in done.output
    assert "INSERT INTO alembic_version (version_num) VALUES ('0001')" in done.output


async def test_a_second_database_has_its_own_history_even_in_the_same_database(
    project: FreshProject, database: URL
) -> None:
    """``reference`` lives in the same database as ``main`` here (the hardest case): each
    history creates and drops only its own tables, with its own version table."""
    project.write("library/reference.py", REFERENCE_MODELS)
    init = await project.run(
        "asyncdal",
        "migrations",
        "init",
        "--metadata",
        "library.models:Base.metadata",
        "--database",
        "reference=library.reference:ReferenceBase.metadata",
    )
    assert init.code == 0, init.output
    assert "alembic -x database=reference upgrade head" in init.output
    settings = {"DATABASE_URL": plain(database), "DB__REFERENCE__URL": plain(database)}
    reference = ("-x", "database=reference")

    for arguments in [reference, ()]:
        done = await project.run(
            "alembic", *arguments, "revision", "--autogenerate", "-m", "init", **settings
        )
        assert done.code == 0, done.output
        done = await project.run("alembic", *arguments, "upgrade", "head", **settings)
        assert done.code == 0, done.output
    (main_history,) = revisions(project.root / "migrations" / "versions")
    (reference_history,) = revisions(project.root / "migrations" / "versions_reference")
    # main's autogenerate, run after reference's tables exist, neither drops nor creates them.
    assert "countries" not in main_history
    assert "alembic_version_reference" not in main_history
    assert "op.create_table('countries'" in reference_history
    assert "shelves" not in reference_history
    assert await tables(database) == {
        "shelves",
        "books",
        "countries",
        "alembic_version",
        "alembic_version_reference",
    }

    # A plain revision (no autogenerate) lands in the history of the database named by -x.
    plain_revision = await project.run("alembic", *reference, "revision", "-m", "codes", **settings)
    assert plain_revision.code == 0, plain_revision.output
    assert len(revisions(project.root / "migrations" / "versions_reference")) == 2
    assert len(revisions(project.root / "migrations" / "versions")) == 1

    done = await project.run("alembic", *reference, "downgrade", "base", **settings)
    assert done.code == 0, done.output
    assert await tables(database) == {
        "shelves",
        "books",
        "alembic_version",
        "alembic_version_reference",
    }


async def test_a_database_without_metadata_or_settings_is_a_clear_error(
    project: FreshProject, database: URL
) -> None:
    await project.run(
        "asyncdal", "migrations", "init", "--metadata", "library.models:Base.metadata"
    )
    unknown = await project.run(
        "alembic", "-x", "database=archive", "upgrade", "head", DATABASE_URL=plain(database)
    )
    assert unknown.code != 0
    assert "'archive' has no MetaData in [asyncdal]" in unknown.output
    assert "archive = your.models:Base.metadata" in unknown.output
    assert "Traceback" not in unknown.output

    unset = await project.run("alembic", "upgrade", "head")
    assert unset.code != 0
    assert "DATABASE_URL" in unset.output
    assert "Traceback" not in unset.output


def test_the_environments_use_no_private_alembic_api() -> None:
    """Neither this repository's env.py nor the one ``init`` writes reaches into Alembic's
    private names (``script._load_revisions`` and the like)."""
    template = ROOT / "src" / "asyncdal" / "ops" / "templates" / "env.py"
    for path in [ROOT / "migrations" / "env.py", template]:
        tree = ast.parse(path.read_text())
        private = [
            node.attr
            for node in ast.walk(tree)
            if isinstance(node, ast.Attribute)
            and node.attr.startswith("_")
            and not node.attr.startswith("__")
        ] + [
            alias.name
            for node in ast.walk(tree)
            if isinstance(node, ast.ImportFrom)
            for alias in node.names
            if alias.name.startswith("_") or "._" in (node.module or "")
        ]
        assert private == [], f"{path.name}: {private}"
