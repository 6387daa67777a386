"""An outbox worker's periodic upkeep of the table: reclaim expired leases, delete what
retention allows, and report the age of the oldest pending event.

Every worker does it, on its claim connection, every ``maintenance_seconds``: the statements
are idempotent and cheap when there is nothing to do, so concurrent workers need no election.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from asyncdal.outbox import _sql as sql
from asyncdal.outbox._connection import DATABASE_ERRORS, WorkerConnection
from asyncdal.outbox._resilience import FailureStreak
from asyncdal.outbox._settings import OutboxSettings

if TYPE_CHECKING:
    # Only for annotations: metrics are optional (the ``metrics`` extra).
    from asyncdal.outbox._metrics import OutboxMetrics

__all__ = ["Maintenance"]

logger = logging.getLogger("asyncdal.outbox")

# Retention deletes this many rows per statement, statement after statement until one comes
# back short (or the maintenance interval is used up), so claims get the connection between.
_RETENTION_CHUNK = 5_000


class Maintenance:
    """The upkeep one worker does.

    Args:
        connection: the worker's claim connection.
        settings: the attempts, retention and interval in force.
        metrics: where the pending age goes (not read when None).
        wake: called when expired leases were reclaimed, so the claimer looks at once.
        clock: the monotonic clock the interval is measured on.
    """

    def __init__(
        self,
        connection: WorkerConnection,
        settings: OutboxSettings,
        metrics: OutboxMetrics | None,
        *,
        wake: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._metrics = metrics
        self._wake = wake
        self._clock = clock

    async def run(self) -> None:
        """Maintain every ``maintenance_seconds`` until cancelled; a database error is logged
        (once while it lasts) and the next round tries again."""
        streak = FailureStreak("maintenance", self._clock)
        while True:
            await asyncio.sleep(self._settings.maintenance_seconds)
            try:
                await self.once()
            except DATABASE_ERRORS as error:
                streak.failed(error)  # the next round is the retry
                continue
            streak.succeeded()

    async def once(self) -> None:
        """One round: reclaim expired leases, delete old done events and inbox entries, and
        update the pending-age gauge."""
        settings = self._settings
        status = await self._connection.run(
            lambda c: c.execute(sql.RECLAIM_EXPIRED, settings.max_attempts)
        )
        reclaimed = int(status.rsplit(" ", 1)[-1])
        if reclaimed:
            logger.warning("reclaimed %d outbox event(s) whose lease expired", reclaimed)
            self._wake()
        deadline = self._clock() + settings.maintenance_seconds
        if settings.retention_seconds is not None:
            await self._delete_old(sql.DELETE_DONE, settings.retention_seconds, deadline)
        if settings.inbox_retention_seconds is not None:
            await self._delete_old(sql.DELETE_INBOX, settings.inbox_retention_seconds, deadline)
        if self._metrics is not None:
            age = await self._connection.run(lambda c: c.fetchval(sql.OLDEST_PENDING_AGE))
            self._metrics.oldest_pending_age.set(float(age or 0.0))

    async def _delete_old(self, statement: str, age: float, deadline: float) -> None:
        while True:
            status = await self._connection.run(
                lambda c: c.execute(statement, age, _RETENTION_CHUNK)
            )
            if int(status.rsplit(" ", 1)[-1]) < _RETENTION_CHUNK or self._clock() > deadline:
                return
