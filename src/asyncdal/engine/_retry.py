"""Backoff for retries (tenacity, full jitter), and waiting from SQLAlchemy's sync code.

Three kinds of work are retried, each because nothing can be done twice: opening a connection
(the engine's guard), a read on the read-only path whose connection dropped, and a whole unit of
work that hit a serialization failure or deadlock (``run_in_transaction``). They share the
policy here.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from tenacity import RetryCallState, wait_random_exponential

from asyncdal.engine._sqlalchemy import await_in_greenlet

if TYPE_CHECKING:
    from asyncdal.settings import DatabaseSettings

__all__ = ["RetryListener", "RetryPolicy", "greenlet_sleep", "log_retry"]

logger = logging.getLogger("asyncdal.retry")

T = TypeVar("T")


RetryListener = Callable[[str, str], None]
"""Told ``(kind, node)`` before each retry; kinds: ``connect``, ``read``, ``transaction``."""


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry.

    Attributes:
        attempts: tries in all, the first included (1: no retry).
        base_delay: seconds of the first backoff; each further one doubles.
        max_delay: cap in seconds of one backoff.
    """

    attempts: int = 3
    base_delay: float = 0.05
    max_delay: float = 1.0

    @classmethod
    def from_settings(cls, settings: DatabaseSettings) -> RetryPolicy:
        """The policy of one database (``DB__<NAME>__RETRY_*``)."""
        return cls(settings.retry.attempts, settings.retry.base_delay, settings.retry.max_delay)

    def wait(self) -> wait_random_exponential:
        """Full jitter: a uniform draw between 0 and ``min(max_delay, base_delay * 2**n)``."""
        return wait_random_exponential(multiplier=self.base_delay, max=self.max_delay)


def log_retry(what: str, offset: int = 0) -> Callable[[RetryCallState], None]:
    """A tenacity ``before_sleep`` hook that logs the failure, attempt number and backoff."""

    def log(state: RetryCallState) -> None:
        outcome = state.outcome
        error = outcome.exception() if outcome is not None else None
        logger.warning(
            "%s failed (%s), attempt %d; retrying in %.3f s",
            what,
            type(error).__name__,
            state.attempt_number + offset,
            state.upcoming_sleep,
        )

    return log


def greenlet_sleep(seconds: float) -> None:
    """Sleep without blocking the loop, from SQLAlchemy's sync code running in a greenlet."""
    if seconds > 0:
        await_in_greenlet(asyncio.sleep(seconds))
