"""The transactional outbox: events written with the data, delivered by a crash-safe worker.

- write side: ``await Outbox.of(uow).add("product.created", payload, key=...)`` in any unit of
  work (:class:`Outbox`);
- tables: :func:`outbox_tables` adds them to the application's metadata and migrations;
- handlers: :class:`Handlers` (decorator or mapping); database access from the signature;
- :class:`OutboxWorker`, configured by :class:`OutboxSettings` (``OUTBOX__*``);
- :func:`first_delivery`: the inbox, for exactly-once effects;
- :class:`RabbitRelay`: a handler that publishes to RabbitMQ with publisher confirms;
- :class:`OutboxMetrics`: Prometheus metrics (the ``metrics`` extra);
- ``asyncdal outbox run|dead|requeue|counts``: the command line.
"""

import typing

from asyncdal.outbox._event import OutboxEvent
from asyncdal.outbox._handlers import ANY_EVENT, Handlers, HandlerSpec
from asyncdal.outbox._inbox import first_delivery
from asyncdal.outbox._settings import OutboxSettings, load_outbox_settings, outbox_pools
from asyncdal.outbox._table import INBOX_TABLE, NOTIFY_CHANNEL, OUTBOX_TABLE, outbox_tables
from asyncdal.outbox._writer import Outbox

if typing.TYPE_CHECKING:
    from asyncdal.outbox._metrics import OutboxMetrics
    from asyncdal.outbox._relay import RabbitRelay
    from asyncdal.outbox._worker import OutboxWorker, WorkerStats

# Imported when first used: the relay needs the ``outbox`` extra (aio-pika), the metrics the
# ``metrics`` extra (prometheus-client), and the worker neither (a worker given no metrics
# imports nothing of prometheus-client); the write side needs nothing beyond core.
_LAZY = {
    "OutboxMetrics": "asyncdal.outbox._metrics",
    "OutboxWorker": "asyncdal.outbox._worker",
    "RabbitRelay": "asyncdal.outbox._relay",
    "WorkerStats": "asyncdal.outbox._worker",
}


def __getattr__(name: str) -> typing.Any:
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
    "outbox_pools",
    "outbox_tables",
]
