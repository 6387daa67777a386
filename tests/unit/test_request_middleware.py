"""The one middleware ``setup(app)`` installs: request id, ``X-DB-LSN``, no work for what is off."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from fastapi import FastAPI
from httpx import ASGITransport, AsyncClient

from asyncdal import current_request_id
from asyncdal.fastapi import _request as request_module
from asyncdal.fastapi import setup
from asyncdal.fastapi._request import RequestMiddleware
from asyncdal.replicas._lsn import required_lsn


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
