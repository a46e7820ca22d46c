"""Create the dead-letter, audit and order-history tables.

Revision ID: 0001
Revises:
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

# Spelled out rather than imported from worker.deadletter.store.tables: a revision must keep
# creating the schema it was written for, whatever the table module looks like later.
SEQ = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
TIME = sa.DateTime(timezone=True)


def _seq() -> sa.Column[int]:
    return sa.Column("seq", SEQ, primary_key=True, autoincrement=True)


def upgrade() -> None:
    op.create_table(
        "order_sync_dead_letters",
        _seq(),
        sa.Column("id", sa.Text(), nullable=False, unique=True),
        sa.Column("state", sa.Text(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("group_key", sa.Text(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("event_id", sa.Text()),
        sa.Column("order_id", sa.BigInteger()),
        sa.Column("dead_lettered_at", TIME, nullable=False),
        sa.Column("ingested_at", TIME, nullable=False),
        sa.Column("changed_at", TIME),
        sa.Column("changed_by", sa.Text()),
        sa.Column("entry", sa.Text(), nullable=False),
        sa.Column("replays", sa.Text()),
    )
    table = "order_sync_dead_letters"
    op.create_index(f"ix_{table}_state_time", table, ["state", "dead_lettered_at", "seq"])
    op.create_index(
        f"ix_{table}_state_group", table, ["state", "reason", "group_key", "dead_lettered_at"]
    )
    op.create_index(f"ix_{table}_group", table, ["group_key"])
    op.create_index(f"ix_{table}_order", table, ["order_id"])
    op.create_index(f"ix_{table}_event", table, ["event_id"])
    op.create_index(f"ix_{table}_changed", table, ["state", "changed_at"])

    op.create_table(
        "order_sync_dlq_groups",
        sa.Column("key", sa.Text(), primary_key=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("error_group", sa.Text(), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("note_by", sa.Text()),
        sa.Column("note_at", TIME),
    )
    op.create_table(
        "order_sync_dlq_notes",
        _seq(),
        sa.Column("entry_id", sa.Text()),
        sa.Column("group_key", sa.Text()),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("at", TIME, nullable=False),
    )
    op.create_index("ix_order_sync_dlq_notes_entry", "order_sync_dlq_notes", ["entry_id"])
    op.create_index("ix_order_sync_dlq_notes_group", "order_sync_dlq_notes", ["group_key"])
    op.create_table(
        "order_sync_dlq_audit",
        _seq(),
        sa.Column("at", TIME, nullable=False),
        sa.Column("actor", sa.Text(), nullable=False),
        sa.Column("action", sa.Text(), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_order_sync_dlq_audit_at", "order_sync_dlq_audit", ["at"])
    op.create_table(
        "order_sync_dlq_audit_entries",
        sa.Column("audit_seq", sa.BigInteger(), nullable=False),
        sa.Column("entry_id", sa.Text(), nullable=False),
    )
    op.create_index(
        "ix_order_sync_dlq_audit_entries_entry", "order_sync_dlq_audit_entries", ["entry_id"]
    )
    op.create_index(
        "ix_order_sync_dlq_audit_entries_audit", "order_sync_dlq_audit_entries", ["audit_seq"]
    )
    op.create_table(
        "order_sync_history",
        _seq(),
        sa.Column("at", TIME, nullable=False),
        sa.Column("kind", sa.Text(), nullable=False),
        sa.Column("order_id", sa.BigInteger()),
        sa.Column("event_id", sa.Text()),
        sa.Column("detail", sa.Text(), nullable=False),
    )
    op.create_index("ix_order_sync_history_order", "order_sync_history", ["order_id", "at"])
    op.create_index("ix_order_sync_history_event", "order_sync_history", ["event_id", "at"])
    op.create_index("ix_order_sync_history_at", "order_sync_history", ["at"])


def downgrade() -> None:
    for table in (
        "order_sync_history",
        "order_sync_dlq_audit_entries",
        "order_sync_dlq_audit",
        "order_sync_dlq_notes",
        "order_sync_dlq_groups",
        "order_sync_dead_letters",
    ):
        op.drop_table(table)
