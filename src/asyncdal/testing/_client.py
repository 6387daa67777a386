"""The app fixtures of :mod:`asyncdal.testing.plugin`: an HTTP client on your app with its
lifespan running and every request inside the test's rolled-back transaction, and overrides.

Neither FastAPI nor httpx is imported until a fixture is used: the plugin loads in every
pytest run of a project that installs ``asyncdal[testing]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import AsyncExitStack
from typing import TYPE_CHECKING, Any

import pytest
import pytest_asyncio
from sqlalchemy.ext.asyncio import AsyncConnection

from asyncdal.orm._database import Database
from asyncdal.orm._databases import Databases

if TYPE_CHECKING:
    from httpx import AsyncClient

    from asyncdal.testing._fakes import FakeUnitOfWork

__all__ = ["asyncdal_app", "asyncdal_client", "asyncdal_database_names", "asyncdal_override"]

# ASGI's types, as httpx spells them (no starlette needed).
Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

_NO_APP = """\
asyncdal_client needs your app: define a fixture named asyncdal_app that returns it, e.g. in
conftest.py:

    @pytest.fixture
    def asyncdal_app():
        return create_app()

Its lifespan runs for each test; DB__MAIN__URL names the test database meanwhile, and every
database of the app is pinned to the test's rolled-back transaction."""


@pytest.fixture
def asyncdal_app() -> Any:
    """Override it to return your ASGI app (a FastAPI app using asyncdal's lifespan)."""
    pytest.fail(_NO_APP, pytrace=False)


class _Lifespan:
    """Drive an ASGI app's lifespan: startup on entry, shutdown on exit, and its state."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.state: dict[str, Any] = {}
        self._to_app: asyncio.Queue[Message] = asyncio.Queue()
        self._from_app: asyncio.Queue[Message] = asyncio.Queue()
        self._task: asyncio.Task[Any] | None = None

    async def _step(self, message: str, task: asyncio.Task[Any]) -> None:
        """Send ``lifespan.<message>`` and wait for its answer; raise what the app raised."""
        await self._to_app.put({"type": f"lifespan.{message}"})
        answer = asyncio.ensure_future(self._from_app.get())
        await asyncio.wait({answer, task}, return_when=asyncio.FIRST_COMPLETED)
        if not answer.done():
            answer.cancel()
            task.result()  # raises the app's own error, traceback and all
            raise RuntimeError(f"the app ended its lifespan without answering {message}")
        reply = answer.result()
        if reply["type"] == f"lifespan.{message}.failed":
            # Starlette answers "failed", then raises the error itself: show that one.
            done, _ = await asyncio.wait({task}, timeout=5)
            if done:
                task.result()
            raise RuntimeError(f"the app's lifespan {message} failed: {reply.get('message')}")

    async def __aenter__(self) -> _Lifespan:
        scope = {
            "type": "lifespan",
            "asgi": {"version": "3.0", "spec_version": "2.0"},
            "state": self.state,
        }
        self._task = asyncio.ensure_future(self.app(scope, self._to_app.get, self._from_app.put))
        await self._step("startup", self._task)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._task is not None
        await self._step("shutdown", self._task)
        await self._task

    def serve(self) -> ASGIApp:
        """The app with the lifespan's state in each request's scope, as servers do."""
        app, state = self.app, self.state

        async def with_state(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] in ("http", "websocket"):
                scope = {**scope, "state": dict(state)}
            await app(scope, receive, send)

        return with_state


def _databases_of(state: dict[str, Any]) -> Databases:
    databases = state.get("databases")
    if not isinstance(databases, Databases):
        pytest.fail(
            "asyncdal_client: the app's lifespan state has no 'databases' (a Databases): "
            "use asyncdal.fastapi.databases_lifespan, or yield {'databases': ...} from your "
            "lifespan",
            pytrace=False,
        )
    return databases


@pytest.fixture(scope="session")
def asyncdal_database_names() -> tuple[str, ...]:
    """Override to name every database your app has (``("main", "reference")``): each one's
    ``DB__<NAME>__URL`` names the test database while ``asyncdal_client`` runs the app."""
    return ("main",)


async def _transaction(stack: AsyncExitStack, database: Database) -> AsyncConnection:
    """A connection to ``database`` in a transaction rolled back when ``stack`` closes."""
    connection = await stack.enter_async_context(database.engine.connect())
    transaction = await connection.begin()
    stack.push_async_callback(transaction.rollback)
    return connection


@pytest_asyncio.fixture(loop_scope="session")
async def asyncdal_client(
    asyncdal_app: Any,
    asyncdal_database: Database,
    asyncdal_database_names: tuple[str, ...],
    rollback_connection: AsyncConnection,
) -> AsyncIterator[AsyncClient]:
    """An ``httpx.AsyncClient`` on ``asyncdal_app``, its lifespan running, and everything its
    requests commit rolled back after the test.

    ``DB__MAIN__URL`` (and ``DB__<NAME>__URL`` for each of ``asyncdal_database_names``) names
    the test database while the app runs, so an app that reads its settings at startup
    (``databases_lifespan(lambda: Databases.from_settings(load_settings()))``) warms up there.
    Then every database of the app is pinned to a connection in a transaction rolled back after
    the test: ``main`` to ``rollback_connection``, so ``rollback_database`` in the same test
    sees what a request committed (a savepoint released); any other to one of its own, as two
    databases have two transactions in production. Requests run in the session's event loop,
    one at a time (they share those connections).
    """
    from httpx import ASGITransport, AsyncClient

    url = asyncdal_database.settings.sqlalchemy_url().render_as_string(hide_password=False)
    with pytest.MonkeyPatch.context() as environment:
        for name in asyncdal_database_names:
            environment.setenv(f"DB__{name.upper()}__URL", url)
        async with AsyncExitStack() as stack:
            lifespan = await stack.enter_async_context(_Lifespan(asyncdal_app))
            for name, database in _databases_of(lifespan.state).items():
                connection = (
                    rollback_connection
                    if name == "main"
                    else await _transaction(stack, asyncdal_database)
                )
                await stack.enter_async_context(database.use_connection(connection))
            # Entered last, so closed first: the client, then the pins, then the lifespan.
            yield await stack.enter_async_context(
                AsyncClient(transport=ASGITransport(app=lifespan.serve()), base_url="http://test")
            )


@pytest.fixture
def asyncdal_override(asyncdal_app: Any) -> Iterator[Callable[..., FakeUnitOfWork]]:
    """``asyncdal.testing.override`` on ``asyncdal_app``; the overrides are undone afterwards.

    Example:
        >>> uow = asyncdal_override(ProductRepository)   # fakes for every provider of it
        >>> await asyncdal_client.post("/products", json={...})
        >>> assert uow.committed
    """
    from asyncdal.testing._overrides import override

    saved = dict(asyncdal_app.dependency_overrides)

    def override_on_app(target: Any, fake: Any = None, *, database: str = "main") -> Any:
        return override(asyncdal_app, target, fake, database=database)

    try:
        yield override_on_app
    finally:
        asyncdal_app.dependency_overrides.clear()
        asyncdal_app.dependency_overrides.update(saved)
