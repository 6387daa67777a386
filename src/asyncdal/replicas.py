"""The background check that keeps each replica's state: up or down, lag, replay position.

One :class:`ReplicaMonitor` per database and event loop runs as an asyncio task. Every
``DB__<NAME>__REPLICA_CHECK_INTERVAL`` seconds it asks each replica, in one round trip, for its
replay position and lag. A replica that does not answer, or lags more than
``DB__<NAME>__MAX_REPLICA_LAG`` seconds (the time since it was last seen caught up, or the age
of the last transaction it replayed, whichever is less), is taken out of rotation, and put back
when a check finds it well again. Requests never query positions: they read the cached ones.
"""

from __future__ import annotations

import asyncio
import logging
import time
from contextlib import suppress

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal.routing import ReplicaNode, parse_lsn

__all__ = ["REPLICA_STATE_QUERY", "ReplicaMonitor"]

logger = logging.getLogger("asyncdal.replicas")

# On a standby: its replay position, whether it has replayed all it received, and the age of
# the last transaction it replayed. On a server that is not in recovery (a primary named as a
# replica), its current position, caught up.
REPLICA_STATE_QUERY = text(
    """
    SELECT
      CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
           ELSE pg_current_wal_lsn() END::text AS position,
      (NOT pg_is_in_recovery()
       OR pg_last_wal_receive_lsn() IS NOT DISTINCT FROM pg_last_wal_replay_lsn()) AS caught_up,
      COALESCE(EXTRACT(EPOCH FROM clock_timestamp() - pg_last_xact_replay_timestamp()), 0)::float8
        AS replayed_age
    """
)


class ReplicaMonitor:
    """Checks the replicas of one database in the background.

    Args:
        database: the named database (for logs).
        nodes: the replicas, with the engine to check each one through.
        interval: seconds between checks.
        max_lag: seconds of lag beyond which a replica leaves the rotation.
    """

    def __init__(
        self,
        database: str,
        nodes: list[tuple[ReplicaNode, AsyncEngine]],
        *,
        interval: float,
        max_lag: float,
    ) -> None:
        self.database = database
        self.nodes = nodes
        self.interval = interval
        self.max_lag = max_lag
        self._task: asyncio.Task[None] | None = None
        self._caught_up_at: dict[str, float] = {}

    def start(self) -> None:
        """Start checking in the running loop (again after :meth:`stop`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name=f"asyncdal-replica-check-{self.database}"
            )

    async def stop(self) -> None:
        """Stop checking and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def check_now(self) -> None:
        """Check every replica once, concurrently."""
        await asyncio.gather(*(self._check(node, engine) for node, engine in self.nodes))

    async def _run(self) -> None:
        while True:
            await self.check_now()
            await asyncio.sleep(self.interval)

    def _lag(self, node: ReplicaNode, caught_up: bool, replayed_age: float) -> float:
        """Seconds the replica's data is behind: 0 when it has replayed all it received.

        When it is behind, the age of the last replayed transaction alone would overstate the
        lag after a quiet spell (the last transaction may be hours old), so the lag is never
        more than the time since a check last saw the replica caught up.
        """
        now = time.monotonic()
        if caught_up:
            self._caught_up_at[node.name] = now
            return 0.0
        since = self._caught_up_at.get(node.name)
        return replayed_age if since is None else min(replayed_age, now - since)

    async def _check(self, node: ReplicaNode, engine: AsyncEngine) -> None:
        was_healthy = node.healthy
        try:
            # Never longer than an interval, so one hung replica cannot stall the next check.
            async with asyncio.timeout(max(self.interval, 1.0)):
                async with engine.connect() as connection:
                    row = (await connection.execute(REPLICA_STATE_QUERY)).one()
        except Exception as error:  # any failure means "down"; only its class is kept
            node.mark_down(type(error.__cause__ or error).__name__)
            node.lag_seconds = None
        else:
            node.replay_lsn = None if row.position is None else parse_lsn(row.position)
            node.lag_seconds = self._lag(node, bool(row.caught_up), float(row.replayed_age))
            if node.lag_seconds > self.max_lag:
                node.mark_down(f"lag {node.lag_seconds:.1f}s > {self.max_lag:g}s")
            else:
                node.healthy, node.error = True, None
        node.checked = True
        if was_healthy and not node.healthy:
            logger.warning(
                "replica %s of database %r out of rotation: %s",
                node.name,
                self.database,
                node.error,
                extra={"database": self.database, "node": node.name},
            )
        elif node.healthy and not was_healthy:
            logger.info(
                "replica %s of database %r back in rotation",
                node.name,
                self.database,
                extra={"database": self.database, "node": node.name},
            )
