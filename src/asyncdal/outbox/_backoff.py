"""When a failed event is tried again: exponential backoff with full jitter, by tenacity.

The worker does not loop around a call (the retry happens in a later claim, maybe in another
process), so tenacity's wait strategy is asked directly for the delay of an attempt number.
"""

from __future__ import annotations

from tenacity import RetryCallState, Retrying, wait_random_exponential

__all__ = ["Backoff"]


class Backoff:
    """Delay before the next attempt: uniform in ``[0, min(maximum, initial * 2**(n-1))]``.

    Args:
        initial: ceiling of the first retry's delay, in seconds.
        maximum: the largest delay, in seconds.
    """

    def __init__(self, initial: float, maximum: float) -> None:
        self._wait = wait_random_exponential(multiplier=initial, max=maximum)
        self._retrying = Retrying()

    def delay(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failed attempt (1 for the first)."""
        state = RetryCallState(self._retrying, fn=None, args=(), kwargs={})
        state.attempt_number = max(1, attempts)
        return float(self._wait(state))
