"""Retries where they are safe, with capped exponential backoff and full jitter (tenacity).

Three kinds of work are retried, each because nothing can be done twice:

- opening a connection (the engine's guard): nothing was sent to the server yet;
- a read on the default read-only path whose connection dropped (:func:`retry_dropped_reads`):
  autocommit reads change nothing, and each statement sees its own snapshot anyway;
- a whole unit of work that hit a serialization failure (40001) or a deadlock (40P01), when the
  caller asks for it with :func:`run_in_transaction`: the server rolled it back, so running it
  again in a fresh session cannot apply it twice.

A commit whose outcome is unknown (the connection died while COMMIT was in flight) is never
retried: it surfaces as :class:`~asyncdal.errors.CommitOutcomeUnknownError`.

Example:
    >>> async def transfer(uow: UnitOfWork) -> None:
    ...     ...                                   # reads and writes through uow only
    >>> await db.run_in_transaction(transfer, idempotent=True, isolation_level="SERIALIZABLE")
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import event, exc, inspect
from sqlalchemy.orm import ORMExecuteState, Session
from sqlalchemy.orm.attributes import set_committed_value
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
)

from asyncdal._translate import is_conflict, is_connection_failure
from asyncdal.engine._retry import RetryListener, RetryPolicy, greenlet_sleep, log_retry
from asyncdal.errors import ConnectionLostError, UnitOfWorkError
from asyncdal.orm._uow import UnitOfWork, current_unit_of_work
from asyncdal.replicas._routing import node_used

if TYPE_CHECKING:
    from asyncdal.orm._database import Database

__all__ = ["retry_dropped_reads", "run_in_transaction"]

logger = logging.getLogger("asyncdal.retry")

T = TypeVar("T")


async def run_in_transaction(
    database: Database,
    work: Callable[[UnitOfWork], Awaitable[T]],
    *,
    idempotent: bool,
    isolation_level: str | None = None,
    policy: RetryPolicy | None = None,
) -> T:
    """Run ``work`` in a fresh unit of work and commit; on 40001/40P01 run it all again.

    Args:
        database: where to run it.
        work: an async function taking the :class:`UnitOfWork`; it must do its database work
            through it and commit nothing itself (the commit comes after it returns).
        idempotent: required, so that every call site says it: True declares that ``work``
            may run more than once, i.e. apart from its database writes (rolled back on each
            conflict) it has no effect that repeating would duplicate (no e-mail sent, no
            external call). False runs it once and lets a conflict propagate.
        isolation_level: e.g. ``"SERIALIZABLE"``; the engine's default when None.
        policy: attempts and backoff; the database's settings when None.

    Returns:
        What ``work`` returned on the attempt that committed.

    Raises:
        UnitOfWorkError: called inside an open unit of work of this database in this task
            (an outer transaction cannot be re-run from here).
        CommitOutcomeUnknownError: the connection died during COMMIT; never retried.
    """
    if current_unit_of_work(database) is not None:
        raise UnitOfWorkError(
            "run_in_transaction cannot run inside an open unit of work of the same database: "
            "it must own the transaction it may re-run"
        )
    chosen = policy if policy is not None else RetryPolicy.from_settings(database.settings)

    async def attempt() -> T:
        async with database.background_unit_of_work() as uow:
            if isolation_level is not None:
                await uow.session.connection(execution_options={"isolation_level": isolation_level})
            result = await work(uow)
            await uow.commit()
            return result

    if not idempotent:
        return await attempt()
    log = log_retry(f"unit of work on {database.name!r}")

    def before_sleep(state: RetryCallState) -> None:
        log(state)
        database.note_retry("transaction", "primary")

    retrying = AsyncRetrying(
        stop=stop_after_attempt(chosen.attempts),
        wait=chosen.wait(),
        retry=retry_if_exception(is_conflict),
        before_sleep=before_sleep,
        sleep=asyncio.sleep,
        reraise=True,
    )
    return await retrying(attempt)


# A statement's connection broke: translated by the engine, or a connection-class SQLSTATE
# SQLAlchemy did not see as a disconnect. Not QueryTimeoutError (repeating it repeats the wait),
# nor DatabaseUnavailableError at checkout (the guard has retried opening already).
_DROPPED = (ConnectionLostError, exc.DBAPIError)


def _roll_back_keeping_loaded(session: Session) -> None:
    """Leave the session's broken transaction without expiring what it read before.

    A rollback expires every object of the session. On the autocommit read path nothing was
    written and each statement saw its own snapshot, so what earlier reads loaded is as good
    after it as before; expired, it would be loaded again lazily when next used, which in
    async code raises ``MissingGreenlet`` (a page of products read, the count's connection
    killed and the count retried: then a 500 when the page was shown).
    """
    loaded = []
    for instance in list(session.identity_map.values()):
        state = inspect(instance)
        values = {key: value for key, value in state.dict.items() if key in state.manager}
        loaded.append((instance, values))
    session.rollback()
    for instance, values in loaded:
        for key, value in values.items():
            set_committed_value(instance, key, value)


def retry_dropped_reads(
    session_class: type[Session], policy: RetryPolicy, on_retry: RetryListener | None = None
) -> None:
    """Re-run a read whose connection dropped, on a new connection (autocommit reads only).

    Attach it to the session class of the default read-only path: each statement there runs
    on its own, so repeating one after its connection broke sees the same as a first try.
    The first try runs without tenacity, so reads that succeed pay nothing for this.
    """
    if policy.attempts <= 1:
        return

    def run(state: ORMExecuteState) -> Any:
        try:
            return state.invoke_statement()
        except _DROPPED as failure:
            if not is_connection_failure(failure):
                raise
            error = failure

        def leave_broken_transaction(retry_state: RetryCallState) -> None:
            # The broken connection is invalidated; leaving the failed (empty) transaction
            # makes the next try check out a new one.
            _roll_back_keeping_loaded(state.session)
            log_retry("read on a dropped connection", offset=1)(retry_state)
            if on_retry is not None:
                on_retry("read", node_used(state.session))

        retrying = Retrying(
            stop=stop_after_attempt(policy.attempts - 1),
            wait=policy.wait(),
            retry=retry_if_exception(
                lambda error: isinstance(error, _DROPPED) and is_connection_failure(error)
            ),
            before_sleep=leave_broken_transaction,
            sleep=greenlet_sleep,
            reraise=True,
        )
        _roll_back_keeping_loaded(state.session)
        delay = policy.wait()(RetryCallState(retrying, None, (), {}))
        if on_retry is not None:
            on_retry("read", node_used(state.session))
        logger.warning(
            "read on a dropped connection failed (%s), attempt 1; retrying in %.3f s",
            type(error.__cause__ or error).__name__,
            delay,
        )
        greenlet_sleep(delay)
        return retrying(state.invoke_statement)

    event.listen(session_class, "do_orm_execute", run)
