"""The Lambda handler as a frozen-and-thawed container sees it, through Mangum, on a real database.

The Lambda runtime calls the handler synchronously from one thread, whose event loop persists
across invocations; between two invocations the container may be frozen for long enough that
every connection it held is dead. Here each invocation runs in such a thread (``LambdaRuntime``),
and every backend of the app is terminated between invocations: each one must still answer, and
none may leave a connection open.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import os
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import asyncpg
import pytest
from sqlalchemy.engine import URL

from asyncdal import AsyncdalSettings
from catalog import lambda_handler
from catalog.lambda_handler import create_handler
from tests.conftest import database_settings, plain
from tests.helpers import count_connections, wait_until

# A backend whose client closed its connection leaves pg_stat_activity a moment later, when its
# process exits; a connection kept open never does.
BACKEND_EXIT_DEADLINE = 5.0


class LambdaRuntime:
    """One thread with one event loop, set as the thread's loop and kept across invocations."""

    def __init__(self, name: str) -> None:
        self._executor = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix=name, initializer=self._start_loop
        )
        self.loop: asyncio.AbstractEventLoop | None = None
        self._closed = False

    def _start_loop(self) -> None:
        self.loop = asyncio.new_event_loop()
        # Mangum calls asyncio.get_event_loop(): with a loop set it returns it, without warning.
        asyncio.set_event_loop(self.loop)

    async def invoke(self, handler: Any, event: dict[str, Any]) -> dict[str, Any]:
        context = SimpleNamespace(function_name="catalog", aws_request_id=str(uuid.uuid4()))
        running = asyncio.get_running_loop()
        response: dict[str, Any] = await running.run_in_executor(
            self._executor, handler, event, context
        )
        return response

    def close(self) -> None:
        """Close the loop in its own thread (after checking nothing was left running on it)."""

        def stop() -> list[asyncio.Task[Any]]:
            loop = asyncio.get_event_loop()
            pending = [task for task in asyncio.all_tasks(loop) if not task.done()]
            loop.run_until_complete(loop.shutdown_asyncgens())
            asyncio.set_event_loop(None)
            loop.close()
            return pending

        if self._closed:
            return
        self._closed = True
        try:
            if self.loop is not None:
                pending = self._executor.submit(stop).result(timeout=30)
                assert not pending, f"tasks left on the runtime's loop: {pending}"
        finally:
            self._executor.shutdown(wait=True)


def http_api_event(method: str, path: str, route_key: str, **path_parameters: str) -> dict:
    """An API Gateway HTTP API (v2) event, payload format 2.0."""
    now = time.time()
    return {
        "version": "2.0",
        "routeKey": f"{method} {route_key}",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "accept": "application/json",
            "host": "abc123.execute-api.eu-west-1.amazonaws.com",
            "user-agent": "pytest",
            "x-forwarded-for": "203.0.113.7",
            "x-forwarded-port": "443",
            "x-forwarded-proto": "https",
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "abc123",
            "domainName": "abc123.execute-api.eu-west-1.amazonaws.com",
            "domainPrefix": "abc123",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "203.0.113.7",
                "userAgent": "pytest",
            },
            "requestId": str(uuid.uuid4()),
            "routeKey": f"{method} {route_key}",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)),
            "timeEpoch": int(now * 1000),
        },
        "pathParameters": path_parameters,
        "isBase64Encoded": False,
    }


def get_product_event(product_id: int) -> dict:
    return http_api_event("GET", f"/products/{product_id}", "/products/{id}", id=str(product_id))


def json_body(response: dict[str, Any]) -> Any:
    body = response["body"]
    if response.get("isBase64Encoded"):
        body = base64.b64decode(body)
    return json.loads(body)


@pytest.fixture
async def admin(catalog_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A connection of the test's own, to seed rows and watch the app's backends."""
    connection = await asyncpg.connect(plain(catalog_url.set(drivername="postgresql")))
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
def application_name() -> str:
    """Unique to the test, so pg_stat_activity shows only the handler's connections."""
    return f"lambda-test-{uuid.uuid4().hex}"


@pytest.fixture
def handler_settings(
    catalog_settings: AsyncdalSettings,
    catalog_url: URL,
    catalog_reference_url: URL,
    application_name: str,
) -> AsyncdalSettings:
    """Settings for the (emptied) catalog database, with the test's application name.

    No pool is given: the handler must choose the null pool itself.
    """
    return database_settings(
        catalog_url, reference=catalog_reference_url, application_name=application_name
    )


@pytest.fixture
async def product(catalog_settings: AsyncdalSettings, admin: asyncpg.Connection) -> dict[str, Any]:
    """One product, in the products table that ``catalog_settings`` emptied."""
    row = await admin.fetchrow(
        "INSERT INTO products (sku, name, price) VALUES ($1, $2, $3)"
        " RETURNING id, sku, name, price",
        "LAMBDA-1",
        "Cold-start kettle",
        Decimal("24.90"),
    )
    assert row is not None
    return dict(row)


@pytest.fixture
def runtimes() -> Iterator[list[LambdaRuntime]]:
    """Runtimes made by a test; each is closed (its thread joined, its loop closed) after it."""
    made: list[LambdaRuntime] = []
    try:
        yield made
    finally:
        failures = []
        for runtime in made:
            try:
                runtime.close()
            except AssertionError as error:
                failures.append(str(error))
        assert not failures, failures


async def assert_no_backend_left(admin: asyncpg.Connection, application_name: str) -> None:
    async def none_left() -> bool:
        return await count_connections(admin, application_name=application_name) == 0

    await wait_until(
        none_left,
        timeout=BACKEND_EXIT_DEADLINE,
        message="connections of the handler still open after the invocation",
    )


async def terminate_backends(admin: asyncpg.Connection, application_name: str) -> None:
    """What a long freeze does to a container's connections: every one of them is gone."""
    await admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE (application_name = $1 OR application_name LIKE $1 || ':%')",
        application_name,
    )


def assert_product(response: dict[str, Any], product: dict[str, Any]) -> None:
    assert response["statusCode"] == 200, response
    body = json_body(response)
    assert body["id"] == product["id"]
    assert body["sku"] == product["sku"]
    assert body["name"] == product["name"]
    assert Decimal(body["price"]) == product["price"]


def settings_of(handler: Any) -> AsyncdalSettings:
    settings: AsyncdalSettings = handler.app.state.container.settings()
    return settings


def assert_no_errors_logged(caplog: pytest.LogCaptureFixture) -> None:
    errors = [record for record in caplog.records if record.levelno >= logging.ERROR]
    assert not errors, "\n".join(record.getMessage() for record in errors)


async def test_handler_survives_terminated_backends_and_leaves_no_connection(
    handler_settings: AsyncdalSettings,
    admin: asyncpg.Connection,
    application_name: str,
    product: dict[str, Any],
    runtimes: list[LambdaRuntime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Five GETs in one runtime, every backend killed in between: five 200s, no connection kept.

    The handler's settings are on the null pool even though the given ones name no pool.
    """
    handler = create_handler(handler_settings)
    assert {
        name: db.pool.effective_kind for name, db in settings_of(handler).databases.items()
    } == {
        "main": "null",
        "reference": "null",
    }
    assert settings_of(handler).databases["main"].application_name == application_name
    runtime = LambdaRuntime("lambda-runtime")
    runtimes.append(runtime)

    for invocation in range(5):
        if invocation:
            await terminate_backends(admin, application_name)
        response = await runtime.invoke(handler, get_product_event(product["id"]))
        assert_product(response, product)
        await assert_no_backend_left(admin, application_name)

    missing = await runtime.invoke(handler, get_product_event(product["id"] + 1000))
    assert missing["statusCode"] == 404, missing
    await assert_no_backend_left(admin, application_name)
    assert_no_errors_logged(caplog)


async def test_one_handler_serves_invocations_from_different_event_loops(
    handler_settings: AsyncdalSettings,
    admin: asyncpg.Connection,
    application_name: str,
    product: dict[str, Any],
    runtimes: list[LambdaRuntime],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The same handler object, called from two threads with their own loops, in turns."""
    handler = create_handler(handler_settings)
    first, second = LambdaRuntime("lambda-runtime-1"), LambdaRuntime("lambda-runtime-2")
    runtimes.extend([first, second])

    for runtime in (first, second, first, second):
        response = await runtime.invoke(handler, get_product_event(product["id"]))
        assert_product(response, product)
        await assert_no_backend_left(admin, application_name)

    assert first.loop is not None
    assert second.loop is not None
    assert first.loop is not second.loop
    # A loop that is gone (a new runtime thread after the old one ended) is no obstacle either.
    first.close()
    runtimes.remove(first)
    third = LambdaRuntime("lambda-runtime-3")
    runtimes.append(third)
    assert_product(await third.invoke(handler, get_product_event(product["id"])), product)
    await assert_no_backend_left(admin, application_name)
    assert_no_errors_logged(caplog)


@pytest.fixture
def fresh_default_handler() -> Iterator[None]:
    """The module's entry point as in a new container: not built yet, and forgotten after."""
    lambda_handler.default_handler.cache_clear()
    yield
    lambda_handler.default_handler.cache_clear()


@pytest.mark.usefixtures("fresh_default_handler")
async def test_module_entry_point_reads_settings_from_the_environment_at_first_invocation(
    catalog_url: URL,
    catalog_reference_url: URL,
    admin: asyncpg.Connection,
    application_name: str,
    product: dict[str, Any],
    runtimes: list[LambdaRuntime],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    """``catalog.lambda_handler.handler``, as configured in Lambda: settings from the env."""
    monkeypatch.chdir(tmp_path)  # no .env of the repository's may add settings
    for name in [name for name in os.environ if name.upper().startswith("DB__")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "catalog")
    monkeypatch.setenv("DATABASE_URL", plain(catalog_url))
    monkeypatch.setenv("DB__MAIN__APPLICATION_NAME", application_name)
    monkeypatch.setenv("DB__REFERENCE__URL", plain(catalog_reference_url))
    runtime = LambdaRuntime("lambda-runtime")
    runtimes.append(runtime)

    for invocation in range(2):
        if invocation:
            await terminate_backends(admin, application_name)
        response = await runtime.invoke(lambda_handler.handler, get_product_event(product["id"]))
        assert_product(response, product)
        await assert_no_backend_left(admin, application_name)

    settings = settings_of(lambda_handler.default_handler())
    assert settings.databases["main"].pool.effective_kind == "null"
    assert settings.databases["main"].application_name == application_name
