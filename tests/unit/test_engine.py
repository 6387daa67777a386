"""Engine construction: pool class and asyncpg arguments follow the settings."""

from __future__ import annotations

import pytest
from sqlalchemy.pool import AsyncAdaptedQueuePool, NullPool

from asyncdal import DatabaseSettings, create_engine
from asyncdal.engine._breaker import CircuitBreaker, circuit_breaker
from asyncdal.engine._create import connect_arguments, server_timeouts


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


def test_unset_server_timeouts_are_left_to_the_server() -> None:
    arguments = connect_arguments(DatabaseSettings(url="postgresql://u@h/n"))
    assert "statement_timeout" not in arguments["server_settings"]


def test_command_timeout_is_finite_by_default() -> None:
    # Without it a statement on a connection to a silent server waits for ever.
    arguments = connect_arguments(DatabaseSettings(url="postgresql://u@h/n"))
    assert arguments["command_timeout"] == 30


def test_lock_and_idle_in_transaction_timeouts_are_server_settings() -> None:
    arguments = connect_arguments(
        DatabaseSettings(
            url="postgresql://u@h/n", lock_timeout=0.5, idle_in_transaction_session_timeout=60
        )
    )
    assert arguments["server_settings"] == {
        "application_name": "asyncdal",
        "lock_timeout": "500",
        "idle_in_transaction_session_timeout": "60000",
    }


def test_pooler_mode_sends_no_timeouts_at_startup() -> None:
    settings = DatabaseSettings(
        url="postgresql://u@h/n", pgbouncer=True, lock_timeout=1, statement_timeout=2
    )
    assert connect_arguments(settings)["server_settings"] == {"application_name": "asyncdal"}
    assert server_timeouts(settings) == {"statement_timeout": "2000", "lock_timeout": "1000"}


async def test_every_engine_gets_a_guard_with_the_breaker_and_retry_settings() -> None:
    breaker = CircuitBreaker("main", failure_threshold=2, cool_down=3)
    settings = DatabaseSettings(
        url="postgresql://u@h/n", retry_attempts=4, retry_base_delay=0.1, retry_max_delay=2
    )
    engine = create_engine(settings, breaker=breaker)
    null_engine = create_engine(DatabaseSettings(url="postgresql://u@h/n", pool="null"))
    try:
        assert circuit_breaker(engine) is breaker
        guard = engine.pool.guard  # type: ignore[attr-defined]
        assert (guard.policy.attempts, guard.policy.base_delay, guard.policy.max_delay) == (
            4,
            0.1,
            2,
        )
        assert guard.budget == settings.timeouts.connect
        # A breaker is made from the settings when none is given; it survives recreate().
        own = circuit_breaker(null_engine)
        assert own is not None
        assert own.failure_threshold == 5
        assert circuit_breaker(null_engine) is own
        assert null_engine.pool.recreate().guard is null_engine.pool.guard  # type: ignore[attr-defined]
    finally:
        await engine.dispose()
        await null_engine.dispose()
