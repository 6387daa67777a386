"""``python -m bench.instructions [APP ...]``: instructions per ``GET /products/{id}``, in process.

Each app of :data:`bench.apps.APPS` (all when none is named) serves the read in this process,
its lifespan run, called as an ASGI app without a server or a socket to the client, against a
throwaway database; valgrind counts the instructions of the whole process. Two runs per app,
of 200 and of 1,200 requests after the same warm-up, and the difference divided by 1,000 is
what one request costs: start-up, imports and the warm-up cancel out.

Why: on this shared machine the same code measured 0.922 and 0.957 of the raw endpoint in two
runs of ten interleaved rounds (``setup(app)``, 2026-12-06), and a change of 1% cannot be seen
in CPU time. Instruction counts repeat to a few instructions in a million (``PYTHONHASHSEED``
fixed), so they tell whether a change made a path cheaper. They leave out the server, the
kernel and the cache misses, which under load weigh more: a cost of 3% here has measured 5-7%
of CPU time under uvicorn. ``make bench`` stays the measure of the goals.

Needs valgrind (``apt-get install -y valgrind``); about 40 s per app.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from typing import Any

from bench.apps import APPS
from bench.database import throwaway_database
from bench.http import server_environment
from bench.server import DATABASE_URL_VARIABLE

__all__ = ["instructions_per_request", "main", "total_instructions"]

WARM_UP = 300
FEW = 200
MANY = 1_200
PRODUCTS = 1_000
_TOTAL = re.compile(r"I\s+refs:\s+([\d,]+)")


def total_instructions(valgrind_output: str) -> int:
    """The instructions cachegrind counted, from its summary (``I refs: 1,234,567``)."""
    found = _TOTAL.search(valgrind_output)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{valgrind_output}")
    return int(found[1].replace(",", ""))


def instructions_per_request(few: int, many: int) -> int:
    """What one request costs: the two runs' difference over the requests between them."""
    return round((many - few) / (MANY - FEW))


async def _serve(app: Any, state: dict[str, Any], requests: int, first: int) -> None:
    """``requests`` reads of products ``first``, ``first + 1``, ... (wrapping), each checked."""
    statuses: set[int] = set()

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.add(message["status"])

    for number in range(first, first + requests):
        path = f"/products/{number % PRODUCTS + 1}"
        scope = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "server": ("127.0.0.1", 8000),
            "client": ("127.0.0.1", 50000),
            "scheme": "http",
            "method": "GET",
            "root_path": "",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "headers": [(b"host", b"127.0.0.1:8000")],
            # A copy per request, as uvicorn gives the lifespan's state.
            "state": dict(state),
        }
        await app(scope, receive, send)
    if statuses != {200}:
        raise RuntimeError(f"the reads were answered {sorted(statuses)}, not 200")


async def _child(name: str, requests: int, url: str) -> None:
    app = APPS[name](url)
    async with app.router.lifespan_context(app) as state:
        await _serve(app, dict(state or {}), WARM_UP, 0)
        await _serve(app, dict(state or {}), requests, WARM_UP)


def _count(name: str, requests: int, url: str) -> int:
    done = subprocess.run(
        [
            "valgrind",
            "--tool=cachegrind",
            "--cache-sim=no",
            "--cachegrind-out-file=/dev/null",
            sys.executable,
            "-m",
            "bench.instructions",
            "--child",
            name,
            str(requests),
        ],
        # The servers' environment: the database's URL, no DB__ settings of the developer's,
        # and one hash seed, so that counts repeat.
        env=server_environment(url, hash_seed=0),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{name} failed under valgrind:\n{done.stderr[-3000:]}")
    return total_instructions(done.stderr)


def main(argv: list[str] | None = None) -> None:
    """Print the instructions per read of each app, and each against the raw endpoint."""
    parser = argparse.ArgumentParser(prog="python -m bench.instructions", description=__doc__)
    parser.add_argument("apps", nargs="*", help=f"of {', '.join(APPS)} (default: all)")
    parser.add_argument("--child", nargs=2, metavar=("APP", "REQUESTS"), help=argparse.SUPPRESS)
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/postgres")
    args = parser.parse_args(argv)
    if args.child:
        name, requests = args.child
        asyncio.run(_child(name, int(requests), os.environ[DATABASE_URL_VARIABLE]))
        return
    names = args.apps or list(APPS)
    unknown = [name for name in names if name not in APPS]
    if unknown:
        parser.error(f"unknown app(s) {', '.join(unknown)}; the apps are {', '.join(APPS)}")
    results: dict[str, int] = {}
    with throwaway_database(args.database_url, PRODUCTS) as url:
        for name in names:
            results[name] = instructions_per_request(
                _count(name, FEW, url), _count(name, MANY, url)
            )
            print(f"{name:<22} {results[name]:>11,} instructions a request", flush=True)
    raw = results.get("asyncpg")
    if raw:
        for name, count in results.items():
            print(f"{name:<22} {count / raw:.3f} of asyncpg's")


if __name__ == "__main__":
    main()
