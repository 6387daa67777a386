"""The architecture check: application code gets its database access through asyncdal only.

It reads Python files (never imports or runs them) and reports:

- ``ADL001``: code that creates its own engine, session factory, session or raw connection
  (``create_async_engine``, ``AsyncSession(...)``, ``async_sessionmaker(...)``,
  ``asyncpg.connect``, ``asyncpg.create_pool``, ``psycopg.connect``, ...), which would bypass
  the settings, pools, timeouts and transaction handling of ``asyncdal.Database``.
- ``ADL002``: one session (or unit of work, or connection) handed to several tasks at once
  through ``asyncio.gather``, ``create_task`` (``asyncio``'s or a ``TaskGroup``'s),
  ``ensure_future`` or ``start_soon``, where the code shows it: an ``AsyncSession`` must never
  be used by two tasks. What counts as handing it over: passing the name (``session``), an
  attribute reaching one (``uow.session``), to two task-making calls in one function, or to
  one call inside a comprehension that makes a task per item
  (``gather(*(work(session, i) for i in ids))``). A ``create_task(...)`` awaited on the spot
  runs alone, so it does not count.

A line ending in ``# asyncdal: allow`` (a reason may follow) is not reported. Files inside an
``asyncdal`` package are skipped: that is where the engines are meant to be made.

Example:
    >>> findings = check_paths([Path("src/catalog")])
    >>> [str(finding) for finding in findings]
    []
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

__all__ = ["Finding", "check_paths", "check_source"]

ALLOW_COMMENT = re.compile(r"#\s*asyncdal:\s*allow\b")

# (top-level package, final dotted name) of the calls that open database access by hand.
_FORBIDDEN: dict[tuple[str, str], str] = {
    ("sqlalchemy", "create_async_engine"): "an engine",
    ("sqlalchemy", "create_engine"): "an engine",
    ("sqlalchemy", "async_engine_from_config"): "an engine",
    ("sqlalchemy", "engine_from_config"): "an engine",
    ("sqlalchemy", "AsyncSession"): "a session",
    ("sqlalchemy", "Session"): "a session",
    ("sqlalchemy", "async_sessionmaker"): "a session factory",
    ("sqlalchemy", "sessionmaker"): "a session factory",
    ("sqlalchemy", "scoped_session"): "a session factory",
    ("sqlalchemy", "async_scoped_session"): "a session factory",
    ("asyncpg", "connect"): "a raw connection",
    ("asyncpg", "create_pool"): "a connection pool",
    ("psycopg", "connect"): "a raw connection",
    ("psycopg", "AsyncConnection.connect"): "a raw connection",
    ("psycopg", "Connection.connect"): "a raw connection",
    ("psycopg2", "connect"): "a raw connection",
    ("psycopg_pool", "ConnectionPool"): "a connection pool",
    ("psycopg_pool", "AsyncConnectionPool"): "a connection pool",
    ("aiopg", "connect"): "a raw connection",
    ("aiopg", "create_pool"): "a connection pool",
}
_TASK_SPAWNERS = {"gather", "create_task", "ensure_future", "start_soon"}
_SHARED_KINDS = {"AsyncSession", "Session", "UnitOfWork", "AsyncConnection", "Connection"}
_SHARED_NAME = re.compile(r"(^|_)(session|uow|unit_of_work|conn|connection)$")


@dataclass(frozen=True, slots=True)
class Finding:
    """One violation: where it is, its code, and what to do instead."""

    path: Path
    line: int
    column: int
    code: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}:{self.column + 1}: {self.code} {self.message}"


class _Checker(ast.NodeVisitor):
    def __init__(self, path: Path) -> None:
        self.path = path
        self.aliases: dict[str, str] = {}
        self.findings: list[Finding] = []

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            local = alias.asname or alias.name.split(".")[0]
            self.aliases[local] = alias.name if alias.asname else local

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if node.module and node.level == 0:
            for alias in node.names:
                self.aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"

    def visit_Call(self, node: ast.Call) -> None:
        dotted = self._resolve(node.func)
        if dotted is not None:
            root, _, rest = dotted.partition(".")
            tail = rest.rsplit(".", 2)
            candidates = {tail[-1], ".".join(tail[-2:])}
            for name in candidates:
                what = _FORBIDDEN.get((root, name))
                if what is not None:
                    self._report(
                        node,
                        "ADL001",
                        f"creates {what} by hand ({name}); get it from asyncdal "
                        "(Database.unit_of_work(), .background_unit_of_work(), .session())",
                    )
                    break
        self.generic_visit(node)

    def visit_FunctionDef(self, node: ast.FunctionDef) -> None:
        self._check_shared(node)
        self.generic_visit(node)

    def visit_AsyncFunctionDef(self, node: ast.AsyncFunctionDef) -> None:
        self._check_shared(node)
        self.generic_visit(node)

    def _check_shared(self, function: ast.FunctionDef | ast.AsyncFunctionDef) -> None:
        typed = {
            argument.arg
            for argument in [*function.args.args, *function.args.kwonlyargs]
            if argument.annotation is not None and _annotation_kind(argument.annotation)
        }
        handed: dict[str, list[ast.AST]] = {}
        awaited = {id(node.value) for node in _own_nodes(function) if isinstance(node, ast.Await)}
        for node in _own_nodes(function):
            if not isinstance(node, ast.Call) or _last_name(node.func) not in _TASK_SPAWNERS:
                continue
            if _last_name(node.func) != "gather" and id(node) in awaited:
                continue  # awaited on the spot: it has finished before anything else starts
            for task in node.args:
                for name, copies in _sessions_passed(task, typed):
                    handed.setdefault(name, []).extend([task] * copies)
        for name, places in handed.items():
            if len(places) > 1:
                many = (
                    "every task it makes"
                    if places[0] is places[1]
                    else (f"{len(places)} concurrent tasks")
                )
                self._report(
                    places[1],
                    "ADL002",
                    f"{name!r} is handed to {many}; an AsyncSession "
                    "must not be shared: give each task its own (background_unit_of_work())",
                )

    def _resolve(self, func: ast.expr) -> str | None:
        parts: list[str] = []
        while isinstance(func, ast.Attribute):
            parts.append(func.attr)
            func = func.value
        if not isinstance(func, ast.Name):
            return None
        base = self.aliases.get(func.id)
        if base is None:
            return None
        return ".".join([base, *reversed(parts)])

    def _report(self, node: ast.AST, code: str, message: str) -> None:
        line = getattr(node, "lineno", 1)
        column = getattr(node, "col_offset", 0)
        self.findings.append(Finding(self.path, line, column, code, message))


def _own_nodes(function: ast.AST) -> Iterator[ast.AST]:
    """The nodes of a function's body, not of the functions nested in it."""
    for child in ast.iter_child_nodes(function):
        if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda):
            continue
        yield child
        yield from _own_nodes(child)


def _last_name(func: ast.expr) -> str | None:
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return None


def _sessions_passed(task: ast.expr, typed: set[str]) -> list[tuple[str, int]]:
    """The sessions (by the expression that names them) a task-making argument passes, each
    with how many tasks get it: 2 stands for "every task" of a comprehension."""
    if isinstance(task, ast.Starred):
        task = task.value
    copies = 1
    if isinstance(task, ast.GeneratorExp | ast.ListComp | ast.SetComp):
        targets = {
            node.id
            for generator in task.generators
            for node in ast.walk(generator.target)
            if isinstance(node, ast.Name)
        }
        task, copies = task.elt, 2
    else:
        targets = set()
    if not isinstance(task, ast.Call):
        return []
    passed = []
    for value in [*task.args, *(keyword.value for keyword in task.keywords)]:
        name = _shared_expression(value, typed)
        if name is not None and name.split(".")[0] not in targets:
            passed.append((name, copies))
    return passed


def _shared_expression(value: ast.expr, typed: set[str]) -> str | None:
    """``session`` or ``uow.session`` when ``value`` names a session, unit of work or
    connection (by annotation or by name), else None."""
    parts: list[str] = []
    node = value
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if not isinstance(node, ast.Name):
        return None
    dotted = ".".join([node.id, *reversed(parts)])
    last = parts[0] if parts else node.id
    if (not parts and node.id in typed) or _SHARED_NAME.search(last):
        return dotted
    return None


def _annotation_kind(annotation: ast.expr) -> bool:
    return any(
        isinstance(node, ast.Name | ast.Attribute) and _last_name(node) in _SHARED_KINDS
        for node in ast.walk(annotation)
    )


def check_source(source: str, path: Path) -> list[Finding]:
    """Check one file's source text.

    Raises:
        SyntaxError: the source is not valid Python.
    """
    checker = _Checker(path)
    checker.visit(ast.parse(source, filename=str(path)))
    lines = source.splitlines()
    return [
        finding
        for finding in checker.findings
        if not (finding.line <= len(lines) and ALLOW_COMMENT.search(lines[finding.line - 1]))
    ]


def _python_files(paths: Iterable[Path]) -> Iterator[Path]:
    for path in paths:
        if path.is_dir():
            yield from sorted(path.rglob("*.py"))
        else:
            yield path


def check_paths(paths: Iterable[Path]) -> list[Finding]:
    """Check every ``.py`` file under ``paths``, skipping asyncdal's own package.

    Raises:
        FileNotFoundError: a path does not exist.
    """
    findings: list[Finding] = []
    for path in paths:
        if not path.exists():
            raise FileNotFoundError(f"no such file or folder: {path}")
    for file in _python_files(paths):
        if "asyncdal" in file.parent.parts:
            continue
        findings.extend(check_source(file.read_text(encoding="utf-8"), file))
    return findings
