"""The outbox worker's parts without a server: the bookkeeping of claims and outcomes, running a
handler (done, retry, dead, timeout, shutdown), and the maintenance round."""

from __future__ import annotations

import asyncio
import threading
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, cast

import pytest

from asyncdal.errors import DatabaseUnavailableError
from asyncdal.outbox import Handlers, OutboxEvent, load_outbox_settings
from asyncdal.outbox import _sql as sql
from asyncdal.outbox._bookkeeping import Claim, Outcomes, WorkerStats, record_settled
from asyncdal.outbox._connection import WorkerConnection
from asyncdal.outbox._execution import DONE, HandlerExecution, describe_failure
from asyncdal.outbox._maintenance import Maintenance
from asyncdal.outbox._resilience import FailureStreak, OutboxWorkerCrashedError, first_failure
from asyncdal.outbox._settling import Leases
from tests.helpers import wait_until


def claim(event_id: int = 1, *, attempts: int = 1, event_type: str = "t") -> Claim:
    event = OutboxEvent(event_id, event_type, None, {"n": event_id}, attempts, datetime.now(UTC))
    return Claim(event, uuid.uuid4())


# -- bookkeeping ---------------------------------------------------------------------------------


def test_outcomes_are_columns_and_only_a_release_refunds_the_attempt() -> None:
    first, second = claim(1), claim(2)
    outcomes = Outcomes()
    outcomes.add(first, "pending", delay=0.5, error="E: boom")
    outcomes.add(second, "release")
    assert len(outcomes) == 2
    assert outcomes.refs() == [first.ref, second.ref]
    assert outcomes.delays == [0.5, 0.0]
    assert outcomes.errors == ["E: boom", None]
    assert outcomes.refunds == [0, 1]


def test_merged_outcomes_keep_the_first_ones_first() -> None:
    a, b, c = claim(1), claim(2), claim(3)
    taken, later = Outcomes(), Outcomes()
    taken.add(a, "done")
    taken.add(b, "dead", error="x")
    later.add(c, "release")
    merged = Outcomes.merged(taken, later)
    assert merged.refs() == [a.ref, b.ref, c.ref]
    assert merged.statuses == ["done", "dead", "release"]
    assert merged.refunds == [0, 0, 1]
    assert len(taken) == 2  # the buffers merged are left as they were


def test_a_claim_of_the_same_event_again_is_another_claim() -> None:
    event = claim(7).event
    assert Claim(event, uuid.uuid4()).ref != Claim(event, uuid.uuid4()).ref


def test_only_written_outcomes_are_counted() -> None:
    claims = [claim(n) for n in range(1, 6)]
    outcomes = Outcomes()
    for each, status in zip(claims, ["done", "dead", "release", "pending", "done"], strict=True):
        outcomes.add(each, status)
    stats = WorkerStats()
    written = {each.ref for each in claims[:4]}  # the last one's lease was taken over
    record_settled(outcomes, written, {each.ref: each for each in claims}, stats, None)
    assert stats == WorkerStats(done=1, dead=1, released=1, retried=1)


# -- running a handler ---------------------------------------------------------------------------


def execution(handlers: Handlers, **settings: Any) -> HandlerExecution:
    return HandlerExecution(
        handlers, None, load_outbox_settings(**settings), asyncio.get_running_loop().time
    )


async def run_in_task(runner: HandlerExecution, one: Claim) -> asyncio.Task[Any]:
    task = asyncio.create_task(runner.run(one))
    one.task = cast("asyncio.Task[None]", task)
    return task


async def test_a_handler_that_returns_is_done() -> None:
    seen: list[dict[str, Any]] = []

    async def handle(payload: dict[str, Any]) -> None:
        seen.append(payload)

    runner = execution(Handlers({"t": handle}))
    assert await runner.run(claim(3)) == DONE
    assert seen == [{"n": 3}]


async def test_a_sync_handler_runs_in_the_threads_of_the_run() -> None:
    seen: list[tuple[int, str]] = []

    def handle(payload: dict[str, Any]) -> None:
        seen.append((payload["n"], threading.current_thread().name))

    runner = execution(Handlers({"t": handle}))
    runner.open()
    try:
        assert await runner.run(claim(4)) == DONE
    finally:
        runner.close()
    assert seen == [(4, "outbox-handler-0")]


async def test_a_failure_is_retried_after_a_backoff_then_dead() -> None:
    async def fail(payload: dict[str, Any]) -> None:
        raise ValueError("no stock")

    runner = execution(Handlers({"t": fail}), max_attempts=3, backoff_initial=0.5)
    retry = await runner.run(claim(attempts=2))
    assert retry.status == "pending"
    assert 0 <= retry.delay <= 1.0  # the second attempt's ceiling: 0.5 x 2
    assert retry.error == "ValueError: no stock"
    dead = await runner.run(claim(attempts=3))
    assert (dead.status, dead.error) == ("dead", "ValueError: no stock")


async def test_a_database_fault_is_retried_without_using_up_an_attempt() -> None:
    """The handlers' database down (a restart, a pooler restarting, its breaker open) is not
    the handler's failure: even at its last attempt the event is retried, the attempt
    given back, and the outcome says so (the settle subtracts it)."""

    async def unreachable(payload: dict[str, Any]) -> None:
        raise DatabaseUnavailableError(
            "database 'main:outbox-handlers' is unavailable", database="main:outbox-handlers"
        )

    runner = execution(Handlers({"t": unreachable}), max_attempts=3)
    outcome = await runner.run(claim(attempts=3))
    assert (outcome.status, outcome.refund) == ("pending", True)
    outcomes = Outcomes()
    outcomes.add(claim(1), *outcome)
    assert outcomes.refunds == [1]


async def test_an_event_no_handler_takes_fails() -> None:
    runner = execution(Handlers({"other": lambda payload: None}))
    outcome = await runner.run(claim(event_type="t"))
    assert outcome.status == "pending"
    assert outcome.error == "LookupError: no handler for event type 't'"


async def test_the_watchdog_cancels_a_handler_past_its_timeout() -> None:
    async def hang(payload: dict[str, Any]) -> None:
        await asyncio.sleep(60)

    runner = execution(Handlers({"t": hang}), handler_timeout=0.05)
    watchdog = asyncio.create_task(runner.watchdog())
    try:
        one = claim()
        outcome = await asyncio.wait_for(await run_in_task(runner, one), 5)
    finally:
        watchdog.cancel()
    assert one.timed_out
    assert outcome.status == "pending"
    assert outcome.error == describe_failure(TimeoutError(), 0.05)
    assert "longer than 0.05 s" in (outcome.error or "")


async def test_a_shutdown_cancel_is_no_outcome() -> None:
    started = asyncio.Event()

    async def hang(payload: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(60)

    runner = execution(Handlers({"t": hang}))
    task = await run_in_task(runner, claim())
    await started.wait()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_a_failure_is_described_in_at_most_2000_characters() -> None:
    assert describe_failure(RuntimeError("x" * 5000), 30) == ("RuntimeError: " + "x" * 5000)[:2000]


# -- maintenance ---------------------------------------------------------------------------------


class Recorded:
    """Stands in for the asyncpg connection: answers each statement from a script."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.executed: list[str] = []

    async def execute(self, statement: str, *arguments: Any) -> str:
        self.executed.append(statement)
        return self.answers[statement].pop(0)

    async def fetchval(self, statement: str) -> float:
        self.executed.append(statement)
        return 12.5


class FakeConnection:
    def __init__(self, connection: Recorded) -> None:
        self.connection = connection

    async def run(self, call: Callable[[Recorded], Awaitable[Any]]) -> Any:
        return await call(self.connection)


class Gauge:
    value = 0.0

    def set(self, value: float) -> None:
        self.value = value


class Metrics:
    def __init__(self) -> None:
        self.oldest_pending_age = Gauge()


async def test_a_maintenance_round_reclaims_deletes_in_chunks_and_reports_the_age() -> None:
    connection = Recorded(
        {
            sql.RECLAIM_EXPIRED: ["UPDATE 2"],
            sql.DELETE_DONE: ["DELETE 5000", "DELETE 12"],  # a full chunk, then a short one
            sql.DELETE_INBOX: ["DELETE 0"],
        }
    )
    woken: list[bool] = []
    metrics = Metrics()
    maintenance = Maintenance(
        cast("WorkerConnection", FakeConnection(connection)),
        load_outbox_settings(),
        cast("Any", metrics),
        wake=lambda: woken.append(True),
        clock=asyncio.get_running_loop().time,
    )
    await maintenance.once()
    assert connection.executed == [
        sql.RECLAIM_EXPIRED,
        sql.DELETE_DONE,
        sql.DELETE_DONE,
        sql.DELETE_INBOX,
        sql.OLDEST_PENDING_AGE,
    ]
    assert woken == [True]  # reclaimed events: the claimer looks at once
    assert metrics.oldest_pending_age.value == 12.5


async def test_maintenance_without_retention_or_metrics_only_reclaims() -> None:
    connection = Recorded({sql.RECLAIM_EXPIRED: ["UPDATE 0"]})
    woken: list[bool] = []
    maintenance = Maintenance(
        cast("WorkerConnection", FakeConnection(connection)),
        load_outbox_settings(retention_seconds=None, inbox_retention_seconds=None),
        None,
        wake=lambda: woken.append(True),
        clock=asyncio.get_running_loop().time,
    )
    await maintenance.once()
    assert connection.executed == [sql.RECLAIM_EXPIRED]
    assert woken == []


# -- riding out faults ---------------------------------------------------------------------------


def test_a_failure_streak_backs_off_warns_once_and_says_when_it_works_again(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    streak = FailureStreak("claim", lambda: now[0])
    caplog.set_level("DEBUG", logger="asyncdal.outbox")
    delays = [streak.failed(OSError("connection refused")) for _ in range(12)]
    assert all(0 <= delay <= 2.0 for delay in delays)
    assert max(delays[:1]) <= 0.05  # the first retry comes at once
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == [
        "outbox claim failed (OSError: connection refused); retrying",
        "outbox claim still failing: 10 times in 0.0 s (OSError: connection refused)",
    ]
    now[0] = 3.0
    streak.succeeded()
    assert (
        caplog.records[-1].getMessage() == "outbox claim works again after 12 failure(s) in 3.0 s"
    )
    # Flapping (fail, recover, fail...) within the quiet period: DEBUG, then counted.
    caplog.clear()
    for second in (4.0, 5.0, 6.0):
        now[0] = second
        streak.failed(OSError("reset"))
        streak.succeeded()
    assert [r.levelname for r in caplog.records] == ["DEBUG"] * 3
    now[0] = 20.0
    streak.failed(OSError("reset"))
    assert caplog.records[-1].getMessage() == (
        "outbox claim failed (OSError: reset); retrying (and 3 time(s) since the last warning)"
    )


async def test_a_side_task_that_fails_or_returns_is_a_bug() -> None:
    async def fails() -> None:
        raise ZeroDivisionError("bug")

    async def returns() -> None:
        return None

    async def runs() -> None:
        await asyncio.Event().wait()

    failing = asyncio.create_task(fails(), name="settler")
    returning = asyncio.create_task(returns(), name="heartbeat")
    running = asyncio.create_task(runs())
    await asyncio.wait([failing, returning], return_when=asyncio.ALL_COMPLETED)
    error = first_failure([running, failing])
    assert isinstance(error, ZeroDivisionError)
    assert "(in the outbox worker's settler task)" in (error.__notes__ or [])
    assert isinstance(first_failure([returning]), OutboxWorkerCrashedError)
    assert first_failure([returning], may_return={returning}) is None
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
    assert first_failure([running]) is None


# -- settling at shutdown ------------------------------------------------------------------------


class SettledTable:
    """Stands in for the settle connection: the outbox rows' lease tokens, and a settle whose
    ``UPDATE`` is committed at once and whose answer comes only when ``answer`` is set."""

    def __init__(self, claims: list[Claim]) -> None:
        self.tokens: dict[int, uuid.UUID | None] = {c.event.id: c.token for c in claims}
        self.committed = asyncio.Event()
        self.answer = asyncio.Event()

    async def fetch(self, statement: str, ids: list[int], tokens: list[uuid.UUID], *_: Any) -> Any:
        assert statement == sql.SETTLE
        written = []
        for event_id, token in zip(ids, tokens, strict=True):
            if self.tokens.get(event_id) == token:
                self.tokens[event_id] = None  # settled: the token guard refuses it from now on
                written.append((event_id, token))
        self.committed.set()
        await self.answer.wait()
        return written

    async def run(self, call: Callable[[SettledTable], Awaitable[Any]]) -> Any:
        return await call(self)


async def test_a_settle_committed_when_the_worker_stops_is_counted_done_not_lost() -> None:
    claims = [claim(1), claim(2)]
    table = SettledTable(claims)
    stats = WorkerStats()
    leases = Leases(
        cast("WorkerConnection", table),
        load_outbox_settings(),
        stats,
        None,
        settled=lambda: None,
        clock=asyncio.get_running_loop().time,
    )
    for each in claims:
        leases.in_flight[each.ref] = each
        leases.finish(each, DONE)
    settler = asyncio.create_task(leases.settler())
    leases.wake.set()
    await table.committed.wait()  # committed on the server, its answer on the way
    stopping = asyncio.create_task(leases.stop_settler(settler))
    await wait_until(lambda: leases.closing)
    table.answer.set()
    await stopping
    await leases.release_all()  # what the worker does next: nothing is left to write
    assert stats == WorkerStats(done=2)
    assert not leases.in_flight
