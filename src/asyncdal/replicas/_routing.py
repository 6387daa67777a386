"""Read/write routing between a primary and its replicas.

A database with ``DB__<NAME>__REPLICAS`` gets sessions of class :class:`RoutingSession`, whose
``get_bind`` (SQLAlchemy's documented hook for choosing an engine per statement) sends:

- everything of a read-write unit of work (``unit_of_work()``, ``background_unit_of_work()``)
  to the primary: its reads may feed its writes, so they must not be stale;
- reads of read-only units of work to one replica per session, chosen round-robin by weight
  among the healthy replicas whose replay position has reached the position the caller
  requires (see :func:`~asyncdal.replicas._lsn.read_your_writes`); when none qualifies, to
  the primary.

A read that fails because its replica went away (the connection, not the statement) is retried
once per remaining node, in read-only units of work only (a write is never retried here).
Replica connections are ``READ ONLY``; a write that slips through anyway fails with a
:class:`ReadOnlyError`.

The overrides live in context variables, so they follow the request or task that set them:
``db.primary()`` (everything in the block on the primary), ``db.prefer_replicas()`` (reads on
replicas, also those of a read-write unit of work, even after a write or inside an outer
``primary()``), and :func:`~asyncdal.replicas._lsn.read_your_writes`.

What is a write: SQLAlchemy's DML and ``SELECT ... FOR UPDATE`` (it knows), and a ``text()``
that :mod:`asyncdal._sql` does not find to be a plain read, or finds locking rows.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Literal

from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session
from sqlalchemy.sql import Select
from sqlalchemy.sql.elements import TextClause
from sqlalchemy.sql.selectable import TextualSelect

from asyncdal._sql import classify
from asyncdal._translate import is_connection_failure
from asyncdal.engine._sqlalchemy import select_locks_rows
from asyncdal.errors import QueryTimeoutError
from asyncdal.replicas._lsn import (
    DATABASE,
    PRIMARY_ENGINE,
    UNCOMMITTED_WRITE,
    format_lsn,
    position_unknown,
    required_lsn,
)

__all__ = [
    "ReplicaNode",
    "Router",
    "RoutingSession",
    "handwritten_sql",
    "is_write",
    "node_used",
    "read_only_error",
    "route",
    "session_info",
    "translate_read_only_errors",
]

Flavor = Literal["plain", "quick", "snapshot"]
Mode = Literal["primary", "replicas"]

_READ_ONLY_SQLSTATE = "25006"

# Session.info keys.
_ROUTER = "asyncdal.router"
_FLAVOR = "asyncdal.flavor"
_NODE = "asyncdal.node"
_USED = "asyncdal.node_used"
_FAILED = "asyncdal.failed_nodes"
_SERVED = "asyncdal.served"
_ON_PRIMARY: Literal[False] = False  # the session's reads stay on the primary

_routes: ContextVar[Mapping[str, Mode] | None] = ContextVar("asyncdal_routes", default=None)


def is_write(clause: Any) -> bool:
    """True for statements that must run on the primary: DML, a locking SELECT, and a
    ``text()`` that may write or locks rows (see :mod:`asyncdal._sql`; a SELECT of a function
    that writes cannot be told from a read)."""
    if clause is None:
        return False
    if getattr(clause, "is_dml", False):
        return True
    if isinstance(clause, Select):
        return select_locks_rows(clause)
    sql = handwritten_sql(clause)
    if sql is None:
        return False
    found = classify(sql)
    return found.may_write or found.locks_rows


def handwritten_sql(clause: Any) -> str | None:
    """The SQL of a ``text()``, also one given ``.columns()`` (a ``TextualSelect``, which
    SQLAlchemy counts as a SELECT whatever it holds); None for a statement SQLAlchemy built."""
    if isinstance(clause, TextualSelect):
        clause = clause.element
    return clause.text if isinstance(clause, TextClause) else None


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
        if position_unknown(self.database):
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
            info[UNCOMMITTED_WRITE] = True
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


def session_info(router: Router, flavor: Flavor) -> dict[str, Any]:
    """The ``info`` a routing session of ``flavor`` starts with."""
    return {
        _ROUTER: router,
        _FLAVOR: flavor,
        DATABASE: router.database,
        PRIMARY_ENGINE: router.primary["plain"],
    }
