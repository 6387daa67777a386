"""HTTP benchmark: the apps under uvicorn, loaded by ``wrk`` in interleaved rounds.

Each app runs in its own uvicorn process (one worker, uvloop + httptools), started afresh for
every round and warmed up before it: one process of an app can be several percent faster or
slower than another of the same app for its whole life, so the medians are taken over one
process per round. Every round loads, for each endpoint, each app that serves it in turn, in
slices (one second each by default): app after app for one slice, then again, until each had the
round's duration, in a new order each slice, so that slow drift of a shared, noisy machine, and
the aftermath of one app's load on the server, hit all of them alike. The slices are for drift
that is not slow: measured on this machine with one whole run per app and round, the raw app's
CPU per request was 360 us in one round and 643 us in the next, and the rounds' s/a ranged from
0.89 to 1.14, so two apps whose runs were half a minute apart could differ by that much for no
reason of their own; with slices, each app of a round is measured over the same half minute.
Reads ask for random ids in 1..products; the rows a write slice added are deleted after it, so
every slice reads the same table.

Besides requests per second, each run reports the server process's CPU time per request (from
``/proc``): on a machine whose cores are shared with the database and wrk, and here with other
work too, it varies much less than throughput.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import secrets
import shutil
import sys
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from asyncdal.testing import spare_port
from bench.database import ROOT, connection_counter, remove_written
from bench.report import Goal, print_goals, print_summary, rate
from bench.server import DATABASE_URL_VARIABLE, PARENT_PID_VARIABLE
from bench.wrk import WrkLoad, WrkResult, combined, cpu_seconds, run_wrk

__all__ = ["ENDPOINTS", "GOALS", "Endpoint", "HttpSettings", "run_http", "server_environment"]

PATHS = {
    "a": "asyncpg",
    "s": "asyncpg_setup",
    "b": "sqlalchemy",
    "c": "asyncdal",
    "d": "asyncdal_unobserved",
    "e": "asyncdal_tagged",
    "f": "asyncdal_safety",
}
"""Path key to the app name in ``bench.apps.APPS``."""
LABELS = {
    "a": "(a) raw asyncpg",
    "s": "(s) raw asyncpg + setup(app)",
    "b": "(b) plain SQLAlchemy",
    "c": "(c) asyncdal catalog",
    "d": "(d) catalog unobserved",
    "e": "(e) catalog tagged",
    "f": "(f) catalog, safety nets on",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One endpoint of the apps, the apps compared on it, and the ratios printed."""

    key: str
    """``get``, ``list`` or ``write``: also the first argument of ``load.lua``."""
    title: str
    paths: tuple[str, ...]
    ratios: tuple[tuple[str, str], ...]

    def arguments(self, products: int) -> list[str]:
        """``load.lua``'s arguments for one run (a write run gets skus of its own)."""
        if self.key == "get":
            return ["get", str(products)]
        if self.key == "write":
            return ["write", f"w{secrets.token_hex(4)}"]
        return [self.key]


ENDPOINTS = (
    # c/d: the cost of metrics and logging as configured by default; e/d: the same plus
    # request ids in application_name (TAG_REQUESTS, off by default); f/c: the safety nets.
    Endpoint(
        "get",
        "GET /products/{random id}",
        ("a", "s", "b", "c", "d", "e", "f"),
        (("c", "a"), ("c", "b"), ("s", "a"), ("b", "a"), ("c", "d"), ("e", "d"), ("f", "c")),
    ),
    Endpoint(
        "list", "GET /products?limit=50", ("a", "b", "c"), (("c", "a"), ("c", "b"), ("b", "a"))
    ),
    Endpoint(
        "write",
        "POST /products (+ its outbox event, one transaction)",
        ("a", "b", "c"),
        (("c", "a"), ("c", "b"), ("b", "a")),
    ),
)
"""The endpoints, in the order every round runs them."""

GOALS = (
    Goal("read path: at least 0.50x raw asyncpg", "get", "c", "a", 0.50),
    Goal("read path: at least 2.0x plain SQLAlchemy", "get", "c", "b", 2.0),
    Goal("setup(app): costs at most 5% of the raw endpoint", "get", "s", "a", 0.95),
    Goal("list path: at least 2.0x plain SQLAlchemy", "list", "c", "b", 2.0),
    Goal("write path: at least 1.5x plain SQLAlchemy", "write", "c", "b", 1.5),
    Goal("safety nets all on: cost the read path at most 5%", "get", "f", "c", 0.95),
)
"""What issues 15 (performance) and 16 (safety nets) ask of asyncdal's paths, each a ratio to
what ran beside it."""

_STARTUP_TIMEOUT = 30.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True, slots=True)
class HttpSettings:
    """How hard and how long to load the servers."""

    rounds: int
    duration: int
    """Seconds of load per app, endpoint and round."""
    warmup: int
    """Seconds of unreported load per app and endpoint before the first round (0 skips it)."""
    connections: int
    threads: int
    products: int
    """Ids are drawn from 1..products."""
    endpoints: tuple[str, ...] = tuple(endpoint.key for endpoint in ENDPOINTS)
    """Which endpoints to load."""
    slice_seconds: int = 1
    """Seconds per wrk run: each app's ``duration`` of a round is cut into slices of this
    length, run app after app (the last one shorter when it does not divide evenly)."""

    def slices(self) -> list[int]:
        """The seconds of each slice of one app's load in a round."""
        step = max(1, min(self.slice_seconds, self.duration))
        whole, rest = divmod(self.duration, step)
        return [step] * whole + ([rest] if rest else [])


@dataclass(frozen=True, slots=True)
class _Server:
    name: str
    port: int
    process: asyncio.subprocess.Process

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def server_environment(database_url: str, hash_seed: int) -> dict[str, str]:
    # Drop the developer's database variables: asyncdal's settings would merge DB__MAIN__*
    # (a pool size, say) into the benchmark's, and (c) must run with the defaults like (b).
    environment = {
        key: value
        for key, value in os.environ.items()
        if key.upper() != "DATABASE_URL" and not key.upper().startswith("DB__")
    }
    environment[DATABASE_URL_VARIABLE] = database_url
    environment[PARENT_PID_VARIABLE] = str(os.getpid())
    # The same hash seed for every app of a round, another each round: a process's seed
    # decides its string hashes and so the layout of its dicts and sets, which made two
    # processes of the same app differ by up to 9% for their whole life; with one seed for
    # both, 2-3% (measured: three copies of (a) side by side). All apps import the same
    # modules (bench.apps), so apps started with one seed differ in little but their code.
    environment["PYTHONHASHSEED"] = str(hash_seed)
    return environment


def _request_json(url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        url, data=data, headers={"Content-Type": "application/json"} if data else {}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        return response.status, json.load(response)


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
            await asyncio.to_thread(_request_json, f"{server.url}/products/1")
            return
        except (OSError, urllib.error.URLError):
            if loop.time() > deadline:
                raise RuntimeError(f"the {server.name} server did not answer in time") from None
            await asyncio.sleep(0.2)


async def _start(name: str, database_url: str, hash_seed: int) -> _Server:
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
        env=server_environment(database_url, hash_seed),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.DEVNULL,
        # Its own session: a Ctrl-C reaches only the benchmark, which then stops the servers in
        # order instead of racing their shutdown against its own.
        start_new_session=True,
    )
    return _Server(name, port, process)


@asynccontextmanager
async def _running_servers(
    database_url: str, keys: list[str], hash_seed: int
) -> AsyncIterator[dict[str, _Server]]:
    """The servers of ``keys``, started together with one hash seed, ready, and stopped on the
    way out."""
    async with AsyncExitStack() as stack:
        servers: dict[str, _Server] = {}
        for key in keys:
            server = servers[key] = await _start(PATHS[key], database_url, hash_seed)
            stack.push_async_callback(_stop, server)
        # A task group, so one server failing to start cancels the wait for the others.
        async with asyncio.TaskGroup() as group:
            for server in servers.values():
                group.create_task(_wait_until_ready(server))
        yield servers


async def _answers(servers: dict[str, _Server], path: str) -> dict[str, Any]:
    return {
        key: (await asyncio.to_thread(_request_json, f"{server.url}{path}"))[1]
        for key, server in servers.items()
    }


async def _check_same_answers(
    servers: dict[str, _Server], endpoints: list[Endpoint], database_url: str, products: int
) -> None:
    """Refuse to compare apps that do not answer the same requests with the same JSON."""
    for endpoint in endpoints:
        serving = {key: servers[key] for key in endpoint.paths}
        if endpoint.key == "get":
            for product_id in sorted({1, (products + 1) // 2, products}):
                answers = await _answers(serving, f"/products/{product_id}")
                _same(answers, f"GET /products/{product_id}")
        elif endpoint.key == "list":
            _same(await _answers(serving, "/products?limit=50"), "GET /products?limit=50")
        else:
            created = {}
            for key, server in serving.items():
                body = {"sku": f"check-{key}", "name": "Check", "price": "1.50"}
                status, created[key] = await asyncio.to_thread(
                    _request_json, f"{server.url}/products", body
                )
                if status != 201:
                    raise RuntimeError(f"{LABELS[key]} answered POST /products with {status}")
                # Made by the server (or from the sku): the rest must be the same.
                for field in ("id", "sku", "created_at", "updated_at"):
                    created[key].pop(field, None)
            _same(created, "POST /products")
            await remove_written(database_url, products)
    print("  every app answers the benchmarked requests with the same JSON")


def _same(answers: dict[str, Any], request: str) -> None:
    if len({json.dumps(answer, sort_keys=True) for answer in answers.values()}) != 1:
        raise RuntimeError(f"the apps answer {request} differently: {answers}")


def _describe(result: WrkResult, cpu_us: float, opened: int) -> str:
    line = (
        f"{rate(result.per_second):>8} req/s  {cpu_us:6,.0f} CPU us/req   p50 "
        f"{result.p50_ms:6.2f} ms   p99 {result.p99_ms:7.2f} ms   new conns {opened:>4}"
    )
    if result.error_count:
        failed = ", ".join(f"{key} {count}" for key, count in result.errors.items() if count)
        line += f"   ERRORS: {failed}"
    return line


@dataclass
class _Results:
    per_second: dict[str, list[float]]
    cpu_us: dict[str, list[float]]
    opened: dict[str, list[int]]


async def _warm_up(
    servers: dict[str, _Server],
    endpoints: list[Endpoint],
    load: WrkLoad,
    settings: HttpSettings,
    database_url: str,
) -> None:
    """Load each freshly started app on each endpoint, unreported: its pool fills, its code
    paths and caches warm up."""
    print(f"  warming up each app on each endpoint for {settings.warmup}s (not reported)")
    for endpoint in endpoints:
        for key in endpoint.paths:
            arguments = endpoint.arguments(settings.products)
            await run_wrk(servers[key].url, load, settings.warmup, arguments)
            if endpoint.key == "write":
                await remove_written(database_url, settings.products)


async def run_http(database_url: str, settings: HttpSettings) -> dict[str, dict[str, float]]:
    """Run the HTTP benchmark against the seeded database.

    Returns:
        The median req/s of each path, by endpoint key and path key.
    """
    if shutil.which("wrk") is None:
        raise RuntimeError("wrk is not installed (apt-get install wrk)")
    endpoints = [endpoint for endpoint in ENDPOINTS if endpoint.key in settings.endpoints]
    keys = [key for key in PATHS if any(key in endpoint.paths for endpoint in endpoints)]
    load = WrkLoad(threads=settings.threads, connections=settings.connections)
    print(
        f"\n== HTTP: {', '.join(endpoint.title for endpoint in endpoints)}; ids in "
        f"1..{settings.products}; {settings.rounds} rounds x {settings.duration}s per app and "
        f"endpoint in slices of {settings.slices()[0]}s, wrk {settings.threads} threads / "
        f"{settings.connections} connections, "
        "uvicorn 1 worker (uvloop, httptools)"
    )
    print(
        "  (CPU us/req: the server process's CPU time per answered request; new conns: "
        "connections the app's pool opened during the run, from pg_stat_database)"
    )
    results = {
        endpoint.key: _Results(
            {key: [] for key in endpoint.paths},
            {key: [] for key in endpoint.paths},
            {key: [] for key in endpoint.paths},
        )
        for endpoint in endpoints
    }
    async with connection_counter(database_url) as counter:
        for round_number in range(1, settings.rounds + 1):
            # Fresh server processes every round: two processes of the very same app differ
            # by up to 9% in req/s and 5% in CPU per request, for the whole of their life
            # (measured: three copies of (a) side by side; hash seeds and memory layout), so
            # the medians must be over several processes of each app, not over one.
            async with _running_servers(database_url, keys, round_number) as servers:
                if round_number == 1:
                    await _check_same_answers(servers, endpoints, database_url, settings.products)
                if settings.warmup:
                    await _warm_up(servers, endpoints, load, settings, database_url)
                print(f"round {round_number}/{settings.rounds}")
                for endpoint in endpoints:
                    print(f"  {endpoint.title}")
                    # A new order of the apps for every slice (the same in every run): an app
                    # that runs right after (b) inherits the aftermath of (b)'s connection
                    # churn, and a rotation of one order keeps the same app after (b) for good.
                    order = endpoint.paths
                    runs: dict[str, list[WrkResult]] = {key: [] for key in order}
                    cpu = dict.fromkeys(order, 0.0)
                    opened = dict.fromkeys(order, 0)
                    for number, seconds in enumerate(settings.slices()):
                        shuffled = random.Random(f"{round_number}/{number}").sample(
                            order, len(order)
                        )
                        for key in shuffled:
                            server = servers[key]
                            before = await counter.opened()
                            cpu_before = cpu_seconds(server.process.pid)
                            result = await run_wrk(
                                server.url, load, seconds, endpoint.arguments(settings.products)
                            )
                            cpu[key] += cpu_seconds(server.process.pid) - cpu_before
                            opened[key] += await counter.opened() - before
                            runs[key].append(result)
                            if endpoint.key == "write":
                                await remove_written(database_url, settings.products)
                    measured = results[endpoint.key]
                    for key in order:
                        result = combined(runs[key])
                        measured.opened[key].append(opened[key])
                        measured.per_second[key].append(result.per_second)
                        measured.cpu_us[key].append(cpu[key] * 1e6 / max(1, result.requests))
                        described = _describe(result, measured.cpu_us[key][-1], opened[key])
                        print(f"    {LABELS[key]:<28} {described}", flush=True)
    medians = {}
    for endpoint in endpoints:
        measured = results[endpoint.key]
        medians[endpoint.key] = print_summary(
            f"HTTP summary, {endpoint.title}, over {settings.rounds} rounds",
            "req/s",
            {key: LABELS[key] for key in endpoint.paths},
            measured.per_second,
            endpoint.ratios,
            measured.opened,
            measured.cpu_us,
        )
    print_goals(GOALS, {endpoint.key: results[endpoint.key].per_second for endpoint in endpoints})
    return medians
