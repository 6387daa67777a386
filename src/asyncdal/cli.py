"""The ``asyncdal`` command.

``asyncdal check [paths]``: the architecture check (see :mod:`asyncdal.check`); exit code 1
when anything is found, 2 when a path is missing or a file does not parse.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from asyncdal.check import check_paths

__all__ = ["main"]


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


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = argparse.ArgumentParser(prog="asyncdal", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    check = commands.add_parser(
        "check", help="report code that opens database access around asyncdal"
    )
    check.add_argument("paths", nargs="*", type=Path, default=[Path()], help="files or folders")
    check.set_defaults(run=_check)
    arguments = parser.parse_args(argv)
    code: int = arguments.run(arguments)
    return code


if __name__ == "__main__":
    raise SystemExit(main())
