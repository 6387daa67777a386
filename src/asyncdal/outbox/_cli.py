"""``asyncdal outbox ...``: run a worker, list dead events, requeue them, count by status.

``asyncdal outbox run --handlers package.module:handlers`` starts a worker with the
:class:`~asyncdal.outbox._handlers.Handlers` found there (or returned by calling it, when it is
a factory), settings from ``OUTBOX__*`` and the database from ``DB__<NAME>__*`` /
``DATABASE_URL``. SIGTERM and Ctrl-C stop it gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import logging
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Coroutine
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from asyncdal.errors import ConfigurationError, UnknownDatabaseError
from asyncdal.orm._database import Database
from asyncdal.orm._databases import Databases
from asyncdal.outbox._connection import DATABASE_ERRORS, describe_database_error
from asyncdal.outbox._handlers import Handlers
from asyncdal.outbox._settings import OutboxSettings, load_outbox_settings
from asyncdal.outbox._table import NOTIFY_CHANNEL, OUTBOX_TABLE
from asyncdal.settings import load_settings

if TYPE_CHECKING:
    from asyncdal.outbox._metrics import OutboxMetrics

__all__ = ["add_outbox_commands", "load_handlers"]


def load_handlers(reference: str) -> Handlers:
    """The :class:`Handlers` named by ``module:attribute`` (called first if it is callable).

    Raises:
        ValueError: the reference is malformed or does not name handlers.
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ValueError(f"--handlers must look like package.module:attribute, not {reference!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise ValueError(f"cannot import {module_name!r}: {error}") from None
    found = getattr(module, attribute, None)
    if found is None:
        raise ValueError(f"{module_name!r} has no attribute {attribute!r}")
    if not isinstance(found, Handlers) and callable(found):
        found = found()
    if not isinstance(found, Handlers):
        raise ValueError(f"{reference} is not asyncdal.outbox.Handlers (nor returns them)")
    return found


def _database(settings: OutboxSettings, *, pool: str | None = None) -> Database:
    databases = Databases.from_settings(load_settings())
    database = databases[settings.database]
    if pool == "null":
        # A one-off command: a null pool, whatever sizing the server's settings give.
        return Database(database.name, database.settings.with_null_pool())
    return database.with_settings(pool=pool) if pool is not None else database


def _served_metrics(settings: OutboxSettings) -> OutboxMetrics | None:
    """The worker's metrics when ``OUTBOX__METRICS_PORT`` asks for them, else None: only
    then is prometheus-client (the ``metrics`` extra) needed.

    Raises:
        ConfigurationError: a metrics port is set and prometheus-client is not installed.
    """
    if settings.metrics_port is None:
        return None
    try:
        from asyncdal.outbox._metrics import OutboxMetrics
    except ModuleNotFoundError as error:
        if (error.name or "").partition(".")[0] != "prometheus_client":
            raise
        raise ConfigurationError(
            "OUTBOX__METRICS_PORT: serving metrics needs prometheus-client: "
            "pip install 'asyncdal[outbox,metrics]'"
        ) from None
    return OutboxMetrics()


async def _run_worker(arguments: argparse.Namespace, settings: OutboxSettings) -> int:
    from asyncdal.outbox._worker import OutboxWorker, OutboxWorkerCrashedError

    # Before the handlers' module is imported: a worker that cannot start says so at once.
    metrics = _served_metrics(settings)
    # As uvicorn and alembic do: `--handlers app.handlers:build` names a module of the project
    # the command runs in, which an installed console script does not have on sys.path.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    handlers = load_handlers(arguments.handlers)
    database = _database(settings)
    worker = OutboxWorker(database, handlers, settings, metrics=metrics)
    if metrics is not None and settings.metrics_port is not None:
        from prometheus_client import start_http_server

        from asyncdal.observe._metrics import DatabaseMetrics

        database_metrics = DatabaseMetrics(metrics.registry)
        # Instrumented after the worker derived its pools (which would otherwise inherit the
        # instrumentation under this database's name), then each under its own name.
        for instrumented in (database, *worker.own_databases):
            database_metrics.instrument(instrumented)
        start_http_server(
            settings.metrics_port, addr=settings.metrics_address, registry=metrics.registry
        )
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, worker.stop)
    try:
        await worker.run()
    except OutboxWorkerCrashedError:
        # Logged with its traceback by the worker, which released its leases first; a
        # process manager restarts it on a non-zero status.
        return 1
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        await database.dispose()
    return 0


async def _in_unit_of_work(settings: OutboxSettings, work: Callable[[Any], Awaitable[int]]) -> int:
    database = _database(settings, pool="null")
    try:
        async with database.unit_of_work() as uow:
            code = await work(uow)
            await uow.commit()
            return code
    finally:
        await database.dispose()


async def _dead(arguments: argparse.Namespace, settings: OutboxSettings) -> int:
    async def work(uow: Any) -> int:
        rows = await uow.session.execute(
            text(
                f"SELECT id, event_type, key, attempts, updated_at, last_error FROM {OUTBOX_TABLE}"
                " WHERE status = 'dead' ORDER BY id LIMIT :limit"
            ),
            {"limit": arguments.limit},
        )
        for row in rows:
            print(
                json.dumps(
                    {
                        "id": row.id,
                        "event_type": row.event_type,
                        "key": row.key,
                        "attempts": row.attempts,
                        "died_at": row.updated_at.isoformat(),
                        "last_error": row.last_error,
                    }
                )
            )
        return 0

    return await _in_unit_of_work(settings, work)


async def _requeue(arguments: argparse.Namespace, settings: OutboxSettings) -> int:
    if arguments.all == bool(arguments.ids):
        print("asyncdal outbox requeue: give event ids or --all (not both)", file=sys.stderr)
        return 2

    async def work(uow: Any) -> int:
        condition = "" if arguments.all else " AND id = ANY(:ids)"
        result = await uow.session.execute(
            text(
                f"UPDATE {OUTBOX_TABLE} SET status = 'pending', attempts = 0, "
                "available_at = now(), updated_at = now() "
                f"WHERE status = 'dead'{condition} RETURNING id"
            ),
            {} if arguments.all else {"ids": arguments.ids},
        )
        requeued = sorted(result.scalars())
        await uow.session.execute(text(f"SELECT pg_notify('{NOTIFY_CHANNEL}', '')"))
        print(json.dumps({"requeued": requeued}))
        missing = sorted(set(arguments.ids) - set(requeued))
        if missing:
            print(
                f"asyncdal outbox requeue: not dead or no such event: {missing}",
                file=sys.stderr,
            )
            return 1
        return 0

    return await _in_unit_of_work(settings, work)


async def _counts(arguments: argparse.Namespace, settings: OutboxSettings) -> int:
    async def work(uow: Any) -> int:
        rows = await uow.session.execute(
            text(f"SELECT status, count(*) AS n FROM {OUTBOX_TABLE} GROUP BY status")
        )
        counts = {"pending": 0, "leased": 0, "done": 0, "dead": 0}
        counts.update({row.status: row.n for row in rows})
        print(json.dumps(counts))
        return 0

    return await _in_unit_of_work(settings, work)


def _runner(
    command: Callable[[argparse.Namespace, OutboxSettings], Coroutine[Any, Any, int]],
) -> Callable[[argparse.Namespace], int]:
    def run(arguments: argparse.Namespace) -> int:
        try:
            settings = load_outbox_settings()
            if arguments.database is not None:
                settings = settings.model_copy(update={"database": arguments.database})
            return asyncio.run(command(arguments, settings))
        except (ConfigurationError, UnknownDatabaseError, ValueError) as error:
            print(f"asyncdal outbox: {error}", file=sys.stderr)
            return 2
        except DATABASE_ERRORS as error:
            problem = describe_database_error(error)
            print(f"asyncdal outbox: cannot use the database ({problem})", file=sys.stderr)
            return 2

    return run


def _non_negative(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not {value!r}") from None
    if number < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, not {number}")
    return number


def add_outbox_commands(commands: Any) -> None:
    """Add the ``outbox`` command group to an ``argparse`` subparsers object."""
    outbox = commands.add_parser("outbox", help="the transactional outbox: worker and operations")
    actions = outbox.add_subparsers(dest="outbox_command", required=True)

    def action(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = actions.add_parser(name, help=help_text)
        parser.add_argument(
            "--database", default=None, help="named database (default: OUTBOX__DATABASE, main)"
        )
        return parser

    run = action("run", "run a worker until SIGTERM")
    run.add_argument(
        "--handlers", required=True, help="package.module:attribute naming the Handlers"
    )
    run.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    run.add_argument(
        "--log-module",
        dest="log_modules",
        action="append",
        default=[],
        help="another logger to show at --log-level (repeatable), e.g. the handlers' module",
    )
    run.set_defaults(run=_with_logging(_runner(_run_worker)))
    dead = action("dead", "list dead events (JSON lines)")
    dead.add_argument(
        "--limit", type=_non_negative, default=100, help="at most this many (default 100)"
    )
    dead.set_defaults(run=_runner(_dead))
    requeue = action("requeue", "make dead events pending again, with fresh attempts")
    requeue.add_argument("ids", nargs="*", type=int, help="event ids")
    requeue.add_argument("--all", action="store_true", help="every dead event")
    requeue.set_defaults(run=_runner(_requeue))
    counts = action("counts", "count events by status (JSON)")
    counts.set_defaults(run=_runner(_counts))


def _with_logging(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def configured(arguments: argparse.Namespace) -> int:
        # The worker's own loggers at the asked-for level; libraries stay at WARNING.
        logging.basicConfig(
            level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
        for name in ("asyncdal.outbox", *arguments.log_modules):
            logging.getLogger(name).setLevel(arguments.log_level.upper())
        return run(arguments)

    return configured
