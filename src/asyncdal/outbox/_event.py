"""``OutboxEvent``: what a handler receives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["OutboxEvent"]


@dataclass(frozen=True, slots=True)
class OutboxEvent:
    """One event, as claimed by a worker.

    Attributes:
        id: the outbox row's id (increasing in insertion order; a consumer's dedup key).
        event_type: e.g. ``product.created``.
        key: the aggregate key (e.g. a product id) or None.
        payload: the JSON payload as written.
        attempts: this delivery's attempt number (1 for the first).
        created_at: when the event's transaction started (the server's ``now()``).
    """

    id: int
    event_type: str
    key: str | None
    payload: dict[str, Any]
    attempts: int
    created_at: datetime
