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
from tests.chaos.processes import chaos_stack
from tests.chaos.scenario import Parameters, Row, under_load
from tests.helpers import wait_until

MAX_CONNECTIONS = 30
# A 503 must come back within the service's pool timeout (2 s) and a little more: a refused
# connection is known at once (and then the breaker fails fast).
QUICK = 3.5

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

        async def saturate_then_release() -> None:
            nonlocal ended
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
    report(
        Row(
            "saturated server",
            load,
            checked.events,
            checked.repeats,
            recover,
            checked.drain,
            time.monotonic() - started,
            notes=[
                f"{len(held)} slots of {MAX_CONNECTIONS} held by an outside client, "
                f"{ended} app backends ended"
            ],
        )
    )
    assert load.statuses["503"] > 0
    assert load.slowest_503 < QUICK, f"a 503 took {load.slowest_503:.2f} s"
