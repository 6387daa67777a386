"""The worker's ``LISTEN``: wakes the claimer when an event is committed, and comes back
after its connection is lost (a server restart, a terminated backend).

While it is not listening the worker still polls every ``poll_interval``; each time it
(re)starts listening it wakes the claimer once, for events committed in the gap.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any, cast

import asyncpg

from asyncdal.orm._database import Database
from asyncdal.outbox._connection import describe_database_error
from asyncdal.outbox._table import NOTIFY_CHANNEL

__all__ = ["Listener"]

logger = logging.getLogger("asyncdal.outbox")


class Listener:
    """``LISTEN`` on a connection of ``database``'s pool until cancelled.

    Args:
        database: the worker's own database.
        wake: called on every notification (and after each (re)connect).
        retry_seconds: pause before listening again after the connection was lost.
    """

    def __init__(
        self, database: Database, wake: Callable[[], None], *, retry_seconds: float
    ) -> None:
        self._database = database
        self._wake = wake
        self._retry_seconds = retry_seconds
        self.ready = asyncio.Event()
        """Set after the first attempt to listen, whether it worked or not."""

    async def run(self) -> None:
        """Listen, and listen again whenever the connection is lost."""
        if self._database.settings.pooler.transaction_mode:
            logger.info("pooler mode: LISTEN is not possible through a pooler; polling only")
            self.ready.set()
            return
        while True:
            try:
                await self._listen_once()
            except asyncio.CancelledError:
                raise
            except Exception as error:
                logger.warning(
                    "outbox LISTEN failed (%s); polling until it is back",
                    describe_database_error(error),
                )
            finally:
                self.ready.set()
            await asyncio.sleep(self._retry_seconds)

    async def _listen_once(self) -> None:
        lost = asyncio.Event()
        holder = await self._database.engine.connect()
        try:
            raw = await holder.get_raw_connection()
            connection = cast("asyncpg.Connection", raw.driver_connection)

            def notified(*_: Any) -> None:
                self._wake()

            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(NOTIFY_CHANNEL, notified)
            self.ready.set()
            self._wake()  # events committed while nobody listened
            await lost.wait()
            logger.warning("outbox LISTEN connection lost; listening again")
        finally:
            with contextlib.suppress(Exception):
                if lost.is_set():
                    await holder.invalidate()
                await holder.close()
