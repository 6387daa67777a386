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
  ``SET LOCAL statement_timeout`` has no transaction to live in, and for a statement whose
  ``statement_timeout`` in force reaches past the deadline. Where that value stops the
  statement at the deadline, no cancel request is sent: it would race the server's own stop
  and could cancel the next command instead (the rollback).
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
import weakref
from asyncio import current_task, get_running_loop
from collections.abc import Callable
from contextvars import ContextVar, Token
from math import ceil
from types import TracebackType
from typing import Any

from asyncdal.errors import DeadlineExceededError

__all__ = ["DEADLINE", "Deadline", "current_deadline", "deadline"]

# Seconds the server gets to cancel a statement before the task is cancelled instead.
_SERVER_CANCEL_GRACE = 2.0
DEADLINE: ContextVar[Deadline | None] = ContextVar("asyncdal_deadline", default=None)
"""The innermost deadline in force (read directly by the per-statement listeners)."""
# Deadlines that run out within the same grain share one timer of the event loop: a timer of
# its own per deadline (per request, with REQUEST_TIMEOUT) cost more than everything else a
# deadline does (measured: about 7,600 instructions for uvloop's call_at and its firing, of
# some 450,000 for a whole read). The grain is _GRAIN seconds times the largest power of two
# not above the budget's whole seconds: 10 ms up to 2 s, 160 ms for 30 s. A timer may fire that
# late: 10 ms, or at most 1% of a longer budget. A coarse grain lets requests that come one at
# a time share a timer too: with the grain at 10 ms for every budget, a read under valgrind
# (50 times slower, as on a busy machine) armed a timer for nearly every request, some 5,000
# instructions a read; with 160 ms, one in 16.
_GRAIN = 0.01
_monotonic = time.monotonic


class _Bucket:
    """The deadlines of one event loop running out within one grain, and their timer."""

    __slots__ = ("deadlines", "key", "owner")

    def __init__(self, owner: dict[int, _Bucket], key: int) -> None:
        # key: when it fires, in _GRAIN units (deadlines of every grain share one dict).
        self.owner = owner
        self.key = key
        # A set: a grain of a busy server holds hundreds of requests' deadlines, and a list's
        # remove() scans them for each one that ends.
        self.deadlines: set[Deadline] = set()

    def leave(self, deadline: Deadline) -> None:
        # An emptied bucket keeps its timer, which fires once with nothing to do: cancelling
        # it would have the next deadline of the same grain (the next request, one at a time)
        # arm another. At most one pending timer per grain: 188 for a 30 s REQUEST_TIMEOUT.
        self.deadlines.discard(deadline)

    def fire(self) -> None:
        del self.owner[self.key]
        for deadline in list(self.deadlines):
            deadline._bucket = None
            deadline._run_out()


_buckets: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, _Bucket]] = (
    weakref.WeakKeyDictionary()
)
# The last loop's buckets, found without a weak reference (one loop serves a whole process).
_last: tuple[asyncio.AbstractEventLoop | None, dict[int, _Bucket]] = (None, {})


def _buckets_of(loop: asyncio.AbstractEventLoop) -> dict[int, _Bucket]:
    global _last
    found = _buckets.get(loop)
    if found is None:
        found = _buckets[loop] = {}
    _last = (loop, found)
    return found


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

    # Slots: a FastAPI request with REQUEST_TIMEOUT makes one, and reads its fields per statement.
    __slots__ = (
        "_bucket",
        "_cancelled_task",
        "_task",
        "_timer",
        "_token",
        "at",
        "expired",
        "running",
        "seconds",
    )

    def __init__(self, seconds: float) -> None:
        if seconds <= 0:
            raise ValueError(f"a deadline needs a positive number of seconds, not {seconds!r}")
        self.seconds = seconds
        self.at = 0.0
        self.expired = False
        self.running: dict[int, Callable[[Deadline], None]] = {}
        """The statements running under it now: what cancels each on the server."""
        self._task: asyncio.Task[Any] | None = None
        self._bucket: _Bucket | None = None
        self._timer: asyncio.TimerHandle | None = None
        """Its own timer, once it ran out with statements running (the server's grace)."""
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

    def start(self) -> Deadline:
        """Put it in force for the running task (what ``async with`` does on the way in).

        Plain methods, so that code running one per request (the FastAPI integration) pays no
        awaitable of its own for them; :meth:`stop` must follow, in a ``finally``.
        """
        outer = DEADLINE.get()
        seconds = self.seconds
        at = _monotonic() + seconds
        bucket = None
        if outer is not None and outer.at <= at:
            # The enclosing deadline runs out first: its time, and its timer.
            seconds = self.seconds = max(0.001, outer.remaining())
            at = outer.at
            bucket = outer._bucket
        self.at = at
        loop = get_running_loop()
        self._task = current_task(loop)
        if bucket is None:
            last_loop, buckets = _last
            if last_loop is not loop:
                buckets = _buckets_of(loop)
            # The grain in _GRAIN units: the largest power of two not above the whole seconds.
            step = 1 << (int(seconds).bit_length() - 1) if seconds >= 2 else 1
            key = ceil(at / (_GRAIN * step)) * step
            bucket = buckets.get(key)
            if bucket is None:
                bucket = buckets[key] = _Bucket(buckets, key)
                # The loop's clock is time.monotonic()'s (uvloop's, to the millisecond).
                loop.call_at(key * _GRAIN, bucket.fire)
        bucket.deadlines.add(self)
        self._bucket = bucket
        self._token = DEADLINE.set(self)
        return self

    def stop(self, exc_type: type[BaseException] | None) -> None:
        """Take it out of force, the block having ended with ``exc_type`` (or None).

        Raises:
            DeadlineExceededError: the time ran out outside a statement and the task was
                cancelled for it (``exc_type`` is then ``CancelledError``).
        """
        # disarm(), inlined: stop runs once per request with REQUEST_TIMEOUT.
        bucket = self._bucket
        if bucket is not None:
            self._bucket = None
            bucket.deadlines.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        token = self._token
        if token is not None:
            DEADLINE.reset(token)
            self._token = None
        if (
            self._cancelled_task
            and self._task is not None
            and self._task.uncancel() == 0
            and exc_type is asyncio.CancelledError
        ):
            raise self.error("waiting for a connection or between statements") from None

    async def __aenter__(self) -> Deadline:
        return self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop(exc_type)

    def disarm(self) -> None:
        """Stop the timer: what comes after (a response's body) is not bounded."""
        bucket = self._bucket
        if bucket is not None:
            self._bucket = None
            bucket.leave(self)
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
        self.expired = True
        if self.running:
            # Ask the server to cancel the statements: their connections stay usable, where
            # cancelling the task would discard them.
            for cancel in list(self.running.values()):
                cancel(self)
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
