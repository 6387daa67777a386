"""The one place that relies on asyncio details beyond its documented API.

Closing the socket of a transport whose event loop is closed: ``close()`` and ``abort()`` only
schedule the socket's closing on the loop, which fails once the loop is closed, so the socket
(and the server's session at its other end) would stay open until garbage collection, which
warns. uvloop closes every socket of a loop when the loop closes, leaving nothing to do here;
asyncio's selector loops leave them open.

Each use is checked by ``tests/unit/test_private_apis.py``, which fails loudly when asyncio
changes shape; at run time a change raises :class:`DependencyChanged`, never a silent no-op.
"""

from __future__ import annotations

import asyncio
import socket
from asyncio.selector_events import _SelectorTransport  # type: ignore[attr-defined]
from asyncio.sslproto import _SSLProtocolTransport
from typing import Any

__all__ = ["DependencyChanged", "close_socket_of_closed_loop", "socket_is_open"]


class DependencyChanged(RuntimeError):
    """A dependency (asyncio, asyncpg, SQLAlchemy) no longer has the private shape asyncdal
    relies on; the message names what changed."""


def socket_is_open(transport: asyncio.BaseTransport) -> bool:
    """Whether the socket under ``transport`` is still open (public API only)."""
    sock = transport.get_extra_info("socket")
    return sock is not None and sock.fileno() != -1


def close_socket_of_closed_loop(transport: asyncio.BaseTransport) -> bool:
    """Close the socket under ``transport``, whose event loop is closed.

    Returns:
        True when it was open and is now closed; False when it was closed already (uvloop
        closes the sockets of a loop with the loop).

    Raises:
        DependencyChanged: the socket is open, and asyncio no longer keeps it where this looks.
    """
    if not socket_is_open(transport):
        return False
    inner: Any = transport
    if isinstance(inner, _SSLProtocolTransport):  # TLS: the socket is under the TLS layer
        inner = getattr(inner._ssl_protocol, "_transport", None)
    sock = getattr(inner, "_sock", None) if isinstance(inner, _SelectorTransport) else None
    if not isinstance(sock, socket.socket):
        raise DependencyChanged(
            f"asyncio changed: the open socket of a {type(transport).__qualname__} whose event "
            "loop is closed is no longer found in _SelectorTransport._sock (under "
            "_SSLProtocolTransport._ssl_protocol._transport for TLS)"
        )
    sock.close()
    # What the loop would have done: a transport whose _sock is None knows it has no socket
    # left, and does not warn about an unclosed transport when it is collected.
    inner._sock = None
    return True
