"""Request ids: taken from X-Request-ID or generated, echoed, and put into log records."""

from __future__ import annotations

import logging

from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from asyncdal import RequestIdFilter, current_request_id, request_id_scope
from asyncdal.observe._request_id import RequestIdMiddleware


def app_reporting_its_request_id() -> FastAPI:
    app = FastAPI()
    app.add_middleware(RequestIdMiddleware)

    @app.get("/id")
    async def seen() -> dict[str, str | None]:
        return {"seen": current_request_id()}

    return app


async def get_id(headers: dict[str, str]) -> tuple[str | None, str]:
    transport = ASGITransport(app=app_reporting_its_request_id())
    async with AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/id", headers=headers)
    return response.json()["seen"], response.headers["x-request-id"]


async def test_a_sent_id_is_used_and_echoed() -> None:
    assert await get_id({"X-Request-ID": "abc-123.Z"}) == ("abc-123.Z", "abc-123.Z")


async def test_without_a_header_an_id_is_generated_and_echoed() -> None:
    seen, echoed = await get_id({})
    assert seen == echoed
    assert seen is not None
    assert len(seen) == 32
    other, _ = await get_id({})
    assert other != seen


async def test_an_id_that_is_not_a_plain_token_is_replaced() -> None:
    for unsafe in ["a'; DROP TABLE products; --", "x" * 129, "tab\there"]:
        seen, echoed = await get_id({"X-Request-ID": unsafe})
        assert seen == echoed
        assert seen != unsafe
        assert seen is not None
        assert len(seen) == 32


async def test_outside_a_request_there_is_no_id() -> None:
    await get_id({"X-Request-ID": "inside"})
    assert current_request_id() is None


def test_scope_sets_and_restores_the_id() -> None:
    with request_id_scope("job-7") as outer:
        assert outer == "job-7"
        with request_id_scope() as inner:
            assert current_request_id() == inner != "job-7"
        assert current_request_id() == "job-7"
    assert current_request_id() is None


def test_filter_adds_the_id_only_when_set() -> None:
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "hello", None, None)
    assert RequestIdFilter().filter(record)
    assert not hasattr(record, "request_id")
    with request_id_scope("req-1"):
        assert RequestIdFilter().filter(record)
    assert record.request_id == "req-1"


def test_the_application_name_keeps_the_whole_request_id_where_it_fits() -> None:
    from asyncdal.engine._request_tags import _application_name

    traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    assert _application_name("catalog", "r-1") == "catalog:r-1"
    tagged = _application_name("a-rather-long-application-name", traceparent)
    assert tagged.endswith(":" + traceparent)
    assert len(tagged.encode()) == 63
    assert _application_name("app", "x" * 100) == "x" * 63
