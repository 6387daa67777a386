"""The outbox and inbox tables, added to an application's ``MetaData``.

The tables live in the application's own database (the outbox must commit with the data), so
they join the application's metadata and its migrations rather than owning a metadata here:

    >>> class Base(DeclarativeBase): ...
    >>> outbox, inbox = outbox_tables(Base.metadata)

The worker and the writer use these names in hand-written SQL, so the names are fixed.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    Table,
    Text,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB

__all__ = ["EVENT_STATUSES", "INBOX_TABLE", "NOTIFY_CHANNEL", "OUTBOX_TABLE", "outbox_tables"]

OUTBOX_TABLE = "asyncdal_outbox"
"""The table events are written to, in the same transaction as the data."""
INBOX_TABLE = "asyncdal_inbox"
"""The table :func:`first_delivery` records handled events in."""
NOTIFY_CHANNEL = "asyncdal_outbox"
"""The channel the writer notifies on insert and idle workers listen on."""
EVENT_STATUSES = ("pending", "leased", "done", "dead")


def outbox_tables(metadata: MetaData) -> tuple[Table, Table]:
    """Add the outbox and inbox tables to ``metadata`` (once) and return them.

    Args:
        metadata: the application's metadata, whose migrations create the tables.

    Returns:
        ``(outbox, inbox)``.
    """
    if OUTBOX_TABLE in metadata.tables:
        return metadata.tables[OUTBOX_TABLE], metadata.tables[INBOX_TABLE]
    statuses = ", ".join(f"'{status}'" for status in EVENT_STATUSES)
    outbox = Table(
        OUTBOX_TABLE,
        metadata,
        Column("id", BigInteger, Identity(), nullable=False),
        Column("event_type", Text, nullable=False),
        Column("key", Text, nullable=True),
        Column("payload", JSONB, nullable=False),
        Column("status", Text, nullable=False, server_default=text("'pending'")),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("available_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("lease_owner", Text, nullable=True),
        Column("lease_token", Uuid, nullable=True),
        Column("lease_expires_at", DateTime(timezone=True), nullable=True),
        Column("last_error", Text, nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("done_at", DateTime(timezone=True), nullable=True),
        PrimaryKeyConstraint("id", name=f"pk_{OUTBOX_TABLE}"),
        CheckConstraint(f"status IN ({statuses})", name=f"ck_{OUTBOX_TABLE}_status"),
        # What a claim reads: pending events in id order; small, as settled rows leave it.
        Index(f"ix_{OUTBOX_TABLE}_pending", "id", postgresql_where=text("status = 'pending'")),
        Index(
            f"ix_{OUTBOX_TABLE}_leased",
            "lease_expires_at",
            postgresql_where=text("status = 'leased'"),
        ),
        # Per-key ordering looks for an earlier unfinished event of the same key.
        Index(
            f"ix_{OUTBOX_TABLE}_key_unfinished",
            "key",
            "id",
            postgresql_where=text("status IN ('pending', 'leased')"),
        ),
        Index(f"ix_{OUTBOX_TABLE}_done", "done_at", postgresql_where=text("status = 'done'")),
    )
    inbox = Table(
        INBOX_TABLE,
        metadata,
        Column("consumer", Text, nullable=False),
        Column("event_id", BigInteger, nullable=False),
        Column("received_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("consumer", "event_id", name=f"pk_{INBOX_TABLE}"),
        # What the worker's inbox retention deletes by.
        Index(f"ix_{INBOX_TABLE}_received_at", "received_at"),
    )
    return outbox, inbox
