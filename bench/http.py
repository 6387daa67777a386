"""HTTP benchmark: the apps under uvicorn, loaded by ``wrk`` in interleaved rounds.

Each app runs in its own uvicorn process (one worker, uvloop + httptools), started once and kept
running; every round then loads each app in turn for the same duration, starting one app later
each round, so slow drift of a shared, noisy machine, and the aftermath of one app's load on the
server, hit all of them alike. wrk asks for random ids in 1..products
(``random_ids.lua``), so the database and the identity map see a realistic mix.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asyncdal.testing import spare_port
from bench.database import ROOT, connection_counter
from bench.report import print_summary, rate
from bench.server import DATABASE_URL_VARIABLE, PARENT_PID_VARIABLE

__all__ = ["HttpSettings", "WrkResult", "run_http"]

PATHS = {
    "a": "asyncpg",
    "b": "sqlalchemy",
    "c": "asyncdal",
    "d": "asyncdal_unobserved",
    "e": "asyncdal_tagged",
}
"""Path key to the app name in ``bench.apps.APPS``."""
LABELS = {
    "a": "(a) raw asyncpg",
    "b": "(b) plain SQLAlchemy",
    "c": "(c) asyncdal catalog",
    "d": "(d) catalog unobserved",
    "e": "(e) catalog tagged",
}
# c/d: the cost of metrics and logging as configured by default (target: at least 0.95);
# e/d: the same plus request ids in application_name (TAG_REQUESTS, off by default).
RATIOS = [("c", "a"), ("c", "b"), ("b", "a"), ("c", "d"), ("e", "d")]

LUA_SCRIPT = Path(__file__).with_name("random_ids.lua")
_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0
_RESULT_LINE = re.compile(r"^BENCH (.*)$", re.MULTILINE)


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How hard and how long to load the servers."""

    rounds: int
    duration: int
    """Seconds per wrk run."""
    warmup: int
    """Seconds of unreported load per app before the first round (0 skips it)."""
    connections: int
    threads: int
    products: int
    """Ids are drawn from 1..products."""


@dataclass(frozen=True, slots=True)
class WrkResult:
    """What one wrk run measured."""

    requests: int
    seconds: float
    errors: dict[str, int]
    p50_ms: float
    p99_ms: float

    @property
    def per_second(self) -> float:
        """Completed requests per second."""
        return self.requests / self.seconds

    @property
    def error_count(self) -> int:
        """Socket errors, timeouts and non-2xx/3xx answers."""
        return sum(self.errors.values())


@dataclass(frozen=True, slots=True)
class _Server:
    name: str
    port: int
    process: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def _server_environment(database_url: str) -> dict[str, str]:
    # Drop the developer's database variables: asyncdal's settings would merge DB__MAIN__*
    # (a pool size, say) into the benchmark's, and (c) must run with the defaults like (b).
    environment = {
        key: value
        for key, value in os.environ.items()
        if key.upper() != "DATABASE_URL" and not key.upper().startswith("DB__")
    }
    environment[DATABASE_URL_VARIABLE] = database_url
    environment[PARENT_PID_VARIABLE] = str(os.getpid())
    return environment


def _get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=2) as response:
        return json.load(response)


async def _stop(server: _Server) -> None:
    process = server.process
    if process.returncode is None:
        process.terminate()  # uvicorn shuts down gracefully and closes the app's pool
        try:
            await asyncio.wait_for(process.wait(), _STOP_TIMEOUT)
        except TimeoutError:
            process.kill()
            await process.wait()


async def _wait_until_ready(server: _Server) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + _STARTUP_TIMEOUT
    while True:
        if server.process.returncode is not None:
            raise RuntimeError(
                f"the {server.name} server exited with status {server.process.returncode} "
                "(its error is printed above)"
            )
        try:
            await asyncio.to_thread(_get_json, f"{server.url}/products/1")
            return
        except (OSError, urllib.error.URLError):
            if loop.time() > deadline:
                raise RuntimeError(f"the {server.name} server did not answer in time") from None
            await asyncio.sleep(0.2)


async def _start(name: str, database_url: str) -> _Server:
    # Free now; uvicorn binds it a moment later. If something takes it meanwhile, the server
    # exits and the startup check says so.
    port = spare_port()
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.server",
        name,
        str(port),
        cwd=ROOT,
        env=_server_environment(database_url),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        # Its own session: a Ctrl-C reaches only the benchmark, which then stops the servers in
        # order instead of racing their shutdown against its own.
        start_new_session=True,
    )
    return _Server(name, port, process)


@asynccontextmanager
async def _running_servers(database_url: str) -> AsyncIterator[dict[str, _Server]]:
    """All the servers, started together, ready, and stopped on the way out."""
    async with AsyncExitStack() as stack:
        servers: dict[str, _Server] = {}
        for key, name in PATHS.items():
            server = servers[key] = await _start(name, database_url)
            stack.push_async_callback(_stop, server)
        # A task group, so one server failing to start cancels the wait for the others.
        async with asyncio.TaskGroup() as group:
            for server in servers.values():
                group.create_task(_wait_until_ready(server))
        yield servers


async def _check_same_answers(servers: dict[str, _Server], products: int) -> None:
    """Refuse to compare apps that do not return the same JSON for the same product."""
    for product_id in sorted({1, (products + 1) // 2, products}):
        answers = {
            key: await asyncio.to_thread(_get_json, f"{server.url}/products/{product_id}")
            for key, server in servers.items()
        }
        if len({json.dumps(answer, sort_keys=True) for answer in answers.values()}) != 1:
            raise RuntimeError(f"the apps answer /products/{product_id} differently: {answers}")
    print(f"  all apps answer /products/{{id}} identically, e.g. {answers['c']}")


def _parse_wrk(output: str) -> WrkResult:
    match = _RESULT_LINE.search(output)
    if match is None:
        raise RuntimeError(f"no result line in wrk's output:\n{output}")
    values = {key: int(value) for key, value in (pair.split("=") for pair in match[1].split())}
    return WrkResult(
        requests=values["requests"],
        seconds=values["duration_us"] / 1e6,
        errors={key: values[key] for key in ("connect", "read", "write", "status", "timeout")},
        p50_ms=values["p50_us"] / 1e3,
        p99_ms=values["p99_us"] / 1e3,
    )


async def run_wrk(url: str, settings: HttpSettings, duration: int) -> WrkResult:
    """Load ``url`` with wrk for ``duration`` seconds and return what it measured."""
    process = await asyncio.create_subprocess_exec(
        "wrk",
        f"--threads={settings.threads}",
        f"--connections={settings.connections}",
        f"--duration={duration}s",
        f"--script={LUA_SCRIPT}",
        url,
        "--",
        str(settings.products),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        start_new_session=True,
    )
    try:
        stdout, stderr = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    if process.returncode != 0:
        raise RuntimeError(f"wrk failed ({process.returncode}): {stderr.decode().strip()}")
    return _parse_wrk(stdout.decode())


def _describe(result: WrkResult, opened: int) -> str:
    line = (
        f"{rate(result.per_second):>8} req/s   p50 {result.p50_ms:6.2f} ms"
        f"   p99 {result.p99_ms:7.2f} ms   new conns {opened:>4}"
    )
    if result.error_count:
        failed = ", ".join(f"{key} {count}" for key, count in result.errors.items() if count)
        line += f"   ERRORS: {failed}"
    return line


async def run_http(database_url: str, settings: HttpSettings) -> dict[str, float]:
    """Run the HTTP benchmark against the seeded database; return the median req/s by path."""
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    print(
        f"\n== HTTP: GET /products/{{random id in 1..{settings.products}}}, "
        f"{settings.rounds} rounds x {settings.duration}s per app, wrk {settings.threads} "
        f"threads / {settings.connections} connections, uvicorn 1 worker (uvloop, httptools)"
    )
    print("  (new conns: connections the app's pool opened during the run, from pg_stat_database)")
    results: dict[str, list[float]] = {key: [] for key in PATHS}
    opened: dict[str, list[int]] = {key: [] for key in PATHS}
    async with (
        _running_servers(database_url) as servers,
        connection_counter(database_url) as counter,
    ):
        await _check_same_answers(servers, settings.products)
        if settings.warmup:
            print(f"  warming up each app for {settings.warmup}s (not reported)")
            for server in servers.values():
                await run_wrk(server.url, settings, settings.warmup)
        for round_number in range(1, settings.rounds + 1):
            print(f"round {round_number}/{settings.rounds}")
            # Each round starts one app later, so each app runs after each other in turn: an
            # app that runs right after (b) inherits the aftermath of (b)'s connection churn.
            keys = list(servers)
            shift = (round_number - 1) % len(keys)
            for key in keys[shift:] + keys[:shift]:
                server = servers[key]
                before = await counter.opened()
                result = await run_wrk(server.url, settings, settings.duration)
                opened[key].append(await counter.opened() - before)
                results[key].append(result.per_second)
                print(f"  {LABELS[key]:<22} {_describe(result, opened[key][-1])}", flush=True)
    return print_summary(
        f"HTTP summary over {settings.rounds} rounds", "req/s", LABELS, results, RATIOS, opened
    )
