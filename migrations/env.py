"""Async Alembic environment: the same settings as the app, a null pool, never a second URL.

``alembic upgrade head`` migrates the database named ``main`` (history in ``versions/``);
``alembic -x database=reference upgrade head`` migrates the ``reference`` database, whose tables
(``catalog.models.ReferenceBase``) have a history of their own in ``reference_versions/`` and
their own version table. Without ``DB__REFERENCE__*`` the reference database is the main one
(the catalog's settings say so): each history then sees only its own tables. Any other
``-x database=NAME`` runs the main history on that database. New revisions follow the same
choice: ``alembic -x database=reference revision -m "..."`` writes into
``reference_versions/`` on top of its head (``revision_environment`` in alembic.ini), and a
revision without ``--autogenerate`` connects to no database.

A caller that already holds a connection (tests, the dev server) passes it as
``config.attributes["connection"]``; settings can be passed as ``config.attributes["settings"]``.
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from pathlib import Path

from alembic import context
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Connection

from asyncdal import AsyncdalSettings, create_engine
from catalog.container import load_catalog_settings
from catalog.models import Base, ReferenceBase

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

REFERENCE = "reference"
REFERENCE_VERSIONS = Path(__file__).resolve().parent / "reference_versions"


def _settings() -> AsyncdalSettings:
    settings = config.attributes.get("settings")
    return settings if isinstance(settings, AsyncdalSettings) else load_catalog_settings()


def _database_name() -> str:
    return context.get_x_argument(as_dictionary=True).get("database", "main")


def _use_reference_history() -> None:
    """Point this run at the reference history: its own folder, so ``head`` means its head."""
    script = context.script
    # The command holds on to this ScriptDirectory: its history is swapped for the one a
    # ScriptDirectory on the reference folder reads (public constructor and attributes).
    script.version_locations = [str(REFERENCE_VERSIONS)]
    script.revision_map = ScriptDirectory(
        script.dir, version_locations=[str(REFERENCE_VERSIONS)]
    ).revision_map


is_reference = _database_name() == REFERENCE
if is_reference:
    _use_reference_history()
target_metadata = ReferenceBase.metadata if is_reference else Base.metadata
# A table of its own, so the two histories never mix even in one database.
version_table = "alembic_version_reference" if is_reference else "alembic_version"


def include_name(name: str | None, type_: str, parent_names: object) -> bool:
    """Only this history's own tables: in one database, the other history's tables are not
    this one's to create or drop (autogenerate)."""
    if type_ != "table":
        return True
    return name in target_metadata.tables


def run_migrations_offline() -> None:
    """Emit SQL to stdout instead of running it (``alembic upgrade head --sql``)."""
    database = _settings().databases[_database_name()]
    context.configure(
        url=database.sqlalchemy_url(),
        target_metadata=target_metadata,
        version_table=version_table,
        include_name=include_name,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def do_run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=version_table,
        include_name=include_name,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    database = _settings().databases[_database_name()]
    # Migrations run once and exit: a null pool leaves no connection behind.
    engine = create_engine(database.with_null_pool())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def _only_writes_a_revision() -> bool:
    """``alembic revision`` without ``--autogenerate``: env.py runs (``revision_environment``)
    only so that ``-x database=`` picks the history; a blank revision reads no database, so
    none is needed to write one."""
    options = config.cmd_opts
    command = getattr(options, "cmd", None)
    if not command:
        return False  # called from code (alembic.command), not the shell: run as asked
    return getattr(command[0], "__name__", "") == "revision" and not getattr(
        options, "autogenerate", False
    )


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if _only_writes_a_revision():
    pass  # the history is chosen above; the blank revision needs nothing from the database
elif context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
