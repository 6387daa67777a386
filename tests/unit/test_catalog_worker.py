"""The catalog worker's handlers follow the settings: the RabbitMQ relay, or a logger."""

from __future__ import annotations

import pytest

from asyncdal.outbox import ANY_EVENT, RabbitRelay
from catalog.worker import PRODUCT_EVENTS, build_handlers


def test_without_a_broker_product_events_are_logged(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OUTBOX__RELAY_URL", raising=False)
    handlers = build_handlers()
    assert sorted(handlers) == sorted(PRODUCT_EVENTS)
    assert not handlers.needs_database


def test_with_a_broker_every_event_is_relayed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OUTBOX__RELAY_URL", "amqp://guest:guest@127.0.0.1:5672/")
    monkeypatch.setenv("OUTBOX__RELAY_EXCHANGE", "catalog.events")
    handlers = build_handlers()
    assert list(handlers) == [ANY_EVENT]
    relay = handlers[ANY_EVENT].function
    assert isinstance(relay, RabbitRelay)
    assert relay.exchange_name == "catalog.events"
    assert "guest" not in repr(relay)
