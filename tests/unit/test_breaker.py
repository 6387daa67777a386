"""The circuit breaker's states, with a fake clock."""

from __future__ import annotations

import pytest

from asyncdal.engine._breaker import CircuitBreaker
from asyncdal.errors import DatabaseUnavailableError


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def make(threshold: int = 3, cool_down: float = 5.0) -> tuple[CircuitBreaker, Clock, list]:
    clock = Clock()
    breaker = CircuitBreaker("main", failure_threshold=threshold, cool_down=cool_down, clock=clock)
    changes: list[tuple[str, str]] = []
    breaker.listeners.append(lambda b, old, new: changes.append((old, new)))
    return breaker, clock, changes


def test_opens_after_threshold_consecutive_failures_and_fails_fast() -> None:
    breaker, clock, changes = make(threshold=3)
    for _ in range(2):
        breaker.before_connect()
        breaker.record_failure(OSError("refused"))
    assert breaker.state == "closed"
    breaker.record_failure(OSError("refused"))
    assert breaker.state == "open"
    assert changes == [("closed", "open")]
    clock.now += 1
    with pytest.raises(DatabaseUnavailableError) as raised:
        breaker.before_connect()
    assert raised.value.database == "main"
    assert raised.value.retry_after == pytest.approx(4.0)
    assert "circuit breaker is open" in str(raised.value)
    assert "OSError" in str(raised.value)


def test_a_success_resets_the_count() -> None:
    breaker, _, _ = make(threshold=3)
    breaker.record_failure()
    breaker.record_failure()
    breaker.record_success()
    breaker.record_failure()
    breaker.record_failure()
    assert breaker.state == "closed"
    assert breaker.failures == 2


def test_one_probe_after_cool_down_closes_on_success() -> None:
    breaker, clock, changes = make(threshold=1, cool_down=5)
    breaker.record_failure()
    clock.now += 5
    breaker.before_connect()  # the probe
    assert breaker.state == "half_open"
    with pytest.raises(DatabaseUnavailableError):
        breaker.before_connect()  # others fail fast while it is in flight
    breaker.record_success()
    assert breaker.state == "closed"
    breaker.before_connect()
    assert changes == [("closed", "open"), ("open", "half_open"), ("half_open", "closed")]


def test_a_failed_probe_opens_again_for_a_full_cool_down() -> None:
    breaker, clock, _ = make(threshold=1, cool_down=5)
    breaker.record_failure()
    clock.now += 6
    breaker.before_connect()
    breaker.record_failure()
    assert breaker.state == "open"
    clock.now += 4.9
    with pytest.raises(DatabaseUnavailableError):
        breaker.before_connect()
    clock.now += 0.2
    breaker.before_connect()
    assert breaker.state == "half_open"


def test_a_probe_that_never_reports_is_replaced_after_a_cool_down() -> None:
    breaker, clock, _ = make(threshold=1, cool_down=5)
    breaker.record_failure()
    clock.now += 5
    breaker.before_connect()  # this probe's task is cancelled: no outcome ever comes
    clock.now += 5
    breaker.before_connect()  # a new probe may go
    assert breaker.state == "half_open"


def test_health_view_and_bad_arguments() -> None:
    breaker, clock, _ = make(threshold=1, cool_down=5)
    assert breaker.as_dict() == {"state": "closed", "failures": 0, "retry_after": 0.0}
    breaker.record_failure()
    clock.now += 2
    assert breaker.as_dict() == {"state": "open", "failures": 1, "retry_after": 3.0}
    with pytest.raises(ValueError, match="failure_threshold"):
        CircuitBreaker("x", failure_threshold=0, cool_down=1)
    with pytest.raises(ValueError, match="cool_down"):
        CircuitBreaker("x", failure_threshold=1, cool_down=0)
