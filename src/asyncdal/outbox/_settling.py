"""The leases one worker holds, and the statements that end them: settle, extend, release.

The claims in flight, the outcomes of finished handlers waiting to be written, and the tokens
of claims whose answer was lost all live here, and every statement about them runs on the
worker's settle connection:

- the **settler** writes every finished outcome in one ``UPDATE`` per round, guarded by the
  lease token (done; pending again after a backoff; dead after ``max_attempts``): a worker
  whose lease was taken over writes nothing;
- the **heartbeat** extends the leases of events still held;
- a claim whose statement failed after it may have reached the server leaves its token
  behind; whatever it leased is released (its attempt given back) once the database answers;
- at shutdown, the outcomes are written and every other lease released, retried through
  faults for a few seconds (after that, the leases expire by themselves).
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from typing import TYPE_CHECKING

from asyncdal.outbox import _sql as sql
from asyncdal.outbox._bookkeeping import (
    Claim,
    ClaimRef,
    Outcome,
    Outcomes,
    WorkerStats,
    record_settled,
)
from asyncdal.outbox._connection import DATABASE_ERRORS, WorkerConnection, describe_database_error
from asyncdal.outbox._resilience import FailureStreak
from asyncdal.outbox._settings import OutboxSettings

if TYPE_CHECKING:
    # Only for annotations: metrics are optional (the ``metrics`` extra).
    from asyncdal.outbox._metrics import OutboxMetrics

__all__ = ["Leases"]

logger = logging.getLogger("asyncdal.outbox")

# At shutdown, the leases still held get this long to be settled or released, retried
# through faults; after it they expire by themselves.
_RELEASE_SECONDS = 5.0


class Leases:
    """What one worker holds in the outbox table, and how it lets go.

    Args:
        connection: the worker's settle connection.
        settings: the lease length and heartbeat in force.
        stats: counted as outcomes are written.
        metrics: counted too, when given.
        settled: called after each settle (room for more claims).
        clock: the monotonic clock failures are timed on.
    """

    def __init__(
        self,
        connection: WorkerConnection,
        settings: OutboxSettings,
        stats: WorkerStats,
        metrics: OutboxMetrics | None,
        *,
        settled: Callable[[], None],
        clock: Callable[[], float],
    ) -> None:
        self._connection = connection
        self._settings = settings
        self._stats = stats
        self._metrics = metrics
        self._settled = settled
        self._clock = clock
        # Keyed by (event id, token): after its lease expired, an event still running here
        # may be claimed again, here too, and the two attempts must not share bookkeeping.
        self.in_flight: dict[ClaimRef, Claim] = {}
        self.outcomes = Outcomes()
        self.unanswered: list[uuid.UUID] = []
        """Tokens of claims that failed after they may have reached the server."""
        self.wake = asyncio.Event()
        """Set when there is something to settle."""
        self.closing = False
        """Set by :meth:`stop_settler`: the settler ends after the round in progress."""

    def finish(self, claim: Claim, outcome: Outcome) -> None:
        """Buffer the outcome of ``claim``'s handler (settled by the next round)."""
        # The buffer of now, not of the handler's start: a settle may have taken that one.
        self.outcomes.add(claim, *outcome)

    def settled_together(self, outcomes: Outcomes, written: AbstractSet[ClaimRef]) -> None:
        """Count the outcomes a handlers' transaction wrote and committed with their effects
        (:meth:`~asyncdal.outbox._execution.HandlerExecution.run_together`), and let their
        claims go."""
        record_settled(outcomes, written, self.in_flight, self._stats, self._metrics)
        for ref in outcomes.refs():
            self.in_flight.pop(ref, None)
        self._settled()

    async def settler(self) -> None:
        """Settle whenever woken, until :meth:`stop_settler` (or cancelled); a failure keeps
        the outcomes buffered."""
        streak = FailureStreak("settle", self._clock)
        while not self.closing:
            await self.wake.wait()
            self.wake.clear()
            if self.closing:
                return  # what is buffered is written by release_all
            try:
                await self.settle()
            except DATABASE_ERRORS as error:
                delay = streak.failed(error)
                if self.closing:
                    return
                # If the leases expire first, the events are delivered again (at least once).
                await asyncio.sleep(delay)
                self.wake.set()
                continue
            streak.succeeded()

    async def stop_settler(self, settler: asyncio.Task[None]) -> None:
        """End ``settler`` (the task running :meth:`settler`) between two rounds.

        A settle is not cancelled mid-statement: its ``UPDATE`` may have been committed with
        its answer still on the way, and the outcomes put back would then be written again
        by :meth:`release_all`, found settled, and counted lost instead of done (the stats
        would lie). The round in progress gets a few seconds; only a settle still hanging
        after them is cancelled (the database does not answer; what it had written is then
        unknown, and the leases expire by themselves).
        """
        self.closing = True
        self.wake.set()
        if not settler.done():
            await asyncio.wait({settler}, timeout=_RELEASE_SECONDS)
        settler.cancel()
        await asyncio.gather(settler, return_exceptions=True)

    async def settle(self) -> None:
        """Write the buffered outcomes in one statement; put them back if it fails."""
        outcomes = self.outcomes
        if not outcomes:
            return
        self.outcomes = Outcomes()
        try:
            rows = await self._connection.run(
                lambda c: c.fetch(
                    sql.SETTLE,
                    outcomes.ids,
                    outcomes.tokens,
                    ["pending" if s == "release" else s for s in outcomes.statuses],
                    outcomes.delays,
                    outcomes.errors,
                    outcomes.refunds,
                )
            )
        except BaseException:
            self.outcomes = Outcomes.merged(outcomes, self.outcomes)
            raise
        written = {(row[0], row[1]) for row in rows}
        if len(written) < len(outcomes):
            # Also when a settle was written but its answer lost, and written again here.
            self._stats.lost += len(outcomes) - len(written)
            logger.warning(
                "%d outbox outcome(s) not written: their lease was taken over",
                len(outcomes) - len(written),
            )
        record_settled(outcomes, written, self.in_flight, self._stats, self._metrics)
        for ref in outcomes.refs():
            self.in_flight.pop(ref, None)
        self._settled()

    async def heartbeat(self) -> None:
        """Extend the leases held, every ``heartbeat_seconds``, until cancelled."""
        streak = FailureStreak("lease extension", self._clock)
        while True:
            await asyncio.sleep(self._settings.effective_heartbeat_seconds)
            tokens = list({claim.token for claim in self.in_flight.values()})
            if not tokens:
                continue
            try:
                await self._extend(tokens)
            except DATABASE_ERRORS as error:
                streak.failed(error)  # the next beat comes soon enough: no extra pause
                continue
            streak.succeeded()

    async def _extend(self, tokens: list[uuid.UUID]) -> None:
        seconds = self._settings.lease_seconds
        await self._connection.run(lambda c: c.execute(sql.EXTEND, tokens, seconds))

    async def release_unanswered(self) -> None:
        """Release what the claims whose answer was lost leased, if anything."""
        tokens = list(self.unanswered)
        if not tokens:
            return
        status = await self._connection.run(lambda c: c.execute(sql.RELEASE_CLAIMS, tokens))
        del self.unanswered[: len(tokens)]
        released = int(status.rsplit(" ", 1)[-1])
        if released:
            logger.info("released %d outbox event(s) of claims whose answer was lost", released)

    async def release_all(self) -> None:
        """At shutdown (no handler running any more): write the outcomes buffered, and
        release every other lease (the attempt is refunded: a shutdown is not the handler's
        failure), retrying through faults for a few seconds."""
        finished = set(self.outcomes.refs())
        for claim in self.in_flight.values():
            if claim.ref not in finished:
                self.outcomes.add(claim, "release")
        streak = FailureStreak("release at shutdown", self._clock)
        deadline = self._clock() + _RELEASE_SECONDS
        while self.outcomes or self.unanswered:
            try:
                await self.release_unanswered()
                await self.settle()
            except DATABASE_ERRORS as error:
                delay = streak.failed(error)
                if self._clock() + delay > deadline:
                    logger.error(
                        "could not release %d outbox lease(s) (%s); they expire after %g s",
                        len(self.outcomes) + len(self.unanswered),
                        describe_database_error(error),
                        self._settings.lease_seconds,
                    )
                    return
                await asyncio.sleep(delay)
