"""The safety nets' parts that need no server: the request scope, the deadline's bookkeeping,
the hold's stack and owner, and the hold-time metric's bound on routes."""

from __future__ import annotations

import asyncio
import logging
import time
from types import SimpleNamespace

import pytest
from prometheus_client import CollectorRegistry

from asyncdal import Database, DatabaseSettings, DeadlineExceededError, deadline
from asyncdal.engine._deadline import current_deadline
from asyncdal.engine._safety import Hold, SafetyNets
from asyncdal.engine._scope import (
    RequestScope,
    StatementLog,
    current_request_scope,
    owner_name,
    request_scope,
)
from asyncdal.observe._holds import MAX_ROUTES, HoldMetrics


def test_a_request_scope_reads_the_route_template_once_routing_set_it() -> None:
    asgi: dict[str, object] = {}
    scope = RequestScope(asgi, "GET")
    assert scope.route == "-"
    asgi["route"] = SimpleNamespace(path="/products/{product_id}")
    assert scope.route == "/products/{product_id}"
    with request_scope(scope):
        assert current_request_scope() is scope
        assert owner_name() == "GET /products/{product_id}"
    assert current_request_scope() is None


def test_a_request_scope_counts_by_text_and_keeps_the_smallest_limit() -> None:
    scope = RequestScope()
    for _ in range(3):
        scope.count("SELECT * FROM books WHERE author_id = $1", 10)
    scope.count("SELECT * FROM authors", 5)
    assert scope.total == 4
    assert scope.limit == 5
    assert scope.most_repeated() == ("SELECT * FROM books WHERE author_id = $1", 3)


async def test_outside_a_request_the_owner_is_the_task() -> None:
    async def named() -> str:
        return owner_name()

    assert await asyncio.create_task(named(), name="nightly-export") == "task nightly-export"


def test_a_statement_log_keeps_its_source_only() -> None:
    nets = object()
    everything, by_name, by_object = StatementLog(), StatementLog("main"), StatementLog(nets)
    for log in (everything, by_name, by_object):
        log.add(nets, "main", "SELECT 1")
        log.add(object(), "main", "SELECT 2")
        log.add(object(), "other", "SELECT 3")
    assert everything.statements == ["SELECT 1", "SELECT 2", "SELECT 3"]
    assert by_name.statements == ["SELECT 1", "SELECT 2"]
    assert by_object.statements == ["SELECT 1"]


async def test_a_deadline_is_in_force_only_inside_its_block() -> None:
    assert current_deadline() is None
    async with deadline(10) as budget:
        assert current_deadline() is budget
        assert 9 < budget.remaining() <= 10
    assert current_deadline() is None


async def test_a_deadline_raises_for_work_past_it_and_names_its_budget() -> None:
    with pytest.raises(DeadlineExceededError, match=r"deadline of 0\.05 s") as caught:
        async with deadline(0.05):
            await asyncio.sleep(10)
    assert caught.value.seconds == 0.05
    assert isinstance(caught.value, TimeoutError)


async def test_a_deadline_that_did_not_run_out_changes_nothing() -> None:
    async with deadline(10):
        await asyncio.sleep(0)
    with pytest.raises(KeyError):
        async with deadline(10):
            raise KeyError("mine")


def test_a_holds_stack_skips_sqlalchemy_and_asyncio_frames() -> None:
    def application_code() -> Hold:
        from asyncdal.engine._safety import _capture_frames

        return Hold(
            database="main",
            node="primary",
            started=time.perf_counter(),
            scope=None,
            task=None,
            request_id=None,
            frames=_capture_frames(),
        )

    hold = application_code()
    stack = hold.stack()
    assert "application_code" in stack
    assert "frames=_capture_frames()," in stack  # the line, from the instruction offset
    assert "test_safety_nets.py" in stack
    assert "/asyncio/" not in stack
    assert hold.owner == "-"


def test_holders_are_listed_longest_first() -> None:
    nets = SafetyNets("main", DatabaseSettings(url="postgresql://u@h/n"))
    now = time.perf_counter()
    for key, age, route in [(1, 1.0, "/a"), (2, 5.0, "/b"), (3, 3.0, "/c")]:
        nets.holds[key] = Hold(
            database="main",
            node="primary",
            started=now - age,
            scope=RequestScope({"route": SimpleNamespace(path=route)}, "GET"),
            task=None,
            request_id=f"r{key}",
            frames=[],
        )
    holders = nets.holders(limit=2)
    assert [holder.owner for holder in holders] == ["GET /b", "GET /c"]
    assert holders[0].held_seconds >= 5.0


def test_the_hold_metric_counts_routes_past_its_bound_as_other() -> None:
    registry = CollectorRegistry()
    metrics = HoldMetrics(registry)
    database = Database("main", DatabaseSettings(url="postgresql://u@h/n"))
    metrics.instrument(database)
    (returned,) = database.safety_nets.hold_listeners
    for index in range(MAX_ROUTES + 5):
        returned("primary", f"/route/{index}", 0.01)
    returned("primary", "/route/0", 0.01)
    labels = {"database": "main", "node": "primary"}
    count = "asyncdal_connection_hold_seconds_count"
    assert registry.get_sample_value(count, {**labels, "route": "/route/0"}) == 2
    assert registry.get_sample_value(count, {**labels, "route": "other"}) == 5


def test_lazy_loads_setting_refuses_an_unknown_mode() -> None:
    with pytest.raises(ValueError, match="lazy_loads"):
        DatabaseSettings(url="postgresql://u@h/n", lazy_loads="sometimes")


def test_the_leak_logger_is_asyncdal_leaks() -> None:
    from asyncdal.engine._safety import leak_logger

    assert leak_logger is logging.getLogger("asyncdal.leaks")


async def test_deadlines_running_out_together_share_one_timer_and_each_runs_out() -> None:
    async with deadline(30) as outer:
        async with deadline(60) as inner:  # the outer's time: the same grain
            bucket = outer._bucket
            assert bucket is not None
            assert inner._bucket is bucket
            assert bucket.deadlines == {outer, inner}
        assert bucket.deadlines == {outer}
    # Emptied, it waits for its time (the next deadline of the grain would use it).
    assert bucket.deadlines == set()
    assert bucket.owner[bucket.key] is bucket

    async def bounded() -> None:
        async with deadline(0.1):
            await asyncio.sleep(30)

    results = await asyncio.gather(*(bounded() for _ in range(3)), return_exceptions=True)
    assert all(isinstance(result, DeadlineExceededError) for result in results), results


async def test_a_deadlines_timer_fires_within_its_grain_coarser_for_a_long_budget() -> None:
    async with deadline(30) as long, deadline(0.5) as short:
        assert long._bucket is not None
        assert short._bucket is not None
        # 30 s: a grain of 16 x 10 ms, at most 1% of the budget; 0.5 s: 10 ms.
        assert long._bucket.key % 16 == 0
        assert 0 <= long._bucket.key * 0.01 - long.at < 0.16
        assert 0 <= short._bucket.key * 0.01 - short.at < 0.01


def test_the_hold_metric_gives_the_samples_a_prometheus_histogram_gives() -> None:
    from prometheus_client import Histogram, generate_latest

    from asyncdal.observe._holds import _BUCKETS

    expected_registry = CollectorRegistry()
    expected = Histogram(
        "asyncdal_connection_hold_seconds",
        "Time a connection stayed checked out, by the route template that held it",
        ["database", "node", "route"],
        registry=expected_registry,
        buckets=_BUCKETS,
    )
    registry = CollectorRegistry()
    metrics = HoldMetrics(registry)
    database = Database("main", DatabaseSettings(url="postgresql://u@h/n"))
    metrics.instrument(database)
    (returned,) = database.safety_nets.hold_listeners
    # Every bound itself (counted in its own bucket), between them, past the last, and 0.
    seconds = [0.0, *_BUCKETS, *(bound * 1.5 for bound in _BUCKETS), 61.0, 1e9]
    for node, route in [("primary", "/a"), ("replica-0", "/a"), ("primary", "background")]:
        for value in seconds:
            returned(node, route, value)
            expected.labels("main", node, route).observe(value)

    def without_created(text: bytes) -> list[str]:
        return [line for line in text.decode().splitlines() if "_created" not in line]

    assert without_created(generate_latest(registry)) == without_created(
        generate_latest(expected_registry)
    )
    name = "asyncdal_connection_hold_seconds"
    lines = generate_latest(registry).decode().splitlines()
    created = [line for line in lines if line.startswith(f"{name}_created{{")]
    assert len(created) == 3


class _RecordingCancel:
    def __init__(self) -> None:
        self.requested: list[object] = []

    def request(self, driver_connection: object) -> None:
        self.requested.append(driver_connection)


@pytest.mark.parametrize("server_bounded", [False, True])
def test_a_deadline_sends_a_cancel_request_only_when_the_server_would_not_stop_the_statement(
    server_bounded: bool,
) -> None:
    from asyncdal.engine._safety import _Watch

    cancel = _RecordingCancel()
    connection = object()
    watch = _Watch(cancel, connection)  # type: ignore[arg-type]
    watch.server_bounded = server_bounded
    budget = deadline(1.0)
    watch(budget)
    # Either way the statement's failure is the deadline's.
    assert watch.fired is budget
    # A request racing the server's own stop could cancel the next command (the rollback).
    assert cancel.requested == ([] if server_bounded else [connection])


async def test_a_connection_runs_nothing_more_until_its_cancel_request_landed() -> None:
    from sqlalchemy.util import greenlet_spawn

    from asyncdal.engine._safety import _Watch

    events: list[str] = []

    class _SlowCancel:
        def request(self, driver_connection: object) -> asyncio.Task[None]:
            async def send() -> None:
                await asyncio.sleep(0.05)  # a busy machine
                events.append("cancel request at the server")

            return asyncio.get_running_loop().create_task(send())

    watch = _Watch(_SlowCancel(), object())  # type: ignore[arg-type]
    watch(deadline(1.0))  # the deadline ran out during the statement
    # The statement ended (in SQLAlchemy's greenlet) before the request got out.
    await greenlet_spawn(watch.let_cancel_land)
    events.append("next statement")
    assert events == ["cancel request at the server", "next statement"]
    assert watch.sending is None
