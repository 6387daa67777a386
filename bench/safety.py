"""Safety-net benchmark: what the lazy-load guard, query counting, leak and idle-hold detection
and a deadline cost, all switched on, against the same path with all of them off.

In-process, like the data part, interleaved rounds:

(off_read)  a read by primary key in asyncdal's read-only unit of work, run as a request's
            handler (an ASGI app called with a scope); ``LAZY_LOADS=allow``, nothing else on
(on_read)   the same with ``LAZY_LOADS=raise``, ``MAX_QUERIES_PER_REQUEST``,
            ``LEAK_DETECTION_SECONDS``, ``IDLE_HOLD_SECONDS`` and ``REQUEST_TIMEOUT``, each
            operation run as a request's handler by the FastAPI middleware's own per-request
            code (``serve_settling`` with the nets: the request scope and the deadline)
(off_write) a product and its outbox event in a unit of work (the data part's c_write)
(on_write)  the same, all switched on

Besides ops/s, the CPU time of this process per operation: on a machine shared with other work
the throughput swings from round to round, the CPU spent per operation much less.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.types import Message, Receive, Scope, Send

from asyncdal import Database, DatabaseSettings
from asyncdal.fastapi._middleware import serve_settling
from asyncdal.fastapi._safety import SafetyPlan
from bench.data import (
    DataSettings,
    Operation,
    _asyncdal_get,
    _asyncdal_write,
    measure,
    timed,
)
from bench.database import remove_written
from bench.report import print_summary, rate

__all__ = ["run_safety"]

LABELS = {
    "off_read": "(off_read) read-only get, safety nets off",
    "on_read": "(on_read) read-only get, all on",
    "off_write": "(off_write) product + event, safety nets off",
    "on_write": "(on_write) product + event, all on",
}
RATIOS = [("on_read", "off_read"), ("on_write", "off_write")]
REQUEST_TIMEOUT = 30.0
ALL_ON = {
    "lazy_loads": "raise",
    "max_queries_per_request": 50,
    "leak_detection_seconds": 30.0,
    "idle_hold_seconds": 5.0,
    "request_timeout": REQUEST_TIMEOUT,
}


def _as_a_request(operation: Operation, plan: SafetyPlan | None) -> Operation:
    """``operation`` as the handler of a request (an ASGI app called with the request's scope),
    without HTTP, served by the per-request code of ``setup(app)``'s middleware
    (``serve_settling``): with a ``plan``, as it serves requests with the nets on (the request
    scope and the deadline), else as with them off. Both paths pay the rest of that code, the
    handler's call and the scope's dict, as requests do."""

    async def handler(scope: Scope, receive: Receive, send: Send) -> None:
        await operation(scope["product_id"])

    async def as_a_request(product_id: int) -> object:
        scope: Scope = {"type": "http", "method": "GET", "product_id": product_id}
        await serve_settling(handler, scope, _receive, _send, nets=plan)
        return None

    return as_a_request


async def _receive() -> Message:
    raise AssertionError("the handler reads no body")


async def _send(message: Message) -> None:
    raise AssertionError("the handler sends no response")


async def run_safety(url: str, settings: DataSettings) -> dict[str, float]:
    """Run the safety-net paths in interleaved rounds and print medians and ratios."""
    print(
        f"\n== Safety nets: all on vs off; {settings.rounds} rounds x {settings.duration:g}s per "
        f"path, {settings.concurrency} concurrent tasks"
    )
    off = Database("off", DatabaseSettings(url=url, lazy_loads="allow"))
    on = Database("on", DatabaseSettings(url=url, **ALL_ON))
    try:
        nets = SafetyPlan(REQUEST_TIMEOUT)
        makers: dict[str, Callable[[], Operation]] = {
            "off_read": lambda: _as_a_request(_asyncdal_get(off.read_only_unit_of_work), None),
            "on_read": lambda: _as_a_request(_asyncdal_get(on.read_only_unit_of_work), nets),
            "off_write": lambda: _as_a_request(_asyncdal_write(off), None),
            "on_write": lambda: _as_a_request(_asyncdal_write(on), nets),
        }
        operations = {key: make() for key, make in makers.items()}
        if settings.warmup:
            for operation in operations.values():
                await measure(operation, settings.products, settings.concurrency, settings.warmup)
            await remove_written(url, settings.products)
        results: dict[str, list[float]] = {key: [] for key in operations}
        cpu: dict[str, list[float]] = {key: [] for key in operations}
        width = max(len(label) for label in LABELS.values())
        for round_number in range(1, settings.rounds + 1):
            print(f"round {round_number}/{settings.rounds}")
            for key, operation in operations.items():
                measured = await timed(
                    operation, settings.products, settings.concurrency, settings.duration
                )
                results[key].append(measured.per_second)
                cpu[key].append(measured.cpu_us)
                print(
                    f"  {LABELS[key]:<{width}} {rate(measured.per_second):>8} ops/s"
                    f"  {measured.cpu_us:6,.0f} CPU us/op",
                    flush=True,
                )
            await remove_written(url, settings.products)
    finally:
        await off.dispose()
        await on.dispose()
    return print_summary(
        f"Safety-net summary over {settings.rounds} rounds",
        "ops/s",
        LABELS,
        results,
        RATIOS,
        None,
        cpu,
    )
