"""Scenario 6: ``kill -9`` of the service in the middle of requests, and of the worker in the
middle of a batch, each started again at once. Nothing answered 2xx is lost, every event is
delivered, and the effects ``first_delivery`` guards are applied exactly once (a killed
worker's events are delivered again once their leases expire)."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from tests.chaos.invariants import verify
from tests.chaos.processes import SERVICE_APP, chaos_stack
from tests.chaos.scenario import Parameters, Row, under_load
from tests.helpers import count_connections, wait_until

# The updates' handler (a transaction of its own per delivery, settled apart) takes a while
# after its commit, so that when the worker is killed some events are applied and not settled.
HANDLER_SLEEP = "0.3"


async def applied_not_settled(connection: asyncpg.Connection) -> int:
    """Events leased whose effect is committed: killed now, the worker has not settled them."""
    return int(
        await connection.fetchval(
            "SELECT count(*) FROM asyncdal_outbox AS o WHERE o.status = 'leased' "
            "AND EXISTS (SELECT 1 FROM chaos_effects AS e WHERE e.event_id = o.id)"
        )
    )


async def test_service_and_worker_killed_and_restarted(
    tmp_path: Path, parameters: Parameters, report: Callable[[Row], None]
) -> None:
    started = time.monotonic()
    notes: list[str] = []
    worker_environment = {"CHAOS_HANDLER_SLEEP": HANDLER_SLEEP}
    async with chaos_stack(tmp_path, worker_environment=worker_environment) as stack:
        observer = await stack.connect()

        async def busy() -> bool:
            # A transaction of a request in progress: the kill lands mid-request.
            states = ["active", "idle in transaction"]
            return await count_connections(observer, application_name=SERVICE_APP, state=states) > 0

        async def kill_both() -> None:
            # The worker first, while the load still writes events for it.
            await wait_until(lambda: applied_not_settled(observer), timeout=30, interval=0.01)
            stack.worker.kill()
            in_flight = await applied_not_settled(observer)
            stack.worker.start()
            notes.append(f"worker killed with {in_flight} event(s) applied and not settled")
            await wait_until(busy, timeout=30, interval=0.01)
            stack.service.kill()
            down = time.monotonic()
            stack.service.start()
            await stack.worker_ready()
            await stack.service_ready()
            notes.append(f"service answering again {time.monotonic() - down:.1f} s after")

        try:
            # Twice the window: the service takes seconds to start again, and the load
            # must go on after that.
            longer = dataclasses.replace(
                parameters, requests=2 * parameters.requests, duration=2 * parameters.duration
            )
            load, recover = await under_load(stack, longer, kill_both, lead=0.5)
            redelivered = await observer.fetchval(
                "SELECT count(*) FROM asyncdal_outbox WHERE attempts > 1"
            )
        finally:
            await observer.close()
        checked = await verify(stack, load, transport_failures=True)
    notes.append(
        f"{redelivered} event(s) delivered more than once, {checked.repeats} of them after "
        "their effect was applied (first_delivery skipped them)"
    )
    report(
        Row(
            6,
            "kill -9 service, worker",
            load,
            checked.events,
            checked.repeats,
            recover,
            checked.drain,
            time.monotonic() - started,
            notes=notes,
        )
    )
    assert load.statuses["201"] > 0
