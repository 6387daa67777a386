"""Scenario 1: every client backend of the catalog's database terminated every 300 ms, during
mixed HTTP load, with the outbox worker running (the measurement of issue 13)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.invariants import verify
from tests.chaos.processes import DATABASE, chaos_stack
from tests.chaos.scenario import Parameters, Row, under_load

KILL_EVERY = 0.3

KILL = """
SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()
"""


async def test_backends_killed_every_300_ms(
    tmp_path: Path, parameters: Parameters, report: Callable[[Row], None]
) -> None:
    started = time.monotonic()
    async with chaos_stack(tmp_path) as stack:
        killer = await stack.connect()
        kills = 0

        async def kill_for_the_window() -> None:
            nonlocal kills
            loop = asyncio.get_running_loop()
            until = loop.time() + parameters.duration - 1.0
            while loop.time() < until:
                kills += await killer.fetchval(KILL, DATABASE)
                assert stack.worker.alive, stack.logs()
                await asyncio.sleep(KILL_EVERY)

        try:
            load, recover = await under_load(stack, parameters, kill_for_the_window)
        finally:
            await killer.close()
        checked = await verify(stack, load)
    report(
        Row(
            1,
            "backend kills /300 ms",
            load,
            checked.events,
            checked.repeats,
            recover,
            checked.drain,
            time.monotonic() - started,
            notes=[f"{kills} backends terminated"],
        )
    )
    assert load.statuses["201"] > 0
