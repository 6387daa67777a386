"""What every connection checkout goes through: the circuit breaker, and retries of opening.

A :class:`ConnectionGuard` sits in the pool's ``connect()`` (see :class:`GuardedPool`), so it
covers every way to a connection (sessions, ``engine.connect()``, health checks, warm-up) and
every engine asyncdal builds, one per server: a database's primary and each replica.

- While the breaker is open, a checkout fails at once with
  :class:`~asyncdal.errors.DatabaseUnavailableError`.
- Opening a connection that fails for a connection-class reason is counted by the breaker and
  retried with backoff (nothing was sent yet), within ``CONNECT_TIMEOUT`` seconds in all: a
  connect that timed out has used the budget and is not tried again.
- The half-open probe checks the connection it got with a ping before the breaker closes.

Successes are counted when a new connection opens and when a statement succeeds. A server
that refuses a connection because it is at its limit (53300) or still starting up (57P03)
answered, so that is retried and reported but not counted against the breaker. A pooled
connection that asyncpg already knows to be closed (its backend was terminated, the server
restarted) is replaced at checkout without a round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any, Self, cast

from sqlalchemy import event, exc
from sqlalchemy.engine import ExceptionContext
from sqlalchemy.ext.asyncio import AsyncEngine
from sqlalchemy.pool import Pool, PoolProxiedConnection
from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
)

from asyncdal._translate import SERVER_BUSY, is_connection_failure, pool_exhausted, sqlstate
from asyncdal.engine._breaker import CircuitBreaker
from asyncdal.engine._cancel import ServerCancel
from asyncdal.engine._driver import StatementHooks
from asyncdal.engine._retry import RetryListener, RetryPolicy, greenlet_sleep, log_retry
from asyncdal.engine._sqlalchemy import await_in_greenlet
from asyncdal.errors import AsyncdalError, DatabaseUnavailableError

__all__ = ["ConnectionGuard", "GuardedPool", "attach_guard"]


def _worth_retrying(error: BaseException) -> bool:
    # An open breaker means "stop now"; anything not connection-class is not ours to retry.
    return is_connection_failure(error) and not isinstance(error, DatabaseUnavailableError)


def _counts_against_breaker(error: BaseException) -> bool:
    # A server at its connection limit, or still starting up, answered: it is there. Opening
    # the breaker would also fail the requests that healthy pooled connections could serve.
    return _worth_retrying(error) and sqlstate(error) not in SERVER_BUSY


class ConnectionGuard:
    """The breaker and the connect retries of one server's pool.

    Args:
        breaker: the server's circuit breaker.
        policy: attempts and backoff for opening a connection.
        budget: seconds all attempts together may take (the connect timeout).
        on_retry: told ``("connect", node)`` before each retry (metrics count them).
    """

    def __init__(
        self,
        breaker: CircuitBreaker,
        policy: RetryPolicy,
        budget: float,
        on_retry: RetryListener | None = None,
    ) -> None:
        self.breaker = breaker
        self.on_retry = on_retry
        self.policy = policy
        self.budget = budget
        self._retrying = Retrying(
            wait=policy.wait(),
            retry=retry_if_exception(_worth_retrying),
            before_sleep=lambda state: self._log(state, offset=1),
            sleep=greenlet_sleep,
            reraise=True,
        )

    def checkout(
        self, take: Callable[[], PoolProxiedConnection], pool: Pool
    ) -> PoolProxiedConnection:
        """Take a connection through the breaker, retrying failures to open one.

        Raises:
            DatabaseUnavailableError: the breaker is open, or no connection could be opened
                (the last failure is its ``__cause__``).
            PoolTimeoutError: no pooled connection became free within ``POOL_TIMEOUT``
                (SQLAlchemy's ``TimeoutError`` is its ``__cause__``).
        """
        try:
            return self._checkout(take, pool)
        except DatabaseUnavailableError:
            raise
        except exc.TimeoutError as error:
            # Neither retried nor counted above: the pool is exhausted, the server is fine.
            raise pool_exhausted(error, database=self.breaker.name) from error
        except Exception as error:
            if not is_connection_failure(error):
                raise
            raise DatabaseUnavailableError(
                f"database {self.breaker.name!r} is unavailable: could not open a connection "
                f"({type(error).__name__}; circuit breaker {self.breaker.state})",
                database=self.breaker.name,
                retry_after=self.breaker.retry_after() or None,
            ) from error

    def _checkout(
        self, take: Callable[[], PoolProxiedConnection], pool: Pool
    ) -> PoolProxiedConnection:
        started = time.monotonic()
        try:
            # The first try runs outside tenacity, so that checkouts that succeed (nearly all)
            # pay nothing for the retry machinery.
            return self._attempt(take, pool)
        except Exception as error:
            if self.policy.attempts <= 1 or not _worth_retrying(error):
                raise
            first_error = error
        delay = self.policy.wait()(_first_attempt(self._retrying))
        remaining = self.budget - (time.monotonic() - started) - delay
        if remaining <= 0:
            raise first_error
        self._log(_first_attempt(self._retrying, first_error, delay))
        greenlet_sleep(delay)
        retrying = self._retrying.copy(
            stop=stop_after_attempt(self.policy.attempts - 1) | stop_before_delay(remaining)
        )
        return retrying(self._attempt, take, pool)

    def _log(self, state: RetryCallState, offset: int = 0) -> None:
        # tenacity's attempts start after the first try, which ran outside it.
        log_retry(f"opening a connection to {self.breaker.name!r}", offset)(state)
        if self.on_retry is not None:
            self.on_retry("connect", self.breaker.node)

    def _attempt(
        self, take: Callable[[], PoolProxiedConnection], pool: Pool
    ) -> PoolProxiedConnection:
        breaker = self.breaker
        breaker.before_connect()
        probing = breaker.state == "half_open"
        try:
            connection = take()
        except Exception as error:
            if _counts_against_breaker(error):
                breaker.record_failure(error)
            raise
        if probing:
            self._probe(connection)
        return connection

    def _probe(self, connection: PoolProxiedConnection) -> None:
        """The half-open probe got a pooled connection: make sure it answers."""
        driver = connection.driver_connection
        try:
            # Within CONNECT_TIMEOUT, like the connect a new connection would have needed: a
            # blackholed server must not hold the probe for COMMAND_TIMEOUT (or for ever).
            execute = getattr(driver, "execute", None)
            if execute is not None:
                await_in_greenlet(execute("SELECT 1", timeout=self.budget))
        except Exception as error:
            # Abort rather than close politely: a server that did not answer the ping would
            # not answer the goodbye either, and SQLAlchemy waits up to 2 s for it.
            _terminate(driver)
            connection.invalidate(error)
            connection.close()
            self.breaker.record_failure(error)
            raise DatabaseUnavailableError(
                f"database {self.breaker.name!r} is unavailable: the probe failed "
                f"({type(error).__name__})",
                database=self.breaker.name,
                retry_after=self.breaker.cool_down,
            ) from error
        self.breaker.record_success()


def _first_attempt(
    retrying: Retrying, error: BaseException | None = None, delay: float = 0.0
) -> RetryCallState:
    """tenacity's view of a first attempt, to draw (and log) the backoff before the second."""
    state = RetryCallState(retrying, None, (), {})
    if error is not None:
        state.set_exception((type(error), error, error.__traceback__))
    state.upcoming_sleep = delay
    return state


class GuardedPool(Pool):
    """A pool whose ``connect()`` goes through a :class:`ConnectionGuard` when it has one.

    Mixed into asyncdal's pool classes ahead of SQLAlchemy's; the guard survives
    ``recreate()`` (which ``engine.dispose()`` and invalidation use).
    """

    guard: ConnectionGuard | None = None
    statement_hooks: StatementHooks | None = None
    """What the engine's statement listeners do, for reads run on the driver."""

    def connect(self) -> PoolProxiedConnection:
        guard = self.guard
        if guard is None:
            return super().connect()
        return guard.checkout(super().connect, self)

    def recreate(self) -> Self:
        fresh = super().recreate()
        if isinstance(fresh, GuardedPool):
            fresh.guard = self.guard
            fresh.statement_hooks = self.statement_hooks
        return cast("Self", fresh)


def attach_guard(engine: AsyncEngine, guard: ConnectionGuard) -> None:
    """Put ``guard`` in front of ``engine``'s pool and feed its breaker from the pool's events.

    A statement that timed out on the client side (``COMMAND_TIMEOUT``) leaves its connection
    in a state nobody knows (the server may still be running it, or be unreachable): that
    connection is aborted at once rather than closed politely (SQLAlchemy waits up to 2 s for a
    polite close, which a blackholed server never answers), and the rest of the pool is kept,
    as one slow statement says nothing about the others.
    """
    pool = engine.sync_engine.pool
    if not isinstance(pool, GuardedPool):
        return
    pool.guard = guard
    hooks = pool.statement_hooks = StatementHooks(database=guard.breaker.name)

    def answered(*_: Any) -> None:
        # Cheap (a counter reset): keeps "in a row" meaning in a row, so failures to open a
        # connection scattered between successful statements never add up to opening it.
        guard.breaker.record_success()

    cancel = ServerCancel()

    def handle_error(context: ExceptionContext) -> None:
        # What to do with the connection only; the error itself is translated (into
        # QueryTimeoutError here) by the engine's error map, registered by create_engine.
        original = context.original_exception
        if isinstance(original, AsyncdalError):
            # A listener refused to send the statement (a deadline already run out): the
            # connection was not used and stays. SQLAlchemy takes any TimeoutError, which
            # DeadlineExceededError is too, for a disconnect.
            context.is_disconnect = False
            return
        abandoned = isinstance(original, TimeoutError | asyncio.CancelledError)
        connection = context.connection
        if abandoned and connection is not None and not connection.invalidated:
            # The statement may still be running on the server: stop it there.
            cancel.request(getattr(connection.connection, "driver_connection", None))
        # A cancelled statement's connection is closed politely, not aborted as a timed-out
        # one is: the polite close waits (up to 2 s) until the server has ended the backend,
        # so its locks are gone when the cancelled task resumes. Aborting it returned at once
        # on a silent server but, on a loaded machine, sometimes left the row locked for
        # seconds after the task had ended (the cancellation test caught it).
        if isinstance(original, TimeoutError) and not context.is_pre_ping:
            context.is_disconnect = True
            context.invalidate_pool_on_disconnect = False
            _abort(context)

    def found_closed(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        # A backend ended while the connection sat in the pool (pg_terminate_backend, a
        # server restart) has told asyncpg so, and asyncpg marked it closed: replace it now,
        # for free, instead of failing the first statement sent on it.
        is_closed = getattr(record.driver_connection, "is_closed", None)
        if is_closed is not None and is_closed():
            raise exc.DisconnectionError("the pooled connection was closed by the server")

    event.listen(pool, "connect", answered)
    event.listen(engine.sync_engine, "after_cursor_execute", answered)
    hooks.after.append(lambda sql, seconds, kind: guard.breaker.record_success())
    hooks.stands_in_for("after_cursor_execute", answered)
    event.listen(pool, "checkout", found_closed)
    event.listen(engine.sync_engine, "handle_error", handle_error)


def _abort(context: ExceptionContext) -> None:
    """Abort the asyncpg connection under ``context``."""
    connection = context.connection
    if connection is None or connection.invalidated:
        return
    _terminate(getattr(connection.connection, "driver_connection", None))


def _terminate(driver_connection: Any) -> None:
    """Abort an asyncpg connection at once (does nothing where it is not one)."""
    terminate = getattr(driver_connection, "terminate", None)
    if callable(terminate):
        terminate()
