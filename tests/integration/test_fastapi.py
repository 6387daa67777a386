"""asyncdal.fastapi with a real server: commit before the response, 5xx on a failed commit,
rollback on errors, and one session per request under concurrency."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

import asyncpg
import pytest
from fastapi import BackgroundTasks, Depends, FastAPI, HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncSession
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from asyncdal import Database, Databases, UnitOfWork, UnitOfWorkError
from asyncdal.fastapi import (
    databases_lifespan,
    read_only_unit_of_work_provider,
    session_provider,
    setup,
    unit_of_work_provider,
)
from tests.conftest import plain
from tests.helpers import app_client

Session = Annotated[AsyncSession, Depends(session_provider())]


@pytest.fixture
async def raw(test_database_url: URL) -> AsyncIterator[asyncpg.Connection]:
    """A plain connection for setting up tables and looking at committed data."""
    connection = await asyncpg.connect(plain(test_database_url.set(drivername="postgresql")))
    await connection.execute(
        """
        CREATE TABLE IF NOT EXISTS parents (id int PRIMARY KEY);
        CREATE TABLE IF NOT EXISTS children (
            id int PRIMARY KEY,
            tag text NOT NULL,
            parent int REFERENCES parents (id) DEFERRABLE INITIALLY DEFERRED
        );
        TRUNCATE children, parents;
        -- A commit that fails for a reason asyncdal has no name for: a 500.
        CREATE OR REPLACE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS
            $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$;
        DROP TRIGGER IF EXISTS children_refused ON children;
        CREATE CONSTRAINT TRIGGER children_refused
            AFTER INSERT ON children DEFERRABLE INITIALLY DEFERRED
            FOR EACH ROW WHEN (NEW.tag = 'refuse') EXECUTE FUNCTION refuse_at_commit();
        """
    )
    try:
        yield connection
    finally:
        await connection.execute(
            "DROP TABLE children; DROP TABLE parents; DROP FUNCTION refuse_at_commit;"
        )
        await connection.close()


def build_app(db: Database) -> FastAPI:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": db})))
    setup(app)

    @app.post("/children/{child_id}", status_code=201)
    async def add_child(
        child_id: int, session: Session, parent: int | None = None, tag: str = "x"
    ) -> dict[str, int]:
        await session.execute(
            text("INSERT INTO children (id, tag, parent) VALUES (:id, :tag, :parent)"),
            {"id": child_id, "tag": tag, "parent": parent},
        )
        return {"id": child_id}

    @app.post("/raise/{child_id}")
    async def add_then_raise(child_id: int, session: Session) -> None:
        await session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, 'x')"), {"id": child_id}
        )
        raise HTTPException(400, "no")

    @app.post("/teapot/{child_id}")
    async def add_then_answer_4xx(child_id: int, session: Session) -> JSONResponse:
        await session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, 'x')"), {"id": child_id}
        )
        return JSONResponse({"detail": "short and stout"}, status_code=418)

    @app.post("/tagged/{tag}")
    async def tagged(
        tag: str, uow: Annotated[UnitOfWork, Depends(unit_of_work_provider())]
    ) -> dict[str, Any]:
        session = uow.session
        child_id = await session.scalar(text("SELECT coalesce(max(id), 0) FROM children")) or 0
        await session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, :tag)"),
            {"id": abs(hash(tag)) % 1_000_000_000, "tag": tag},
        )
        await asyncio.sleep(0.01)  # hold the session while other requests run
        mine = await session.scalar(
            text("SELECT count(*) FROM children WHERE tag = :tag"), {"tag": tag}
        )
        others_uncommitted = await session.scalar(
            text("SELECT count(*) FROM children WHERE tag LIKE 'req-%' AND tag <> :tag"),
            {"tag": tag},
        )
        return {
            "session": id(session),
            "mine": mine,
            "seen_before": child_id,
            "others": others_uncommitted,
        }

    @app.post("/with-background/{child_id}", status_code=202)
    async def with_background(child_id: int, session: Session, tasks: BackgroundTasks) -> None:
        await session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, 'x')"), {"id": child_id}
        )

        async def later() -> None:
            async with db.unit_of_work() as uow:
                assert not uow.joined  # the request's transaction is settled by now
                await uow.session.execute(
                    text("INSERT INTO children (id, tag) VALUES (:id, 'bg')"), {"id": child_id + 1}
                )
                await uow.commit()

        tasks.add_task(later)

    @app.post("/two-providers/{child_id}", status_code=201)
    async def two_providers(
        child_id: int,
        session: Session,
        uow: Annotated[UnitOfWork, Depends(unit_of_work_provider())],
        tasks: BackgroundTasks,
    ) -> None:
        assert uow.session is session  # the second provider joined the first
        await session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, 'x')"), {"id": child_id}
        )
        tasks.add_task(background_insert, db, child_id + 1)

    @app.get("/read-then-background/{child_id}")
    async def read_then_background(
        child_id: int,
        reader: Annotated[UnitOfWork, Depends(read_only_unit_of_work_provider())],
        tasks: BackgroundTasks,
    ) -> int:
        count = await reader.session.scalar(text("SELECT count(*) FROM children"))
        tasks.add_task(background_insert, db, child_id)
        return int(count or 0)

    @app.post("/failing-commit-with-background/{child_id}", status_code=201)
    async def failing_commit_with_background(
        child_id: int, session: Session, tasks: BackgroundTasks
    ) -> None:
        await session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, 'refuse')"), {"id": child_id}
        )
        tasks.add_task(background_insert, db, child_id + 1)

    @app.post("/function-scope/{child_id}", status_code=201)
    async def function_scope(
        child_id: int,
        session: Annotated[AsyncSession, Depends(session_provider(), scope="function")],
    ) -> None:
        await session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, 'x')"), {"id": child_id}
        )

    return app


async def background_insert(db: Database, child_id: int) -> None:
    async with db.unit_of_work() as uow:
        assert not uow.joined
        await uow.session.execute(text("SELECT 1"))
        # Only this task's connection is out: the request's (read-only ones included) went
        # back to the pool when its response started.
        assert db.engine.pool.checkedout() == 1  # type: ignore[attr-defined]
        await uow.session.execute(
            text("INSERT INTO children (id, tag) VALUES (:id, 'bg')"), {"id": child_id}
        )
        await uow.commit()


@pytest.fixture
async def app_db(make_database: Callable[..., Database]) -> Database:
    return make_database(pool_size=5, max_overflow=10)


async def test_commit_happens_before_the_response_starts(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    seen_at_start: list[int] = []

    def observed(app: ASGIApp) -> ASGIApp:
        async def observer(scope: Scope, receive: Receive, send: Send) -> None:
            async def watch(message: Message) -> None:
                if message["type"] == "http.response.start":
                    seen_at_start.append(await raw.fetchval("SELECT count(*) FROM children"))
                await send(message)

            await app(scope, receive, watch)

        return observer

    async with app_client(build_app(app_db), wrap=observed) as client:
        response = await client.post("/children/1")
    assert response.status_code == 201
    assert seen_at_start == [1]


async def test_failed_commit_is_a_500_and_nothing_is_saved(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    async with app_client(build_app(app_db)) as client:
        # The deferred trigger only runs at COMMIT.
        response = await client.post("/children/2", params={"tag": "refuse"})
        assert response.status_code == 500
        assert "could not be committed" in response.json()["detail"]
        assert response.json()["outcome"] == "not_committed"
        assert "X-Request-ID" in response.headers
        assert await raw.fetchval("SELECT count(*) FROM children") == 0
        assert (await client.post("/children/3")).status_code == 201  # the pool is fine after
    assert await raw.fetchval("SELECT count(*) FROM children") == 1


async def test_raised_errors_and_4xx_answers_roll_back(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    async with app_client(build_app(app_db)) as client:
        assert (await client.post("/raise/4")).status_code == 400
        assert (await client.post("/teapot/5")).status_code == 418
    assert await raw.fetchval("SELECT count(*) FROM children") == 0


async def test_fifty_concurrent_requests_each_see_only_their_own_session(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    async with app_client(build_app(app_db)) as client:
        tags = [f"req-{uuid.uuid4().hex[:8]}" for _ in range(50)]
        responses = await asyncio.gather(*(client.post(f"/tagged/{tag}") for tag in tags))
    bodies = [response.json() for response in responses]
    assert [response.status_code for response in responses] == [200] * 50
    assert len({body["session"] for body in bodies}) == 50
    assert all(body["mine"] == 1 for body in bodies)
    # Another request's uncommitted row is never visible; committed ones may be.
    assert await raw.fetchval("SELECT count(*) FROM children WHERE tag LIKE 'req-%'") == 50
    assert app_db.engine.pool.checkedout() == 0  # type: ignore[attr-defined]


async def test_background_task_gets_its_own_committed_transaction(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    async with app_client(build_app(app_db)) as client:
        assert (await client.post("/with-background/10")).status_code == 202
    rows = await raw.fetch("SELECT id, tag FROM children ORDER BY id")
    assert [(row["id"], row["tag"]) for row in rows] == [(10, "x"), (11, "bg")]


async def test_background_task_never_joins_a_settled_request_transaction(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    async with app_client(build_app(app_db)) as client:
        assert (await client.post("/two-providers/20")).status_code == 201
        assert (await client.get("/read-then-background/30")).status_code == 200
    rows = await raw.fetch("SELECT id, tag FROM children ORDER BY id")
    assert [(row["id"], row["tag"]) for row in rows] == [(20, "x"), (21, "bg"), (30, "bg")]


async def test_background_tasks_do_not_run_after_a_failed_commit(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    async with app_client(build_app(app_db)) as client:
        response = await client.post("/failing-commit-with-background/40")
    assert response.status_code == 500
    assert await raw.fetchval("SELECT count(*) FROM children") == 0


async def test_function_scoped_provider_commits_before_the_2xx(
    app_db: Database, raw: asyncpg.Connection
) -> None:
    # Providers are plain dependencies, closed by the middleware: Depends' scope cannot end
    # their unit of work before the response (it once rolled back work answered as done).
    async with app_client(build_app(app_db)) as client:
        response = await client.post("/function-scope/50")
    assert response.status_code == 201
    assert await raw.fetchval("SELECT count(*) FROM children WHERE id = 50") == 1


async def test_missing_middleware_is_a_clear_error(app_db: Database) -> None:
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": app_db})))

    @app.get("/")
    async def index(session: Session) -> None:
        return None

    async with app_client(app) as client:
        with pytest.raises(UnitOfWorkError, match=r"setup\(app\)"):
            await client.get("/")


async def test_failed_commit_on_a_second_database_says_what_was_committed(
    make_database: Callable[..., Database], raw: asyncpg.Connection
) -> None:
    main, audit = make_database(), make_database(name="audit")
    app = FastAPI(lifespan=databases_lifespan(lambda: Databases({"main": main, "audit": audit})))
    setup(app)

    @app.post("/both", status_code=201)
    async def both(
        first: Session,
        second: Annotated[AsyncSession, Depends(session_provider("audit"))],
    ) -> None:
        await first.execute(text("INSERT INTO children (id, tag) VALUES (60, 'main')"))
        await second.execute(text("INSERT INTO children (id, tag) VALUES (61, 'refuse')"))

    async with app_client(app) as client:
        response = await client.post("/both")
    assert response.status_code == 500
    detail = response.json()["detail"]
    assert "'audit' could not be committed" in detail
    assert "'main' already were" in detail
    assert await raw.fetchval("SELECT count(*) FROM children") == 1
