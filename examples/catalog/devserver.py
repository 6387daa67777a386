"""``make run``: serve the catalog on http://127.0.0.1:8000 against a real PostgreSQL.

With ``DATABASE_URL`` (or ``DB__MAIN__*``) set, in the environment or in ``.env`` (in the
current folder, where the app's settings read it too), that server is used and only migrated.
Without it an embedded PostgreSQL is started with its data under ``$CATALOG_DATA_DIR/postgres``
(``CATALOG_DATA_DIR`` defaults to ``.data`` in the repository), migrated, and seeded with a few
products. It is stopped when the dev server exits, on Ctrl-C (SIGINT) as on SIGTERM.

Run it as ``python -m catalog.devserver``; ``HOST`` and ``PORT`` change where it listens.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import FrameType

import uvicorn
from alembic import command
from alembic.config import Config
from dotenv import dotenv_values

from asyncdal import AsyncdalSettings, Database, configure_logging
from catalog.container import REFERENCE, load_catalog_settings
from catalog.embedded import start_embedded_postgres
from catalog.seed import seed_categories, seed_products

__all__ = ["data_dir", "database_configured", "main", "prepare_database", "reference_configured"]

logger = logging.getLogger("catalog.devserver")
ROOT = Path(__file__).resolve().parents[2]


def data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where the embedded server keeps its data: ``CATALOG_DATA_DIR``, else ``<repo>/.data``."""
    configured = (environ if environ is not None else os.environ).get("CATALOG_DATA_DIR")
    return Path(configured).expanduser().resolve() if configured else ROOT / ".data"


def database_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment or ``.env`` (in the current folder) says where the main
    database is (``DATABASE_URL``, ``DB__MAIN__URL`` or ``DB__MAIN__HOST``); other settings,
    such as a pool size, still go with the embedded server."""
    names = {**dotenv_values(".env"), **(environ if environ is not None else os.environ)}
    return any(
        value and key.upper() in {"DATABASE_URL", "DB__MAIN__URL", "DB__MAIN__HOST"}
        for key, value in names.items()
    )


def prepare_database() -> None:
    """Start the embedded server when no database is configured; migrate; seed if embedded."""
    embedded = not database_configured()
    if embedded:
        pgdata = data_dir() / "postgres"
        url = start_embedded_postgres(pgdata)
        # This process is the entry point: the app it serves reads its settings from here.
        os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
        if not reference_configured():
            # The reference database: a second database on the same embedded server.
            reference = start_embedded_postgres(pgdata, database="catalog_reference")
            os.environ["DB__REFERENCE__URL"] = reference.render_as_string(hide_password=False)
        logger.info("embedded PostgreSQL started (data in %s)", pgdata)
    settings = load_catalog_settings()
    command.upgrade(_alembic_config(settings), "head")
    if REFERENCE in settings.databases:
        command.upgrade(_alembic_config(settings, database=REFERENCE), "head")
    if embedded:
        database = Database("main", settings.databases["main"].with_null_pool(log=False))
        added = asyncio.run(_seed(database))
        if added:
            logger.info("seeded %d demo products", added)
        if REFERENCE in settings.databases:
            reference_database = Database(
                REFERENCE,
                settings.databases[REFERENCE].with_null_pool(log=False),
            )
            asyncio.run(_seed(reference_database, seed_categories))


def reference_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the environment or ``.env`` says where the reference database is."""
    names = {**dotenv_values(".env"), **(environ if environ is not None else os.environ)}
    return any(
        value and key.upper() in {"DB__REFERENCE__URL", "DB__REFERENCE__HOST"}
        for key, value in names.items()
    )


def _alembic_config(settings: AsyncdalSettings, database: str | None = None) -> Config:
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["settings"] = settings
    # alembic.ini's logging setup would raise the root level to WARNING, hiding this log.
    config.attributes["configure_logger"] = False
    if database is not None:
        config.cmd_opts = argparse.Namespace(x=[f"database={database}"])
    return config


async def _seed(
    database: Database, seed: Callable[[Database], Awaitable[int]] = seed_products
) -> int:
    try:
        return await seed(database)
    finally:
        await database.dispose()


def _exit(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main() -> None:
    """Prepare the database and serve the catalog with uvicorn.

    The embedded server is stopped by an exit handler, which a process killed by a signal never
    runs: SIGTERM is therefore turned into a normal exit (code 143), like Ctrl-C.
    """
    configure_logging()  # LOG_FORMAT=json for JSON lines
    signal.signal(signal.SIGTERM, _exit)
    prepare_database()
    # While serving, uvicorn handles SIGTERM (a graceful shutdown), then restores this handler
    # and raises the signal again: note it then, and exit once uvicorn has returned.
    terminated: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, frame: terminated.append(signum))
    uvicorn.run(
        "catalog.app:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
        # uvicorn's own records then go through the root handler too (JSON with LOG_FORMAT=json).
        log_config=None,
    )
    if terminated:
        raise SystemExit(128 + terminated[0])


if __name__ == "__main__":
    main()
