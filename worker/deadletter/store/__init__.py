"""The project's own database: dead-letter entries (``DeadLetterDB``), their audit trail, and
order history (``worker.history``). PostgreSQL in production (``ORDER_SYNC_DATABASE_URL``),
a SQLite file in the data directory by default.

    tables     the tables and the entry states (dead, replayed, archived)
    engine     engines, SQLite locking, migrations (run when the database is opened)
    query      a Selection as SQL
    db         DeadLetterDB: ingest, summary, page, get, archive, note, purge, audit, expire
"""

from __future__ import annotations

from worker.deadletter.store.db import DeadLetterDB, EntryDetail, StoredEntry
from worker.deadletter.store.tables import ARCHIVED, DEAD, REPLAYED, STATES

__all__ = [
    "ARCHIVED",
    "DEAD",
    "REPLAYED",
    "STATES",
    "DeadLetterDB",
    "EntryDetail",
    "StoredEntry",
]
