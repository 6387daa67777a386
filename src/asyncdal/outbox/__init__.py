"""The transactional outbox: events written with the data, delivered by a crash-safe worker.

- write side: ``await uow.outbox.add("product.created", payload, key=...)`` in any unit of work
  (:class:`~asyncdal.outbox.writer.Outbox`);
- tables: :func:`outbox_tables` adds them to the application's metadata and migrations;
- handlers: :class:`Handlers` (decorator or mapping); database access from the signature;
- :class:`OutboxWorker`, configured by :class:`OutboxSettings` (``OUTBOX__*``);
- :func:`first_delivery`: the inbox, for exactly-once effects;
- :class:`RabbitRelay`: a handler that publishes to RabbitMQ with publisher confirms;
- :class:`OutboxMetrics`: Prometheus metrics;
- ``asyncdal outbox run|dead|requeue|counts``: the command line.
"""

from typing import TYPE_CHECKING, Any

from asyncdal.outbox.event import OutboxEvent
from asyncdal.outbox.handlers import ANY_EVENT, Handlers, HandlerSpec
from asyncdal.outbox.inbox import first_delivery
from asyncdal.outbox.settings import OutboxSettings, load_outbox_settings
from asyncdal.outbox.table import INBOX_TABLE, NOTIFY_CHANNEL, OUTBOX_TABLE, outbox_tables
from asyncdal.outbox.writer import Outbox

if TYPE_CHECKING:
    from asyncdal.outbox.metrics import OutboxMetrics
    from asyncdal.outbox.relay import RabbitRelay
    from asyncdal.outbox.worker import OutboxWorker, WorkerStats

# The worker, metrics and relay need the ``outbox`` extra (tenacity, prometheus-client,
# aio-pika); they are imported when first used, so the write side needs nothing beyond core.
_LAZY = {
    "OutboxMetrics": "asyncdal.outbox.metrics",
    "OutboxWorker": "asyncdal.outbox.worker",
    "RabbitRelay": "asyncdal.outbox.relay",
    "WorkerStats": "asyncdal.outbox.worker",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'asyncdal.outbox' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)


__all__ = [
    "ANY_EVENT",
    "INBOX_TABLE",
    "NOTIFY_CHANNEL",
    "OUTBOX_TABLE",
    "HandlerSpec",
    "Handlers",
    "Outbox",
    "OutboxEvent",
    "OutboxMetrics",
    "OutboxSettings",
    "OutboxWorker",
    "RabbitRelay",
    "WorkerStats",
    "first_delivery",
    "load_outbox_settings",
    "outbox_tables",
]
