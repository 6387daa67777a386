"""A unit of work spares SQLAlchemy's greenlet what would do nothing: the flush of a clean
session before COMMIT, the second close of a session the FastAPI middleware already closed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Callable
from decimal import Decimal
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from asyncdal import Database
from catalog.models import Product


@pytest.fixture
async def db(make_database: Callable[..., Database]) -> AsyncIterator[Database]:
    database = make_database()
    try:
        yield database
    finally:
        await database.dispose()


def _spy(monkeypatch: pytest.MonkeyPatch, name: str) -> list[AsyncSession]:
    called: list[AsyncSession] = []
    real = getattr(AsyncSession, name)

    async def spying(self: AsyncSession, *args: Any, **kwargs: Any) -> Any:
        called.append(self)
        return await real(self, *args, **kwargs)

    monkeypatch.setattr(AsyncSession, name, spying)
    return called


async def test_commit_flushes_only_a_session_with_changes(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    flushed = _spy(monkeypatch, "flush")
    async with db.unit_of_work() as uow:
        await uow.session.execute(text("SELECT 1"))
        await uow.commit()
    assert flushed == []
    sku = f"uow-{uuid.uuid4().hex[:8]}"
    async with db.unit_of_work() as uow:
        uow.session.add(Product(sku=sku, name="n", price=Decimal(1)))
        await uow.commit()
        assert len(flushed) == 1
        await uow.session.execute(text("DELETE FROM products WHERE sku = :sku"), {"sku": sku})
        await uow.commit()


async def test_leaving_closes_only_a_session_that_holds_something(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    closed = _spy(monkeypatch, "close")
    async with db.unit_of_work() as uow:
        await uow.session.execute(text("SELECT 1"))
        await uow.commit()
        await uow.session.close()  # as the middleware does once the answer is settled
    assert len(closed) == 1
    async with db.unit_of_work() as uow:
        await uow.session.execute(text("SELECT 1"))  # a transaction left open
    assert len(closed) == 2
    assert db.engine.sync_engine.pool.checkedout() == 0  # type: ignore[attr-defined]
