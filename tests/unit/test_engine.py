"""Engine construction: pool class and asyncpg arguments follow the settings."""

from __future__ import annotations

import pytest
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool

from asyncdal import DatabaseSettings, connect_arguments, create_engine


async def test_queue_pool_gets_configured_size_and_options() -> None:
    settings = DatabaseSettings(
        url="postgresql://u@h/n",
        pool_size=3,
        max_overflow=2,
        pool_timeout=4,
        pool_recycle=99,
        pre_ping=True,
    )
    engine = create_engine(settings)
    try:
        pool = engine.pool
        assert isinstance(pool, AsyncAdaptedQueuePool)
        assert pool.size() == 3
        assert pool._max_overflow == 2
        assert pool._timeout == 4
        assert pool._recycle == 99
        assert pool._pre_ping is True
    finally:
        await engine.dispose()


async def test_null_pool_when_asked() -> None:
    engine = create_engine(DatabaseSettings(url="postgresql://u@h/n", pool="null"))
    try:
        assert isinstance(engine.pool, NullPool)
    finally:
        await engine.dispose()


async def test_lambda_environment_selects_null_pool(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_LAMBDA_FUNCTION_NAME", "catalog")
    engine = create_engine(DatabaseSettings(url="postgresql://u@h/n"))
    try:
        assert isinstance(engine.pool, NullPool)
    finally:
        await engine.dispose()


def test_connect_arguments_carry_timeouts_and_server_settings() -> None:
    arguments = connect_arguments(
        DatabaseSettings(
            url="postgresql://u@h/n",
            connect_timeout=2,
            command_timeout=7,
            statement_timeout=1.5,
            application_name="shop",
        )
    )
    assert arguments["timeout"] == 2
    assert arguments["command_timeout"] == 7
    assert arguments["server_settings"] == {"application_name": "shop", "statement_timeout": "1500"}


def test_unset_timeouts_are_left_to_the_server() -> None:
    arguments = connect_arguments(DatabaseSettings(url="postgresql://u@h/n"))
    assert "command_timeout" not in arguments
    assert "statement_timeout" not in arguments["server_settings"]
