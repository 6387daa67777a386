"""Read/write routing between a primary and its replicas, and read-your-writes by WAL position.

A database with ``DB__<NAME>__REPLICAS`` gets sessions of class :class:`RoutingSession`, whose
``get_bind`` (SQLAlchemy's documented hook for choosing an engine per statement) sends:

- everything of a read-write unit of work (``unit_of_work()``, ``background_unit_of_work()``)
  to the primary: its reads may feed its writes, so they must not be stale;
- reads of read-only units of work to one replica per session, chosen round-robin by weight
  among the healthy replicas whose replay position has reached the position the caller
  requires (see :func:`read_your_writes`); when none qualifies, to the primary.

A read that fails because its replica went away (the connection, not the statement) is retried
once per remaining node, in read-only units of work only (a write is never retried here).
Replica connections are ``READ ONLY``; a write that slips through anyway fails with a
:class:`ReadOnlyError`.

The overrides live in context variables, so they follow the request or task that set them:
``db.primary()`` (everything in the block on the primary), ``db.prefer_replicas()`` (reads on
replicas, also those of a read-write unit of work, even after a write or inside an outer
``primary()``), and :func:`read_your_writes`.
"""

from __future__ import annotations

import itertools
import logging
import re
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import TextClause

from asyncdal._translate import is_connection_failure
from asyncdal.errors import QueryTimeoutError

__all__ = [
    "ReplicaNode",
    "Router",
    "RoutingSession",
    "current_commit_lsns",
    "format_lsn",
    "node_used",
    "parse_lsn",
    "read_your_writes",
    "required_lsn",
    "route",
    "text_may_write",
]

Flavor = Literal["plain", "quick", "snapshot"]
Mode = Literal["primary", "replicas"]

# Statements a raw text() may start with and still be a plain read. A WITH or EXPLAIN that
# names a data-changing command is refused too. A SELECT of a function that writes cannot be
# seen from here: the server refuses it on a READ ONLY connection.
READ_ONLY_TEXT = re.compile(r"\s*(?:\(\s*)*(select|with|show|explain|values|table)\b", re.I)
WRITE_WORD = re.compile(r"\b(insert|update|delete|merge|truncate|copy|call|do)\b", re.I)
_LOCKING_READ = re.compile(r"\bfor\s+(update|share|no\s+key\s+update|key\s+share)\b", re.I)
_LSN = re.compile(r"^\s*([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})\s*$")
_READ_ONLY_SQLSTATE = "25006"

# Session.info keys.
_ROUTER = "asyncdal.router"
_FLAVOR = "asyncdal.flavor"
_UNCOMMITTED_WRITE = "asyncdal.uncommitted_write"
_NODE = "asyncdal.node"
_USED = "asyncdal.node_used"
_FAILED = "asyncdal.failed_nodes"
_SERVED = "asyncdal.served"
_ON_PRIMARY: Literal[False] = False  # the session's reads stay on the primary
_PRIMARY_CONNECTION = "asyncdal.primary_connection"
COMMIT_LSN = "asyncdal.commit_lsn"

_routes: ContextVar[Mapping[str, Mode] | None] = ContextVar("asyncdal_routes", default=None)
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


def is_write(clause: Any) -> bool:
    """True for statements that must run on the primary."""
    if clause is None:
        return False
    if getattr(clause, "is_dml", False):
        return True
    if isinstance(clause, Select):
        return clause._for_update_arg is not None
    if isinstance(clause, TextClause):
        return text_may_write(clause.text) or _LOCKING_READ.search(clause.text) is not None
    return False


def text_may_write(sql: str) -> bool:
    """True unless ``sql`` looks like a plain read (SELECT, WITH, SHOW, EXPLAIN, VALUES,
    TABLE; a WITH or EXPLAIN without a writing word). A SELECT of a function that writes
    cannot be told from here."""
    read = READ_ONLY_TEXT.match(sql)
    return read is None or (
        read.group(1).lower() in {"with", "explain"} and WRITE_WORD.search(sql) is not None
    )


@contextmanager
def route(database: str, mode: Mode) -> Iterator[None]:
    """Send the reads of ``database`` to ``mode`` (``primary`` or ``replicas``) in this block
    (what ``Database.primary()`` and ``Database.prefer_replicas()`` use)."""
    token = _routes.set({**(_routes.get() or {}), database: mode})
    try:
        yield
    finally:
        with suppress(ValueError):  # left in another context (a generator closed elsewhere)
            _routes.reset(token)


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


@dataclass(eq=False)
class ReplicaNode:
    """One replica: its engines and what the background check last saw.

    Attributes:
        name: ``replica-1``, ``replica-2``... in the order of the settings.
        weight: its share of reads.
        engines: the sync engines of each session flavor (plain, quick, snapshot).
        healthy: in rotation (answers, and lags no more than the limit).
        checked: at least one background check has finished (until then its status is
            ``unknown``).
        replay_lsn: the last replay position seen (a number; None when unknown).
        lag_seconds: the last replay lag seen.
        error: why it is out of rotation, when it is.
    """

    name: str
    weight: int
    engines: dict[Flavor, Engine]
    healthy: bool = True
    checked: bool = False
    replay_lsn: int | None = None
    lag_seconds: float | None = None
    error: str | None = None

    def mark_down(self, reason: str) -> None:
        """Take the node out of rotation until a check finds it well again."""
        self.healthy = False
        self.error = reason

    def status(self) -> dict[str, Any]:
        """A JSON-ready summary (no URL, no password)."""
        status = "down" if not self.healthy else "ok" if self.checked else "unknown"
        return {
            "status": status,
            "lag_seconds": None if self.lag_seconds is None else round(self.lag_seconds, 3),
            "replay_lsn": None if self.replay_lsn is None else format_lsn(self.replay_lsn),
            "weight": self.weight,
            "error": self.error,
        }


@dataclass(eq=False)
class Router:
    """Chooses the engine for each session's reads: weighted round-robin over usable replicas.

    Args:
        database: the named database (for the context overrides).
        primary: the primary's sync engine of each flavor.
        nodes: the replicas.
    """

    database: str
    primary: dict[Flavor, Engine]
    nodes: list[ReplicaNode]
    on_retry: Callable[[str, str], None] | None = None
    """Told ``("read", node)`` when a read moves on to another node (metrics count it)."""
    _order: list[ReplicaNode] = field(init=False)
    _turn: Iterator[int] = field(init=False)

    def __post_init__(self) -> None:
        # A replica of weight 3 appears three times in the rotation.
        self._order = [node for node in self.nodes for _ in range(node.weight)]
        self._turn = itertools.count()

    def pick(self, required: int | None, exclude: frozenset[ReplicaNode]) -> ReplicaNode | None:
        """The next healthy replica that has replayed ``required``; None means the primary."""
        if not self._order:
            return None
        start = next(self._turn)
        size = len(self._order)
        for offset in range(size):
            node = self._order[(start + offset) % size]
            if not node.healthy or node in exclude:
                continue
            if required is not None and (node.replay_lsn is None or node.replay_lsn < required):
                continue
            return node
        return None

    def mode(self) -> Mode | None:
        """The override in force for this database in this context, if any."""
        unknown = _unknown_positions.get()
        if unknown is not None and self.database in unknown:
            return "primary"
        routes = _routes.get()
        return None if routes is None else routes.get(self.database)


def _is_node_failure(error: BaseException) -> bool:
    """The node went away (refused, reset, shut down), as opposed to a bad or slow statement.

    A statement that outlived ``COMMAND_TIMEOUT`` (or ``statement_timeout``) says nothing about
    the node: running it again elsewhere would only repeat the wait, so it is not one.
    """
    if isinstance(error, QueryTimeoutError) or isinstance(error.__cause__, QueryTimeoutError):
        return False
    return is_connection_failure(error)


class RoutingSession(Session):
    """A ``Session`` that sends reads to replicas and writes to the primary (see the module).

    Its ``info`` carries the router and the flavor (``plain`` for read-write units of work,
    ``quick``/``snapshot`` for read-only ones); ``Database`` sets both.
    """

    def get_bind(
        self,
        mapper: Any = None,
        *,
        clause: Any = None,
        bind: Any = None,
        **kw: Any,
    ) -> Engine | Connection:
        if bind is not None:
            return bind  # type: ignore[no-any-return]
        info = self.info
        router: Router = info[_ROUTER]
        flavor: Flavor = info[_FLAVOR]
        if flavor == "plain" and (clause is None or is_write(clause)):
            # A flush (no clause), DML, FOR UPDATE or a text() that may write.
            info[_UNCOMMITTED_WRITE] = True
            return router.primary[flavor]
        mode = router.mode()
        # A read-write unit of work reads on the primary too: what it reads it may write back
        # (read-modify-write, an update of a row just inserted elsewhere, an advisory lock),
        # so a stale replica would be wrong there. Only prefer_replicas() sends its reads away.
        if mode == "primary" or (flavor == "plain" and mode != "replicas"):
            return router.primary[flavor]
        # One node per session, kept for its life (a snapshot must stay on one node); the
        # primary, when no replica qualified, is kept as well.
        node: ReplicaNode | Literal[False] | None = info.get(_NODE)
        if node is None:
            node = router.pick(required_lsn(router.database), info.get(_FAILED, frozenset()))
            info[_NODE] = node if node is not None else _ON_PRIMARY
        if not node:
            info[_USED] = None
            return router.primary[flavor]
        info[_USED] = node
        return node.engines[flavor]

    def execute(self, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(super().execute, *args, **kwargs)

    def scalar(self, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(super().scalar, *args, **kwargs)

    def scalars(self, *args: Any, **kwargs: Any) -> Any:
        return self._retrying(super().scalars, *args, **kwargs)

    def _retrying(self, run: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        attempts = 0
        while True:
            self.info[_USED] = None
            try:
                result = run(*args, **kwargs)
            except Exception as error:
                node: ReplicaNode | None = self.info.get(_USED)
                if node is None or not _is_node_failure(error):
                    raise
                flavor = self.info[_FLAVOR]
                node.mark_down(type(error.__cause__ or error).__name__)
                self.info[_FAILED] = frozenset({*self.info.get(_FAILED, ()), node})
                self.info[_NODE] = None
                attempts += 1
                # Reads of read-only units of work only: a read-write session keeps the broken
                # connection in its transaction (its commit would fail), and a snapshot that
                # already read from that node cannot continue on another.
                if (
                    flavor == "plain"
                    or (flavor == "snapshot" and self.info.get(_SERVED) is node)
                    or attempts > len(self.info[_ROUTER].nodes)
                ):
                    raise
                if self.info[_ROUTER].on_retry is not None:
                    self.info[_ROUTER].on_retry("read", node.name)
            else:
                self.info[_SERVED] = self.info[_USED]
                return result


def node_used(session: Session) -> str:
    """The node (``primary`` or a replica's name) of the session's latest statement."""
    node: ReplicaNode | None = session.info.get(_USED)
    return "primary" if node is None else node.name


def read_only_error(database: str, node: str) -> Exception:
    """The error a write on a replica connection becomes."""
    from asyncdal.errors import ReadOnlyError

    return ReadOnlyError(
        f"database {database!r}: a statement tried to write on {node}, a read-only replica "
        "connection (reads are routed to replicas). Write in a unit_of_work() through the "
        "ORM or with DML, or wrap raw SQL that writes in 'async with db.primary():'"
    )


def translate_read_only_errors(engine: Engine, database: str, node: str) -> None:
    """Turn PostgreSQL's "cannot execute ... in a read-only transaction" on a replica engine
    into a :class:`~asyncdal.errors.ReadOnlyError` that says what happened and what to do."""
    from sqlalchemy import event

    def handle(context: Any) -> None:
        original = context.original_exception
        if str(getattr(original, "sqlstate", "") or "") == _READ_ONLY_SQLSTATE:
            raise read_only_error(database, node) from context.sqlalchemy_exception

    event.listen(engine, "handle_error", handle)


def track_commit_lsn(session_class: type[Session]) -> None:
    """After a session of ``session_class`` that wrote commits, read the primary's WAL insert
    position on the same connection and keep it in ``session.info`` (and in the collector of
    :func:`current_commit_lsns`). The primary is the one of the session's router, so one class
    serves the engines of every event loop.

    It is read right *after* COMMIT, not inside the transaction: the commit record comes after
    every statement of the transaction, so only a position taken once COMMIT has returned
    covers it; a replica that has replayed that far shows the transaction. It is the same one
    round trip, on the connection the session still holds (no second checkout).
    """
    from sqlalchemy import event

    def remember(session: Session, transaction: Any, connection: Connection) -> None:
        if connection.engine is session.info[_ROUTER].primary["plain"]:
            session.info[_PRIMARY_CONNECTION] = connection

    def after_commit(session: Session) -> None:
        connection: Connection | None = session.info.pop(_PRIMARY_CONNECTION, None)
        if not session.info.pop(_UNCOMMITTED_WRITE, False) or connection is None:
            return
        database = session.info[_ROUTER].database
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
        session.info.pop(_UNCOMMITTED_WRITE, None)

    event.listen(session_class, "after_begin", remember)
    event.listen(session_class, "after_commit", after_commit)
    event.listen(session_class, "after_rollback", forget)


def session_info(router: Router, flavor: Flavor) -> dict[str, Any]:
    """The ``info`` a routing session of ``flavor`` starts with."""
    return {_ROUTER: router, _FLAVOR: flavor}
