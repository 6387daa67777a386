"""``deadline(seconds)``: one time budget for all the database work of a block.

How it is kept, and why this way:

- In a transaction, before each statement, ``statement_timeout`` is set for the transaction
  from the time left (``SET LOCAL``, see :class:`asyncdal.engine._safety.TransactionTimeouts`):
  the server stops the statement at the deadline by itself, even when the client cannot ask it
  to (a frozen process, a lost network), and a transaction-mode pooler keeps it to the one
  transaction. It is set again only once the earlier value reaches too far past the deadline.
- A statement still running when the time runs out is cancelled: the server is sent a cancel
  request for it (the same request ``pg_cancel_backend``
  makes, sent on a connection of its own, which a transaction-mode pooler forwards). This is
  the bound for the reads of a read-only unit of work, which run in autocommit mode where
  ``SET LOCAL statement_timeout`` has no transaction to live in, and the backstop everywhere.
  Either way the statement fails on the server (SQLSTATE 57014), the transaction is aborted
  and rolled back when the unit of work closes, and the connection itself stays healthy: it
  goes back to the pool clean.
- A statement about to start once the time is gone is not sent at all.
- When the time runs out outside a statement (waiting for a pooled connection, or between
  statements), the task that entered the block is cancelled, as ``asyncio.timeout`` does.

Either way the block raises :class:`~asyncdal.errors.DeadlineExceededError`.

Example:
    >>> async with deadline(2.0):
    ...     async with db.read_only_unit_of_work() as uow:
    ...         await uow.session.execute(text("SELECT pg_sleep(5)"))   # cancelled after 2 s
    Traceback (most recent call last):
    asyncdal.errors.DeadlineExceededError: ...
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from contextvars import ContextVar, Token
from types import TracebackType
from typing import Any

from asyncdal.errors import DeadlineExceededError

__all__ = ["DEADLINE", "Deadline", "current_deadline", "deadline"]

# Seconds the server gets to cancel a statement before the task is cancelled instead.
_SERVER_CANCEL_GRACE = 2.0
DEADLINE: ContextVar[Deadline | None] = ContextVar("asyncdal_deadline", default=None)
"""The innermost deadline in force (read directly by the per-statement listeners)."""


def current_deadline() -> Deadline | None:
    """The innermost deadline in force for the running code, if any."""
    return DEADLINE.get()


class Deadline:
    """A time budget for the database work in an ``async with`` block; see :func:`deadline`.

    Attributes:
        seconds: the budget given.
        at: when it runs out, on ``time.monotonic()``'s clock (an enclosing, earlier deadline
            wins).
        expired: True once the time ran out.
    """

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a deadline needs a positive number of seconds, not {seconds!r}")
        self.seconds = seconds
        self.at = 0.0
        self.expired = False
        self.running: dict[int, Callable[[], None]] = {}
        """The statements running under it now: what cancels each on the server."""
        self._task: asyncio.Task[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._cancelled_task = False
        self._token: Token[Deadline | None] | None = None

    def remaining(self) -> float:
        """Seconds left (0 or less once it ran out)."""
        return self.at - time.monotonic()

    def error(self, where: str) -> DeadlineExceededError:
        """The error for running out ``where``."""
        return DeadlineExceededError(
            f"the deadline of {self.seconds:g} s for this work ran out {where}",
            seconds=self.seconds,
        )

    async def __aenter__(self) -> Deadline:
        outer = DEADLINE.get()
        self.at = time.monotonic() + self.seconds
        if outer is not None and outer.at < self.at:
            self.at = outer.at
            self.seconds = max(0.001, outer.remaining())
        loop = asyncio.get_running_loop()
        self._task = asyncio.current_task(loop)
        self._timer = loop.call_at(loop.time() + self.remaining(), self._run_out)
        self._token = DEADLINE.set(self)
        return self

    def disarm(self) -> None:
        """Stop the timer: what comes after (a response's body) is not bounded."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def ran_out(self) -> None:
        """Note that a statement ended because the time ran out (the server stopped it): with
        no other statement running under it, the timer has nothing left to do, and must not
        cancel the task while it cleans up."""
        self.expired = True
        if not self.running:
            self.disarm()

    def _run_out(self) -> None:
        self._timer = None
        self.expired = True
        if self.running:
            # Ask the server to cancel the statements: their connections stay usable, where
            # cancelling the task would discard them.
            for cancel in list(self.running.values()):
                cancel()
            # Should the server not answer the cancel, the task is cancelled after all.
            loop = asyncio.get_running_loop()
            self._timer = loop.call_later(_SERVER_CANCEL_GRACE, self._cancel_task)
            return
        self._cancel_task()

    def _cancel_task(self) -> None:
        self._timer = None
        if self._task is not None and not self._task.done():
            self._cancelled_task = True
            self._task.cancel()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.disarm()
        if self._token is not None:
            DEADLINE.reset(self._token)
            self._token = None
        if (
            self._cancelled_task
            and self._task is not None
            and self._task.uncancel() == 0
            and exc_type is asyncio.CancelledError
        ):
            raise self.error("waiting for a connection or between statements") from None


def deadline(seconds: float) -> Deadline:
    """A time budget for all the database work inside an ``async with`` block.

    Waiting for a pooled connection, each statement, and the time between them count against
    it. In a transaction each statement runs with ``statement_timeout`` set from the time
    left; one still running when the time runs out is also cancelled on the server (the
    connection goes back to the pool clean); one that would start later is not sent; a wait
    for a connection is given up. The block then raises
    :class:`~asyncdal.errors.DeadlineExceededError`, which the FastAPI integration answers
    with a 504. Deadlines nest: the one that runs out first counts. ``REQUEST_TIMEOUT`` puts
    every FastAPI request in one.

    Example:
        >>> async with asyncdal.deadline(2.5):
        ...     async with db.unit_of_work() as uow:
        ...         ...                                 # all of it within 2.5 s
        ...         await uow.commit()

    Args:
        seconds: the budget, from entering the block.

    Raises:
        ValueError: ``seconds`` is not positive.
    """
    return Deadline(seconds)
