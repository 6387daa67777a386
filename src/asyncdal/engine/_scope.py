"""What the safety nets know of the work that runs a statement, kept in context variables.

- :class:`RequestScope`: the request (its route template, read lazily from the ASGI scope, as
  routing fills it in after the request began) and the statements it ran, counted by text.
- :class:`StatementLog`: the statements run inside ``asyncdal.testing.assert_max_queries``.

The FastAPI integration sets the request scope once per request; the engine's listeners read
these variables (SQLAlchemy's greenlets run in the caller's context, so they see them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

__all__ = [
    "REQUEST_SCOPE",
    "STATEMENT_LOG",
    "RequestScope",
    "StatementLog",
    "current_request_scope",
    "current_statement_log",
    "owner_name",
    "request_scope",
    "statement_log",
]

REQUEST_SCOPE: ContextVar[RequestScope | None] = ContextVar("asyncdal_request_scope", default=None)
"""The request the running code serves (read directly by the per-statement listeners)."""
STATEMENT_LOG: ContextVar[StatementLog | None] = ContextVar("asyncdal_statement_log", default=None)
"""The innermost statement log open in this context."""


class RequestScope:
    """One request as the safety nets see it.

    Args:
        asgi_scope: the request's ASGI scope; its ``route`` (which FastAPI's router sets) gives
            the route template, read when needed.
        method: the HTTP method, for messages.

    Attributes:
        total: statements run for the request on databases with ``MAX_QUERIES_PER_REQUEST``.
        counts: those statements, by their text (the parameters are not part of it).
        limit: the smallest ``MAX_QUERIES_PER_REQUEST`` of those databases.
    """

    __slots__ = ("_asgi", "counts", "limit", "method", "total")

    def __init__(self, asgi_scope: Mapping[str, Any] | None = None, method: str = "") -> None:
        self._asgi = asgi_scope
        self.method = method
        self.total = 0
        self.counts: dict[str, int] = {}
        self.limit: int | None = None

    @property
    def route(self) -> str:
        """The route template (``/products/{product_id}``), or ``-`` before or without a
        match: a bounded set, fit for a metric label."""
        route = None if self._asgi is None else self._asgi.get("route")
        path = getattr(route, "path", None)
        return path if isinstance(path, str) else "-"

    def count(self, statement: str, limit: int) -> None:
        """Count one statement of a database whose limit is ``limit``."""
        self.total += 1
        self.counts[statement] = self.counts.get(statement, 0) + 1
        if self.limit is None or limit < self.limit:
            self.limit = limit

    def most_repeated(self) -> tuple[str, int]:
        """The statement run most often, and how often."""
        statement = max(self.counts, key=self.counts.__getitem__)
        return statement, self.counts[statement]


class StatementLog:
    """The statements run in a block.

    Args:
        source: whose statements to keep: None for all, a database's name, or the object
            that reports them (a database's ``SafetyNets``).
    """

    __slots__ = ("source", "statements")

    def __init__(self, source: object = None) -> None:
        self.source = source
        self.statements: list[str] = []

    def add(self, source: object, database: str, statement: str) -> None:
        """Record ``statement``, run on ``database`` and reported by ``source``, if it is
        one this log keeps."""
        if self.source is None or self.source is source or self.source == database:
            self.statements.append(statement)


def current_request_scope() -> RequestScope | None:
    """The request the running code serves, if any."""
    return REQUEST_SCOPE.get()


def current_statement_log() -> StatementLog | None:
    """The innermost statement log open in this context, if any."""
    return STATEMENT_LOG.get()


@contextmanager
def request_scope(scope: RequestScope) -> Iterator[RequestScope]:
    """Run a block as ``scope``'s request."""
    token = REQUEST_SCOPE.set(scope)
    try:
        yield scope
    finally:
        REQUEST_SCOPE.reset(token)


@contextmanager
def statement_log(log: StatementLog) -> Iterator[StatementLog]:
    """Record the statements run in the block (this context and the tasks it starts)."""
    token = STATEMENT_LOG.set(log)
    try:
        yield log
    finally:
        STATEMENT_LOG.reset(token)


def owner_name() -> str:
    """The route template of the running request, else the asyncio task's name (else the
    thread's work: ``-``): who holds a connection."""
    scope = REQUEST_SCOPE.get()
    if scope is not None:
        return f"{scope.method} {scope.route}".strip()
    try:
        task = asyncio.current_task()
    except RuntimeError:
        task = None
    return "-" if task is None else f"task {task.get_name()}"
