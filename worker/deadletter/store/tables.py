"""The dead-letter tables, as SQLAlchemy sees them (the migrations create them).

An entry keeps its JSON exactly as it was dead-lettered (``entry``); the columns beside it are
what operators filter, group and sort by, each indexed.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Index, Integer, MetaData, Table, Text

from worker.outbox.table import UtcDateTime

#: Alembic's bookkeeping table for this database (the outbox may share it, so not the default).
VERSION_TABLE = "order_sync_db_version"

#: What state an entry is in: waiting for an operator, sent again, or put aside.
DEAD = "dead"
REPLAYED = "replayed"
ARCHIVED = "archived"
STATES = (DEAD, REPLAYED, ARCHIVED)

# SQLite only auto-increments a plain INTEGER PRIMARY KEY (its rowid); BIGINT elsewhere.
SEQ = BigInteger().with_variant(Integer, "sqlite")

metadata = MetaData()

entries = Table(
    "order_sync_dead_letters",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("id", Text, nullable=False, unique=True),
    Column("state", Text, nullable=False),
    Column("reason", Text, nullable=False),
    Column("group_key", Text, nullable=False),
    Column("error", Text, nullable=False),
    Column("event_id", Text),
    Column("order_id", BigInteger),
    Column("dead_lettered_at", UtcDateTime, nullable=False),
    Column("ingested_at", UtcDateTime, nullable=False),
    # When and by whom the state last changed (replayed, archived, unarchived).
    Column("changed_at", UtcDateTime),
    Column("changed_by", Text),
    Column("entry", Text, nullable=False),
    # JSON list of this entry's replays: when, by whom, with which patch.
    Column("replays", Text),
    # Lists page through entries oldest first, within a state.
    Index("ix_order_sync_dead_letters_state_time", "state", "dead_lettered_at", "seq"),
    # The summary counts each group from the index alone.
    Index(
        "ix_order_sync_dead_letters_state_group",
        "state",
        "reason",
        "group_key",
        "dead_lettered_at",
    ),
    Index("ix_order_sync_dead_letters_group", "group_key"),
    Index("ix_order_sync_dead_letters_order", "order_id"),
    Index("ix_order_sync_dead_letters_event", "event_id"),
    # Retention finds replayed and archived entries by when they got there.
    Index("ix_order_sync_dead_letters_changed", "state", "changed_at"),
)

groups = Table(
    "order_sync_dlq_groups",
    metadata,
    Column("key", Text, primary_key=True),
    Column("reason", Text, nullable=False),
    Column("error_group", Text, nullable=False),
    Column("note", Text),
    Column("note_by", Text),
    Column("note_at", UtcDateTime),
)

notes = Table(
    "order_sync_dlq_notes",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("entry_id", Text),
    Column("group_key", Text),
    Column("text", Text, nullable=False),
    Column("actor", Text, nullable=False),
    Column("at", UtcDateTime, nullable=False),
    Index("ix_order_sync_dlq_notes_entry", "entry_id"),
    Index("ix_order_sync_dlq_notes_group", "group_key"),
)

audit = Table(
    "order_sync_dlq_audit",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("actor", Text, nullable=False),
    Column("action", Text, nullable=False),
    Column("count", Integer, nullable=False),
    # JSON: the selection acted on, the patch, the note...
    Column("detail", Text, nullable=False),
    Index("ix_order_sync_dlq_audit_at", "at"),
)

#: Which entries each audited action touched.
audit_entries = Table(
    "order_sync_dlq_audit_entries",
    metadata,
    Column("audit_seq", BigInteger, nullable=False),
    Column("entry_id", Text, nullable=False),
    Index("ix_order_sync_dlq_audit_entries_entry", "entry_id"),
    Index("ix_order_sync_dlq_audit_entries_audit", "audit_seq"),
)

history = Table(
    "order_sync_history",
    metadata,
    Column("seq", SEQ, primary_key=True, autoincrement=True),
    Column("at", UtcDateTime, nullable=False),
    Column("kind", Text, nullable=False),
    Column("order_id", BigInteger),
    Column("event_id", Text),
    Column("detail", Text, nullable=False),
    Index("ix_order_sync_history_order", "order_id", "at"),
    Index("ix_order_sync_history_event", "event_id", "at"),
    Index("ix_order_sync_history_at", "at"),
)
