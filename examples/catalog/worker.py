"""``make worker``: the catalog's outbox worker.

It delivers ``product.created`` / ``product.updated`` / ``product.deleted``: to RabbitMQ
through the relay when ``OUTBOX__RELAY_URL`` is set (topic exchange ``OUTBOX__RELAY_EXCHANGE``,
routing key = event type), else to a handler that logs them. Database settings are the app's;
without any, the embedded server of ``make run`` is started (and migrated) as for the app.

Run it as ``python -m catalog.worker`` (extra arguments go to ``asyncdal outbox run``), or
``asyncdal outbox run --handlers catalog.worker:build_handlers`` against a configured database.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from asyncdal.outbox import ANY_EVENT, Handlers, OutboxEvent, RabbitRelay, load_outbox_settings

__all__ = ["PRODUCT_EVENTS", "build_handlers", "main"]

logger = logging.getLogger("catalog.worker")
PRODUCT_EVENTS = ("product.created", "product.updated", "product.deleted")


async def log_product_event(event: OutboxEvent) -> None:
    """Log a product event (the stand-in consumer when no broker is configured)."""
    payload: dict[str, Any] = event.payload
    logger.info("%s: product %s", event.event_type, payload.get("id"), extra={"event_id": event.id})


def build_handlers() -> Handlers:
    """The catalog's handlers, from ``OUTBOX__*`` settings: the relay, or the logger."""
    settings = load_outbox_settings()
    if settings.relay_url is not None:
        relay = RabbitRelay(settings.relay_url.get_secret_value(), settings.relay_exchange)
        return Handlers({ANY_EVENT: relay})
    return Handlers({event_type: log_product_event for event_type in PRODUCT_EVENTS})


def main(argv: list[str] | None = None) -> int:
    """Prepare the database like ``make run`` does, then run the worker until SIGTERM."""
    from asyncdal.ops._cli import main as asyncdal_main
    from catalog.devserver import prepare_database

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("catalog").setLevel(logging.INFO)
    prepare_database()
    arguments = sys.argv[1:] if argv is None else argv
    command = ["outbox", "run", "--handlers", "catalog.worker:build_handlers"]
    return asyncdal_main([*command, "--log-module", "catalog", *arguments])


if __name__ == "__main__":
    raise SystemExit(main())
