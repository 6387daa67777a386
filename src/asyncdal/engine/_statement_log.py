"""Logs from engine and pool events: slow statements, and a pool close to exhaustion.

- A statement slower than ``DB__<NAME>__SLOW_QUERY_SECONDS`` is logged as a warning on the
  ``asyncdal.slow_query`` logger with its SQL text (placeholders only: parameter values are
  never logged), its duration, the database, the node and the request id.
- When the connections checked out reach 90% of a queue pool's capacity (size + overflow), a
  warning goes to ``asyncdal.pool``, at most once per :data:`EXHAUSTION_WARNING_INTERVAL`
  seconds per pool, so a saturated pool does not flood the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

from asyncdal._request_id import current_request_id
from asyncdal.engine._create import TimedQueuePool
from asyncdal.engine._driver import statement_hooks

__all__ = ["EXHAUSTION_THRESHOLD", "EXHAUSTION_WARNING_INTERVAL", "attach_query_log"]

EXHAUSTION_THRESHOLD = 0.9
EXHAUSTION_WARNING_INTERVAL = 60.0
_STARTED = "asyncdal_slow_query_started"
# Set while warm-up checks out the whole pool on purpose, which is not a sign of exhaustion.
_warming_up: ContextVar[bool] = ContextVar("asyncdal_warming_up", default=False)

slow_query_logger = logging.getLogger("asyncdal.slow_query")
pool_logger = logging.getLogger("asyncdal.pool")


@contextmanager
def warming_up() -> Iterator[None]:
    """No exhaustion warning for checkouts made in this block (a pool warm-up)."""
    token = _warming_up.set(True)
    try:
        yield
    finally:
        _warming_up.reset(token)


def attach_query_log(
    engine: AsyncEngine, database: str, slow_query_seconds: float | None, node: str = "primary"
) -> None:
    """Attach the slow-statement log (when a threshold is set) and the exhaustion warning."""
    sync_engine = engine.sync_engine
    if slow_query_seconds is not None:
        threshold = slow_query_seconds

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            conn.info[_STARTED] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            started = conn.info.pop(_STARTED, None)
            if started is None:
                return
            seconds = time.perf_counter() - started
            if seconds >= threshold:
                log_slow(statement, seconds)

        def log_slow(statement: str, seconds: float) -> None:
            request_id = current_request_id()
            slow_query_logger.warning(
                "slow statement on %s/%s: %.1f ms (request %s): %s",
                database,
                node,
                seconds * 1000,
                request_id or "-",
                statement,
                extra={
                    "database": database,
                    "node": node,
                    "duration_ms": round(seconds * 1000, 1),
                    "statement": statement,
                    "request_id": request_id,
                },
            )

        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        hooks = statement_hooks(engine)
        if hooks is not None:

            def after_driver_read(statement: str, seconds: float, kind: object) -> None:
                if seconds >= threshold:
                    log_slow(statement, seconds)

            hooks.after.append(after_driver_read)
            hooks.stands_in_for("before_cursor_execute", before)
            hooks.stands_in_for("after_cursor_execute", after)

    pool = sync_engine.pool
    if isinstance(pool, TimedQueuePool):
        capacity = pool.size() + max(0, pool.max_overflow)
        crowded = EXHAUSTION_THRESHOLD * capacity
        # When the next warning may be logged: a pool past the threshold is asked at every
        # checkout, so the cheap comparisons come first.
        next_warning = [float("-inf")]

        def checked_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
            in_use = pool.checkedout()
            if in_use < crowded:
                return
            now = time.monotonic()
            if now < next_warning[0] or _warming_up.get():
                return
            next_warning[0] = now + EXHAUSTION_WARNING_INTERVAL
            pool_logger.warning(
                "pool of %s/%s nearly exhausted: %d of %d connections in use",
                database,
                node,
                in_use,
                capacity,
                extra={"database": database, "node": node, "in_use": in_use, "capacity": capacity},
            )

        event.listen(pool, "checkout", checked_out)
