"""The one middleware ``setup(app)`` installs: request id, ``X-DB-LSN``, no work for what is off."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI, Request
from httpx import ASGITransport, AsyncClient

from asyncdal import Database, Databases, DatabaseSettings, current_request_id
from asyncdal.engine._deadline import current_deadline
from asyncdal.engine._scope import RequestScope, current_request_scope
from asyncdal.fastapi import _middleware as middleware_module
from asyncdal.fastapi import _request as request_module
from asyncdal.fastapi import setup
from asyncdal.fastapi._providers import register_unit_of_work
from asyncdal.fastapi._request import RequestMiddleware
from asyncdal.replicas._lsn import required_lsn
from asyncdal.testing import FakeUnitOfWork


def _app() -> FastAPI:
    app = FastAPI()
    setup(app)

    @app.get("/seen")
    async def seen() -> dict[str, Any]:
        return {"id": current_request_id(), "lsn": required_lsn("main")}

    return app


async def _get(app: FastAPI, headers: dict[str, str]) -> Any:
    async with AsyncClient(transport=ASGITransport(app=app), base_url="http://t") as client:
        return await client.get("/seen", headers=headers)


def test_setup_installs_one_middleware() -> None:
    app = FastAPI()
    setup(app)
    assert [entry.cls for entry in app.user_middleware] == [RequestMiddleware]


async def test_request_id_is_set_and_echoed() -> None:
    response = await _get(_app(), {"X-Request-ID": "abc-1"})
    assert response.json()["id"] == "abc-1"
    assert response.headers["x-request-id"] == "abc-1"
    generated = await _get(_app(), {})
    assert len(generated.headers["x-request-id"]) == 32
    assert generated.json()["id"] == generated.headers["x-request-id"]
    unsafe = await _get(_app(), {"X-Request-ID": "a b"})
    assert unsafe.headers["x-request-id"] != "a b"


async def test_the_apps_own_request_id_header_gives_way_whatever_its_case() -> None:
    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        headers = [(b"X-Request-Id", b"from-the-app"), (b"x-keep", b"1")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": b""})

    transport = ASGITransport(app=RequestMiddleware(raw_app))
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/", headers={"X-Request-ID": "mine"})
    assert response.headers.get_list("x-request-id") == ["mine"]
    assert response.headers["x-keep"] == "1"


async def test_the_apps_own_start_message_is_left_as_it_was() -> None:
    # An app may send one prebuilt message (or a shared response's header list) every time.
    headers = [(b"content-type", b"text/plain")]
    start = {"type": "http.response.start", "status": 200, "headers": headers}

    async def raw_app(scope: Any, receive: Any, send: Any) -> None:
        await send(start)
        await send({"type": "http.response.body", "body": b""})

    transport = ASGITransport(app=RequestMiddleware(raw_app))
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        for request_id in ("one", "two"):
            response = await client.get("/", headers={"X-Request-ID": request_id})
            assert response.headers.get_list("x-request-id") == [request_id]
    assert start == {"type": "http.response.start", "status": 200, "headers": headers}
    assert headers == [(b"content-type", b"text/plain")]


async def test_the_request_id_is_put_back_when_the_request_is_done() -> None:
    # httpx's ASGI transport runs the app in the caller's task, as in-process clients do.
    assert current_request_id() is None
    response = await _get(_app(), {"X-Request-ID": "inner"})
    assert response.json()["id"] == "inner"
    assert current_request_id() is None


async def test_a_sent_position_is_honoured_and_echoed() -> None:
    response = await _get(_app(), {"X-DB-LSN": " 0/16B3748 "})
    assert response.status_code == 200
    assert response.json()["lsn"] == 0x16B3748
    assert response.headers["x-db-lsn"] == "0/16B3748"


async def test_a_malformed_position_is_a_400_with_the_request_id() -> None:
    response = await _get(_app(), {"X-DB-LSN": "nope", "X-Request-ID": "r-1"})
    assert response.status_code == 400
    assert "not a WAL position" in response.json()["detail"]
    assert response.headers["x-request-id"] == "r-1"


def _refuse() -> Any:
    raise AssertionError("commit positions collected although nothing can have one")


async def test_no_position_work_without_replicas_or_a_header(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(request_module, "current_commit_lsns", _refuse)
    response = await _get(_app(), {})
    assert response.status_code == 200
    assert "x-db-lsn" not in response.headers


def _scope(databases: object) -> dict[str, Any]:
    return {"state": {"databases": databases}}


def test_positions_are_collected_only_for_a_database_with_replicas() -> None:
    middleware = RequestMiddleware(app=None)  # type: ignore[arg-type]
    with_replicas = {"main": SimpleNamespace(settings=SimpleNamespace(replicas=["r"]))}
    without = {"main": SimpleNamespace(settings=SimpleNamespace(replicas=None))}
    assert middleware._has_replicas(_scope(with_replicas))
    assert not middleware._has_replicas(_scope(without))
    assert not middleware._has_replicas(_scope({}))
    assert not middleware._has_replicas({})
    other = RequestMiddleware(app=None, database="reference")  # type: ignore[arg-type]
    assert not other._has_replicas(_scope(with_replicas))


def _databases(**safety: dict[str, object]) -> Databases:
    return Databases(
        {
            name: Database(name, DatabaseSettings(url="postgresql+asyncpg://u@h/d", **settings))
            for name, settings in safety.items()
        }
    )


async def _seen_by_the_app(databases: Databases) -> dict[str, Any]:
    """What an app behind the one middleware sees of the safety nets, for one request."""
    seen: dict[str, Any] = {}

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen["request"] = current_request_scope()
        seen["deadline"] = current_deadline()
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        seen.setdefault("statuses", []).append(message.get("status"))

    scope = {"type": "http", "method": "GET", "headers": [], "state": {"databases": databases}}
    await RequestMiddleware(app)(scope, receive, send)
    return seen


async def test_no_safety_net_work_when_every_database_has_them_off(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def refuse(*args: Any) -> Any:
        raise AssertionError("safety-net work for a request although every net is off")

    monkeypatch.setattr(middleware_module, "RequestNets", refuse)
    seen = await _seen_by_the_app(_databases(main={}, reference={"lazy_loads": "allow"}))
    assert seen["request"] is None
    assert seen["deadline"] is None


async def test_the_one_middleware_runs_a_request_in_the_safety_nets_when_one_is_on() -> None:
    seen = await _seen_by_the_app(
        _databases(
            main={"request_timeout": 9.0},
            reference={"request_timeout": 4.0, "max_queries_per_request": 3},
        )
    )
    assert isinstance(seen["request"], RequestScope)
    assert seen["request"].method == "GET"
    assert seen["deadline"].seconds == 4.0  # the smallest REQUEST_TIMEOUT
    leaks = await _seen_by_the_app(_databases(main={"leak_detection_seconds": 30}))
    assert isinstance(leaks["request"], RequestScope)
    assert leaks["deadline"] is None


async def test_what_the_databases_ask_is_worked_out_once_per_databases(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    planned: list[object] = []
    real = request_module.safety_plan

    def counting(settings: Any) -> Any:
        planned.append(settings)
        return real(settings)

    monkeypatch.setattr(request_module, "safety_plan", counting)
    middleware = RequestMiddleware(app=None)  # type: ignore[arg-type]
    first = _databases(main={"request_timeout": 2.0})
    for _ in range(3):
        assert middleware._plan(_scope(first)).safety is not None
    assert len(planned) == 1
    second = _databases(main={})
    assert middleware._plan(_scope(second)).safety is None  # a new lifespan's: planned anew
    assert len(planned) == 2


async def test_a_unit_of_work_registered_twice_commits_once_and_is_left_when_done() -> None:
    sent: list[Any] = []

    async def send(message: Any) -> None:
        sent.append(message)

    uow = FakeUnitOfWork()
    await uow.__aenter__()

    async def app(scope: Any, receive: Any, app_send: Any) -> None:
        scope[middleware_module.OPENED_KEY].append(uow)  # as a provider enters one
        request = Request(scope)
        register_unit_of_work(request, uow)
        register_unit_of_work(request, uow)  # a second provider handing in the same one
        await app_send({"type": "http.response.start", "status": 200, "headers": []})
        await app_send({"type": "http.response.body", "body": b"done"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    await middleware_module.serve_settling(app, {"type": "http"}, receive, send)
    assert uow.commits == 1
    assert not uow.is_open  # left once the app was done
    assert [message["type"] for message in sent] == ["http.response.start", "http.response.body"]
    assert sent[1] == {"type": "http.response.body", "body": b"done"}


async def _serve(
    *units: FakeUnitOfWork, status: int
) -> list[tuple[Any, list[tuple[bool, int, int]]]]:
    """Serve a request whose providers entered and registered ``units``, answering
    ``status``; each message sent, with each unit of work's (sealed, commits, rollbacks) as
    it went out."""
    sent: list[tuple[Any, list[tuple[bool, int, int]]]] = []

    async def send(message: Any) -> None:
        sent.append((message, [(uow._root._sealed, uow.commits, uow.rollbacks) for uow in units]))

    async def app(scope: Any, receive: Any, app_send: Any) -> None:
        for uow in units:
            scope[middleware_module.OPENED_KEY].append(uow)
            register_unit_of_work(Request(scope), uow)
        await app_send({"type": "http.response.start", "status": status, "headers": []})
        await app_send({"type": "http.response.body", "body": b"done"})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    for uow in units:
        await uow.__aenter__()
    await middleware_module.serve_settling(
        app, {"type": "http"}, receive, send, (b"x-request-id", b"r-1")
    )
    return sent


async def test_a_read_only_unit_of_work_is_sealed_before_a_success_starts() -> None:
    # Settled without I/O (nothing to commit, no connection held): sealed, so that a
    # background task opens its own, before the answer starts, which carries the request id.
    uow = FakeUnitOfWork(read_only=True)
    sent = await _serve(uow, status=200)
    assert [states for _, states in sent] == [[(True, 0, 0)], [(True, 0, 0)]]
    assert sent[0][0]["headers"] == [(b"x-request-id", b"r-1")]
    assert not uow.is_open  # left (rolled back, as a read-only one is) once the app was done


async def test_a_read_only_success_takes_no_settling_coroutine(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The path of every documented read: nothing to commit, so the start goes out as the
    # app's send gives it, without the commit machinery (a coroutine per message).
    def no_settling(*args: Any) -> Any:
        raise AssertionError("a read-only success went through the commit path")

    monkeypatch.setattr(middleware_module, "_settled_failing", no_settling)
    sent = await _serve(FakeUnitOfWork(read_only=True), status=200)
    assert [message["type"] for message, _ in sent] == [
        "http.response.start",
        "http.response.body",
    ]


async def test_a_read_only_unit_of_work_is_rolled_back_before_an_error_status_starts() -> None:
    sent = await _serve(FakeUnitOfWork(read_only=True), status=404)
    assert [states for _, states in sent] == [[(True, 0, 1)], [(True, 0, 1)]]


async def test_a_read_write_unit_of_work_beside_a_read_only_one_is_committed_first() -> None:
    sent = await _serve(FakeUnitOfWork(read_only=True), FakeUnitOfWork(), status=201)
    assert [states for _, states in sent] == [[(True, 0, 0), (True, 1, 0)]] * 2


@pytest.mark.parametrize("name", [b"x-request-id", b"_trace", b"^odd", b"1-first"])
def test_with_header_replaces_the_apps_own_of_any_case_and_first_character(name: bytes) -> None:
    # Whatever the name's first character (letters in either case, digits, the token
    # characters without ASCII's lowercase bit), the app's header of that name gives way.
    own = [(b"content-type", b"text/plain"), (name.upper(), b"the app's"), (b"x-keep", b"1")]
    message = {"type": "http.response.start", "status": 200, "headers": own}
    started = middleware_module.with_header(message, (name, b"ours"))
    assert started["headers"] == [
        (b"content-type", b"text/plain"),
        (b"x-keep", b"1"),
        (name, b"ours"),
    ]
    assert message["headers"] is own  # the app's own list is left as it was
    assert len(own) == 3
