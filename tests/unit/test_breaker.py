"""The circuit breaker's states, with a fake clock."""

from __future__ import annotations

import contextlib
import itertools
import sys
import threading
import time
from collections.abc import Callable, Iterator

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


# One breaker is shared by the engines of every event loop, and loops may run in threads.


@pytest.fixture
def frequent_thread_switches() -> Iterator[None]:
    """Switch threads every microsecond (default: 5 ms), so that races show up in a short run."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        yield
    finally:
        sys.setswitchinterval(before)


def in_threads(*work: Callable[[], None]) -> None:
    """Run each function in its own thread, all released at once; re-raise the first error."""
    start = threading.Barrier(len(work))
    errors: list[BaseException] = []

    def run(function: Callable[[], None]) -> None:
        start.wait()
        try:
            function()
        except BaseException as error:  # reported below
            errors.append(error)

    threads = [threading.Thread(target=run, args=(function,)) for function in work]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


@pytest.mark.usefixtures("frequent_thread_switches")
def test_threads_lose_no_failure_and_open_the_breaker_exactly_once() -> None:
    def slow_clock() -> float:
        time.sleep(0)  # lets the other thread run in the middle of a change, as a real one may
        return 100.0  # stands still: the breaker stays open once open

    rounds, per_thread = 100, 50
    breakers = [
        CircuitBreaker("main", failure_threshold=30, cool_down=60, clock=slow_clock)
        for _ in range(rounds)
    ]
    heard: dict[int, list[tuple[str, str]]] = {id(breaker): [] for breaker in breakers}
    for breaker in breakers:
        breaker.listeners.append(lambda b, old, new: heard[id(b)].append((old, new)))
    both = threading.Barrier(2)

    def fail() -> None:
        for breaker in breakers:
            both.wait()  # both threads cross each breaker's threshold together
            for _ in range(per_thread):
                with contextlib.suppress(DatabaseUnavailableError):
                    breaker.before_connect()
                breaker.record_failure(OSError("refused"))

    in_threads(fail, fail)
    for breaker in breakers:
        assert breaker.failures == 2 * per_thread
        assert breaker.state == "open"
        assert heard[id(breaker)] == [("closed", "open")]


@pytest.mark.usefixtures("frequent_thread_switches")
def test_listeners_see_one_consistent_sequence_of_changes_from_threads() -> None:
    # A real clock and a short cool-down: the breaker goes round open, half_open and closed
    # many times while one thread fails and the other succeeds.
    breaker = CircuitBreaker("main", failure_threshold=2, cool_down=0.0002)
    changes: list[tuple[str, str]] = []
    breaker.listeners.append(lambda b, old, new: changes.append((old, new)))
    deadline = time.monotonic() + 0.5

    def work(outcome: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            while time.monotonic() < deadline:
                with contextlib.suppress(DatabaseUnavailableError):
                    breaker.before_connect()
                    outcome()

        return run

    in_threads(work(breaker.record_failure), work(breaker.record_success))
    assert len(changes) > 10, "the breaker hardly changed: the test proves nothing"
    assert changes[0][0] == "closed"
    for index, ((_, new), (old, newer)) in enumerate(itertools.pairwise(changes)):
        nearby = changes[max(0, index - 2) : index + 3]
        assert new == old, f"listeners heard {new!r}, then a change from {old!r}: {nearby}"
        assert old != newer, f"a change from {old!r} to itself: {nearby}"
    assert changes[-1][1] == breaker.state


def test_a_listener_may_use_the_breaker() -> None:
    breaker, _, changes = make(threshold=1)

    def reopen_once(b: CircuitBreaker, old: str, new: str) -> None:
        if new == "closed" and len(changes) < 4:
            b.record_failure()  # called outside the lock: no deadlock, heard after this one

    breaker.listeners.append(reopen_once)
    breaker.record_failure()
    breaker.record_success()
    assert changes == [("closed", "open"), ("open", "closed"), ("closed", "open")]
    assert breaker.as_dict()["state"] == "open"
