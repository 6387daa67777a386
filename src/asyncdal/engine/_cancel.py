"""Make the server stop a statement whose client gave up on it (task cancelled, timed out).

When a task is cancelled in the middle of a statement, or the statement runs past
``COMMAND_TIMEOUT``, SQLAlchemy invalidates the connection and closes it. asyncpg asks the server
to cancel the statement from a task it starts for that, but closing the connection can abort
that task before it sends anything: the server then keeps running the statement, holding its
locks, until it next writes to the socket (a ``pg_sleep(30)`` holding ``FOR UPDATE``: 30 s).
The cancellation test found that race. Here the cancel request's parameters are taken while the
connection is still open, and it is sent from a task of our own, which closing cannot abort.

This reaches into asyncpg internals (the backend's secret key and ``connect_utils._cancel``, the
same call asyncpg makes) on purpose, and does nothing where they are not as expected.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

__all__ = ["ServerCancel"]

logger = logging.getLogger("asyncdal.cancel")


class ServerCancel:
    """Sends cancel requests for abandoned statements and keeps their tasks until done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def request(self, driver_connection: Any) -> None:
        """Ask the server to cancel what ``driver_connection`` (an asyncpg connection) is
        running; returns at once, the request is sent in the background."""
        raw = driver_connection
        protocol = getattr(raw, "_protocol", None)
        if raw is None or protocol is None or raw.is_closed():
            return
        try:
            from asyncpg import connect_utils

            send_cancel: Any = getattr(connect_utils, "_cancel")  # noqa: B009 - private, typed Any
            send = send_cancel(
                loop=raw._loop,
                addr=raw._addr,
                params=raw._params,
                backend_pid=protocol.backend_pid,
                backend_secret=protocol.backend_secret,
            )
        except (AttributeError, ImportError, TypeError):  # asyncpg changed: leave it to asyncpg
            return
        task = raw._loop.create_task(self._send(send, protocol.backend_pid))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, send: Coroutine[Any, Any, None], pid: int) -> None:
        try:
            async with asyncio.timeout(10):
                await send
        except (OSError, TimeoutError) as error:
            logger.warning("could not ask the server to cancel backend %s: %r", pid, error)
