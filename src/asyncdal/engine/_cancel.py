"""Make the server stop a statement whose client gave up on it (task cancelled, timed out).

When a task is cancelled in the middle of a statement, or the statement runs past
``COMMAND_TIMEOUT``, SQLAlchemy invalidates the connection and closes it. asyncpg asks the server
to cancel the statement from a task it starts for that, but closing the connection can abort
that task before it sends anything: the server then keeps running the statement, holding its
locks, until it next writes to the socket (a ``pg_sleep(30)`` holding ``FOR UPDATE``: 30 s).
The cancellation test found that race. Here the cancel request's parameters are taken while the
connection is still open, and it is sent from a task of our own, which closing cannot abort.

Building that request needs asyncpg internals, kept in :mod:`asyncdal.engine._asyncpg`. Should
asyncpg change them, the unit test on their shape fails, and here an error is logged once per
engine; the request is then left to asyncpg's own task, with the race above.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from asyncdal.engine._asyncio import DependencyChanged
from asyncdal.engine._asyncpg import cancel_request

__all__ = ["ServerCancel"]

logger = logging.getLogger("asyncdal.cancel")


class ServerCancel:
    """Sends cancel requests for abandoned statements and keeps their tasks until done."""

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._reported = False

    def request(self, driver_connection: Any) -> asyncio.Task[None] | None:
        """Ask the server to cancel what ``driver_connection`` (an asyncpg connection) is
        running; returns at once, the request is sent in the background.

        Returns:
            The task sending it (done once the server has it), or None when none is sent.
        """
        if driver_connection is None or driver_connection.is_closed():
            return None
        # SQLAlchemy's error handling runs in a greenlet of the connection's own loop.
        loop = asyncio.get_running_loop()
        try:
            send = cancel_request(driver_connection)
        except DependencyChanged as error:
            # Logged, not raised: this runs while SQLAlchemy handles the caller's timeout or
            # cancellation, which an error of ours would replace.
            if not self._reported:
                self._reported = True
                logger.error(
                    "cannot send cancel requests of our own (%s); asyncpg's are left to race "
                    "the closing of the connection, so an abandoned statement may keep running "
                    "on the server (and keep its locks) until it ends",
                    error,
                )
            return None
        task = loop.create_task(self._send(send, driver_connection.get_server_pid()))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _send(self, send: Coroutine[Any, Any, None], pid: int) -> None:
        try:
            async with asyncio.timeout(10):
                await send
        except (OSError, TimeoutError) as error:
            logger.warning("could not ask the server to cancel backend %s: %r", pid, error)
