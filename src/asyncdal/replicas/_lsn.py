"""Read-your-writes by WAL position: a commit's position, and reads that wait for it.

After a routing session that wrote commits, :func:`track_commit_lsn` reads the primary's WAL
position and keeps it (``uow.commit_lsn``, and the collector of :func:`current_commit_lsns`,
which the FastAPI middleware answers with). A later request that sends that position back reads
inside :func:`read_your_writes`, and the routing session serves its reads only from nodes that
have replayed it (:func:`required_lsn`).

The positions live in context variables, so they follow the request or task that set them.

Example:
    >>> with read_your_writes("16/B374D848"):
    ...     async with db.read_only_unit_of_work() as uow:
    ...         ...  # reads from a replica that shows that commit, else from the primary
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from typing import Any

from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

__all__ = [
    "COMMIT_LSN",
    "DATABASE",
    "PRIMARY_ENGINE",
    "UNCOMMITTED_WRITE",
    "current_commit_lsns",
    "format_lsn",
    "parse_lsn",
    "position_unknown",
    "read_your_writes",
    "required_lsn",
    "track_commit_lsn",
]

COMMIT_LSN = "asyncdal.commit_lsn"
"""``Session.info`` key: the WAL position of the session's last commit that wrote."""
DATABASE = "asyncdal.database"
"""``Session.info`` key: the name of the database a routing session belongs to."""
UNCOMMITTED_WRITE = "asyncdal.uncommitted_write"
"""``Session.info`` key: the session sent a write to the primary since its last commit."""
PRIMARY_ENGINE = "asyncdal.primary_engine"
"""``Session.info`` key: the (sync) engine of the primary a routing session writes to."""

_LSN = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")
_PRIMARY_CONNECTION = "asyncdal.primary_connection"

_required: ContextVar[Mapping[str, int] | None] = ContextVar("asyncdal_required", default=None)
_commits: ContextVar[dict[str, int] | None] = ContextVar("asyncdal_commits", default=None)
# Databases whose commit position could not be read in this block (see current_commit_lsns):
# the rest of the block reads them on the primary, the one node sure to show the commit.
_unknown_positions: ContextVar[set[str] | None] = ContextVar(
    "asyncdal_unknown_positions", default=None
)

logger = logging.getLogger("asyncdal.routing")


def parse_lsn(text: str) -> int:
    """A WAL position from PostgreSQL's text form (``16/B374D848``) as a number.

    Raises:
        ValueError: the text is not a WAL position.
    """
    match = _LSN.match(text)
    if match is None:
        raise ValueError(f"not a WAL position like 0/16B3748: {text[:40]!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(position: int) -> str:
    """PostgreSQL's text form of a WAL position."""
    return f"{position >> 32:X}/{position & 0xFFFFFFFF:X}"


@contextmanager
def read_your_writes(lsn: str | int | None, database: str = "main") -> Iterator[None]:
    """Serve the block's reads of ``database`` only from nodes that have replayed ``lsn``.

    Args:
        lsn: a commit's WAL position (``uow.commit_lsn``, the ``X-DB-LSN`` header); None
            requires nothing.
        database: the named database the position belongs to.
    """
    if lsn is None:
        yield
        return
    position = parse_lsn(lsn) if isinstance(lsn, str) else lsn
    token = _required.set({**(_required.get() or {}), database: position})
    try:
        yield
    finally:
        with suppress(ValueError):
            _required.reset(token)


def required_lsn(database: str) -> int | None:
    """The WAL position reads of ``database`` must see in this context, if any."""
    required = _required.get()
    return None if required is None else required.get(database)


def position_unknown(database: str) -> bool:
    """A commit to ``database`` in this block left no position (its reads stay on the
    primary)."""
    unknown = _unknown_positions.get()
    return unknown is not None and database in unknown


@contextmanager
def current_commit_lsns() -> Iterator[dict[str, int]]:
    """Collect the commit positions of every unit of work committed in this block, by
    database name (the FastAPI middleware answers with them)."""
    collected: dict[str, int] = {}
    token = _commits.set(collected)
    unknown = _unknown_positions.set(set())
    try:
        yield collected
    finally:
        with suppress(ValueError):
            _commits.reset(token)
        with suppress(ValueError):
            _unknown_positions.reset(unknown)


def track_commit_lsn(session_class: type[Session]) -> None:
    """After a session of ``session_class`` that wrote commits, read the primary's WAL insert
    position on the same connection and keep it in ``session.info`` (and in the collector of
    :func:`current_commit_lsns`).

    The session's ``info`` names its database (:data:`DATABASE`) and its primary's engine
    (:data:`PRIMARY_ENGINE`, so one class serves the engines of every event loop), and the
    routing session marks it when it sends a write to the primary (:data:`UNCOMMITTED_WRITE`).

    It is read right *after* COMMIT, not inside the transaction: the commit record comes after
    every statement of the transaction, so only a position taken once COMMIT has returned
    covers it; a replica that has replayed that far shows the transaction. It is the same one
    round trip, on the connection the session still holds (no second checkout).
    """
    from sqlalchemy import event

    def remember(session: Session, transaction: Any, connection: Connection) -> None:
        if connection.engine is session.info.get(PRIMARY_ENGINE):
            session.info[_PRIMARY_CONNECTION] = connection

    def after_commit(session: Session) -> None:
        connection: Connection | None = session.info.pop(_PRIMARY_CONNECTION, None)
        if not session.info.pop(UNCOMMITTED_WRITE, False) or connection is None:
            return
        database: str = session.info[DATABASE]
        try:
            connection.execution_options(isolation_level="AUTOCOMMIT")
            text = connection.exec_driver_sql("SELECT pg_current_wal_insert_lsn()::text").scalar()
            position = parse_lsn(str(text))
        except Exception as error:
            # The transaction is committed: failing here would report a saved write as lost.
            # Without its position, the rest of the request reads this database on the primary.
            logger.warning(
                "database %r: committed, but its WAL position could not be read (%s); "
                "the rest of this request reads from the primary",
                database,
                type(error.__cause__ or error).__name__,
                extra={"database": database},
            )
            unknown = _unknown_positions.get()
            if unknown is not None:
                unknown.add(database)
            return
        session.info[COMMIT_LSN] = format_lsn(position)
        collected = _commits.get()
        if collected is not None:
            collected[database] = max(position, collected.get(database, 0))

    def forget(session: Session, *args: Any) -> None:
        session.info.pop(_PRIMARY_CONNECTION, None)
        session.info.pop(UNCOMMITTED_WRITE, None)

    event.listen(session_class, "after_begin", remember)
    event.listen(session_class, "after_commit", after_commit)
    event.listen(session_class, "after_rollback", forget)
