"""A deadline through a real PgBouncer in transaction mode: ``SET LOCAL statement_timeout``
from the time left stops the statement on the server (with the cancel request, and without it),
nothing is left running, and the next transaction on the same server connection has the
server's own ``statement_timeout`` (PgBouncer runs no reset query in transaction mode: a plain
``SET`` would have stayed on the server connection for the next client)."""

from __future__ import annotations

import time
from collections.abc import Iterator

import asyncpg
import pytest
from sqlalchemy import text
from sqlalchemy.engine import URL

from asyncdal import Database, DatabaseSettings, DeadlineExceededError, deadline
from asyncdal.engine._cancel import ServerCancel
from tests.conftest import plain

_BUDGET = 1.5


@pytest.fixture(scope="module")
def one_server_connection(server_url: str) -> Iterator[int]:
    """A PgBouncer with one server connection: every transaction through it runs on the same
    backend. Yields its port."""
    from asyncdal.testing import run_pgbouncer

    with run_pgbouncer(server_url, pool_size=1) as port:
        yield port


async def _backend(url: URL, pid: int) -> tuple[str | None, str | None]:
    """The state and query of backend ``pid``, asked of the server itself."""
    connection = await asyncpg.connect(plain(url.set(drivername="postgresql")))
    try:
        row = await connection.fetchrow(
            "SELECT state, query FROM pg_stat_activity WHERE pid = $1", pid
        )
    finally:
        await connection.close()
    assert row is not None, f"backend {pid} is gone"
    return row["state"], row["query"]


@pytest.mark.parametrize(
    ("cancel", "read_only", "statement_timeout"),
    [
        pytest.param(True, False, None, id="with-cancel"),
        pytest.param(False, False, None, id="statement-timeout-alone"),
        # Pooler mode reads in a read-only transaction (so that SET LOCAL applies), and sets
        # STATEMENT_TIMEOUT with SET LOCAL at each BEGIN: the deadline's comes after it.
        pytest.param(False, True, None, id="read-only-statement-timeout-alone"),
        pytest.param(False, False, 20.0, id="under-the-apps-own-statement-timeout"),
    ],
)
async def test_a_deadline_through_pgbouncer_stops_the_statement_and_leaves_it_clean(
    one_server_connection: int,
    test_database_url: URL,
    monkeypatch: pytest.MonkeyPatch,
    cancel: bool,
    read_only: bool,
    statement_timeout: float | None,
) -> None:
    if not cancel:
        # Only statement_timeout, set through the pooler, can then stop it within the budget.
        monkeypatch.setattr(ServerCancel, "request", lambda self, driver_connection: None)
    url = plain(test_database_url.set(host="127.0.0.1", port=one_server_connection))
    db = Database(
        "main", DatabaseSettings(url=url, pgbouncer=True, statement_timeout=statement_timeout)
    )
    try:
        async with db.unit_of_work() as uow:
            pid = await uow.session.scalar(text("SELECT pg_backend_pid()"))
            default = await uow.session.scalar(text("SHOW statement_timeout"))
        started = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="server cancelled"):
            async with deadline(_BUDGET):
                uow = db.read_only_unit_of_work() if read_only else db.unit_of_work()
                async with uow:
                    await uow.session.execute(text("SELECT pg_sleep(30)"))
        # Promptly: not after the grace the task gets before it is cancelled (2 s more).
        assert time.monotonic() - started < _BUDGET + 1.5
        state, query = await _backend(test_database_url, pid)
        assert state == "idle", (state, query)  # not running, not left in a transaction
        async with db.unit_of_work() as uow:
            assert await uow.session.scalar(text("SELECT pg_backend_pid()")) == pid
            assert await uow.session.scalar(text("SHOW statement_timeout")) == default
        # A transaction that commits keeps its plain SETs: only SET LOCAL ends with it.
        async with deadline(5), db.unit_of_work() as uow:
            assert await uow.session.scalar(text("SHOW statement_timeout")) != default
            await uow.commit()
        async with db.unit_of_work() as uow:
            assert await uow.session.scalar(text("SELECT pg_backend_pid()")) == pid
            assert await uow.session.scalar(text("SHOW statement_timeout")) == default
    finally:
        await db.dispose()
