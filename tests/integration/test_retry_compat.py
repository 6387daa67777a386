"""Connect retries work on SQLAlchemy 2.0 too, whose "await from a greenlet" is ``await_only``."""

from __future__ import annotations

import pytest
import sqlalchemy.util
from sqlalchemy import text

from asyncdal import Database, DatabaseSettings, DatabaseUnavailableError
from asyncdal.testing import spare_port


async def test_connect_retry_backs_off_without_sqlalchemy_21_await(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # SQLAlchemy 2.0 has no sqlalchemy.util.await_ (added in 2.1): the retry's backoff sleep
    # must fall back to await_only, not fail with an ImportError.
    if hasattr(sqlalchemy.util, "await_"):
        monkeypatch.delattr(sqlalchemy.util, "await_")
    db = Database(
        "main",
        DatabaseSettings(
            url=f"postgresql://postgres@127.0.0.1:{spare_port()}/postgres",
            connect_timeout=2,
            retry_attempts=3,
            retry_base_delay=0.01,
            retry_max_delay=0.02,
        ),
    )
    try:
        with pytest.raises(DatabaseUnavailableError, match="could not open a connection"):
            async with db.read_only_unit_of_work() as uow:
                await uow.session.execute(text("SELECT 1"))
    finally:
        await db.dispose()
    assert "attempt 2" in caplog.text  # it did back off and try again
