"""Create the order_sync_outbox table and its indexes.

Revision ID: 0001
Revises:
Create Date: 2026-11-27
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

PENDING = sa.text("published_at IS NULL")


def upgrade() -> None:
    # Spelled out rather than imported from worker.outbox.table: a revision must keep creating
    # the schema it was written for, whatever the table module looks like later.
    op.create_table(
        "order_sync_outbox",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("event_id", sa.Text(), nullable=False),
        sa.Column("order_id", sa.Integer(), nullable=False),
        sa.Column("occurred_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("changes", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("published_at", sa.DateTime(timezone=True)),
        sa.Column("attempts", sa.Integer(), nullable=False, server_default=sa.text("0")),
        sa.Column("last_error", sa.Text()),
        sa.UniqueConstraint("event_id", name="order_sync_outbox_event_id_key"),
    )
    op.create_index(
        "ix_order_sync_outbox_pending",
        "order_sync_outbox",
        ["id"],
        postgresql_where=PENDING,
        sqlite_where=PENDING,
    )
    op.create_index("ix_order_sync_outbox_published_at", "order_sync_outbox", ["published_at"])


def downgrade() -> None:
    op.drop_table("order_sync_outbox")
