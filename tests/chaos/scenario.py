"""What the chaos scenarios share: their parameters (from ``CHAOS_*``), running a fault under
load, and the rows of the report.

``CHAOS_SCALE`` (default 1: the short run CI does) multiplies the load and the fault window:
at 1, 300 requests paced over 6 s, 8 at a time, and 10,000 events churned behind a held-back
vacuum; ``make chaos`` runs 5 (1,500 requests over 30 s, 16 at a time, 50,000 events).
``CHAOS_CONCURRENCY`` overrides the concurrency.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import pytest

from tests.chaos.load import Load, first_write_after, run_load
from tests.chaos.processes import Stack

__all__ = ["ROWS", "Parameters", "Row", "format_table", "under_load"]


@dataclass(frozen=True)
class Parameters:
    """One run's sizes.

    Attributes:
        scale: ``CHAOS_SCALE``.
        requests: HTTP requests per scenario.
        concurrency: requests at once.
        duration: seconds the requests are paced over (the fault window).
        churn: events the held-back-vacuum scenario runs through the outbox.
    """

    scale: float
    requests: int
    concurrency: int
    duration: float
    churn: int

    @classmethod
    def from_environment(cls) -> Parameters:
        scale = float(os.environ.get("CHAOS_SCALE", "1"))
        concurrency = int(os.environ.get("CHAOS_CONCURRENCY", "0")) or (8 if scale < 4 else 16)
        return cls(
            scale=scale,
            requests=max(50, round(300 * scale)),
            concurrency=concurrency,
            duration=max(3.0, 6.0 * scale),
            churn=max(1000, round(10_000 * scale)),
        )


@dataclass
class Row:
    """One scenario's line in the report.

    Attributes:
        number: the scenario's number in issue 13's list (the table's order).
    """

    number: int
    scenario: str
    load: Load
    events: int
    repeats: int
    recover: float
    drain: float
    seconds: float
    notes: list[str] = field(default_factory=list)


ROWS = pytest.StashKey[list[Row]]()
"""The rows of this session's report (in ``config.stash``)."""

_HEADER = ("scenario", "requests", "answers", "events", "repeats", "recover s", "drain s", "s")


def format_table(rows: list[Row], parameters: Parameters) -> list[str]:
    """The report: one line per scenario, in the order of their numbers (not the order they
    ran in), then the scenarios' notes."""
    rows = sorted(rows, key=lambda row: row.number)
    cells = [
        (
            f"{row.number}. {row.scenario}",
            str(row.load.sent),
            row.load.answers(),
            str(row.events),
            str(row.repeats),
            f"{row.recover:.2f}",
            f"{row.drain:.2f}",
            f"{row.seconds:.0f}",
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in [_HEADER, *cells]) for i in range(len(_HEADER))]

    def line(values: tuple[str, ...]) -> str:
        return "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths, strict=True)) + " |"

    lines = [
        f"chaos (CHAOS_SCALE={parameters.scale:g}: {parameters.requests} requests over "
        f"{parameters.duration:g} s, {parameters.concurrency} at once; {parameters.churn} "
        "events churned)",
        line(_HEADER),
        "|" + "|".join("-" * (w + 2) for w in widths) + "|",
        *(line(values) for values in cells),
    ]
    for row in rows:
        name = f"{row.number}. {row.scenario}"
        lines.extend(f"{name}: {note}" for note in row.notes)
        if row.load.reasons:
            top = "; ".join(f"{n}x {why}" for why, n in row.load.reasons.most_common(3))
            lines.append(f"{name}: 503s (slowest {row.load.slowest_503:.2f} s): {top}")
    return lines


async def under_load(
    stack: Stack,
    parameters: Parameters,
    fault: Callable[[], Awaitable[None]],
    *,
    lead: float = 1.0,
) -> tuple[Load, float]:
    """Run the HTTP load; ``lead`` seconds in, the fault (it returns when the fault is over);
    then create products until one is created (the time to recover) while the load finishes.

    Returns:
        The load (the recovery probe's requests included) and the seconds to recover.
    """
    load_task = asyncio.create_task(
        run_load(
            stack.base_url,
            requests=parameters.requests,
            concurrency=parameters.concurrency,
            duration=parameters.duration,
        )
    )
    try:
        await asyncio.sleep(lead)  # the fault's start in the load, not a wait for a state
        await fault()
        probe = Load()
        recover = await first_write_after(stack.base_url, probe)
        load = await load_task
    finally:
        if not load_task.done():
            load_task.cancel()
            await asyncio.gather(load_task, return_exceptions=True)
    load.merge(probe)
    return load, recover
