"""UnitOfWork logic with a recording fake session: commit, rollback, join, task isolation."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from asyncdal import ReadOnlyError, UnitOfWork, UnitOfWorkError, current_unit_of_work


class RecordingSession:
    """Stands in for AsyncSession: records what the unit of work asked of it."""

    def __init__(self, calls: list[str]) -> None:
        self.calls = calls
        self.info: dict[str, object] = {}

    async def commit(self) -> None:
        self.calls.append("commit")

    async def rollback(self) -> None:
        self.calls.append("rollback")

    async def flush(self) -> None:
        self.calls.append("flush")

    async def close(self) -> None:
        self.calls.append("close")


class Db:
    """A database identity with a session factory that counts sessions."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self.sessions = 0

    def factory(self) -> Any:
        self.sessions += 1
        return RecordingSession(self.calls)

    def uow(self, *, read_only: bool = False) -> UnitOfWork:
        return UnitOfWork(self, self.factory, read_only=read_only)


async def test_commit_then_close() -> None:
    db = Db()
    async with db.uow() as uow:
        await uow.commit()
    # Flushed before COMMIT, so that only a failure of COMMIT itself is "outcome unknown".
    assert db.calls == ["flush", "commit", "close"]


async def test_leaving_without_commit_closes_which_rolls_back() -> None:
    db = Db()
    async with db.uow():
        pass
    assert db.calls == ["close"]


async def test_exception_closes_and_propagates() -> None:
    db = Db()
    with pytest.raises(KeyError):
        async with db.uow():
            raise KeyError("boom")
    assert db.calls == ["close"]


async def test_nested_unit_of_work_joins_and_only_outer_commits() -> None:
    db = Db()
    async with db.uow() as outer:
        async with db.uow() as inner:
            assert inner.joined
            assert inner.session is outer.session
            await inner.commit()
        assert current_unit_of_work(db) is outer
        await outer.commit()
    assert db.sessions == 1
    assert db.calls == ["flush", "flush", "commit", "close"]  # inner flushes, outer commits


async def test_failed_inner_unit_of_work_poisons_the_outer_commit() -> None:
    db = Db()
    with pytest.raises(UnitOfWorkError, match="rolled back"):
        async with db.uow() as outer:
            with pytest.raises(ValueError, match="inner"):
                async with db.uow():
                    raise ValueError("inner")
            await outer.commit()
    assert "commit" not in db.calls


async def test_other_database_does_not_join() -> None:
    first, second = Db(), Db()
    async with first.uow(), second.uow() as other:
        assert not other.joined
    assert first.sessions == second.sessions == 1


async def test_child_task_never_joins_its_parents_unit_of_work() -> None:
    db = Db()
    async with db.uow() as outer:

        async def child() -> bool:
            async with db.uow() as inner:
                return inner.joined or inner.session is outer.session

        assert await asyncio.create_task(child()) is False
    assert db.sessions == 2


async def test_concurrent_tasks_each_get_their_own_session() -> None:
    db = Db()

    async def work() -> int:
        async with db.uow() as uow:
            await asyncio.sleep(0)
            return id(uow.session)

    sessions = await asyncio.gather(*(work() for _ in range(10)))
    assert len(set(sessions)) == 10


async def test_read_only_cannot_commit_and_writable_cannot_nest_inside_it() -> None:
    db = Db()
    async with db.uow(read_only=True) as uow:
        with pytest.raises(ReadOnlyError):
            await uow.commit()
        with pytest.raises(UnitOfWorkError, match="read-only"):
            async with db.uow():
                pass


async def test_read_only_inside_writable_joins_it() -> None:
    db = Db()
    async with db.uow() as outer, db.uow(read_only=True) as reader:
        assert reader.session is outer.session


async def test_session_outside_the_block_is_an_error() -> None:
    db = Db()
    uow = db.uow()
    with pytest.raises(UnitOfWorkError, match="not open"):
        _ = uow.session
    async with uow:
        pass
    with pytest.raises(UnitOfWorkError):
        _ = uow.session
    with pytest.raises(UnitOfWorkError, match="only once"):
        async with uow:
            pass


async def test_repository_is_cached_per_unit_of_work() -> None:
    db = Db()

    class Repo:
        def __init__(self, session: Any) -> None:
            self.session = session

    async with db.uow() as outer:
        first = outer.repository(Repo)
        async with db.uow() as inner:
            assert inner.repository(Repo) is first
    async with db.uow() as another:
        assert another.repository(Repo) is not first


class FailingCommitSession(RecordingSession):
    def __init__(self, calls: list[str], error: Exception) -> None:
        super().__init__(calls)
        self.error = error

    async def commit(self) -> None:
        self.calls.append("commit")
        raise self.error


async def test_connection_lost_during_commit_is_outcome_unknown() -> None:
    from asyncdal import CommitOutcomeUnknownError

    calls: list[str] = []
    lost = ConnectionResetError("reset by peer")
    uow = UnitOfWork(Db(), lambda: FailingCommitSession(calls, lost))  # type: ignore[arg-type, return-value]
    async with uow:
        with pytest.raises(CommitOutcomeUnknownError, match="may or may not") as raised:
            await uow.commit()
    assert raised.value.__cause__ is lost
    assert calls == ["flush", "commit", "close"]  # tried once, never again


async def test_other_commit_failures_propagate_unchanged() -> None:
    calls: list[str] = []
    refused = ValueError("deferred constraint violated")
    uow = UnitOfWork(Db(), lambda: FailingCommitSession(calls, refused))  # type: ignore[arg-type, return-value]
    async with uow:
        with pytest.raises(ValueError, match="deferred") as raised:
            await uow.commit()
    assert raised.value is refused


async def test_a_session_is_what_its_async_sessionmaker_makes_configured_as_it_is_now() -> None:
    from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker, create_async_engine
    from sqlalchemy.orm import Session

    class Quick(Session):
        pass

    engine = create_async_engine("postgresql+asyncpg://u@127.0.0.1/d")
    maker = async_sessionmaker(
        engine, expire_on_commit=False, sync_session_class=Quick, info={"kind": "quick"}
    )
    db = Db()
    async with UnitOfWork(db, maker) as uow:
        session = uow.session
        assert type(session) is AsyncSession
        assert type(session.sync_session) is Quick
        assert session.bind is engine
        assert not session.sync_session.expire_on_commit
        assert session.info == {"kind": "quick"}
    maker.configure(info={"kind": "changed"}, autoflush=False)
    async with UnitOfWork(db, maker) as uow:
        assert uow.session.info == {"kind": "changed"}
        assert not uow.session.sync_session.autoflush

    class Counting(async_sessionmaker[AsyncSession]):
        made = 0

        def __call__(self, **local_kw: Any) -> AsyncSession:
            Counting.made += 1
            return super().__call__(**local_kw)

    async with UnitOfWork(db, Counting(engine)) as uow:
        assert type(uow.session) is AsyncSession
    assert Counting.made == 1  # a maker of its own kind makes its sessions itself
    await engine.dispose()
