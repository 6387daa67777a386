"""A small app for the fault tests: reads, writes, a slow endpoint, and a reference database."""

from __future__ import annotations

import asyncio
from typing import Annotated

import asyncpg
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy import text

from asyncdal import Database, Databases, UnitOfWork
from asyncdal.fastapi import (
    databases_lifespan,
    health_router,
    metrics_router,
    read_only_unit_of_work_provider,
    setup,
    unit_of_work_provider,
)
from asyncdal.observe._metrics import DatabaseMetrics

Writer = Annotated[UnitOfWork, Depends(unit_of_work_provider())]
Reader = Annotated[UnitOfWork, Depends(read_only_unit_of_work_provider())]
ReferenceReader = Annotated[UnitOfWork, Depends(read_only_unit_of_work_provider("reference"))]

TABLE = """
CREATE TABLE IF NOT EXISTS fault_items (id serial PRIMARY KEY, tag text NOT NULL);
INSERT INTO fault_items (id, tag) VALUES (0, 'locked') ON CONFLICT DO NOTHING;
"""


async def create_table(dsn: str) -> None:
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute(TABLE)
    finally:
        await connection.close()


def build_app(
    databases: dict[str, Database],
    *,
    metrics: DatabaseMetrics | None = None,
    warm_up: bool = False,
) -> FastAPI:
    app = FastAPI(
        lifespan=databases_lifespan(lambda: Databases(databases), warm_up=warm_up, metrics=metrics)
    )
    setup(app)
    app.include_router(health_router(answer_within=5))
    if metrics is not None:
        app.include_router(metrics_router())
    app.state.inside = asyncio.Event()
    app.state.proceed = asyncio.Event()

    @app.get("/count")
    async def count(uow: Reader) -> dict[str, int]:
        rows = await uow.session.scalar(text("SELECT count(*) FROM fault_items"))
        return {"count": int(rows or 0)}

    @app.post("/items", status_code=201)
    async def add(tag: str, uow: Writer) -> dict[str, int]:
        new_id = await uow.session.scalar(
            text("INSERT INTO fault_items (tag) VALUES (:tag) RETURNING id"), {"tag": tag}
        )
        return {"id": int(new_id or 0)}

    @app.post("/items/held", status_code=201)
    async def add_held(tag: str, uow: Writer, request: Request) -> dict[str, int]:
        """Insert, then wait for the test (which breaks the server meanwhile), then go on."""
        await uow.session.execute(text("INSERT INTO fault_items (tag) VALUES (:tag)"), {"tag": tag})
        request.app.state.inside.set()
        await request.app.state.proceed.wait()
        await uow.session.execute(text("SELECT 1"))
        return {"id": 0}

    @app.get("/count/held")
    async def count_held(uow: Reader, request: Request) -> dict[str, int]:
        """Read, then wait for the test (which ends the session's backend meanwhile)."""
        rows = await uow.session.scalar(text("SELECT count(*) FROM fault_items"))
        request.app.state.inside.set()
        await request.app.state.proceed.wait()
        return {"count": int(rows or 0)}

    @app.post("/items/held-refused")
    async def add_held_refused(tag: str, uow: Writer, request: Request) -> JSONResponse:
        """Insert, wait for the test (which ends the backend), then refuse: a rollback."""
        await uow.session.execute(text("INSERT INTO fault_items (tag) VALUES (:tag)"), {"tag": tag})
        request.app.state.inside.set()
        await request.app.state.proceed.wait()
        return JSONResponse({"detail": "refused after all"}, status_code=409)

    @app.get("/slow")
    async def slow(seconds: float, uow: Reader) -> dict[str, str]:
        await uow.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
        return {"slept": str(seconds)}

    @app.get("/locked")
    async def locked(seconds: float, uow: Writer) -> dict[str, str]:
        """Lock row 0, then sleep on the server while holding the lock."""
        await uow.session.execute(text("SELECT id FROM fault_items WHERE id = 0 FOR UPDATE"))
        await uow.session.execute(text("SELECT pg_sleep(:s)"), {"s": seconds})
        return {"done": "yes"}

    @app.get("/pid")
    async def pid(uow: Reader) -> dict[str, object]:
        settings = await uow.session.execute(
            text(
                "SELECT pg_backend_pid(), current_setting('lock_timeout'), "
                "current_setting('idle_in_transaction_session_timeout'), "
                "current_setting('statement_timeout')"
            )
        )
        backend, lock, idle, statement = settings.one()
        return {"pid": backend, "lock": lock, "idle": idle, "statement": statement}

    @app.get("/broken")
    async def broken(uow: Reader) -> None:
        await uow.session.execute(text("SELECT * FROM no_such_table"))

    @app.post("/items/idle", status_code=201)
    async def add_then_idle(tag: str, seconds: float, uow: Writer) -> dict[str, int]:
        """Insert, then stay idle in the transaction before the middleware commits."""
        await uow.session.execute(text("INSERT INTO fault_items (tag) VALUES (:tag)"), {"tag": tag})
        await asyncio.sleep(seconds)
        return {"id": 0}

    @app.get("/conflict")
    async def conflict(uow: Writer) -> None:
        """Fail as a serialization failure (40001) would, inside an ordinary request."""
        await uow.session.execute(
            text("DO $$ BEGIN RAISE EXCEPTION 'simulated' USING ERRCODE = '40001'; END $$")
        )

    @app.get("/reference")
    async def reference(uow: ReferenceReader) -> dict[str, int]:
        value = await uow.session.scalar(text("SELECT 1"))
        return {"value": int(value or 0)}

    @app.get("/main-only")
    async def main_only(uow: Reader) -> dict[str, int]:
        value = await uow.session.scalar(text("SELECT 1"))
        return {"value": int(value or 0)}

    return app
