"""``asyncdal migrations init``: Alembic for a project of your own, on asyncdal's settings.

Writes ``alembic.ini`` (in the current folder) and, in ``DIR`` (default ``migrations``), an
async ``env.py``, ``script.py.mako`` and ``versions/``. The files come from the package's
``templates`` folder; ``env.py`` uses public APIs only and is yours to edit afterwards.

Example:
    $ asyncdal migrations init --metadata app.models:Base.metadata
    $ alembic revision --autogenerate -m init && alembic upgrade head

    A second database with a history of its own (``versions_reference/``, version table
    ``alembic_version_reference``), migrated with ``alembic -x database=reference ...``:

    $ asyncdal migrations init --metadata app.models:Base.metadata \\
        --database reference=app.reference:ReferenceBase.metadata
"""

from __future__ import annotations

import argparse
import os
import re
import string
import sys
from importlib.resources import files
from pathlib import Path
from typing import Any

__all__ = ["add_migrations_commands", "init_migrations"]

MAIN = "main"
# Names as the settings read them: DB__<NAME>__URL, lower-cased.
_NAME = re.compile(r"[a-z][a-z0-9_]*")
# module:attribute (dotted on both sides), as pkgutil.resolve_name reads it.
_TARGET = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*")


class MigrationsInitError(Exception):
    """Nothing was written: an argument is wrong, or a file would be overwritten."""


def _template(name: str) -> str:
    return files("asyncdal.ops").joinpath("templates", name).read_text(encoding="utf-8")


def _check_target(option: str, target: str) -> None:
    if not _TARGET.fullmatch(target):
        raise MigrationsInitError(
            f"{option} {target!r}: write module:attribute, e.g. app.models:Base.metadata"
        )


def _databases(metadata: str, others: list[str]) -> dict[str, str]:
    """Each database's ``module:attribute``, ``main`` first, checked."""
    _check_target("--metadata", metadata)
    databases = {MAIN: metadata}
    for given in others:
        name, equals, target = given.partition("=")
        name = name.strip().lower()
        if not equals or not _NAME.fullmatch(name):
            raise MigrationsInitError(
                f"--database {given!r}: write NAME=module:attribute, NAME as in "
                "DB__NAME__URL (letters, digits, underscores)"
            )
        if name in databases:
            raise MigrationsInitError(
                f"--database {given!r}: {name!r} is given twice"
                + (" (main's MetaData is --metadata)" if name == MAIN else "")
            )
        _check_target(f"--database {name}=", target.strip())
        databases[name] = target.strip()
    return databases


def init_migrations(
    directory: Path, *, metadata: str, databases: list[str] | None = None, config: Path
) -> list[Path]:
    """Write ``config`` (alembic.ini) and the environment in ``directory``.

    Args:
        directory: the script folder (``env.py``, ``script.py.mako``, ``versions/``).
        metadata: the main database's ``MetaData``, as ``module:attribute``.
        databases: other named databases, each ``NAME=module:attribute``.
        config: where ``alembic.ini`` goes; ``script_location`` is written relative to it.

    Returns:
        The files and folders written.

    Raises:
        MigrationsInitError: a bad argument, or a file that exists already (nothing written).
    """
    targets = _databases(metadata, databases or [])
    existing = [path for path in (config, directory) if path.exists()]
    if directory.is_dir() and not any(directory.iterdir()):
        existing.remove(directory)  # an empty folder is free to fill
    if existing:
        raise MigrationsInitError(
            f"refusing to overwrite {' and '.join(map(str, existing))}: nothing was written "
            "(move them away, or choose another DIR or --config)"
        )
    location = Path(os.path.relpath(directory.resolve(), config.resolve().parent)).as_posix()
    ini = string.Template(_template("alembic.ini")).substitute(
        script_location=location,
        databases="\n".join(f"{name} = {target}" for name, target in targets.items()),
    )
    histories = [directory / "versions"] + [
        directory / f"versions_{name}" for name in targets if name != MAIN
    ]
    written = [config, directory / "env.py", directory / "script.py.mako", *histories]
    for history in histories:
        history.mkdir(parents=True, exist_ok=True)
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(ini, encoding="utf-8")
    for name in ("env.py", "script.py.mako"):
        (directory / name).write_text(_template(name), encoding="utf-8")
    return written


def _init(arguments: argparse.Namespace) -> int:
    try:
        written = init_migrations(
            arguments.directory,
            metadata=arguments.metadata,
            databases=arguments.database,
            config=arguments.config,
        )
    except MigrationsInitError as error:
        print(f"asyncdal migrations init: {error}", file=sys.stderr)
        return 2
    for path in written:
        print(f"wrote {path}{'/' if path.is_dir() else ''}")
    others = [name for name in _databases(arguments.metadata, arguments.database) if name != MAIN]
    print(
        "next: alembic revision --autogenerate -m init && alembic upgrade head"
        + "".join(f"\n      alembic -x database={name} upgrade head" for name in others)
    )
    return 0


def add_migrations_commands(commands: argparse._SubParsersAction[Any]) -> None:
    """Add ``asyncdal migrations init`` to the command line's subcommands."""
    migrations = commands.add_parser("migrations", help="Alembic for your own project")
    actions = migrations.add_subparsers(dest="action", required=True)
    init = actions.add_parser(
        "init",
        help="write alembic.ini and an async env.py on asyncdal's settings",
        description=(
            "Write alembic.ini (here, or --config) and DIR/env.py, DIR/script.py.mako, "
            "DIR/versions/. Refuses to overwrite anything (exit code 2)."
        ),
    )
    init.add_argument(
        "directory",
        nargs="?",
        type=Path,
        default=Path("migrations"),
        metavar="DIR",
        help="the script folder (default: migrations)",
    )
    init.add_argument(
        "--metadata",
        required=True,
        metavar="MODULE:ATTRIBUTE",
        help="the main database's MetaData, e.g. app.models:Base.metadata",
    )
    init.add_argument(
        "--database",
        action="append",
        default=[],
        metavar="NAME=MODULE:ATTRIBUTE",
        help="another named database with its own history (alembic -x database=NAME ...)",
    )
    init.add_argument(
        "--config",
        type=Path,
        default=Path("alembic.ini"),
        metavar="PATH",
        help="where alembic.ini goes (default: ./alembic.ini)",
    )
    init.set_defaults(run=_init)
