"""The tests' shared helpers: polling with a deadline, and a client whose app always shuts down."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from tests.helpers import app_client, wait_until


async def test_wait_until_returns_the_first_truthy_value_of_a_sync_predicate() -> None:
    calls = itertools.count(1)
    assert await wait_until(lambda: next(calls) >= 3 and "ready", interval=0) == "ready"
    assert next(calls) == 4  # called until it was true, not once more


async def test_wait_until_awaits_an_async_predicate_and_a_lambda_returning_an_awaitable() -> None:
    calls = itertools.count(1)

    async def third_call() -> int:
        await asyncio.sleep(0)
        call = next(calls)
        return call if call >= 3 else 0

    assert await wait_until(third_call, interval=0) == 3
    assert await wait_until(lambda: asyncio.sleep(0, result=[1]), interval=0) == [1]


async def test_wait_until_fails_after_the_timeout_with_the_message_and_the_last_value() -> None:
    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AssertionError) as failure:
        await wait_until(lambda: [], timeout=0.2, interval=0.01, message="the list never filled")
    assert 0.2 <= loop.time() - started < 2
    assert "the list never filled" in str(failure.value)
    assert "0.2 s" in str(failure.value)
    assert "last value: []" in str(failure.value)


async def test_wait_until_reads_a_callable_message_only_on_failure() -> None:
    log: list[str] = []
    read: list[str] = []

    def message() -> str:
        read.append("read")
        return f"log: {log}"

    assert await wait_until(lambda: True, message=message) is True
    assert read == []
    with pytest.raises(AssertionError, match=r"log: \['stuck'\]"):
        await wait_until(lambda: log.append("stuck"), timeout=0, interval=0, message=message)
    assert read == ["read"]


async def test_what_the_predicate_raises_propagates_at_once() -> None:
    def process_exited() -> bool:
        raise AssertionError("the process exited")

    loop = asyncio.get_running_loop()
    started = loop.time()
    with pytest.raises(AssertionError, match="the process exited"):
        await wait_until(process_exited, timeout=30)
    assert loop.time() - started < 1


def app_recording(events: list[str]) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        events.append("startup")
        yield
        events.append("shutdown")

    app = FastAPI(lifespan=lifespan)

    @app.get("/where")
    async def where(request: Request) -> dict[str, str]:
        return {"url": str(request.url), "wrapped": request.headers.get("x-wrapped", "no")}

    return app


async def test_app_client_runs_the_lifespan_around_the_requests() -> None:
    events: list[str] = []
    async with app_client(app_recording(events), base_url="http://catalog") as client:
        assert events == ["startup"]
        response = await client.get("/where")
        assert response.json() == {"url": "http://catalog/where", "wrapped": "no"}
    assert events == ["startup", "shutdown"]


async def test_app_client_shuts_the_app_down_when_the_block_fails() -> None:
    events: list[str] = []
    with pytest.raises(AssertionError, match="a failing test"):
        async with app_client(app_recording(events)) as client:
            assert (await client.get("/where")).status_code == 200
            raise AssertionError("a failing test")
    assert events == ["startup", "shutdown"]
    assert client.is_closed


async def test_app_client_wraps_the_running_app() -> None:
    def add_header(app: ASGIApp) -> ASGIApp:
        async def wrapped(scope: Scope, receive: Receive, send: Send) -> None:
            scope = {**scope, "headers": [*scope["headers"], (b"x-wrapped", b"yes")]}
            await app(scope, receive, send)

        return wrapped

    events: list[str] = []
    async with app_client(app_recording(events), wrap=add_header) as client:
        assert (await client.get("/where")).json()["wrapped"] == "yes"
    assert events == ["startup", "shutdown"]
