"""Scenario 4: a saturated server. An outside client takes every free connection slot of the
server (``max_connections``) and the service's and worker's connections are ended, so every
new connection is refused ("too many clients"): the service must answer 503 quickly, and
recover once the slots are released."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from pathlib import Path

import asyncpg

from tests.chaos.invariants import verify
from tests.chaos.processes import SERVICE_POOL_TIMEOUT, chaos_stack
from tests.chaos.scenario import Parameters, Row, under_load
from tests.helpers import wait_until

MAX_CONNECTIONS = 30
# A 503 must come back within the service's pool timeout and a little more: a refused
# connection is known at once (and then the breaker fails fast), so no request waits longer
# than for a pooled connection. Only requests sent once the service runs again count: one
# sent while it was frozen (SIGSTOP, below) waited for the harness, not for the service.
QUICK = SERVICE_POOL_TIMEOUT + 1.5

END_APP_BACKENDS = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE application_name LIKE 'chaos-%' AND pid <> pg_backend_pid()
"""
APP_BACKENDS = "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'chaos-%'"


async def fill(url: str, held: list[asyncpg.Connection]) -> None:
    """Open connections until the server refuses one (every slot taken)."""
    while True:
        try:
            held.append(await asyncpg.connect(url, timeout=5))
        except asyncpg.TooManyConnectionsError:
            return


async def app_backends(connection: asyncpg.Connection, count: int) -> bool:
    return bool(await connection.fetchval(APP_BACKENDS) == count)


async def test_saturated_server_answers_503_quickly_and_recovers(
    tmp_path: Path, parameters: Parameters, report: Callable[[Row], None]
) -> None:
    started = time.monotonic()
    held: list[asyncpg.Connection] = []
    settings = {"max_connections": str(MAX_CONNECTIONS)}
    async with chaos_stack(tmp_path, cluster_settings=settings) as stack:
        observer = await stack.connect()  # before the server is full
        ended = 0
        thawed = 0.0  # time.perf_counter() when the service ran again

        async def saturate_then_release() -> None:
            nonlocal ended, thawed
            try:
                await fill(stack.cluster.url, held)
                # The app's connections end while it is frozen (so that it cannot race for
                # the slots they free), and the outside client takes those slots too.
                for process in (stack.service, stack.worker):
                    process.freeze()
                try:
                    ended = await observer.fetchval(END_APP_BACKENDS)
                    await wait_until(lambda: app_backends(observer, 0), timeout=10)
                    await fill(stack.cluster.url, held)
                finally:
                    for process in (stack.service, stack.worker):
                        process.thaw()
                    thawed = time.perf_counter()
                await asyncio.sleep(max(3.0, parameters.duration / 2))  # the saturation
                assert stack.worker.alive, stack.logs()
                assert await observer.fetchval(APP_BACKENDS) == 0  # it got no slot
            finally:
                for connection in held:
                    with contextlib.suppress(Exception):
                        await connection.close()

        try:
            load, recover = await under_load(stack, parameters, saturate_then_release)
        finally:
            await observer.close()
        checked = await verify(stack, load)
    after_thaw = [took for sent, took in load.timed_503 if sent >= thawed]
    slowest = max(after_thaw, default=0.0)
    report(
        Row(
            4,
            "saturated server",
            load,
            checked.events,
            checked.repeats,
            recover,
            checked.drain,
            time.monotonic() - started,
            notes=[
                f"{len(held)} slots of {MAX_CONNECTIONS} held by an outside client, "
                f"{ended} app backends ended",
                f"slowest 503 of a request sent after the service ran again: {slowest:.2f} s",
            ],
        )
    )
    assert load.statuses["503"] > 0
    assert after_thaw, "no 503 for a request sent once the service ran again, saturated"
    assert slowest < QUICK, f"a 503 took {slowest:.2f} s"
