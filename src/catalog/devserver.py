"""``make run``: serve the catalog on http://127.0.0.1:8000 against a real PostgreSQL.

With ``DATABASE_URL`` (or ``DB__MAIN__*``) set, in the environment or ``.env``, that server is
used and only migrated. Without it an embedded PostgreSQL is started with its data under
``.data/postgres``, migrated, and seeded with a few products.

Run it as ``python -m catalog.devserver``; ``HOST`` and ``PORT`` change where it listens.
"""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

import uvicorn
from alembic import command
from alembic.config import Config
from dotenv import dotenv_values

from asyncdal import Database, load_settings
from catalog.embedded import start_embedded_postgres
from catalog.seed import seed_products

__all__ = ["database_configured", "main", "prepare_database"]

logger = logging.getLogger("catalog.devserver")
ROOT = Path(__file__).resolve().parents[2]


def database_configured(environ: dict[str, str] | None = None) -> bool:
    """True when the environment or ``.env`` names the main database."""
    names = {**dotenv_values(ROOT / ".env"), **(environ if environ is not None else os.environ)}
    return any(
        value and (key.upper() == "DATABASE_URL" or key.upper().startswith("DB__MAIN__"))
        for key, value in names.items()
    )


def prepare_database() -> None:
    """Start the embedded server when no database is configured; migrate; seed if embedded."""
    embedded = not database_configured()
    if embedded:
        url = start_embedded_postgres(ROOT / ".data" / "postgres")
        # This process is the entry point: the app it serves reads its settings from here.
        os.environ["DATABASE_URL"] = url.render_as_string(hide_password=False)
        logger.info("embedded PostgreSQL started (data in .data/postgres)")
    settings = load_settings()
    config = Config(str(ROOT / "alembic.ini"))
    config.attributes["settings"] = settings
    command.upgrade(config, "head")
    if embedded:
        database = Database("main", settings.databases["main"].model_copy(update={"pool": "null"}))
        added = asyncio.run(_seed(database))
        if added:
            logger.info("seeded %d demo products", added)


async def _seed(database: Database) -> int:
    try:
        return await seed_products(database)
    finally:
        await database.dispose()


def main() -> None:
    """Prepare the database and serve the catalog with uvicorn."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    prepare_database()
    uvicorn.run(
        "catalog.app:create_app",
        factory=True,
        host=os.environ.get("HOST", "127.0.0.1"),
        port=int(os.environ.get("PORT", "8000")),
    )


if __name__ == "__main__":
    main()
