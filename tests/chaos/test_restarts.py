"""Scenario 2: PostgreSQL restarted under load, first with a fast shutdown (sessions ended, a
checkpoint), then with an immediate one (every server process killed, as in a crash, and a
recovery from the WAL at the next start)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

from tests.chaos.invariants import verify
from tests.chaos.processes import chaos_stack
from tests.chaos.scenario import Parameters, Row, under_load


async def test_postgres_restarted_fast_then_immediate(
    tmp_path: Path, parameters: Parameters, report: Callable[[Row], None]
) -> None:
    started = time.monotonic()
    downtimes: list[str] = []
    async with chaos_stack(tmp_path) as stack:
        # The server keeps what it answered committed through a crash (the immediate
        # restart) only when a commit waits for its WAL: what the checks rely on.
        observer = await stack.connect()
        try:
            assert await observer.fetchval("SHOW synchronous_commit") == "on"
        finally:
            await observer.close()

        async def restart_twice() -> None:
            for mode in ("fast", "immediate"):
                if mode == "immediate":
                    # The load goes on between the two restarts.
                    await asyncio.sleep(parameters.duration / 3)
                down = time.monotonic()
                await asyncio.to_thread(stack.cluster.restart, mode)
                downtimes.append(f"{mode} {time.monotonic() - down:.2f} s")
                assert stack.worker.alive, stack.logs()

        load, recover = await under_load(stack, parameters, restart_twice)
        checked = await verify(stack, load)
    report(
        Row(
            2,
            "postgres restart fast+immediate",
            load,
            checked.events,
            checked.repeats,
            recover,
            checked.drain,
            time.monotonic() - started,
            notes=[f"down and up again: {', '.join(downtimes)}"],
        )
    )
    assert load.statuses["201"] > 0
