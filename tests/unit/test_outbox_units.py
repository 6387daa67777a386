"""The outbox's own logic without a server: handler signatures, settings, backoff, and the
second pool a Database derives for it."""

from __future__ import annotations

from typing import Any

import pytest

from asyncdal import ConfigurationError, Database, DatabaseSettings, ReadOnlyError, UnitOfWork
from asyncdal.outbox import ANY_EVENT, Handlers, Outbox, OutboxEvent, load_outbox_settings
from asyncdal.outbox._backoff import Backoff


async def takes_payload(payload: dict[str, Any]) -> None: ...


async def takes_event(event: OutboxEvent) -> None: ...


async def takes_uow(data: OutboxEvent, uow: UnitOfWork) -> None: ...


async def takes_database(payload: dict[str, Any], db: Database) -> None: ...


def sync_payload(payload: dict[str, Any]) -> None: ...


class Callable:
    async def __call__(self, event: OutboxEvent) -> None: ...


def test_handler_signatures_decide_what_is_passed() -> None:
    handlers = Handlers(
        {
            "a": takes_payload,
            "b": takes_event,
            "c": takes_uow,
            "d": takes_database,
            "e": sync_payload,
            "f": Callable(),
        }
    )
    summary = {
        key: (spec.wants_event, spec.is_async, spec.access, spec.access_parameter)
        for key, spec in handlers.items()
    }
    assert summary == {
        "a": (False, True, None, None),
        "b": (True, True, None, None),
        "c": (True, True, "uow", "uow"),
        "d": (False, True, "database", "db"),
        "e": (False, False, None, None),
        "f": (True, True, None, None),
    }
    assert handlers.needs_database
    assert handlers.event_types == ["a", "b", "c", "d", "e", "f"]


def test_decorator_and_fallback() -> None:
    handlers = Handlers()

    @handlers.on("x")
    async def x(payload: dict[str, Any]) -> None: ...

    assert handlers.for_type("x") is not None
    assert handlers.for_type("y") is None
    handlers.add(ANY_EVENT, takes_event)
    assert handlers.for_type("y") is handlers[ANY_EVENT]
    assert handlers.event_types is None  # a catch-all handler: claim every type
    assert not handlers.needs_database


def test_bad_handlers_are_refused_at_registration() -> None:
    handlers = Handlers({"x": takes_payload})
    with pytest.raises(ValueError, match="already registered for 'x'"):
        handlers.add("x", takes_event)

    async def no_parameters() -> None: ...

    with pytest.raises(TypeError, match="first parameter"):
        handlers.add("a", no_parameters)

    async def unknown_extra(payload: dict[str, Any], retries: int) -> None: ...

    with pytest.raises(TypeError, match="'retries' is neither database access"):
        handlers.add("b", unknown_extra)

    def sync_with_db(payload: dict[str, Any], uow: UnitOfWork) -> None: ...

    with pytest.raises(TypeError, match="synchronous but asks for database access"):
        handlers.add("c", sync_with_db)

    async def twice(payload: dict[str, Any], uow: UnitOfWork, db: Database) -> None: ...

    with pytest.raises(TypeError, match="twice"):
        handlers.add("d", twice)


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX__BATCH_SIZE", "500")
    monkeypatch.setenv("OUTBOX__CONCURRENCY", "7")
    monkeypatch.setenv("OUTBOX__ORDERED", "true")
    settings = load_outbox_settings()
    assert (settings.batch_size, settings.concurrency, settings.ordered) == (500, 7, True)
    assert settings.effective_handler_pool_size == 7
    assert settings.effective_heartbeat_seconds == pytest.approx(10.0)


def test_bad_settings_name_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX__BATCH_SIZE", "0")
    monkeypatch.setenv("OUTBOX__RELAY_URL", "amqp://u:hunter2@broker/")
    with pytest.raises(ConfigurationError) as caught:
        load_outbox_settings(lease_seconds=1, heartbeat_seconds=2)
    message = str(caught.value)
    assert "OUTBOX__BATCH_SIZE" in message
    assert "hunter2" not in message
    monkeypatch.delenv("OUTBOX__BATCH_SIZE")
    with pytest.raises(ConfigurationError, match="OUTBOX__HEARTBEAT_SECONDS: must be shorter"):
        load_outbox_settings(lease_seconds=1, heartbeat_seconds=2)


def test_backoff_is_jittered_below_a_doubling_ceiling() -> None:
    backoff = Backoff(0.5, 4.0)
    for attempts, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0)]:
        delays = [backoff.delay(attempts) for _ in range(200)]
        assert all(0 <= delay <= ceiling for delay in delays)
        assert max(delays) > ceiling / 2  # spread over the range, not a constant
        assert len(set(delays)) > 100


def test_with_settings_derives_a_second_pool() -> None:
    hooks: list[object] = []
    database = Database(
        "main",
        DatabaseSettings(url="postgresql://app:pw@db/catalog", pool_size=10, command_timeout=5),
    )
    database.add_engine_hook(hooks.append)
    derived = database.with_settings("main:handlers", pool_size=3, application_name="h")
    assert derived is not database
    assert derived.name == "main:handlers"
    assert derived.settings.pool.effective_size == 3
    assert derived.settings.application_name == "h"
    assert derived.settings.timeouts.command == 5
    assert derived.settings.safe_url == database.settings.safe_url
    assert database.settings.pool.effective_size == 10
    assert derived._engine_hooks == database._engine_hooks
    with pytest.raises(ValueError, match="POOL_SIZE"):
        database.with_settings(pool_size=0)


async def test_fake_unit_of_work_records_outbox_events() -> None:
    from asyncdal.testing import FakeUnitOfWork

    uow = FakeUnitOfWork()
    async with uow:
        assert await Outbox.of(uow).add("product.created", {"id": 7}, key=7) == 1
        await uow.commit()
    assert uow.fake_outbox.events == [("product.created", {"id": 7}, "7")]
    with pytest.raises(ReadOnlyError):
        Outbox.of(FakeUnitOfWork(read_only=True))
