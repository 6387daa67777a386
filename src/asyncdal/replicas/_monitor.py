"""The background check that keeps each replica's state: up or down, lag, replay position.

One :class:`ReplicaMonitor` per database and event loop runs as an asyncio task. Every
``DB__<NAME>__REPLICA_CHECK_INTERVAL`` seconds it reads the primary's WAL position, then asks
each replica for its replay position. A replica that does not answer, or lags more than
``DB__<NAME>__MAX_REPLICA_LAG`` seconds, is taken out of rotation, and put back when a check
finds it well again. Requests never query positions: they read the cached ones.

The lag is measured against the primary, not against what the replica received: a replica
whose replication stream broke has replayed all it received, yet falls further behind with
every write on the primary. A replica's lag is about the time since the primary was where the
replica's replay is now (see :meth:`ReplicaMonitor._lag`; 0 when it has replayed the latest
position read).

The check has a connection of its own to each node (one per worker, counted in the budget), so
a busy request pool can neither delay it nor make it take a healthy replica out, and its
checkouts never count towards a pool's exhaustion warning. Its task starts in an empty context:
it does not inherit the request id or routing overrides of whoever first used the database.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections import deque
from collections.abc import Mapping
from contextlib import suppress

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal._translate import is_connection_failure
from asyncdal.engine._breaker import CircuitBreaker
from asyncdal.replicas._lsn import parse_lsn
from asyncdal.replicas._routing import ReplicaNode

__all__ = ["PRIMARY_POSITION_QUERY", "REPLICA_STATE_QUERY", "ReplicaMonitor"]

logger = logging.getLogger("asyncdal.replicas")

PRIMARY_POSITION_QUERY = text("SELECT pg_current_wal_lsn()::text")
# On a standby: its replay position. On a server that is not in recovery (a primary named as a
# replica), its current position, and it counts as caught up.
REPLICA_STATE_QUERY = text(
    """
    SELECT
      CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn()
           ELSE pg_current_wal_lsn() END::text AS position,
      pg_is_in_recovery() AS in_recovery
    """
)


class ReplicaMonitor:
    """Checks the replicas of one database in the background.

    Args:
        database: the named database (for logs).
        nodes: the replicas, each with the engine the check reaches it through (a pool of one
            connection of its own).
        primary: the engine the check reads the primary's WAL position through (its own too);
            None measures no lag against the primary (every answering replica is caught up).
        interval: seconds between checks.
        max_lag: seconds of lag beyond which a replica leaves the rotation.
        breakers: each replica's circuit breaker, by node name: a check that cannot reach the
            replica counts as a failure of its breaker, one that can as a success, so the
            breaker (in health and metrics) follows the replica even while no read goes there.
    """

    def __init__(
        self,
        database: str,
        nodes: list[tuple[ReplicaNode, AsyncEngine]],
        *,
        primary: AsyncEngine | None = None,
        interval: float,
        max_lag: float,
        breakers: Mapping[str, CircuitBreaker] | None = None,
    ) -> None:
        self.breakers: Mapping[str, CircuitBreaker] = breakers if breakers is not None else {}
        self.database = database
        self.nodes = nodes
        self.primary = primary
        self.interval = interval
        self.max_lag = max_lag
        self._task: asyncio.Task[None] | None = None
        # The primary's positions and when they were read, oldest first.
        self._positions: deque[tuple[float, int]] = deque()

    def start(self) -> None:
        """Start checking in the running loop (again after :meth:`stop`)."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(),
                name=f"asyncdal-replica-check-{self.database}",
                context=contextvars.Context(),
            )

    async def stop(self) -> None:
        """Stop checking and wait for the task to end."""
        task, self._task = self._task, None
        if task is not None and not task.done():
            task.cancel()
            with suppress(asyncio.CancelledError):
                await task

    async def check_now(self, answer_within: float | None = None) -> None:
        """Check the primary's position, then every replica once, concurrently.

        Args:
            answer_within: seconds each node gets to answer (default: the interval, at least 1 s).
        """
        limit = max(self.interval, 1.0) if answer_within is None else answer_within
        await self._read_primary_position(limit)
        await asyncio.gather(*(self._check(node, engine, limit) for node, engine in self.nodes))

    async def _run(self) -> None:
        while True:
            await self.check_now()
            await asyncio.sleep(self.interval)

    async def _read_primary_position(self, limit: float) -> None:
        if self.primary is None:
            return
        try:
            async with asyncio.timeout(limit), self.primary.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                position = (await connection.execute(PRIMARY_POSITION_QUERY)).scalar_one()
        except Exception as error:
            # Without a new position the lag is measured against the last one read: a primary
            # that is down takes no writes, so the replicas do not fall behind it.
            logger.debug(
                "database %r: the primary's WAL position could not be read (%s)",
                self.database,
                _reason(error, limit),
            )
            return
        now = time.monotonic()
        self._positions.append((now, parse_lsn(str(position))))
        # Older positions than this could only show a lag beyond the limit, which the oldest
        # one kept shows as well.
        horizon = now - self.max_lag - 2 * max(self.interval, 1.0)
        while len(self._positions) > 1 and self._positions[1][0] < horizon:
            self._positions.popleft()

    def _lag(self, replayed: int | None) -> float:
        """Seconds the replica's data is behind the primary's (0 when it has replayed the
        latest position read).

        Its replay position lies between two positions the primary had at two checks: it
        lacks what the primary had at the later one and has all it had at the earlier one,
        so its lag is between the times since those; it is estimated in between, in
        proportion to the WAL, so that a replica a few milliseconds behind a busy primary
        is not taken for one a whole interval behind.
        """
        if not self._positions:
            return 0.0
        if replayed is not None and replayed >= self._positions[-1][1]:
            return 0.0
        now = time.monotonic()
        later: tuple[float, int] | None = None
        for read_at, position in reversed(self._positions):
            if replayed is not None and replayed >= position:
                if later is None or later[1] <= position:
                    return now - read_at
                share = (replayed - position) / (later[1] - position)
                return now - (read_at + share * (later[0] - read_at))
            later = (read_at, position)
        # Behind even the oldest position kept: at least that far.
        return now - self._positions[0][0]

    async def _check(self, node: ReplicaNode, engine: AsyncEngine, limit: float) -> None:
        was_healthy = node.healthy
        try:
            # Never longer than an interval, so one hung replica cannot stall the next check.
            async with asyncio.timeout(limit), engine.connect() as connection:
                await connection.execution_options(isolation_level="AUTOCOMMIT")
                row = (await connection.execute(REPLICA_STATE_QUERY)).one()
        except Exception as error:  # any failure means "down"; only its class is kept
            node.mark_down(_reason(error, limit))
            node.lag_seconds = None
            breaker = self.breakers.get(node.name)
            if breaker is not None and (
                isinstance(error, TimeoutError) or is_connection_failure(error)
            ):
                breaker.record_failure(error)
        else:
            breaker = self.breakers.get(node.name)
            if breaker is not None:
                breaker.record_success()
            node.replay_lsn = None if row.position is None else parse_lsn(row.position)
            node.lag_seconds = self._lag(node.replay_lsn) if row.in_recovery else 0.0
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


def _reason(error: BaseException, limit: float) -> str:
    """What went wrong, by class; a timeout says so (not the CancelledError behind it)."""
    if isinstance(error, TimeoutError):
        return f"TimeoutError: no answer within {limit:g}s"
    return type(error.__cause__ or error).__name__
