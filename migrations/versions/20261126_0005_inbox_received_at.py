"""index the inbox by received_at, for the worker's inbox retention

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-26 12:50:00

"""

from collections.abc import Sequence

from alembic import op

# revision identifiers, used by Alembic.
revision: str = "0005"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Upgrade schema."""
    op.create_index("ix_asyncdal_inbox_received_at", "asyncdal_inbox", ["received_at"])


def downgrade() -> None:
    """Downgrade schema."""
    op.drop_index("ix_asyncdal_inbox_received_at", table_name="asyncdal_inbox")
