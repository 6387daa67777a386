"""A circuit breaker per database server: fail fast while the server is unreachable.

``closed`` (normal): connection-class failures are counted, any success resets the count;
``failure_threshold`` failures in a row open it. ``open``: every checkout fails at once with
:class:`~asyncdal.errors.DatabaseUnavailableError` instead of waiting for the connect timeout.
After ``cool_down`` seconds the next checkout goes through as the one probe (``half_open``);
the others keep failing fast. The probe's success closes the breaker, its failure opens it
again for another cool-down. A probe that never reports (its task was cancelled) is replaced
by another after a further cool-down.

Each engine's pool carries one (see :func:`circuit_breaker`), so a database's primary and each
of its replicas have their own. One breaker serves a server's engines in every event loop that
uses the database, and those loops may run in different threads (Lambda, tests, a worker's
threads), so asyncio running one callback at a time is not enough: a ``threading.Lock`` guards
every change of state and of the count. The common calls take no lock: a success while closed
with nothing to reset (after every statement) and a checkout while closed only read.
State-change listeners are called outside the lock, one call at a time, in the order of the
changes, from whichever thread made (or is delivering) them.

Example:
    >>> breaker = CircuitBreaker("main", failure_threshold=5, cool_down=5.0)
    >>> breaker.before_connect()             # raises DatabaseUnavailableError while open
    >>> breaker.state
    'closed'
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal.errors import DatabaseUnavailableError

if TYPE_CHECKING:
    from asyncdal.settings import DatabaseSettings

__all__ = ["BREAKER_STATES", "BreakerState", "CircuitBreaker", "circuit_breaker"]

BreakerState = Literal["closed", "open", "half_open"]
BREAKER_STATES: tuple[BreakerState, ...] = ("closed", "open", "half_open")

StateListener = Callable[["CircuitBreaker", BreakerState, BreakerState], None]


class CircuitBreaker:
    """Counts connection failures of one server and fails fast while it is unreachable.

    Args:
        name: what it guards, for messages and metrics (``main``, ``main/replica-1``).
        failure_threshold: consecutive connection failures that open it.
        cool_down: seconds it stays open before one probe is let through.
        node: the server's role (``primary``, or a replica's name), a metrics label.
        clock: monotonic seconds; replaced by tests.

    Attributes:
        listeners: called with ``(breaker, old_state, new_state)`` on every change, in order
            and one at a time, outside the breaker's lock (a listener may use the breaker).
    """

    def __init__(
        self,
        name: str,
        *,
        failure_threshold: int,
        cool_down: float,
        node: str = "primary",
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if failure_threshold < 1:
            raise ValueError("failure_threshold must be at least 1")
        if cool_down <= 0:
            raise ValueError("cool_down must be positive")
        self.name = name
        self.node = node
        self.failure_threshold = failure_threshold
        self.cool_down = cool_down
        self.listeners: list[StateListener] = []
        self._clock = clock
        self._state: BreakerState = "closed"
        self._failures = 0
        self._opened_at = 0.0
        self._probe_started: float | None = None
        # Guards the state, the count and the changes not yet told to the listeners.
        self._lock = threading.Lock()
        self._untold: deque[tuple[BreakerState, BreakerState]] = deque()
        # Held by the one thread telling the listeners, so they hear the changes in order.
        self._telling = threading.Lock()
        self.last_error: str | None = None
        """Class name of the last connection failure counted (never its message)."""

    @classmethod
    def from_settings(
        cls, name: str, settings: DatabaseSettings, *, node: str = "primary"
    ) -> CircuitBreaker:
        """A breaker with the ``BREAKER_FAILURE_THRESHOLD`` and ``BREAKER_COOL_DOWN`` given."""
        return cls(
            name,
            node=node,
            failure_threshold=settings.breaker.failure_threshold,
            cool_down=settings.breaker.cool_down,
        )

    @property
    def state(self) -> BreakerState:
        """``closed``, ``open`` or ``half_open``."""
        return self._state

    @property
    def failures(self) -> int:
        """Connection failures in a row so far."""
        return self._failures

    def retry_after(self) -> float:
        """Seconds until a probe may go through (0 when closed or probing)."""
        with self._lock:
            return self._retry_after(self._clock())

    def _retry_after(self, now: float) -> float:
        if self._state != "open":
            return 0.0
        return max(0.0, self._opened_at + self.cool_down - now)

    def before_connect(self) -> None:
        """Let a checkout through, or raise at once while open.

        Raises:
            DatabaseUnavailableError: the breaker is open and cooling down, or a probe is
                already in flight.
        """
        if self._state == "closed":  # a read needs no lock; a failure after it comes after us
            return
        try:
            with self._lock:
                self._before_connect(self._clock())
        finally:
            self._tell()

    def _before_connect(self, now: float) -> None:
        if self._state == "closed":
            return
        if self._state == "open":
            if now - self._opened_at < self.cool_down:
                raise self._unavailable(self._opened_at + self.cool_down - now)
            self._change("half_open")
            self._probe_started = now
            return
        # half_open: one probe at a time, unless the last one never reported back.
        if self._probe_started is not None and now - self._probe_started < self.cool_down:
            raise self._unavailable(self._probe_started + self.cool_down - now)
        self._probe_started = now

    def record_success(self) -> None:
        """A connection opened or a statement ran: the server answers."""
        # After every statement, so nothing to reset must cost no lock. Reading without it is
        # safe: this returns only when the count was 0 and then the state closed, and a
        # failure counted meanwhile is simply ordered after this success.
        if self._failures == 0 and self._state == "closed":
            return
        with self._lock:
            self._failures = 0
            if self._state != "closed":
                self._probe_started = None
                self._change("closed")
        self._tell()

    def record_failure(self, error: BaseException | None = None) -> None:
        """A connection-class failure (see :func:`asyncdal.faults.is_connection_failure`)."""
        with self._lock:
            if error is not None:
                self.last_error = type(error).__name__
            self._failures += 1
            if self._state == "half_open" or (
                self._state == "closed" and self._failures >= self.failure_threshold
            ):
                self._opened_at = self._clock()
                self._probe_started = None
                self._change("open")
        self._tell()

    def as_dict(self) -> dict[str, Any]:
        """State for health reports: ``state``, ``failures``, ``retry_after`` (seconds)."""
        with self._lock:
            return {
                "state": self._state,
                "failures": self._failures,
                "retry_after": round(self._retry_after(self._clock()), 3),
            }

    def _unavailable(self, wait: float) -> DatabaseUnavailableError:
        return DatabaseUnavailableError(
            f"database {self.name!r} is unavailable: its circuit breaker is {self._state} after "
            f"{self._failures} connection failure(s) ({self.last_error or 'unknown'}); "
            f"failing fast, next try in {max(0.0, wait):.1f} s",
            database=self.name,
            retry_after=max(0.0, wait),
        )

    def _change(self, state: BreakerState) -> None:
        """Change the state (the lock held); :meth:`_tell` tells the listeners after."""
        old, self._state = self._state, state
        self._untold.append((old, state))

    def _tell(self) -> None:
        """Tell the listeners every change not told yet, outside the state lock.

        One thread tells at a time, so listeners hear the changes in their order. A thread that
        finds another telling leaves its changes to it; the teller looks again after letting go,
        so a change queued just before that is not left behind. A listener that changes the
        breaker (same thread) queues its change for the loop it is called from.
        """
        while self._untold:
            if not self._telling.acquire(blocking=False):
                return
            try:
                while True:
                    with self._lock:
                        if not self._untold:
                            break
                        old, new = self._untold.popleft()
                    for listener in self.listeners:
                        listener(self, old, new)
            finally:
                self._telling.release()

    def __repr__(self) -> str:
        return f"<CircuitBreaker {self.name!r} {self._state} failures={self._failures}>"


def circuit_breaker(engine: AsyncEngine) -> CircuitBreaker | None:
    """The breaker guarding ``engine``'s connections (None for engines asyncdal did not build)."""
    guard = getattr(engine.sync_engine.pool, "guard", None)
    breaker = getattr(guard, "breaker", None)
    return breaker if isinstance(breaker, CircuitBreaker) else None
