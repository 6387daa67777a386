"""The outbox worker: claim batches, run handlers, settle results, survive crashes.

One worker process holds two connections of its own (claim/settle, and LISTEN), taken from a
second pool of the same named database, and gives handlers that ask for database access a
third, bounded pool. Its shape:

- the **claimer** takes up to ``batch_size`` pending events per statement (``FOR UPDATE SKIP
  LOCKED``), leasing them with an owner, a token and an expiry; it claims again at once while
  batches come back full and the in-flight limit allows, else it waits for a ``NOTIFY`` or
  ``poll_interval``;
- each event runs in an asyncio task, bounded by a semaphore, under ``handler_timeout``;
  events whose handlers take a unit of work run up to ``transaction_size`` per task, in one
  transaction that also settles them (:meth:`HandlerExecution.run_together`): per event, one
  round trip for the handler's write instead of BEGIN, write, COMMIT and a share of a settle;
- the **settler** writes every finished outcome in one ``UPDATE`` per round, guarded by the
  lease token (done; pending again after a jittered exponential backoff; dead after
  ``max_attempts``);
- the **heartbeat** extends the leases of events still running; **maintenance** reclaims
  expired leases (a crashed worker's), deletes old done events, and updates the age gauge;
- ``stop()`` (SIGTERM) stops claiming, lets handlers finish within ``shutdown_timeout``,
  cancels the rest, and releases their leases, so nothing stays leased.

Database faults never stop it: every loop logs a database or network error once, backs off
and tries again on a new connection (:mod:`asyncdal.outbox._resilience`); a claim whose answer
was lost has its leases released as soon as the database answers again. Its side tasks are
supervised: one that fails otherwise (a bug) stops the worker, which releases its leases and
raises :class:`~asyncdal.outbox._resilience.OutboxWorkerCrashedError` (``asyncdal outbox run``
exits with status 1).

Running a handler (arguments, timeout, retry or dead) is :mod:`asyncdal.outbox._execution`;
the periodic upkeep is :mod:`asyncdal.outbox._maintenance`; claims, outcomes and their counts
are :mod:`asyncdal.outbox._bookkeeping`. Metrics are optional: without them the worker imports
nothing of ``prometheus_client``.

Example:
    >>> worker = OutboxWorker(databases.main, handlers, load_outbox_settings())
    >>> await worker.run()                           # until worker.stop()
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from asyncdal.orm._database import Database
from asyncdal.outbox import _sql as sql
from asyncdal.outbox._bookkeeping import Claim, WorkerStats
from asyncdal.outbox._connection import DATABASE_ERRORS, WorkerConnection
from asyncdal.outbox._event import OutboxEvent
from asyncdal.outbox._execution import HandlerExecution
from asyncdal.outbox._handlers import Handlers
from asyncdal.outbox._listener import Listener
from asyncdal.outbox._maintenance import Maintenance
from asyncdal.outbox._resilience import FailureStreak, OutboxWorkerCrashedError, first_failure
from asyncdal.outbox._settings import OUTBOX_WORKER_POOL, OutboxSettings
from asyncdal.outbox._settling import Leases
from asyncdal.outbox._table import NOTIFY_CHANNEL

if TYPE_CHECKING:
    # Only for annotations: metrics are optional (the ``metrics`` extra, prometheus-client),
    # and a worker without them imports nothing of it.
    from asyncdal.outbox._metrics import OutboxMetrics

__all__ = ["OutboxWorker", "OutboxWorkerCrashedError", "WorkerStats"]

logger = logging.getLogger("asyncdal.outbox")


class OutboxWorker:
    """Delivers outbox events to handlers, at least once.

    Args:
        database: the named database whose outbox table is served (from ``Databases``); the
            worker derives its own pools from its settings and never uses its pool.
        handlers: the handlers, by event type.
        settings: batch size, concurrency, timeouts, retries...
        metrics: record claimed/done/retried/dead, handler time, delay and pending age.
        handler_database: the database handlers get (default: a pool of
            ``handler_pool_size`` derived from ``database``, created only when a handler asks
            for database access). The caller owns one passed in.
    """

    def __init__(
        self,
        database: Database,
        handlers: Handlers,
        settings: OutboxSettings,
        *,
        metrics: OutboxMetrics | None = None,
        handler_database: Database | None = None,
    ) -> None:
        if not handlers:
            raise ValueError("an outbox worker needs at least one handler")
        self.settings = settings
        self.handlers = handlers
        self.metrics = metrics
        self.stats = WorkerStats()
        self.owner = settings.worker_name or f"{socket.gethostname()}:{os.getpid()}"
        app = database.settings.application_name
        self._database = database.with_settings(
            f"{database.name}:outbox-worker",
            pool="queue",
            # Three are held for the worker's life (claim, settle, LISTEN); the fourth, never
            # opened unless one is replaced, keeps the pool's exhaustion warning quiet.
            pool_size=OUTBOX_WORKER_POOL,
            max_overflow=0,
            application_name=f"{app}:outbox-worker"[:63],
            # Claims and settles write: the worker never reads from a replica.
            replicas=(),
            replica_weights=None,
        )
        self._owns_handler_database = handler_database is None and handlers.needs_database
        if handler_database is None and handlers.needs_database:
            handler_database = database.with_settings(
                f"{database.name}:outbox-handlers",
                pool="queue",
                pool_size=settings.effective_handler_pool_size,
                max_overflow=0,
                application_name=f"{app}:outbox-handlers"[:63],
            )
        self.handler_database = handler_database
        types = handlers.event_types
        self._event_types = types
        if settings.ordered:
            self._claim_sql = sql.CLAIM_ORDERED_TYPED if types is not None else sql.CLAIM_ORDERED
        else:
            self._claim_sql = sql.CLAIM_TYPED if types is not None else sql.CLAIM
        # Claims keep at most about a batch waiting behind the running handlers (so handlers
        # never starve, and slow handlers do not hoard events other workers could run); this
        # caps what is leased and not yet settled, finished outcomes included.
        self._max_in_flight = 3 * settings.batch_size + settings.concurrency
        self._stopping = asyncio.Event()
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_time = time.monotonic
        self._semaphore = asyncio.Semaphore(settings.concurrency)
        # Handlers taking a unit of work share transactions, settled in them, only on the
        # worker's own handler pool: the outbox's database, so the settle can join them.
        self._together = settings.transaction_size > 1 and self._owns_handler_database
        self._execution = HandlerExecution(handlers, handler_database, settings, self._loop_time)
        self._claiming = WorkerConnection(self._database)
        self._settling = WorkerConnection(self._database)
        self._listener = Listener(
            self._database,
            self._wake.set,
            notify=self._probe,
            poll_interval=settings.poll_interval,
            check_seconds=settings.listen_check_seconds,
            clock=self._loop_time,
        )
        self._leases = Leases(
            self._settling,
            settings,
            self.stats,
            metrics,
            settled=self._wake.set,
            clock=self._loop_time,
        )
        self._maintenance = Maintenance(
            self._claiming, settings, metrics, wake=self._wake.set, clock=self._loop_time
        )
        # Claimed events whose handler has not started yet: the claimer tops this up.
        self._queued = 0
        self._started = asyncio.Event()

    # -- lifecycle -----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to stop: no more claims; in-flight handlers get ``shutdown_timeout``."""
        self._stopping.set()
        self._wake.set()

    @property
    def own_databases(self) -> tuple[Database, ...]:
        """The pools this worker derived (its own, the handlers' when it made one), e.g. for
        ``DatabaseMetrics.instrument``, which then reports them under their own names
        (``<name>:outbox-worker``, ``<name>:outbox-handlers``)."""
        if self._owns_handler_database and self.handler_database is not None:
            return (self._database, self.handler_database)
        return (self._database,)

    @property
    def started(self) -> asyncio.Event:
        """Set once the worker holds its connection and listens."""
        return self._started

    @property
    def hears_notifications(self) -> bool | None:
        """Whether the last check of ``LISTEN`` heard the worker's own NOTIFY (None before
        the first check); when False, the worker relies on polling."""
        return self._listener.hearing

    async def run(self) -> WorkerStats:
        """Run until :meth:`stop`; then finish or release everything in flight.

        Returns:
            What the worker did.

        Raises:
            OutboxWorkerCrashedError: a part of the worker failed with an error that is not a
                database fault (its ``__cause__``); the leases were released first.
        """
        self._execution.open()
        crash: BaseException | None = None
        try:
            await self._first_maintenance()
            settler = asyncio.create_task(self._leases.settler(), name="outbox-settler")
            side = [
                asyncio.create_task(self._listener.run(), name="outbox-listener"),
                settler,
                asyncio.create_task(self._execution.watchdog(), name="outbox-watchdog"),
                asyncio.create_task(self._leases.heartbeat(), name="outbox-heartbeat"),
                asyncio.create_task(self._maintenance.run(), name="outbox-maintenance"),
            ]
            claimer = asyncio.create_task(self._start_and_claim(), name="outbox-claimer")
            try:
                crash = await self._supervise(claimer, side)
                await self._drain()
            finally:
                # The settler ends between two rounds, not mid-statement (see stop_settler);
                # a settle cut short all the same puts its outcomes back, so the last settle
                # below writes them (or releases their leases) all the same.
                others = [task for task in (claimer, *side) if task is not settler]
                for task in others:
                    task.cancel()
                await self._leases.stop_settler(settler)
                await asyncio.gather(*others, return_exceptions=True)
                await self._settle_or_release()
        finally:
            self._execution.close()
            await self._claiming.close()
            await self._settling.close()
            await self.handlers.aclose()
            await self._database.dispose()
            if self._owns_handler_database and self.handler_database is not None:
                await self.handler_database.dispose()
        if crash is not None:
            raise OutboxWorkerCrashedError(f"outbox worker {self.owner} failed") from crash
        logger.info("outbox worker %s stopped: %s", self.owner, self.stats)
        return self.stats

    async def _supervise(
        self, claimer: asyncio.Task[None], side: list[asyncio.Task[None]]
    ) -> BaseException | None:
        """Wait until the claimer stops; a task that fails first (a bug) stops the worker,
        and is returned."""
        running = {claimer, *side}
        while claimer in running:
            done, running = await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            # The claimer returns when stopped, and the listener in pooler mode.
            crash = first_failure(done, may_return={claimer, side[0]})
            if crash is not None:
                logger.critical(
                    "outbox worker %s stops: a bug, not a database fault", self.owner,
                    exc_info=crash,
                )  # fmt: skip
                self.stop()
                return crash
        return None

    # -- claiming ------------------------------------------------------------------------

    async def _start_and_claim(self) -> None:
        await self._listener.ready.wait()
        self._started.set()
        logger.info("outbox worker %s started", self.owner, extra={"owner": self.owner})
        await self._claimer()

    async def _claimer(self) -> None:
        poll = self.settings.poll_interval
        streak = FailureStreak("claim", self._loop_time)
        while not self._stopping.is_set():
            # Cleared before looking: a NOTIFY or a settle from now on wakes the wait below.
            self._wake.clear()
            room = self._max_in_flight - len(self._leases.in_flight)
            wanted = min(self.settings.batch_size, room)
            enough_waiting = self._queued > self.settings.concurrency
            if enough_waiting or wanted < min(self.settings.batch_size, self.settings.concurrency):
                await self._wait(poll)
                continue
            try:
                await self._leases.release_unanswered()
                claimed = await self._claim(wanted)
            except DATABASE_ERRORS as error:
                await self._pause(streak.failed(error))
                continue
            streak.succeeded()
            if claimed < wanted:
                await self._wait(poll)

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._wake.wait()

    async def _pause(self, seconds: float) -> None:
        """Back off after a failure: woken only by stop(), not by a NOTIFY or a settle."""
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._stopping.wait()

    async def _claim(self, limit: int) -> int:
        token = uuid.uuid4()
        arguments: list[Any] = [limit, self.owner, token, self.settings.lease_seconds]
        if self._event_types is not None:
            arguments.append(self._event_types)
        try:
            rows = await self._claiming.run(lambda c: c.fetch(self._claim_sql, *arguments))
        except BaseException:
            # It may have been committed with its answer lost: release what it leased, if
            # anything, as soon as the database answers again.
            self._leases.unanswered.append(token)
            raise
        if not rows:
            return 0
        rows.sort(key=lambda row: row[0])
        self.stats.claimed += len(rows)
        self._queued += len(rows)
        if self.metrics is not None:
            self.metrics.claimed.inc(len(rows))
        together: list[Claim] = []
        for row in rows:
            event = OutboxEvent(row[0], row[1], row[2], json.loads(row[3]), row[4], row[5])
            claim = Claim(event, token)
            self._leases.in_flight[claim.ref] = claim
            if self._together and self._execution.runs_together(event.event_type):
                together.append(claim)
            else:
                self._spawn(self._handle(claim), [claim])
        for group in self._groups(together):
            self._spawn(self._handle_together(group), group)
        return len(rows)

    def _groups(self, claims: list[Claim]) -> list[list[Claim]]:
        """``claims`` in as few transactions of at most ``transaction_size`` as they fill, of
        even sizes. Large ones: a transaction costs a BEGIN, a settle and a COMMIT (with its
        WAL flush) whatever its size, and a batch of 200 in transactions of 7 (one per
        connection of the handlers' pool) ran at about 1,100 events/s against 1,950 in
        transactions of 50 (``python -m bench outbox``, a one-row handler)."""
        if not claims:
            return []
        count = -(-len(claims) // self.settings.transaction_size)
        size = -(-len(claims) // count)
        return [claims[start : start + size] for start in range(0, len(claims), size)]

    def _spawn(self, work: Coroutine[Any, Any, None], claims: list[Claim]) -> None:
        task = asyncio.create_task(work)
        for claim in claims:
            claim.task = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _probe(self, payload: str) -> None:
        """Send the listener's self-addressed notification, from the claim connection."""
        await self._claiming.run(lambda c: c.execute(sql.PROBE, NOTIFY_CHANNEL, payload))

    # -- handling ------------------------------------------------------------------------

    async def _handle(self, claim: Claim) -> None:
        async with self._semaphore:
            self._queued -= 1
            if self._stopping.is_set():
                return  # not started before the stop: its lease is released with the rest
            if self._queued <= self.settings.concurrency:
                self._wake.set()  # room for another batch behind the running handlers
            started = time.perf_counter()
            outcome = await self._execution.run(claim)
            self._leases.finish(claim, outcome)
            if self.metrics is not None:
                self.metrics.handler_duration.labels(claim.event.event_type).observe(
                    time.perf_counter() - started
                )
        self._leases.wake.set()

    async def _handle_together(self, claims: list[Claim]) -> None:
        """Run ``claims`` in one transaction with their settle; if nothing of it committed,
        each again alone, settled apart."""
        async with self._semaphore:
            self._queued -= len(claims)
            if self._stopping.is_set():
                return  # not started before the stop: their leases are released with the rest
            if self._queued <= self.settings.concurrency:
                self._wake.set()
            observe = self._observe if self.metrics is not None else None
            together = await self._execution.run_together(claims, observe)
            if together.outcomes is not None:
                self._leases.settled_together(together.outcomes, together.written)
                return
            for claim in claims:
                if together.unknown is not None:
                    self._leases.finish(claim, self._execution.failed(claim, together.unknown))
                    continue
                claim.timed_out = False  # a timeout of the shared run is not this run's
                started = time.perf_counter()
                outcome = await self._execution.run(claim)
                self._leases.finish(claim, outcome)
                if observe is not None:
                    observe(claim, time.perf_counter() - started)
        self._leases.wake.set()

    def _observe(self, claim: Claim, seconds: float) -> None:
        assert self.metrics is not None
        self.metrics.handler_duration.labels(claim.event.event_type).observe(seconds)

    # -- upkeep --------------------------------------------------------------------------

    async def _first_maintenance(self) -> None:
        """Maintain once before claiming; a database not reachable yet (or not migrated yet)
        is waited for like the claimer does, not a reason to exit."""
        streak = FailureStreak("start (first maintenance)", self._loop_time)
        while not self._stopping.is_set():
            try:
                await self._maintenance.once()
            except DATABASE_ERRORS as error:
                await self._pause(max(self.settings.poll_interval, streak.failed(error)))
                continue
            streak.succeeded()
            return

    # -- shutdown ------------------------------------------------------------------------

    async def _drain(self) -> None:
        """Give running handlers ``shutdown_timeout``, then cancel the rest."""
        tasks = set(self._tasks)
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=self.settings.shutdown_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)

    async def _settle_or_release(self) -> None:
        """Write the outcomes still buffered, and release every other lease we hold."""
        for task in list(self._tasks):
            task.cancel()
        await self._leases.release_all()
