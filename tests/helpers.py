"""What the tests share: poll with a deadline, a client on an app with its lifespan running, a
validator for parts of an OpenAPI document, a count of a server's connections, the samples of
asyncdal's metrics, and a fresh row id.

One of each, so a fix to one (a deadline, a teardown on failure) reaches every test.
"""

from __future__ import annotations

import asyncio
import inspect
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection
from contextlib import asynccontextmanager
from typing import Any, TypeVar, overload

import asyncpg
import jsonschema_rs
from asgi_lifespan import LifespanManager
from httpx import ASGITransport, AsyncClient, Response
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import URL, make_url
from starlette.types import ASGIApp

from asyncdal.observe._metrics import DatabaseMetrics

__all__ = [
    "app_client",
    "assert_documented",
    "count_connections",
    "documented_validator",
    "metric_samples",
    "metric_value",
    "new_id",
    "wait_until",
]

T = TypeVar("T")


@overload
async def wait_until(
    predicate: Callable[[], Awaitable[T]],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str | Callable[[], str] = ...,
) -> T: ...


@overload
async def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = ...,
    interval: float = ...,
    message: str | Callable[[], str] = ...,
) -> T: ...


async def wait_until(
    predicate: Callable[[], Any],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str | Callable[[], str] = "the condition was not met",
) -> Any:
    """Call ``predicate`` until it returns something truthy, and return that.

    The deadline only bounds a failure: a passing test waits as long as the condition takes,
    so the default is generous for a busy machine.

    Args:
        predicate: a function, or a coroutine function (a lambda returning an awaitable works
            too), called every ``interval`` seconds. What it raises propagates at once, so it
            may also assert what must hold meanwhile (a process still running).
        timeout: seconds until the test fails.
        interval: seconds between calls.
        message: what did not happen, or a function returning it (called on failure, to show
            state read then, such as a log).

    Returns:
        The first truthy value ``predicate`` returned.

    Raises:
        AssertionError: not truthy within ``timeout``; says ``message`` and the last value.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        value = predicate()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if loop.time() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (not within {timeout:g} s; last value: {value!r})")
        await asyncio.sleep(interval)


@asynccontextmanager
async def app_client(
    app: ASGIApp,
    *,
    base_url: str = "http://test",
    wrap: Callable[[ASGIApp], ASGIApp] | None = None,
) -> AsyncIterator[AsyncClient]:
    """An httpx client on ``app``, its lifespan started first and shut down on the way out.

    A context manager (not a generator to iterate): when the block fails, the client is
    closed and the lifespan's shutdown runs before the error propagates.

    Args:
        app: the ASGI application (its startup runs on entry, its shutdown on exit).
        base_url: the URL requests are relative to. (No timeout: httpx's ASGI transport has
            none; bound a request with ``asyncio.timeout`` where it matters.)
        wrap: applied to the running app before the client sees it, to watch or change the
            ASGI messages (the lifespan still runs on ``app`` itself).

    Example:
        >>> async with app_client(create_app(container)) as client:
        ...     assert (await client.get("/health/ready")).status_code == 200
    """
    async with LifespanManager(app) as manager:
        served = manager.app if wrap is None else wrap(manager.app)
        try:
            async with AsyncClient(
                transport=ASGITransport(app=served), base_url=base_url
            ) as client:
                yield client
        except BaseException as error:
            if isinstance(error, GeneratorExit):
                raise
            # asgi-lifespan runs the app's shutdown only when the block succeeds; on a failure it
            # cancels the app instead, which would leave its databases undisposed. (A shutdown
            # that fails too is raised with the block's error as its context: both are shown.)
            await manager.shutdown()
            raise


_COUNT_CONNECTIONS = """
SELECT count(*) FROM pg_stat_activity
WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
  AND ($1::text IS NULL OR application_name = $1 OR starts_with(application_name, $1 || ':'))
  AND ($2::text IS NULL OR datname = $2)
  AND ($3::text[] IS NULL OR state = ANY($3::text[]))
  AND ($4::text IS NULL OR usename = $4)
"""


async def count_connections(
    url_or_connection: str | URL | asyncpg.Connection,
    *,
    application_name: str | None = None,
    database: str | None = None,
    state: str | Collection[str] | None = None,
    user: str | None = None,
) -> int:
    """How many client connections the server has that match every filter given.

    The connection that asks is never counted, so a counter may share the application name.

    Args:
        url_or_connection: the server, as a URL (any driver name, any database on it) or an
            open asyncpg connection (which is reused, not closed).
        application_name: the connections' ``application_name``, or that name tagged by
            asyncdal (``<name>:<request id>``, ``<name>:outbox-worker``).
        database: the database they are connected to.
        state: their ``pg_stat_activity.state`` (``"active"``, ``"idle in transaction"``, ...),
            or any of several.
        user: the role they logged in as.
    """
    states = [state] if isinstance(state, str) else None if state is None else list(state)
    arguments = (application_name, database, states, user)
    if isinstance(url_or_connection, asyncpg.Connection):
        return int(await url_or_connection.fetchval(_COUNT_CONNECTIONS, *arguments))
    url = make_url(url_or_connection).set(drivername="postgresql")
    connection = await asyncpg.connect(url.render_as_string(hide_password=False))
    try:
        return int(await connection.fetchval(_COUNT_CONNECTIONS, *arguments))
    finally:
        await connection.close()


def documented_validator(document: dict[str, Any], schema: Any) -> jsonschema_rs.Validator:
    """A JSON Schema validator for ``schema``, a part of the OpenAPI ``document`` whose
    ``$ref`` point into the document's components.

    Example:
        >>> content = document["paths"]["/products"]["post"]["requestBody"]["content"]
        >>> documented_validator(document, content["application/json"]["schema"]).is_valid({})
        False
    """
    return jsonschema_rs.validator_for(
        {"allOf": [schema], "components": document.get("components", {})}
    )


def assert_documented(document: dict[str, Any], path: str, method: str, answer: Response) -> None:
    """Fail unless ``document`` lists ``answer``'s status for the operation, with a JSON body
    schema that ``answer``'s body matches, and every header it says is required.

    Args:
        document: the app's OpenAPI document.
        path: the operation's path as the document writes it (``/products/{product_id}``).
        method: the operation's method, lowercase.
        answer: the response to check.
    """
    responses = document["paths"][path][method]["responses"]
    status = str(answer.status_code)
    assert status in responses, f"{method} {path}: {status} is not documented ({sorted(responses)})"
    documented = responses[status]
    for name, header in documented.get("headers", {}).items():
        if header.get("required"):
            assert name in answer.headers, f"{method} {path} {status}: no {name} header"
    if "content" not in documented:
        assert not answer.content, f"{method} {path} {status}: a body where none is documented"
        return
    schema = documented["content"]["application/json"]["schema"]
    errors = [
        error.message for error in documented_validator(document, schema).iter_errors(answer.json())
    ]
    assert not errors, f"{method} {path} {status}: {answer.text} does not match: {errors}"


def metric_samples(
    metrics: DatabaseMetrics,
) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample ``metrics`` renders, by name and sorted labels."""
    parsed = text_string_to_metric_families(metrics.render().decode())
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in parsed
        for sample in family.samples
    }


def metric_value(metrics: DatabaseMetrics, name: str, **labels: str) -> float:
    """The sample ``name`` with ``labels`` (database ``main`` and node ``primary`` unless
    given), 0 when there is none yet."""
    wanted = tuple(sorted({"database": "main", "node": "primary", **labels}.items()))
    return metric_samples(metrics).get((name, wanted), 0.0)


def new_id() -> int:
    """A row id no other test uses (for tables that tests share)."""
    return uuid.uuid4().int % 1_000_000_000 + 1
