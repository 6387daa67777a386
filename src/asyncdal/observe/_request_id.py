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
from typing import TYPE_CHECKING

from asyncdal._request_id import REQUEST_ID_HEADER, current_request_id, request_id_scope

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SCOPE_KEY", "RequestIdFilter", "RequestIdMiddleware"]

_HEADER_KEY = REQUEST_ID_HEADER.lower().encode("latin-1")
SCOPE_KEY = "asyncdal.request_id"
"""Where :class:`RequestIdMiddleware` leaves the request's id in the ASGI scope, for code that
runs after the middleware has returned (Starlette's 500 handler sits outside it)."""


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
        with request_id_scope(sent) as request_id:
            scope[SCOPE_KEY] = request_id
            header = (_HEADER_KEY, request_id.encode("latin-1"))

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    headers = [h for h in message.get("headers", []) if h[0].lower() != _HEADER_KEY]
                    message = {**message, "headers": [*headers, header]}
                await send(message)

            await self.app(scope, receive, send_with_id)


class RequestIdFilter(logging.Filter):
    """Adds ``request_id`` to each record that passes, when one is set.

    Attach it to a handler (``configure_logging`` does), not a logger, so records of every
    logger get it.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id()
        if request_id is not None:
            record.request_id = request_id
        return True
