"""Read-your-writes across HTTP requests with the ``X-DB-LSN`` header, and per-request routing.

:class:`ReadYourWritesMiddleware` (installed by ``asyncdal.fastapi.setup``):

- a response to a request that committed a write carries ``X-DB-LSN``: the commit's WAL
  position on the primary (``0/16B3748``); a request that sent one gets it back when it did
  not write, so a client can simply echo the last value it saw;
- a request that sends ``X-DB-LSN`` has its reads served only by a replica that has replayed
  that position, else by another that has, else by the primary;
- a header that is not a WAL position is a 400 that says so.

The position belongs to one named database (``main`` unless told otherwise): positions of two
servers cannot be compared.

:func:`use_primary` is a dependency that sends all of a request's statements to the primary;
:func:`prefer_replicas` one that keeps a request's reads on replicas even after it wrote.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Callable
from typing import Any

from asyncdal.replicas._lsn import (
    current_commit_lsns,
    format_lsn,
    parse_lsn,
    read_your_writes,
)
from asyncdal.replicas._routing import route

__all__ = [
    "LSN_HEADER",
    "LSN_PATTERN",
    "ReadYourWritesMiddleware",
    "bad_lsn_header",
    "prefer_replicas",
    "use_primary",
    "wire_lsn",
]

LSN_HEADER = "X-DB-LSN"
"""The header carrying a commit's WAL position: sent on write responses, honoured on reads."""
_HEADER_KEY = LSN_HEADER.lower().encode()
LSN_PATTERN = "^[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}$"
"""What ``X-DB-LSN`` takes (the OpenAPI documents it): PostgreSQL's text form of a WAL
position."""
# The value on the wire may have HTTP's optional whitespace (space, tab) around it, and nothing
# else: the document's pattern must say exactly what is accepted.
_WIRE_LSN = re.compile(r"[ \t]*[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8}[ \t]*")

ASGIApp = Callable[[Any, Any, Any], Any]


class ReadYourWritesMiddleware:
    """Honour an incoming ``X-DB-LSN`` and answer with the commit position (pure ASGI).

    Args:
        app: the ASGI app.
        database: the named database whose WAL positions the header carries.
    """

    def __init__(self, app: ASGIApp, database: str = "main") -> None:
        self.app = app
        self.database = database

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        sent = next((value for key, value in scope["headers"] if key == _HEADER_KEY), None)
        required: int | None = None
        if sent is not None:
            text = sent.decode("latin-1")
            required = wire_lsn(text)
            if required is None:
                await bad_lsn_header(send, text)
                return

        async def send_with_position(message: Any) -> None:
            if message["type"] == "http.response.start":
                position = max(committed.get(self.database, 0), required or 0)
                if position:
                    headers = [
                        (key, value)
                        for key, value in message.get("headers", [])
                        if key != _HEADER_KEY
                    ]
                    headers.append((_HEADER_KEY, format_lsn(position).encode()))
                    message = {**message, "headers": headers}
            await send(message)

        with current_commit_lsns() as committed, read_your_writes(required, self.database):
            await self.app(scope, receive, send_with_position)


def wire_lsn(text: str) -> int | None:
    """The WAL position an ``X-DB-LSN`` header's value gives, or None when it is not one."""
    if _WIRE_LSN.fullmatch(text) is None:
        return None
    return parse_lsn(text)


async def bad_lsn_header(
    send: Any, text: str, headers: list[tuple[bytes, bytes]] | None = None
) -> None:
    """Answer a malformed ``X-DB-LSN`` (``text``) with a 400 that says so."""
    detail = f"{LSN_HEADER}: not a WAL position like 0/16B3748: {text[:40]!r}"
    body = json.dumps({"detail": detail}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 400,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *(headers or ()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def use_primary(database: str = "main") -> Callable[[], AsyncIterator[None]]:
    """A FastAPI dependency that sends every statement of ``database`` in the request to the
    primary, e.g. ``@app.get(..., dependencies=[Depends(use_primary())])``."""

    async def on_primary() -> AsyncIterator[None]:
        with route(database, "primary"):
            yield

    return on_primary


def prefer_replicas(database: str = "main") -> Callable[[], AsyncIterator[None]]:
    """A FastAPI dependency that keeps the request's reads of ``database`` on replicas even
    after its unit of work wrote (writes still go to the primary; ``X-DB-LSN`` still applies)."""

    async def on_replicas() -> AsyncIterator[None]:
        with route(database, "replicas"):
            yield

    return on_replicas
