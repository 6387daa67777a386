"""Run a coroutine on a fresh uvloop event loop, the loop uvicorn serves the apps with.

Each part of the benchmark gets its own loop (``asyncio.Runner``), so a Ctrl-C cancels the part
that is running, its ``finally`` blocks stop what it started, and control returns to the
synchronous code that drops the throwaway database.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from types import FrameType
from typing import Any, TypeVar

import uvloop

__all__ = ["install_sigterm_handler", "run"]

T = TypeVar("T")


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to completion on a new uvloop loop and close the loop."""
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        return runner.run(coroutine)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def install_sigterm_handler() -> None:
    """Treat SIGTERM like Ctrl-C, so ``kill`` also stops the servers and drops the database."""
    signal.signal(signal.SIGTERM, _interrupt)
