"""Request ids: from ``X-Request-ID`` (or generated), into log records and into PostgreSQL.

:class:`RequestIdMiddleware` takes the id a client or proxy sent in ``X-Request-ID`` (or makes
one), answers with it in the same header, and keeps it in a context variable for the request.
:class:`RequestIdFilter` copies it into every log record as ``request_id``. While the id is set,
each connection that runs a statement is tagged with it through ``application_name``, so a slow
query seen in ``pg_stat_activity`` leads to its request and its log lines.

Example:
    >>> app.add_middleware(RequestIdMiddleware)        # asyncdal.fastapi.setup() does this
    >>> with request_id_scope("job-42"):               # a worker or a script
    ...     async with db.unit_of_work() as uow: ...   # pg_stat_activity shows "asyncdal:job-42"
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "REQUEST_ID_HEADER",
    "RequestIdFilter",
    "RequestIdMiddleware",
    "current_request_id",
    "request_id_scope",
    "tag_connections_with_request_id",
]

REQUEST_ID_HEADER = "X-Request-ID"
_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
# An id from outside ends up in logs and in SQL, so only a plain token is taken as it is; any
# other value is replaced by a new id rather than escaped.
_ACCEPTED = re.compile(r"[A-Za-z0-9._:+=@/-]{1,128}")
# PostgreSQL keeps the first NAMEDATALEN - 1 bytes of application_name.
_APPLICATION_NAME_BYTES = 63
_TAGGED = "asyncdal_request_id"
_SET_APPLICATION_NAME = "SELECT set_config('application_name', $1, false)"

_current: ContextVar[str | None] = ContextVar("asyncdal_request_id", default=None)


def current_request_id() -> str | None:
    """The id of the request (or :func:`request_id_scope`) this code runs for, if any."""
    return _current.get()


def accepted_request_id(value: str | None) -> str:
    """``value`` if it is a plain token of at most 128 characters, else a new random id."""
    if value is not None and _ACCEPTED.fullmatch(value):
        return value
    return uuid.uuid4().hex


@contextmanager
def request_id_scope(request_id: str | None = None) -> Iterator[str]:
    """Run a block under a request id (a new one when omitted or not a plain token).

    Args:
        request_id: the id to use, e.g. a job or event id.

    Yields:
        The id in effect.
    """
    accepted = accepted_request_id(request_id)
    token = _current.set(accepted)
    try:
        yield accepted
    finally:
        _current.reset(token)


class RequestIdMiddleware:
    """Pure ASGI middleware: sets the request id for the request and echoes it in the response.

    Pure ASGI rather than ``BaseHTTPMiddleware`` so the context variable is seen by the
    endpoint, its dependencies and the commit in :class:`~asyncdal.fastapi.TransactionMiddleware`.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent: str | None = None
        for key, value in scope["headers"]:
            if key == _HEADER_KEY:
                sent = value.decode("latin-1")
                break
        request_id = accepted_request_id(sent)
        header = (_HEADER_KEY, request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != _HEADER_KEY]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        token = _current.set(request_id)
        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _current.reset(token)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to each record that passes, when one is set.

    Attach it to a handler (``configure_logging`` does), not a logger, so records of every
    logger get it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = _current.get()
        if request_id is not None:
            record.request_id = request_id
        return True


def _application_name(base: str, request_id: str) -> str:
    # PostgreSQL keeps 63 bytes: shorten the base name rather than the request id, which is
    # what a reader of pg_stat_activity looks for (a 55-character traceparent fits whole).
    room = _APPLICATION_NAME_BYTES - len(request_id.encode()) - 1
    if room <= 0:
        return request_id.encode()[:_APPLICATION_NAME_BYTES].decode(errors="ignore")
    return f"{base.encode()[:room].decode(errors='ignore')}:{request_id}"


def tag_connections_with_request_id(engine: AsyncEngine, application_name: str) -> None:
    """Before a connection's first statement under a request id, set its ``application_name``
    to ``<application_name>:<request id>``; without one, put back the plain name.

    It costs one round trip per request and connection (nothing while the id is unchanged), so
    it is off unless ``DB__<NAME>__TAG_REQUESTS=true``; ``bench`` measures it. It runs before
    the statement rather than at checkout, so checkouts that run nothing pay nothing and the
    pool's own checks (pre-ping, the breaker's probe) come first.
    """

    def before_statement(conn: Any, cursor: Any, *args: Any) -> None:
        info = conn.info
        request_id = _current.get()
        if info.get(_TAGGED) == request_id:
            return
        name = (
            application_name
            if request_id is None
            else _application_name(application_name, request_id)
        )
        tagger = conn.connection.dbapi_connection.cursor()
        try:
            # One fixed statement text with a parameter: the driver prepares it once per
            # connection. A `SET application_name = '<id>'` text would differ per request and
            # push the app's own statements out of the prepared-statement cache. A failure
            # here is a failure of this statement's connection, handled as one.
            tagger.execute(_SET_APPLICATION_NAME, (name,))
        finally:
            tagger.close()
        info[_TAGGED] = request_id

    event.listen(engine.sync_engine, "before_cursor_execute", before_statement)
