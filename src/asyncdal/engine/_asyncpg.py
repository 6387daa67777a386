"""The one place that relies on asyncpg details beyond its documented API.

- :func:`cancel_request`: the cancel request for a running statement, built while the
  connection is still open from the backend's secret key and ``connect_utils._cancel`` (the
  same call asyncpg makes itself; see :mod:`asyncdal.engine._cancel` for why).
- :func:`abandon_connection`: closing a connection whose event loop is closed, where asyncpg's
  own ``close()`` and ``terminate()`` cannot finish (both need the loop).

Each use is checked by ``tests/unit/test_private_apis.py``, which fails loudly when asyncpg
changes shape; at run time a change raises :class:`DependencyChanged` naming it, never a silent
fallback. The callers decide what to do with it (they log it once: see theirs).
"""

from __future__ import annotations

import contextlib
from collections.abc import Coroutine
from typing import Any

from asyncpg import Connection, connect_utils

from asyncdal.engine._asyncio import DependencyChanged, close_socket_of_closed_loop

__all__ = ["CANCEL_PARAMETERS", "abandon_connection", "cancel_request"]

CANCEL_PARAMETERS = ("loop", "addr", "params", "backend_pid", "backend_secret")
"""The keyword arguments of ``asyncpg.connect_utils._cancel`` (checked by the unit test)."""


def cancel_request(connection: Connection[Any]) -> Coroutine[Any, Any, None]:
    """A coroutine that asks the server to cancel what ``connection`` is running.

    Its parameters are taken now, while the connection is open: the request still goes out
    when the connection is closed before the coroutine runs.

    Raises:
        DependencyChanged: asyncpg no longer has the private parts this needs.
    """
    try:
        protocol: Any = connection._protocol  # type: ignore[attr-defined]
        arguments = {
            "loop": connection._loop,  # type: ignore[attr-defined]
            "addr": connection._addr,  # type: ignore[attr-defined]
            "params": connection._params,  # type: ignore[attr-defined]
            "backend_pid": connection.get_server_pid(),
            "backend_secret": protocol.backend_secret,
        }
        send: Any = connect_utils._cancel  # type: ignore[attr-defined]
    except AttributeError as error:
        raise DependencyChanged(
            f"asyncpg changed, a cancel request cannot be built: {error}"
        ) from error
    try:
        return send(**arguments)  # type: ignore[no-any-return]
    except TypeError as error:
        raise DependencyChanged(
            f"asyncpg changed: connect_utils._cancel no longer takes {CANCEL_PARAMETERS}: {error}"
        ) from error


def abandon_connection(connection: Connection[Any]) -> None:
    """Close ``connection``, whose event loop is closed, at once and for good.

    ``terminate()`` (public) marks the connection closed, so that it does not warn when
    collected, and writes the server a Terminate message while the socket is open; then it
    fails to schedule the socket's closing on the closed loop. The socket is closed here.

    Raises:
        DependencyChanged: asyncpg or asyncio no longer has the shape this relies on.
    """
    if not connection.is_closed():
        # On a closed loop terminate() raises once it has done the part that needs no loop:
        # asyncio's "Event loop is closed", uvloop's "... the handler is closed".
        with contextlib.suppress(RuntimeError):
            connection.terminate()
        if not connection.is_closed():
            raise DependencyChanged(
                "asyncpg changed: Connection.terminate() no longer marks a connection closed "
                "when its event loop is closed"
            )
    try:
        transport: Any = connection._transport  # type: ignore[attr-defined]
    except AttributeError as error:
        raise DependencyChanged(
            f"asyncpg changed, the socket of a connection cannot be found: {error}"
        ) from error
    if transport is not None:
        close_socket_of_closed_loop(transport)
