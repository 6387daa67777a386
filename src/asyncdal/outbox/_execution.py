"""Running one claimed event's handler: its arguments, its timeout, and what its end settles.

A handler gets the payload or the event, and the database access its signature asks for (a
unit of work of its own per call, committed when it returns, or the handlers' database). Sync
handlers run in daemon threads (:mod:`asyncdal.outbox._threads`). Handlers given a unit of work
may share one transaction, settled in it (:meth:`HandlerExecution.run_together`). A handler past
``handler_timeout`` is cancelled by one watchdog; a failure becomes a retry after a jittered
exponential backoff, or ``dead`` after ``max_attempts``; a database fault (the database down,
the connection or the commit lost) is retried without using up an attempt.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import asyncpg
from sqlalchemy.orm import Session

from asyncdal.engine._sqlalchemy import session_has_changes
from asyncdal.errors import (
    CommitOutcomeUnknownError,
    ConflictError,
    DatabaseUnavailableError,
    NotCommittedError,
    PoolTimeoutError,
)
from asyncdal.orm._database import Database
from asyncdal.orm._uow import UnitOfWork
from asyncdal.outbox import _sql as sql
from asyncdal.outbox._backoff import Backoff
from asyncdal.outbox._bookkeeping import Claim, ClaimRef, Outcome, Outcomes
from asyncdal.outbox._event import OutboxEvent
from asyncdal.outbox._handlers import Handlers, HandlerSpec
from asyncdal.outbox._settings import OutboxSettings
from asyncdal.outbox._threads import DaemonThreads

__all__ = ["DATABASE_FAULTS", "DONE", "HandlerExecution", "Together", "describe_failure"]

logger = logging.getLogger("asyncdal.outbox")

DONE = Outcome("done")
"""The outcome of a handler that returned."""

_ERROR_LIMIT = 2000

DATABASE_FAULTS = (
    DatabaseUnavailableError,
    NotCommittedError,
    CommitOutcomeUnknownError,
    PoolTimeoutError,
    ConflictError,
)
"""Failures of the database a handler was given, not of the handler: unreachable (a restart,
a pooler restarting, its breaker open), the connection lost, the commit lost, the pool
exhausted, a deadlock or serialization failure. They do not use up attempts: an outage
longer than ``max_attempts`` backoffs must not kill events (they are retried, with backoff,
until the database is back)."""


@dataclass(frozen=True, slots=True)
class Together:
    """What became of events run in one transaction (:meth:`HandlerExecution.run_together`).

    Attributes:
        outcomes: committed, with their completion: the outcomes written (all ``done``).
        written: the claims the settle in the transaction wrote (all of them).
        unknown: the commit failed and nobody knows whether it happened: the claims are
            retried as after a database fault (settled apart, by the lease token, which a
            commit that happened has cleared).
    """

    outcomes: Outcomes | None = None
    written: frozenset[ClaimRef] = frozenset()
    unknown: BaseException | None = None

    @property
    def committed(self) -> bool:
        """The handlers' writes and their completion committed."""
        return self.outcomes is not None


ALONE = Together()
"""Nothing committed: run each event again alone (a handler failed or timed out, a lease was
taken over, the transaction failed before its commit)."""


def describe_failure(error: BaseException, timeout: float) -> str:
    """The error kept in the event's ``last_error``: its type and message, shortened."""
    if isinstance(error, TimeoutError):
        text = f"TimeoutError: the handler ran longer than {timeout:g} s and was cancelled"
    else:
        text = f"{type(error).__name__}: {error}"
    return text[:_ERROR_LIMIT]


class HandlerExecution:
    """Runs the handlers of claimed events, and cancels those that run too long.

    Args:
        handlers: the handlers, by event type.
        handler_database: the database handlers that ask for access get.
        settings: the timeout, attempts and backoff in force.
        clock: the monotonic clock deadlines are read on.
    """

    def __init__(
        self,
        handlers: Handlers,
        handler_database: Database | None,
        settings: OutboxSettings,
        clock: Callable[[], float],
    ) -> None:
        self._handlers = handlers
        self._database = handler_database
        self._settings = settings
        self._clock = clock
        self._backoff = Backoff(settings.backoff_initial, settings.backoff_max)
        self._running: set[Claim] = set()
        self._threads: DaemonThreads | None = None

    def open(self) -> None:
        """Start a run: sync handlers get threads of their own, until :meth:`close`."""
        self._threads = DaemonThreads(self._settings.concurrency, "outbox-handler")

    def close(self) -> None:
        """End a run: no more sync handlers; one still running is abandoned (its thread is a
        daemon, and its event's lease was settled or released)."""
        if self._threads is not None:
            self._threads.shutdown(wait=False, cancel_futures=True)

    async def run(self, claim: Claim) -> Outcome:
        """Run the handler of ``claim``'s event, cancelled after ``handler_timeout``.

        Returns:
            What to settle: done, a retry, or dead.

        Raises:
            asyncio.CancelledError: the task was cancelled by something other than the
                watchdog (a shutdown), or by both.
        """
        event = claim.event
        spec = self._handlers.for_type(event.event_type)
        claim.deadline = self._clock() + self._settings.handler_timeout
        self._running.add(claim)
        try:
            if spec is None:
                raise LookupError(f"no handler for event type {event.event_type!r}")
            await self._invoke(spec, event)
        except asyncio.CancelledError:
            task = claim.task
            # Cancelled by the watchdog alone (not also by a shutdown): a timeout.
            if not claim.timed_out or task is None or task.uncancel() > 0:
                raise
            return self._failed(claim, TimeoutError())
        except Exception as error:
            return self._failed(claim, error)
        finally:
            self._running.discard(claim)
        return DONE

    def runs_together(self, event_type: str) -> bool:
        """Whether events of this type may share a transaction: their handler takes a unit of
        work (whose transaction the worker owns), in a coroutine."""
        spec = self._handlers.for_type(event_type)
        return spec is not None and spec.access == "uow" and spec.is_async

    async def run_together(
        self, claims: list[Claim], observe: Callable[[Claim, float], None] | None = None
    ) -> Together:
        """Run the handlers of ``claims`` (see :meth:`runs_together`) one after the other in
        one transaction of the handlers' database, settle them ``done`` in it (guarded by
        their lease tokens, like every settle), and commit: their writes and their completion
        commit together, or nothing does.

        Each handler gets a unit of work joined to the shared one: its ``commit()`` flushes,
        and the worker commits once all have run. Nothing commits when a handler fails or
        times out, ends the shared transaction itself, or when one of the leases was taken
        over; the caller then runs each event alone (:meth:`run`), which gives each its own
        outcome.

        Args:
            claims: the claims, run in this order; their ``task`` is the current task.
            observe: called with each claim and its handler's seconds.

        Raises:
            asyncio.CancelledError: cancelled by something other than the watchdog.
        """
        database = self._database
        assert database is not None
        outcomes = Outcomes()
        try:
            async with database.background_unit_of_work() as shared:
                session = shared.session
                sync_session = session.sync_session
                connection = await session.connection()
                transaction = sync_session.get_transaction()
                # One unit of work joined to the shared one serves the handlers in turn: a
                # joined unit of work holds nothing of its own (its session, repositories and
                # failure are the shared one's), and opening one per handler cost about as
                # much CPU as the rest of the worker's bookkeeping for the event.
                async with database.unit_of_work() as joined:
                    for claim in claims:
                        await self._invoke_joined(claim, joined, sync_session, observe)
                        if sync_session.get_transaction() is not transaction:
                            return ALONE  # the handler committed or rolled back the shared one
                        outcomes.add(claim, "done")
                # On the driver, as the worker's own settles: SQLAlchemy's execution of a
                # statement and its 50 rows cost as much as a handler's write.
                raw = await connection.get_raw_connection()
                driver = cast("asyncpg.Connection", raw.driver_connection)
                rows = await driver.fetch(
                    sql.SETTLE,
                    outcomes.ids,
                    outcomes.tokens,
                    outcomes.statuses,
                    outcomes.delays,
                    outcomes.errors,
                    outcomes.refunds,
                )
                written = frozenset((row[0], row[1]) for row in rows)
                if len(written) < len(outcomes):
                    return ALONE  # rolled back: a worker whose lease was taken over writes nothing
                try:
                    await shared.commit()
                except (CommitOutcomeUnknownError, NotCommittedError) as error:
                    if isinstance(error, NotCommittedError):
                        return ALONE
                    return Together(unknown=error)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            timed_out = any(claim.timed_out for claim in claims)
            if not timed_out or task is None or task.uncancel() > 0:
                raise
            return ALONE
        except Exception as error:  # the handler's failure is told by its run alone
            logger.debug("outbox events run together failed, each runs again alone: %r", error)
            return ALONE
        return Together(outcomes, written)

    async def _invoke_joined(
        self,
        claim: Claim,
        uow: UnitOfWork,
        session: Session,
        observe: Callable[[Claim, float], None] | None,
    ) -> None:
        event = claim.event
        spec = self._handlers.for_type(event.event_type)
        assert spec is not None
        assert spec.access_parameter is not None
        claim.deadline = self._clock() + self._settings.handler_timeout
        self._running.add(claim)
        started = time.perf_counter() if observe is not None else 0.0
        try:
            argument: Any = event if spec.wants_event else event.payload
            await spec.function(argument, **{spec.access_parameter: uow})
            # What a joined unit of work's commit() does: flush. Skipped when there is nothing
            # to flush (a handler that ran its statements itself): the flush would return at
            # once, after costing a greenlet.
            if session_has_changes(session):
                await uow.commit()
        finally:
            self._running.discard(claim)
        if observe is not None:
            observe(claim, time.perf_counter() - started)

    async def watchdog(self) -> None:
        """Cancel handlers past ``handler_timeout``, until cancelled.

        One periodic check instead of a timer per handler (``asyncio.timeout``): at 20,000
        events/s the per-event timer cost about a seventh of the worker's throughput
        (``python -m bench outbox``), for a precision the timeout does not need.
        """
        tick = max(0.01, min(0.1, self._settings.handler_timeout / 10))
        while True:
            await asyncio.sleep(tick)
            now = self._clock()
            for claim in list(self._running):
                if claim.deadline <= now and not claim.timed_out and claim.task is not None:
                    claim.timed_out = True
                    claim.task.cancel()

    async def _invoke(self, spec: HandlerSpec, event: OutboxEvent) -> None:
        argument: Any = event if spec.wants_event else event.payload
        if not spec.is_async:
            loop = asyncio.get_running_loop()
            await loop.run_in_executor(self._threads, spec.function, argument)
            return
        if spec.access is None:
            await spec.function(argument)
            return
        database = self._database
        assert database is not None
        assert spec.access_parameter is not None
        if spec.access == "database":
            await spec.function(argument, **{spec.access_parameter: database})
            return
        # A transaction of its own per call, never joined to anything else in this task.
        async with database.background_unit_of_work() as uow:
            await spec.function(argument, **{spec.access_parameter: uow})
            await uow.commit()

    def failed(self, claim: Claim, error: BaseException) -> Outcome:
        """What to settle after ``error`` ended ``claim``'s run (a database fault is retried
        without using up an attempt)."""
        return self._failed(claim, error)

    def _failed(self, claim: Claim, error: BaseException) -> Outcome:
        event = claim.event
        message = describe_failure(error, self._settings.handler_timeout)
        if isinstance(error, DATABASE_FAULTS):
            delay = self._backoff.delay(event.attempts)
            logger.info(
                "outbox event %d (%s) met a database fault, retry in %.2fs (the attempt is "
                "given back): %s",
                event.id,
                event.event_type,
                delay,
                message,
                extra={"event_id": event.id, "event_type": event.event_type},
            )
            return Outcome("pending", delay=delay, error=message, refund=True)
        if event.attempts >= self._settings.max_attempts:
            logger.error(
                "outbox event %d (%s) is dead after %d attempts: %s",
                event.id,
                event.event_type,
                event.attempts,
                message,
                extra={"event_id": event.id, "event_type": event.event_type},
            )
            return Outcome("dead", error=message)
        delay = self._backoff.delay(event.attempts)
        logger.info(
            "outbox event %d (%s) failed attempt %d, retry in %.2fs: %s",
            event.id,
            event.event_type,
            event.attempts,
            delay,
            message,
            extra={"event_id": event.id, "event_type": event.event_type},
        )
        return Outcome("pending", delay=delay, error=message)
