"""Alembic's environment, written by ``asyncdal migrations init``: async, on asyncdal's settings.

No URL is kept here: each run reads the settings the app reads (``DATABASE_URL`` or
``DB__<NAME>__*``, from the environment or ``.env``) and connects through a null pool, so the
command leaves no connection behind.

``alembic upgrade head`` migrates the database named ``main``; ``alembic -x database=NAME
upgrade head`` migrates ``NAME``. The ``[asyncdal]`` section of ``alembic.ini`` names each
database's ``MetaData`` (``NAME = module:attribute``, what ``--autogenerate`` compares with).
``main`` keeps its history in ``versions/`` and its version table in ``alembic_version``;
another database in ``versions_NAME/`` and ``alembic_version_NAME``. Autogenerate leaves alone
the tables of the other databases' metadata and their version tables, so databases that share
one database never drop each other's tables.

``alembic upgrade head --sql`` prints the SQL instead of running it, without connecting.

From code (a test, a dev server): ``config.attributes["connection"]`` migrates on a connection
you hold (a sync ``Connection``, e.g. inside ``AsyncConnection.run_sync``), and
``config.attributes["settings"]`` takes :class:`~asyncdal.AsyncdalSettings` instead of loading
them.

Only public APIs of Alembic, SQLAlchemy and asyncdal: edit it as your own.
"""

from __future__ import annotations

import asyncio
import pkgutil
from logging.config import fileConfig
from pathlib import Path
from typing import TYPE_CHECKING

from alembic import context
from alembic.script import ScriptDirectory
from alembic.util import CommandError
from sqlalchemy import MetaData
from sqlalchemy.engine import Connection

from asyncdal import (
    AsyncdalSettings,
    ConfigurationError,
    DatabaseSettings,
    create_engine,
    load_settings,
)

if TYPE_CHECKING:
    from alembic.runtime.environment import NameFilterParentNames, NameFilterType

MAIN = "main"
SECTION = "asyncdal"

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def database_name() -> str:
    """The database to migrate: ``-x database=NAME``, else ``main``."""
    return context.get_x_argument(as_dictionary=True).get("database", MAIN).lower()


def metadata_names() -> dict[str, str]:
    """``[asyncdal]`` of alembic.ini: each database's ``module:attribute``, by database name."""
    section = config.get_section(SECTION) or {}
    # The parser's defaults (``here``) show up in every section; they name no database.
    defaults = config.file_config.defaults()
    return {
        name.lower(): value.strip()
        for name, value in section.items()
        if name not in defaults and value.strip()
    }


def load_metadata(name: str, where: str) -> MetaData:
    """Import the ``MetaData`` at ``where`` (``module:attribute``) for database ``name``."""
    try:
        found = pkgutil.resolve_name(where)
    except (ImportError, AttributeError, ValueError) as error:
        raise CommandError(
            f"[{SECTION}] {name} = {where}: cannot import it ({error}); write module:attribute, "
            "importable from prepend_sys_path"
        ) from error
    if not isinstance(found, MetaData):
        raise CommandError(
            f"[{SECTION}] {name} = {where} is a {type(found).__name__}, not a MetaData "
            "(for a declarative base, write Base.metadata)"
        )
    return found


def version_table(name: str) -> str:
    """Each database's own version table, so databases in one database never mix."""
    return "alembic_version" if name == MAIN else f"alembic_version_{name}"


def use_history_of(name: str) -> None:
    """Point this run at the history of ``name``: ``versions_NAME/`` beside ``versions/``.

    The command holds on to ``context.script``: its history is swapped for the one a
    ScriptDirectory on that folder reads, so ``head`` means this database's head and a new
    revision is written there.
    """
    folder = Path(context.script.dir) / f"versions_{name}"
    # git keeps no empty folder: a fresh clone has none until the first revision.
    folder.mkdir(exist_ok=True)
    script = context.script
    script.version_locations = [str(folder)]
    script.revision_map = ScriptDirectory(script.dir, version_locations=[str(folder)]).revision_map


def settings_of(name: str) -> DatabaseSettings:
    """The settings of database ``name``: given in memory, else loaded as the app loads them."""
    given = config.attributes.get("settings")
    try:
        settings = given if isinstance(given, AsyncdalSettings) else load_settings()
    except ConfigurationError as error:
        raise CommandError(str(error)) from None
    try:
        return settings.databases[name]
    except KeyError:
        variable = "DATABASE_URL (or DB__MAIN__URL)" if name == MAIN else f"DB__{name.upper()}__URL"
        raise CommandError(f"no settings for the database {name!r}: set {variable}") from None


NAME = database_name()
NAMES = metadata_names()
if NAME not in NAMES:
    raise CommandError(
        f"the database {NAME!r} has no MetaData in [{SECTION}] of {config.config_file_name}: "
        f"add '{NAME} = your.models:Base.metadata'"
    )
if NAME != MAIN:
    use_history_of(NAME)
target_metadata = load_metadata(NAME, NAMES[NAME])
# What autogenerate leaves alone: the other databases' tables and version tables.
OTHERS = {
    table
    for other, where in NAMES.items()
    if other != NAME
    for table in [*load_metadata(other, where).tables, version_table(other)]
} - set(target_metadata.tables)


def include_name(
    name: str | None, type_: NameFilterType, parent_names: NameFilterParentNames
) -> bool:
    """Autogenerate's filter: every table but those of the other databases."""
    if type_ != "table" or name is None:
        return True
    schema = parent_names.get("schema_name")
    return (f"{schema}.{name}" if schema else name) not in OTHERS


def run_migrations_offline() -> None:
    """``--sql``: emit the SQL to stdout instead of running it (no connection, no URL)."""
    context.configure(
        dialect_name="postgresql",
        target_metadata=target_metadata,
        version_table=version_table(NAME),
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
        version_table=version_table(NAME),
        include_name=include_name,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_async_migrations() -> None:
    # Migrations run once and exit: a null pool keeps no connection once they are done.
    engine = create_engine(settings_of(NAME).with_null_pool())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(do_run_migrations)
    finally:
        await engine.dispose()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if isinstance(connection, Connection):
        do_run_migrations(connection)
    else:
        asyncio.run(run_async_migrations())


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
