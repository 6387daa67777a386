"""How the worker's loops live through database faults, and how a bug stops the worker.

Every loop of the worker (claim, settle, lease extension, maintenance, LISTEN) treats a
database or network error the same way: log it once, back off (exponentially, with jitter, a
couple of seconds at most, so a restarted server is found again quickly), try again on a new
connection, and say once when it works again. Only an error outside
:data:`~asyncdal.outbox._connection.DATABASE_ERRORS` (a bug in the worker) ends a loop; the
supervisor then stops the whole worker, which releases its leases and exits non-zero.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Collection

from asyncdal.outbox._backoff import Backoff
from asyncdal.outbox._connection import describe_database_error

__all__ = ["FailureStreak", "OutboxWorkerCrashedError", "first_failure"]

logger = logging.getLogger("asyncdal.outbox")

# The first retry comes within 50 ms (a lost connection is usually replaced at once); the
# ceiling doubles up to 2 s, so an outage costs a reconnect attempt per loop every 2 s at most.
_FIRST_DELAY = 0.05
_LONGEST_DELAY = 2.0
# While failures go on, one line every this many failures (the others at DEBUG).
_REPORT_EVERY = 10
# A loop that fails, recovers and fails again (backends killed every few hundred ms) warns at
# most this often; the streaks in between are logged at DEBUG and counted in the next warning.
_QUIET_SECONDS = 10.0


class OutboxWorkerCrashedError(RuntimeError):
    """A part of the worker failed with an error that is not a database fault (a bug): the
    worker stopped, released its leases, and raises this with the failure as ``__cause__``."""


class FailureStreak:
    """The consecutive failures of one loop: the delay before the next try, and the log.

    Args:
        what: what fails, in the log (``claim``, ``settle``, ``lease extension``...).
        clock: the monotonic clock the streak's length is measured on.
    """

    def __init__(self, what: str, clock: Callable[[], float]) -> None:
        self._what = what
        self._clock = clock
        self._backoff = Backoff(_FIRST_DELAY, _LONGEST_DELAY)
        self._failures = 0
        self._since = 0.0
        self._warned_at: float | None = None
        self._warned = False
        self._quiet_streaks = 0

    @property
    def failures(self) -> int:
        """Failures since the last success."""
        return self._failures

    def failed(self, error: BaseException) -> float:
        """Count and log a failure; returns the seconds to wait before trying again."""
        self._failures += 1
        problem = describe_database_error(error)
        now = self._clock()
        if self._failures == 1:
            self._since = now
            self._warned = self._warned_at is None or now - self._warned_at >= _QUIET_SECONDS
            if self._warned:
                self._warned_at = now
                also = f" (and {self._quiet_streaks} time(s) since the last warning)"
                logger.warning(
                    "outbox %s failed (%s); retrying%s",
                    self._what,
                    problem,
                    also if self._quiet_streaks else "",
                )
                self._quiet_streaks = 0
                return self._backoff.delay(1)
            self._quiet_streaks += 1
        if self._failures % _REPORT_EVERY == 0:
            self._warned = True
            self._warned_at = now
            logger.warning(
                "outbox %s still failing: %d times in %.1f s (%s)",
                self._what,
                self._failures,
                now - self._since,
                problem,
            )
        else:
            logger.debug("outbox %s failed (%s)", self._what, problem)
        return self._backoff.delay(self._failures)

    def succeeded(self) -> None:
        """End the streak (logging that it works again, if its failure was warned of)."""
        if self._failures and self._warned:
            logger.info(
                "outbox %s works again after %d failure(s) in %.1f s",
                self._what,
                self._failures,
                self._clock() - self._since,
            )
        self._failures = 0


def first_failure(
    tasks: Collection[asyncio.Task[None]], *, may_return: Collection[asyncio.Task[None]] = ()
) -> BaseException | None:
    """What ended the first of ``tasks`` that failed, or returned though not in
    ``may_return`` (None when none did). The worker's side tasks run until cancelled, so one
    that returned is as much a bug as one that raised."""
    for task in tasks:
        if not task.done() or task.cancelled():
            continue
        error = task.exception()
        if error is None:
            if task in may_return:
                continue
            error = OutboxWorkerCrashedError(f"{task.get_name()} returned")
        error.add_note(f"(in the outbox worker's {task.get_name()} task)")
        return error
    return None
