"""One SQL classifier: whether a statement is a plain read, its kind, whether it locks rows.

It serves where SQLAlchemy cannot tell: a ``text()`` or a driver-level statement. The routing
session asks :func:`classify` (a statement that may write or locks rows goes to the primary),
the read-only unit of work :func:`may_write`, the metrics :func:`statement_kind`.

It does not parse SQL: it reads the statement's tokens the way PostgreSQL's lexer cuts them,
far enough to skip what can hide a keyword, in one pass:

- string literals: ``'...'`` (``''`` escapes a quote; also the bodies of ``B''``, ``X''``,
  ``N''`` and ``U&''``) and ``E'...'`` (backslash escapes as well);
- quoted identifiers: ``"update"`` is a name, never a keyword;
- ``--`` comments to the end of the line and ``/* */`` comments, which nest;
- dollar-quoted bodies: ``$$...$$`` and ``$tag$...$tag$`` (a function's or a ``DO`` block's).

A *plain read* (``may_write`` False) is a statement starting, after any opening parentheses,
with ``SELECT``, ``VALUES``, ``TABLE``, ``WITH``, ``SHOW`` or ``EXPLAIN``, except:

- ``SELECT ... INTO`` (it creates a table);
- a ``WITH`` that names ``INSERT``, ``UPDATE``, ``DELETE`` or ``MERGE`` outside a locking clause
  (a data-modifying CTE, or one as the main statement);
- ``EXPLAIN ANALYZE`` (or ``EXPLAIN (ANALYZE)``) of a statement that may write: it runs it.
  A plain ``EXPLAIN`` runs nothing, whatever it explains.

A locking read (``SELECT ... FOR UPDATE``) is a plain read that :func:`locks_rows`.

Everything else may write: ``INSERT``, ``UPDATE``, ``DELETE``, ``MERGE``, ``TRUNCATE``, ``COPY``
(either direction), ``CALL``, ``DO``, DDL, ``SET``, ``LISTEN``/``NOTIFY``, cursor and
transaction commands, and an empty statement. Several statements separated by ``;`` may write
when one of them may.

Limits, all on the safe side but the first:

- a function that writes is invisible: ``SELECT nextval('s')`` or ``SELECT my_function()`` is a
  plain read here. Only the server can tell; a ``READ ONLY`` connection (replicas, snapshot
  reads) makes it refuse.
- ``update``, ``delete``, ``insert`` and ``merge`` are unreserved keywords in PostgreSQL: a CTE
  or a column left unquoted with such a name makes a ``WITH`` count as a write.
- ``standard_conforming_strings = off`` (backslash escapes in ``'...'``) is not supported;
  PostgreSQL has had it on by default since 9.1.

Example:
    >>> may_write("WITH x AS (SELECT 1) SELECT 'what to do' FROM x")
    False
    >>> statement_kind("WITH d AS (DELETE FROM t RETURNING *) SELECT count(*) FROM d")
    'delete'
    >>> locks_rows("SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE SKIP LOCKED")
    True
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Literal, NamedTuple

__all__ = [
    "STATEMENT_KINDS",
    "Classification",
    "StatementKind",
    "classify",
    "locks_rows",
    "may_write",
    "statement_kind",
]

StatementKind = Literal["select", "insert", "update", "delete", "merge", "other"]
STATEMENT_KINDS: tuple[StatementKind, ...] = (
    "select",
    "insert",
    "update",
    "delete",
    "merge",
    "other",
)
"""Every value :func:`statement_kind` returns (a closed set: metric labels)."""

# One alternation, compiled once; group 1 is a token classification needs (a word: keyword,
# identifier or number; a parenthesis or semicolon; a quoted identifier), the rest is skipped
# whole: E'' strings (before words, so that their E is not read as one), '' strings, --
# comments, dollar-quoted bodies (group 2 is the tag, which must close them) and, group 3,
# the opening of a block comment (those nest: a regex cannot find their end). `findall` and
# `search` skip the characters no alternative starts with (whitespace, operators, commas). An
# unterminated literal runs to the end of the text, as for the server (which then refuses it).
_TOKEN = re.compile(
    r"""
      [eE]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*'?
    | (\w[\w$]*|[();]|"[^"]*(?:""[^"]*)*"?)
    | '[^']*(?:''[^']*)*'?
    | --[^\n]*
    | \$((?:[^\W\d]\w*)?)\$(?:.*?\$\2\$|.*)
    | (/\*)
    """,
    re.VERBOSE | re.DOTALL,
)

_MODIFYING: dict[str, StatementKind] = {
    "insert": "insert",
    "update": "update",
    "delete": "delete",
    "merge": "merge",
}
_QUERIES = frozenset({"select", "values", "table"})
_AFTER_FOR = frozenset({"update", "share", "no", "key"})  # FOR [NO] KEY UPDATE, FOR SHARE...
_LOCKING_WORDS = frozenset({"for", "key"})  # an UPDATE right after these is a lock, not DML
_ANALYZE = frozenset({"analyze", "analyse"})
_FALSE = frozenset({"false", "off", "0"})
_END = ";"


class Classification(NamedTuple):
    """What :func:`classify` found in a statement.

    Attributes:
        kind: one of :data:`STATEMENT_KINDS`.
        may_write: False only for a plain read (see the module).
        locks_rows: a ``FOR UPDATE``, ``FOR NO KEY UPDATE``, ``FOR SHARE`` or ``FOR KEY SHARE``
            that runs.
    """

    kind: StatementKind
    may_write: bool
    locks_rows: bool


_UNKNOWN = Classification("other", True, False)


def classify(sql: str) -> Classification:
    """Classify ``sql`` in one pass (see the module for what counts as what).

    Args:
        sql: one statement, or several separated by ``;``.

    Returns:
        The kind (that of every statement when they agree, else ``other``), whether any
        statement may write, and whether any locks rows.
    """
    tokens = iter(_tokens(sql))
    found: Classification | None = None
    for first in tokens:
        if first == _END:
            continue  # an empty statement between semicolons (or a trailing one)
        one = _statement(first, tokens)
        found = (
            one
            if found is None
            else Classification(
                found.kind if found.kind == one.kind else "other",
                found.may_write or one.may_write,
                found.locks_rows or one.locks_rows,
            )
        )
    return _UNKNOWN if found is None else found


def statement_kind(sql: str) -> StatementKind:
    """``select``, ``insert``, ``update``, ``delete``, ``merge`` or ``other``.

    ``SELECT``, ``VALUES`` and ``TABLE`` are ``select``; a ``WITH`` is the kind of its
    data-modifying part (the main statement's, else its first data-modifying CTE's), else
    ``select``; ``EXPLAIN``, ``SHOW``, DDL and the rest are ``other``.
    """
    return classify(sql).kind


def may_write(sql: str) -> bool:
    """True unless ``sql`` is a plain read (see the module; a function that writes is not
    seen)."""
    return classify(sql).may_write


def locks_rows(sql: str) -> bool:
    """True when ``sql`` takes row locks: ``FOR UPDATE``, ``FOR NO KEY UPDATE``,
    ``FOR SHARE`` or ``FOR KEY SHARE`` (outside literals and comments; not under a plain
    ``EXPLAIN``, which runs nothing)."""
    return classify(sql).locks_rows


def _tokens(sql: str) -> list[str]:
    """The tokens classification needs, lowercased: words (keywords, identifiers, numbers),
    ``(``, ``)``, ``;`` and quoted identifiers (which keep their quotes, so that ``"update"``
    never equals a keyword). Literals and comments yield nothing."""
    if "/*" not in sql:
        # No block comment (the common case): the regex alone cuts the text, in C.
        return [token.lower() for token, _, _ in _TOKEN.findall(sql) if token]
    found = []
    position = 0
    while (match := _TOKEN.search(sql, position)) is not None:
        position = match.end()
        if match.group(1):
            found.append(match.group(1).lower())
        elif match.group(3):
            position = _comment_end(sql, position)
    return found


def _comment_end(sql: str, position: int) -> int:
    """Where the block comment opened just before ``position`` ends (they nest)."""
    depth = 1
    while depth:
        close = sql.find("*/", position)
        if close < 0:
            return len(sql)
        opening = sql.find("/*", position, close)
        if opening >= 0:
            depth += 1
            position = opening + 2
        else:
            depth -= 1
            position = close + 2
    return position


def _statement(first: str, tokens: Iterator[str]) -> Classification:
    """Classify the statement that starts with ``first``, reading ``tokens`` through its
    ``;`` (or the end)."""
    command = first
    while command == "(":  # (SELECT 1) UNION (SELECT 2)
        command = next(tokens, _END)
    if command == _END:
        return _UNKNOWN
    if command == "explain":
        return _explain(tokens)
    # One loop for every command: the depth tells a WITH's main statement (top level) from
    # its CTEs; `previous` tells FOR UPDATE (a lock) from UPDATE (a command).
    top: StatementKind | None = None
    nested: StatementKind | None = None
    into = locks = False
    depth = 0
    previous = command
    for part in tokens:
        if part == _END:
            break
        if part == "(":
            depth += 1
        elif part == ")":
            depth -= 1
        elif part in _MODIFYING and previous not in _LOCKING_WORDS:
            if depth <= 0:
                top = top or _MODIFYING[part]
            else:
                nested = nested or _MODIFYING[part]
        elif part == "into":
            into = True
        if previous == "for" and part in _AFTER_FOR:
            locks = True
        previous = part
    if command in _QUERIES:
        # A data-modifying statement can only be a WITH's, at the top: the server refuses it
        # anywhere else, so a column named `update` in a SELECT is no reason to suspect one.
        return Classification("select", into, locks)
    if command == "with":
        modifying = top or nested
        return Classification(modifying or "select", modifying is not None or into, locks)
    if command in _MODIFYING:
        return Classification(_MODIFYING[command], True, locks)
    return Classification("other", command != "show", locks)


def _explain(tokens: Iterator[str]) -> Classification:
    """Classify an ``EXPLAIN`` (its word read): it runs the statement only with ANALYZE."""
    analyze = False
    part = next(tokens, _END)
    if part == "(":  # EXPLAIN (ANALYZE, BUFFERS) ...; ANALYZE takes an optional boolean
        previous = part
        for option in tokens:
            if option in (")", _END):
                break
            if option in _ANALYZE:
                analyze = True
            elif previous in _ANALYZE and option in _FALSE:
                analyze = False
            previous = option
        part = next(tokens, _END)
    else:  # EXPLAIN ANALYZE VERBOSE ...
        while part in _ANALYZE or part == "verbose":
            analyze = analyze or part != "verbose"
            part = next(tokens, _END)
    if part == _END:
        return Classification("other", False, False)
    explained = _statement(part, tokens)
    return Classification(
        "other", analyze and explained.may_write, analyze and explained.locks_rows
    )
