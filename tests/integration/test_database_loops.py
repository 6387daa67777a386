"""A Database used from several event loops: one set of session classes whatever the loops, and
the connections of a loop closed without dispose() closed at once (asyncio and uvloop)."""

from __future__ import annotations

import asyncio
import gc
import threading
import uuid
import warnings
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pytest
import uvloop
from sqlalchemy import text
from sqlalchemy.orm import Session

from asyncdal import Database
from tests.helpers import wait_until
from tests.integration.conftest import BackendCounter

MakeDatabase = Callable[..., Database]


async def settled(backends: BackendCounter, name: str, expected: int) -> None:
    """Wait until ``name`` has ``expected`` backends on the server."""

    async def reached() -> bool:
        return await backends(name) == expected

    await wait_until(reached, timeout=10, message=f"{name} never had {expected} backends")


T = TypeVar("T")

# Every session event asyncdal listens to.
LISTENED = ("after_begin", "after_commit", "after_rollback", "do_orm_execute", "before_flush")


def listeners(session_class: type[Session]) -> dict[str, int]:
    """The listeners a session of ``session_class`` has, by event (its class's and bases')."""
    session = session_class()
    try:
        return {name: len(getattr(session.dispatch, name)) for name in LISTENED}
    finally:
        session.close()


def in_new_loops(work: Callable[[], Awaitable[T]], count: int) -> list[T]:
    """Run ``work`` in ``count`` new event loops, each in a thread of its own and closed after
    (``asyncio.run``), one after another; re-raise the first error."""
    results: list[T] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            results.append(asyncio.run(work()))  # type: ignore[arg-type]
        except BaseException as error:  # reported below
            errors.append(error)

    for _ in range(count):
        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        if errors:
            raise errors[0]
    return results


async def use_every_kind_of_session(db: Database, insert: str) -> tuple[type[Session], ...]:
    """Write, read in autocommit and read in a snapshot; the three session classes used."""
    async with db.unit_of_work() as uow:
        await uow.session.execute(text(insert), {"key": uuid.uuid4().int % 1_000_000_000})
        writer = type(uow.session.sync_session)
        await uow.commit()
        lsn = uow.commit_lsn
    async with db.read_only_unit_of_work() as uow:
        assert await uow.session.scalar(text("SELECT 1")) == 1
        quick = type(uow.session.sync_session)
    async with db.read_only_unit_of_work(snapshot=True) as uow:
        assert await uow.session.scalar(text("SHOW transaction_read_only")) == "on"
        reader = type(uow.session.sync_session)
    if db.settings.replicas:
        assert lsn is not None, "the commit position was not read in this loop"
    return writer, quick, reader


async def in_a_loop_of_its_own(db: Database, insert: str) -> tuple[type[Session], ...]:
    """:func:`use_every_kind_of_session`, then stop this loop's replica check, as dispose()
    would: asyncio.run would cancel it, maybe in the middle of a statement, whose cancel
    request to the server could then outlive the loop (and leave its socket to the garbage
    collector, which warns)."""
    classes = await use_every_kind_of_session(db, insert)
    monitor = db._bound().monitor
    if monitor is not None:
        await monitor.stop()
    return classes


async def check_classes_stay_the_same(db: Database, insert: str) -> None:
    first = await use_every_kind_of_session(db, insert)
    before = [listeners(session_class) for session_class in first]
    assert any(sum(counts.values()) for counts in before)  # something to count

    for classes in in_new_loops(lambda: in_a_loop_of_its_own(db, insert), 3):
        assert classes == first, "a new event loop got session classes of its own"
    assert [listeners(session_class) for session_class in first] == before
    assert await use_every_kind_of_session(db, insert) == first  # the first loop still works


async def test_session_classes_are_built_once_whatever_the_event_loops(
    make_database: MakeDatabase,
) -> None:
    # pgbouncer mode: the classes carry SET LOCAL timeouts too (plain PostgreSQL takes them).
    db = make_database(pool_size=2, pgbouncer=True, statement_timeout=5)
    try:
        await check_classes_stay_the_same(
            db,
            "INSERT INTO products (sku, name, price) "
            "VALUES ('loops-' || CAST(:key AS bigint), 'x', 1)",
        )
    finally:
        async with db.unit_of_work() as uow:  # other tests list the products
            await uow.session.execute(text("DELETE FROM products WHERE sku LIKE 'loops-%'"))
            await uow.commit()
        await db.dispose()


async def test_routing_session_classes_are_built_once_whatever_the_event_loops(
    routed: Callable[..., Database],
) -> None:
    db = routed(pool_size=2)
    await check_classes_stay_the_same(db, "INSERT INTO items VALUES (:key, 'loops')")


def collect_earlier_garbage() -> None:
    """Collect what earlier tests left, quietly: this test answers only for its own."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        gc.collect()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def warm_up_in_a_loop_closed_without_dispose(
    db: Database, new_loop: Callable[[], asyncio.AbstractEventLoop]
) -> list[str]:
    """Open ``db``'s pool in a new loop in a thread, then close that loop; what closing warned."""
    warned: list[str] = []
    errors: list[BaseException] = []

    def run() -> None:
        loop = new_loop()
        try:
            loop.run_until_complete(db.warm_up())
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                loop.close()
            warned.extend(f"{w.category.__name__}: {w.message}" for w in caught)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return warned


@pytest.mark.parametrize("loop_kind", list(LOOPS))
@pytest.mark.parametrize("trigger", ["next use", "dispose"])
async def test_the_connections_of_a_closed_loop_are_closed_at_once(
    make_database: MakeDatabase, backends: BackendCounter, loop_kind: str, trigger: str
) -> None:
    collect_earlier_garbage()
    db = make_database(pool_size=3)
    name = db.settings.application_name
    warned = warm_up_in_a_loop_closed_without_dispose(db, LOOPS[loop_kind])
    if loop_kind == "uvloop":
        # uvloop closes a loop's sockets itself when the loop closes, and warns that it does,
        # before asyncdal can act; the backends end on their own.
        assert warned
        assert all("ResourceWarning: unclosed resource" in w for w in warned)
        await settled(backends, name, 0)
    else:
        # asyncio leaves them open: without asyncdal they would wait for garbage collection.
        assert warned == []
        assert await backends(name) == 3
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            if trigger == "next use":  # the database is used from another loop
                async with db.read_only_unit_of_work() as uow:
                    assert await uow.session.scalar(text("SELECT 1")) == 1
                expected = 1  # this loop's own connection, back in its pool
            else:
                await db.dispose()
                expected = 0
            await settled(backends, name, expected)
            gc.collect()  # what is left of the closed loop's connections goes without a word
        assert [f"{w.category.__name__}: {w.message}" for w in caught] == []
    finally:
        await db.dispose()
    await settled(backends, name, 0)


async def test_a_closed_loop_checked_out_connection_is_closed_too(
    make_database: MakeDatabase, backends: BackendCounter
) -> None:
    # A loop closed in the middle of a unit of work (its connection checked out, never
    # returned): the connection is found through the pool's events, not the idle queue.
    collect_earlier_garbage()
    db = make_database(pool_size=2)
    name = db.settings.application_name
    held: list[Any] = []

    async def hold_one() -> None:
        uow = db.unit_of_work()
        session = (await uow.__aenter__()).session
        await session.execute(text("SELECT 1"))
        held.append(uow)  # never left

    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(hold_one(),))
    thread.start()
    thread.join()
    loop.close()
    assert await backends(name) == 1
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            await db.dispose()
            await settled(backends, name, 0)
        assert [str(w.message) for w in caught] == []
    finally:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            held.clear()
            gc.collect()
    # The unit of work was never left: SQLAlchemy says so when it collects its session's
    # connection, and nothing else (asyncpg's connection and its socket are closed already).
    assert all("non-checked-in connection" in str(w.message) for w in caught), caught
