"""create the outbox and inbox tables

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 11:40:00

"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# revision identifiers, used by Alembic.
revision: str = "0004"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_table(
        "asyncdal_outbox",
        sa.Column("id", sa.BigInteger(), sa.Identity(always=False), nullable=False),
        sa.Column("event_type", sa.Text(), nullable=False),
        sa.Column("key", sa.Text(), nullable=True),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.Text(), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column(
            "available_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("lease_owner", sa.Text(), nullable=True),
        sa.Column("lease_token", sa.Uuid(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("done_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "status IN ('pending', 'leased', 'done', 'dead')",
            name="ck_asyncdal_outbox_status",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_asyncdal_outbox"),
    )
    op.create_index(
        "ix_asyncdal_outbox_pending",
        "asyncdal_outbox",
        ["id"],
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_asyncdal_outbox_leased",
        "asyncdal_outbox",
        ["lease_expires_at"],
        postgresql_where=sa.text("status = 'leased'"),
    )
    op.create_index(
        "ix_asyncdal_outbox_key_unfinished",
        "asyncdal_outbox",
        ["key", "id"],
        postgresql_where=sa.text("status IN ('pending', 'leased')"),
    )
    op.create_index(
        "ix_asyncdal_outbox_done",
        "asyncdal_outbox",
        ["done_at"],
        postgresql_where=sa.text("status = 'done'"),
    )
    op.create_table(
        "asyncdal_inbox",
        sa.Column("consumer", sa.Text(), nullable=False),
        sa.Column("event_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "received_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("consumer", "event_id", name="pk_asyncdal_inbox"),
    )


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_table("asyncdal_inbox")
    op.drop_index("ix_asyncdal_outbox_done", table_name="asyncdal_outbox")
    op.drop_index("ix_asyncdal_outbox_key_unfinished", table_name="asyncdal_outbox")
    op.drop_index("ix_asyncdal_outbox_leased", table_name="asyncdal_outbox")
    op.drop_index("ix_asyncdal_outbox_pending", table_name="asyncdal_outbox")
    op.drop_table("asyncdal_outbox")
