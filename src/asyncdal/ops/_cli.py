"""The ``asyncdal`` command.

``asyncdal check [paths]``: the architecture check (see :mod:`asyncdal.check`); exit code 1
when anything is found, 2 when a path is missing or a file does not parse.

``asyncdal health``: the same report as ``GET /health/ready``, as JSON, for the databases the
settings (environment, ``.env``) name; exit code 1 when not ready, 2 on bad settings.

``asyncdal budget``: per server, the connections every engine's pool may open (worker processes
from ``WEB_CONCURRENCY`` or ``--workers``) against the server's limit; exit code 1 when a
server is over budget, 2 on bad settings.

``asyncdal holders [--url URL]``: who holds the databases' connections, longest first: the
server's view (``pg_stat_activity``), or an app's own from its ``/health/ready`` (see
:mod:`asyncdal.ops._holders`).

``asyncdal migrations init [DIR] --metadata module:attribute``: ``alembic.ini`` and an async
``env.py`` on asyncdal's settings for your project (see :mod:`asyncdal.ops._migrations`); exit
code 2 when a file exists already.

``asyncdal outbox run|dead|requeue|counts``: the outbox worker and its operations (see
:mod:`asyncdal.outbox._cli`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import textwrap
from collections.abc import Sequence
from pathlib import Path

from asyncdal.errors import ConfigurationError
from asyncdal.observe._health import HealthReport, check_health
from asyncdal.ops._check import check_paths
from asyncdal.ops._holders import add_holders_command
from asyncdal.ops._migrations import add_migrations_commands
from asyncdal.orm._budget import check_budget, format_budget
from asyncdal.orm._databases import Databases
from asyncdal.outbox._cli import add_outbox_commands
from asyncdal.outbox._settings import outbox_pools
from asyncdal.settings import load_settings

__all__ = ["main", "plain"]

# A reference a terminal cannot follow: "(see :mod:`asyncdal.ops._migrations`)".
_SEE = re.compile(r"\s*\(see\s+:(?:py:)?[a-z]+:`[^`]+`\)")
_ROLE = re.compile(r":(?:py:)?[a-z]+:`(~?)([^`]+)`")


def plain(text: str) -> str:
    """Docstring text as a terminal shows it: no reStructuredText markup.

    ``literals`` lose their backticks, a role (``:class:`~asyncdal.Database```) becomes the
    name it shows (``Database``), and "(see :mod:`...`)" references are left out.

    Example:
        >>> plain("The ``asyncdal`` command (see :mod:`asyncdal.ops._check`).")
        'The asyncdal command.'
    """
    text = _SEE.sub("", text)
    text = _ROLE.sub(lambda m: m.group(2).rsplit(".", 1)[-1] if m.group(1) else m.group(2), text)
    return text.replace("``", "")


def _paragraphs(text: str, width: int = 88) -> str:
    """``text``'s paragraphs, each filled to ``width`` (argparse's raw formatter keeps them
    apart, where its default one would run them into one)."""
    paragraphs = (" ".join(paragraph.split()) for paragraph in text.strip().split("\n\n"))
    return "\n\n".join(textwrap.fill(paragraph, width) for paragraph in paragraphs)


def _check(arguments: argparse.Namespace) -> int:
    try:
        findings = check_paths(arguments.paths)
    except (FileNotFoundError, SyntaxError) as error:
        print(f"asyncdal check: {error}", file=sys.stderr)
        return 2
    for finding in findings:
        print(finding)
    if findings:
        print(
            f"asyncdal check: {len(findings)} finding(s); "
            "mark a justified line with '# asyncdal: allow <reason>'",
            file=sys.stderr,
        )
        return 1
    return 0


def _health(arguments: argparse.Namespace) -> int:
    try:
        databases = Databases.from_settings(load_settings())
    except ConfigurationError as error:
        print(f"asyncdal health: {error}", file=sys.stderr)
        return 2

    async def report() -> HealthReport:
        try:
            # A replica is "unknown" until checked once: check them all first, in the same time.
            await asyncio.gather(
                *(
                    database.check_replicas(arguments.answer_within)
                    for database in databases.values()
                ),
                return_exceptions=True,
            )
            return await check_health(databases, answer_within=arguments.answer_within)
        finally:
            await databases.dispose()

    result = asyncio.run(report())
    print(json.dumps(result.as_dict(), indent=2))
    return 0 if result.ready else 1


def _budget(arguments: argparse.Namespace) -> int:
    try:
        settings = load_settings()
    except ConfigurationError as error:
        print(f"asyncdal budget: {error}", file=sys.stderr)
        return 2
    workers = arguments.workers or settings.web_concurrency
    budgets = asyncio.run(check_budget(settings.databases, workers, outbox_pools()))
    print(format_budget(budgets))
    return 1 if any(budget.over for budget in budgets) else 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    # The module's docstring, as plain text: what each command does and its exit codes.
    parser = argparse.ArgumentParser(
        prog="asyncdal",
        description=_paragraphs(plain(__doc__)),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check", help="report code that opens database access around asyncdal"
    )
    check.add_argument("paths", nargs="*", type=Path, default=[Path()], help="files or folders")
    check.set_defaults(run=_check)
    health = commands.add_parser(
        "health", help="check every configured database, like /health/ready"
    )
    health.add_argument(
        "--answer-within", type=float, default=2.0, help="seconds each database gets to answer"
    )
    health.set_defaults(run=_health)
    budget = commands.add_parser(
        "budget", help="connections the pools may open, per server, against its limit"
    )
    budget.add_argument(
        "--workers", type=int, default=None, help="worker processes (default: WEB_CONCURRENCY)"
    )
    budget.set_defaults(run=_budget)
    add_holders_command(commands)
    add_migrations_commands(commands)
    add_outbox_commands(commands)
    arguments = parser.parse_args(argv)
    code: int = arguments.run(arguments)
    return code
