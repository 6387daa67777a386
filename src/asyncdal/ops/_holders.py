"""``asyncdal holders``: who holds the connections of the app's databases, longest first.

Two sources, since the CLI runs in a process of its own:

- By default the server's view, for every configured database: the backends of the app
  (``pg_stat_activity`` rows whose ``application_name`` is the database's, tagged ones
  ``<name>:<request id>`` included) that are running a statement or sit in a transaction, with
  how long, the request id where ``TAG_REQUESTS`` put it there, and the statement. It covers
  every worker process and every host of the app; a connection checked out but idle outside a
  transaction looks like a pooled one there and is not listed.
- ``--url``: an app's own view, from its ``/health/ready`` answer (``holders`` of each
  database: the route or task, the request id, the time held and the time in statements). Only
  the process that answered, and only with ``LEAK_DETECTION_SECONDS`` or ``IDLE_HOLD_SECONDS``
  on.

Exit code 0, or 2 on bad settings or an app that cannot be read.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import urllib.request
from typing import Any

from sqlalchemy import text

from asyncdal.errors import ConfigurationError
from asyncdal.orm._databases import Databases
from asyncdal.settings import load_settings

__all__ = ["add_holders_command"]

_HOLDERS = text(
    """
    SELECT pid, state, application_name,
           round(extract(epoch FROM now() - coalesce(xact_start, query_start)))::int AS seconds,
           left(query, 200) AS query
    FROM pg_stat_activity
    WHERE pid <> pg_backend_pid()
      AND (application_name = :name OR starts_with(application_name, :name || ':'))
      AND state IN ('active', 'idle in transaction', 'idle in transaction (aborted)')
    ORDER BY coalesce(xact_start, query_start) LIMIT :limit
    """
)


async def server_holders(databases: Databases, limit: int) -> dict[str, list[dict[str, Any]]]:
    """Per database, its app's backends busy or in a transaction, longest first."""
    found: dict[str, list[dict[str, Any]]] = {}
    try:
        for name, database in databases.items():
            application_name = database.settings.application_name
            async with database.engine.connect() as connection:
                rows = await connection.execute(
                    _HOLDERS, {"name": application_name, "limit": limit}
                )
            found[name] = [
                {
                    "pid": row.pid,
                    "state": row.state,
                    "seconds": row.seconds,
                    "request_id": row.application_name.partition(":")[2] or None,
                    "query": row.query,
                }
                for row in rows
            ]
    finally:
        await databases.dispose()
    return found


def app_holders(url: str) -> dict[str, list[dict[str, Any]]]:
    """Per database, the ``holders`` of an app's ``/health/ready`` answer at ``url``."""
    request = urllib.request.Request(url, headers={"Accept": "application/json"})  # noqa: S310
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:  # noqa: S310
            report = json.load(answer)
    except urllib.error.HTTPError as error:  # a 503 still carries the report
        report = json.load(error)
    return {name: health.get("holders", []) for name, health in report.get("databases", {}).items()}


def _holders(arguments: argparse.Namespace) -> int:
    if arguments.url:
        try:
            found = app_holders(arguments.url)
        except (OSError, ValueError) as error:
            print(f"asyncdal holders: cannot read {arguments.url}: {error}", file=sys.stderr)
            return 2
    else:
        try:
            databases = Databases.from_settings(load_settings())
        except ConfigurationError as error:
            print(f"asyncdal holders: {error}", file=sys.stderr)
            return 2
        found = asyncio.run(server_holders(databases, arguments.limit))
    print(json.dumps(found, indent=2))
    return 0


def add_holders_command(commands: Any) -> None:
    """Add ``holders`` to the ``asyncdal`` command's subcommands."""
    holders = commands.add_parser(
        "holders",
        help="the connections held longest now: the server's view, or an app's (--url)",
    )
    holders.add_argument(
        "--url", default=None, help="an app's /health/ready URL, to list what it holds"
    )
    holders.add_argument("--limit", type=int, default=10, help="most backends per database")
    holders.set_defaults(run=_holders)
