"""``assert_max_queries(n)``: fail a test whose block ran more statements than it should."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from asyncdal.engine._scope import StatementLog, current_statement_log, statement_log
from asyncdal.orm._database import Database

__all__ = ["assert_max_queries"]


@contextmanager
def assert_max_queries(
    n: int, target: Database | AsyncEngine | AsyncSession | str | None = None
) -> Iterator[StatementLog]:
    """Fail, listing the statements, when the block runs more than ``n`` of them.

    Counts the statements sent in the block and in the tasks it starts (not those of other
    tests or requests running at the same time): its own context, like ``deadline``. An N+1
    pattern (one query per row of the previous one) shows as the same statement listed over
    and over.

    Example:
        >>> with assert_max_queries(2):
        ...     authors = (await session.scalars(
        ...         select(Author).options(selectinload(Author.books))
        ...     )).all()                                 # 2: the authors, then their books

    Args:
        n: the most statements allowed.
        target: whose statements count: by default those of every asyncdal database; a
            :class:`~asyncdal.Database`, only that one's (or by name, every database of that
            name); an ``AsyncEngine``
            or ``AsyncSession`` (asyncdal's or not), only those sent through its engine.

    Yields:
        The log, whose ``statements`` grow as the block runs.

    Raises:
        AssertionError: more than ``n`` statements ran; the message lists them.
    """
    engine = _engine_of(target)
    source: object = target.safety_nets if isinstance(target, Database) else target
    log = StatementLog(None if engine is not None else source)
    if engine is None:
        with statement_log(log):
            yield log
    else:
        # Marks this block's context; asyncdal's own counter adds nothing to it (no database
        # is that object), the listener below adds what goes through the engine.
        marker = StatementLog(source=object())

        def sent(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            if current_statement_log() is marker:
                log.statements.append(statement)

        event.listen(engine, "before_cursor_execute", sent)
        try:
            with statement_log(marker):
                yield log
        finally:
            event.remove(engine, "before_cursor_execute", sent)
    if len(log.statements) > n:
        listed = "\n".join(f"  {index}. {sql}" for index, sql in enumerate(log.statements, 1))
        raise AssertionError(f"{len(log.statements)} statements ran, more than {n}:\n{listed}")


def _engine_of(target: object) -> Engine | None:
    if isinstance(target, AsyncSession):
        bind = target.bind
        return None if bind is None else _engine_of(bind)
    if isinstance(target, AsyncEngine):
        return target.sync_engine
    if isinstance(target, Engine):
        return target
    return None
