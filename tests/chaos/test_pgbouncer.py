"""Scenario 3: the service and the worker reach PostgreSQL through a PgBouncer in transaction
mode (pooler mode on). Under load the pooler is paused for 3 s and resumed (a failover
window: queries wait, clients stay connected), then restarted (every client connection cut)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.invariants import verify
from tests.chaos.processes import chaos_stack
from tests.chaos.scenario import Parameters, Row, under_load

PAUSE_SECONDS = 3.0


async def test_pgbouncer_paused_resumed_then_restarted(
    tmp_path: Path, parameters: Parameters, report: Callable[[Row], None]
) -> None:
    started = time.monotonic()
    timings: list[str] = []
    async with chaos_stack(tmp_path, through_pgbouncer=True) as stack:
        bouncer = stack.bouncer
        assert bouncer is not None

        async def pause_resume_restart() -> None:
            asked = time.monotonic()
            await asyncio.to_thread(bouncer.pause)  # returns once in-flight work is done
            timings.append(f"PAUSE took {time.monotonic() - asked:.2f} s")
            await asyncio.sleep(PAUSE_SECONDS)  # the window itself, not a wait for a state
            await asyncio.to_thread(bouncer.resume)
            assert stack.worker.alive, stack.logs()
            await asyncio.sleep(parameters.duration / 4)  # the load goes on, then:
            down = time.monotonic()
            await asyncio.to_thread(bouncer.restart)
            timings.append(f"restart took {time.monotonic() - down:.2f} s")

        load, recover = await under_load(stack, parameters, pause_resume_restart)
        checked = await verify(stack, load)
    report(
        Row(
            3,
            "pgbouncer pause 3 s, restart",
            load,
            checked.events,
            checked.repeats,
            recover,
            checked.drain,
            time.monotonic() - started,
            notes=timings,
        )
    )
    assert load.statuses["201"] > 0
