"""The HTTP load of a chaos scenario: mixed catalog requests from this process, bounded in count
and in time, paced over the fault window, aimed only at the service on 127.0.0.1.

The mix: half creates (``POST /products``, each with a unique sku), a sixth updates of a
product created before (``PATCH``, each with a unique name: its marker), a quarter reads of
one product, a tenth reads of a page. Every answer is counted by status; transport failures
by kind (``refused`` while the service is down, ``reset`` when it dies mid-request,
``timeout``). What a 2xx said was done is kept, for the invariants.
"""

from __future__ import annotations

import asyncio
import collections
import random
import re
import time
import uuid
from dataclasses import dataclass, field

import httpx

__all__ = ["Load", "first_write_after", "run_load"]

REQUEST_TIMEOUT = 20.0
# Scheduling slack over the paced duration before the rest of the requests are given up.
OVERRUN = 60.0


@dataclass
class Load:
    """What the load sent and what came back.

    Attributes:
        sent: requests sent.
        statuses: answers by status code, transport failures by kind.
        created: sku -> product id, for every 201.
        updated: the names (markers) of every PATCH answered 200.
        slowest_503: the longest a 503 took, in seconds.
        timed_503: each 503's request: when it was sent (``time.perf_counter()``) and the
            seconds its answer took.
    """

    sent: int = 0
    statuses: collections.Counter[str] = field(default_factory=collections.Counter)
    created: dict[str, int] = field(default_factory=dict)
    updated: set[str] = field(default_factory=set)
    slowest_503: float = 0.0
    timed_503: list[tuple[float, float]] = field(default_factory=list)
    unsent: int = 0
    reasons: collections.Counter[str] = field(default_factory=collections.Counter)
    """The 503s' ``detail``, shortened."""

    def merge(self, other: Load) -> None:
        self.sent += other.sent
        self.statuses.update(other.statuses)
        self.created.update(other.created)
        self.updated |= other.updated
        self.slowest_503 = max(self.slowest_503, other.slowest_503)
        self.timed_503 += other.timed_503
        self.unsent += other.unsent
        self.reasons.update(other.reasons)

    def answers(self) -> str:
        """``201:150 200:80 503:12 refused:3``, codes first."""
        order = sorted(self.statuses, key=lambda key: (not key.isdigit(), key))
        return " ".join(f"{key}:{self.statuses[key]}" for key in order)


def _failure(error: httpx.TransportError) -> str:
    if isinstance(error, httpx.TimeoutException):
        return "timeout"
    if isinstance(error, httpx.ConnectError):
        return "refused"
    return "reset"


async def _send(http: httpx.AsyncClient, load: Load, kind: str, rng: random.Random) -> None:
    known = list(load.created.values())
    if kind in {"patch", "get"} and not known:
        kind = "post"
    started = time.perf_counter()
    try:
        if kind == "post":
            sku = f"C-{uuid.uuid4().hex[:16]}"
            body = {"sku": sku, "name": "chaos", "price": "9.99"}
            response = await http.post("/products", json=body)
            if response.status_code == 201:
                load.created[sku] = response.json()["id"]
        elif kind == "patch":
            marker = f"u-{uuid.uuid4().hex[:16]}"
            response = await http.patch(f"/products/{rng.choice(known)}", json={"name": marker})
            if response.status_code == 200:
                load.updated.add(marker)
        elif kind == "get":
            response = await http.get(f"/products/{rng.choice(known)}")
        else:
            response = await http.get("/products", params={"limit": 10})
    except httpx.TransportError as error:
        load.statuses[_failure(error)] += 1
        return
    finally:
        load.sent += 1
    load.statuses[str(response.status_code)] += 1
    if response.status_code == 503:
        took = time.perf_counter() - started
        load.slowest_503 = max(load.slowest_503, took)
        load.timed_503.append((started, took))
        load.reasons[_reason(response)] += 1


def _reason(response: httpx.Response) -> str:
    try:
        detail = str(response.json().get("detail", ""))
    except ValueError:
        detail = response.text
    # Numbers (seconds left, counts) would make every message its own reason.
    return re.sub(r"\d+(\.\d+)?", "N", detail)[:90]


def _kind(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.5:
        return "post"
    if roll < 0.65:
        return "patch"
    if roll < 0.9:
        return "get"
    return "list"


async def run_load(
    base_url: str, *, requests: int, concurrency: int, duration: float, seed: int = 13
) -> Load:
    """Send ``requests`` requests, ``concurrency`` at a time, paced over ``duration`` seconds
    (none starts before its turn); those not sent ``OVERRUN`` seconds after that are given up
    and counted in ``unsent``."""
    load = Load()
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + duration + OVERRUN
    spacing = duration / max(1, requests)
    turns = iter(range(requests))
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)

    async def client_loop(http: httpx.AsyncClient) -> None:
        for turn in turns:
            if loop.time() > deadline:
                load.unsent += 1
                continue
            delay = start + turn * spacing - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await _send(http, load, _kind(rng), rng)

    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT, limits=limits) as http:
        await asyncio.gather(*(client_loop(http) for _ in range(concurrency)))
    return load


async def first_write_after(base_url: str, load: Load, *, within: float = 90.0) -> float:
    """Create products until one is answered 201; the seconds that took (the time to recover
    from a fault that just ended). Its requests count in ``load``."""
    loop = asyncio.get_running_loop()
    since = loop.time()
    async with httpx.AsyncClient(base_url=base_url, timeout=REQUEST_TIMEOUT) as http:
        rng = random.Random(since)
        while True:
            created = len(load.created)
            await _send(http, load, "post", rng)
            if len(load.created) > created:
                return loop.time() - since
            if loop.time() - since > within:
                raise AssertionError(f"no write succeeded within {within:g} s: {load.answers()}")
            await asyncio.sleep(0.05)
