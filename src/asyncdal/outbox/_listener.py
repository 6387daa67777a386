"""The worker's ``LISTEN``: wakes the claimer when an event is committed, comes back after its
connection is lost (a server restart, a terminated backend), and checks that wake-ups arrive.

While it is not listening the worker still polls every ``poll_interval``; each time it
(re)starts listening it wakes the claimer once, for events committed in the gap.

A ``LISTEN`` can succeed and still hear nothing: through a transaction-mode pooler (PgBouncer,
Supavisor) it runs on whichever server connection the pooler lends for that one statement, and
notifications go to that server connection, not to this client. So the listener sends itself a
notification (a probe, on the same channel, from the claim connection) after each ``LISTEN``
and every ``listen_check_seconds``; when one does not arrive it logs once that wake-ups do not
arrive and the worker goes on by polling, and once more if they arrive again. Probes never wake
a claimer, this worker's or another's.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, cast

import asyncpg

from asyncdal.orm._database import Database
from asyncdal.outbox._connection import DATABASE_ERRORS, give_back
from asyncdal.outbox._resilience import FailureStreak
from asyncdal.outbox._table import NOTIFY_CHANNEL

__all__ = ["PROBE_PREFIX", "Listener"]

logger = logging.getLogger("asyncdal.outbox")

PROBE_PREFIX = "asyncdal-probe:"
"""The payload of a worker's self-addressed notification starts with this (the writer's
notifications carry an empty payload)."""


class Listener:
    """``LISTEN`` on a connection of ``database``'s pool until cancelled.

    Args:
        database: the worker's own database.
        wake: called on every notification but probes (and after each (re)connect).
        notify: sends a notification with the given payload on the outbox channel, from
            another connection (a probe).
        poll_interval: how often the worker polls (for the log).
        check_seconds: seconds between probes while listening.
        clock: the monotonic clock failures are timed on.
    """

    def __init__(
        self,
        database: Database,
        wake: Callable[[], None],
        *,
        notify: Callable[[str], Awaitable[None]],
        poll_interval: float,
        check_seconds: float,
        clock: Callable[[], float],
    ) -> None:
        self._database = database
        self._wake = wake
        self._notify = notify
        self._poll_interval = poll_interval
        self._check_seconds = check_seconds
        # Long enough for a loaded server and machine; never longer than the check interval.
        self._probe_timeout = min(5.0, check_seconds)
        self._streak = FailureStreak("LISTEN", clock)
        self._probe = ""
        self._heard = asyncio.Event()
        self.ready = asyncio.Event()
        """Set after the first attempt to listen, whether it worked or not."""
        self.hearing: bool | None = None
        """Whether the last conclusive probe arrived (None before the first)."""
        self.checks = 0
        """Conclusive checks so far."""

    async def run(self) -> None:
        """Listen, and listen again whenever the connection is lost."""
        if self._database.settings.pooler.transaction_mode:
            logger.info("pooler mode: LISTEN is not possible through a pooler; polling only")
            self.hearing = False
            self.ready.set()
            return
        while True:
            try:
                await self._listen_once()
                delay = 0.0
            except DATABASE_ERRORS as error:
                delay = self._streak.failed(error)
            finally:
                self.ready.set()
            await asyncio.sleep(delay)

    def _notified(self, connection: Any, pid: int, channel: str, payload: object) -> None:
        if isinstance(payload, str) and payload.startswith(PROBE_PREFIX):
            if payload == self._probe:
                self._heard.set()
            return  # a probe, this worker's or another's: nothing was committed
        self._wake()

    async def _listen_once(self) -> None:
        lost = asyncio.Event()
        holder = await self._database.engine.connect()
        try:
            raw = await holder.get_raw_connection()
            connection = cast("asyncpg.Connection", raw.driver_connection)
            connection.add_termination_listener(lambda _: lost.set())
            await connection.add_listener(NOTIFY_CHANNEL, self._notified)
            self.ready.set()
            self._wake()  # events committed while nobody listened
            while not lost.is_set():
                if await self._check(lost):
                    # Not as soon as LISTEN succeeds: under a backend killed every few
                    # hundred ms, that would end the streak (and its quiet log) every time.
                    self._streak.succeeded()
                await _first_of(lost.wait(), within=self._check_seconds)
            logger.debug("outbox LISTEN connection lost; listening again")
        finally:
            # Never pooled again: it listens (and may be broken).
            await asyncio.shield(give_back(holder, broken=True))

    async def _check(self, lost: asyncio.Event) -> bool:
        """Send a probe and see whether it arrives; a lost connection or a failed send
        proves nothing (the next check tries again). Returns whether it was conclusive."""
        self._probe = f"{PROBE_PREFIX}{uuid.uuid4().hex}"
        self._heard.clear()
        try:
            await self._notify(self._probe)
        except DATABASE_ERRORS:
            return False  # the claim connection's trouble: the claimer reports it
        await _first_of(self._heard.wait(), lost.wait(), within=self._probe_timeout)
        heard = self._heard.is_set()
        if lost.is_set() and not heard:
            return False
        if heard and self.hearing is False:
            logger.warning("outbox wake-ups (LISTEN/NOTIFY) arrive again")
        elif not heard and self.hearing is not False:
            logger.warning(
                "outbox wake-ups (LISTEN/NOTIFY) do not arrive: a NOTIFY sent to this worker "
                "did not come back within %g s (a transaction-mode pooler in between?); "
                "polling every %g s",
                self._probe_timeout,
                self._poll_interval,
            )
        self.hearing = heard
        self.checks += 1
        return True


async def _first_of(*waits: Awaitable[Any], within: float) -> bool:
    """Wait until one of ``waits`` is done or ``within`` seconds pass; True when one was done."""
    tasks = [asyncio.ensure_future(wait) for wait in waits]
    try:
        done, _ = await asyncio.wait(tasks, timeout=within, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
    return bool(done)
