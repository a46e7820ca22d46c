"""``DeadLetterDB``: dead-letter entries kept in the project's database, and what operators do
with them.

The dead-letter queue stays where workers put entries; the ingester (``deadletter.ingest``)
moves them here, acknowledging each message only after its row is committed. An entry is
stored once however often it is delivered (its ``id`` is unique). From then on reading,
grouping and filtering never touch the broker.

Every entry is in one state: ``dead`` (waiting for an operator: what ``list`` and ``summary``
show by default), ``replayed`` (sent again; kept with its replay history) or ``archived`` (put
aside). Replayed and archived entries are deleted after ``retention_days`` (``expire``). Every
operator action (replay, archive, unarchive, note, purge) is recorded in the audit trail with
who did it, when, and which entries it touched.

Thread-safe: one ``DeadLetterDB`` (one engine and its pool) serves every thread of a process.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    delete,
    func,
    insert,
    literal,
    select,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite

from worker.deadletter.groups import error_group, group_key
from worker.deadletter.selection import Selection, format_time, parse_time
from worker.deadletter.store import engine as engines
from worker.deadletter.store.query import ORDER, Cursor, after, where
from worker.deadletter.store.tables import (
    ARCHIVED,
    DEAD,
    REPLAYED,
    audit,
    audit_entries,
    entries,
    groups,
    notes,
)
from worker.deadletter.summary import Summary
from worker.settings import DatabaseSettings, database_settings

# Audit actions: the words the audit trail uses, declared once.
REPLAY = "replay"
ARCHIVE = "archive"
UNARCHIVE = "unarchive"
NOTE = "note"
PURGE = "purge"
EXPIRE = "expire"
#: Who ``expire`` is recorded as.
RETENTION_ACTOR = "retention"

#: Rows per transaction when a command acts on many entries.
BATCH = 500
# Order ids outside this are not ids (a hostile or broken body); the entry keeps them anyway.
_BIGINT = 2**63

#: The empty selection: every entry.
EVERYTHING = Selection()

# Called with how many more entries were done, to drive a progress bar.
OnProgress = Callable[[int], None]


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def _time(value: dt.datetime | None) -> str | None:
    return format_time(value) if value is not None else None


@dataclass(frozen=True)
class StoredEntry:
    """An entry as it was dead-lettered, and what became of it since."""

    entry: dict[str, Any]
    state: str
    changed_at: str | None = None
    changed_by: str | None = None
    replays: list[dict[str, Any]] = field(default_factory=list)

    @property
    def id(self) -> str:
        return str(self.entry.get("id"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "entry": self.entry,
            "state": self.state,
            "changed_at": self.changed_at,
            "changed_by": self.changed_by,
            "replays": self.replays,
        }


@dataclass(frozen=True)
class EntryDetail(StoredEntry):
    """``get``: a stored entry with its error group, notes and audit trail."""

    group: dict[str, Any] = field(default_factory=dict)
    notes: list[dict[str, Any]] = field(default_factory=list)
    audit: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {**super().as_dict(), "group": self.group, "notes": self.notes, "audit": self.audit}


def _stored(row: Any) -> StoredEntry:
    return StoredEntry(
        entry=json.loads(row.entry),
        state=row.state,
        changed_at=_time(row.changed_at),
        changed_by=row.changed_by,
        replays=json.loads(row.replays) if row.replays else [],
    )


_STORED_COLUMNS = (
    entries.c.entry,
    entries.c.state,
    entries.c.changed_at,
    entries.c.changed_by,
    entries.c.replays,
)


def row_of(entry: dict[str, Any], ingested_at: dt.datetime) -> dict[str, Any]:
    """The entries table's columns for an entry (any JSON object with an ``id``)."""
    reason = str(entry.get("reason") or "unknown")
    error = str(entry.get("error") or "")
    order_id = entry.get("order_id")
    event_id = entry.get("event_id")
    try:
        when = parse_time(str(entry.get("dead_lettered_at")))
    except ValueError:
        when = ingested_at
    return {
        "id": str(entry["id"]),
        "state": DEAD,
        "reason": reason,
        "group_key": group_key(reason, error),
        "error": error,
        "event_id": event_id if isinstance(event_id, str) else None,
        "order_id": order_id
        if isinstance(order_id, int) and not isinstance(order_id, bool) and abs(order_id) < _BIGINT
        else None,
        "dead_lettered_at": when,
        "ingested_at": ingested_at,
        "entry": _dumps(entry),
    }


@dataclass
class Claim:
    """One dead entry held for replay (``DeadLetterDB.claim_next``): nobody else can take it
    until the claim ends. ``replayed()`` marks it, in the same transaction."""

    connection: Connection
    seq: int
    cursor: Cursor
    stored: StoredEntry
    actor: str
    detail: dict[str, Any]
    _audit: list[int]  # the replay's audit row, shared by its claims: made by the first
    done: bool = False

    @property
    def entry(self) -> dict[str, Any]:
        return self.stored.entry

    def replayed(self, step: dict[str, Any]) -> None:
        """Mark the entry replayed, with ``step`` (``entries.replay_step``) in its replays.

        Call only once the broker confirmed the republished event: the mark is committed when
        the claim ends, so a crash before that leaves the entry dead (sent at most twice)."""
        at = now()
        replays = [*self.stored.replays, {**step, "by": self.actor}]
        self.connection.execute(
            update(entries)
            .where(entries.c.seq == self.seq)
            .values(state=REPLAYED, changed_at=at, changed_by=self.actor, replays=_dumps(replays))
        )
        if not self._audit:
            self._audit.append(_audit_row(self.connection, self.actor, REPLAY, self.detail, at))
        _link(self.connection, self._audit[0], [self.stored.id])
        self.done = True


def _audit_row(
    connection: Connection, actor: str, action: str, detail: dict[str, Any], at: dt.datetime
) -> int:
    seq = connection.execute(
        insert(audit)
        .values(at=at, actor=actor, action=action, count=0, detail=_dumps(detail))
        .returning(audit.c.seq)
    ).scalar_one()
    return int(seq)


def _link(connection: Connection, audit_seq: int, ids: list[str]) -> None:
    """Record which entries an audited action touched."""
    if not ids:
        return
    connection.execute(
        insert(audit_entries), [{"audit_seq": audit_seq, "entry_id": i} for i in ids]
    )
    connection.execute(
        update(audit).where(audit.c.seq == audit_seq).values(count=audit.c.count + len(ids))
    )


class DeadLetterDB:
    """The dead-letter store. ``with DeadLetterDB.open() as db: db.summary()``."""

    def __init__(self, engine: Engine, settings: DatabaseSettings | None = None) -> None:
        self.engine = engine
        self.reader = engines.readonly(engine)
        self.settings = settings or database_settings()

    @classmethod
    def open(cls, url: str | None = None, settings: DatabaseSettings | None = None) -> DeadLetterDB:
        """Connect (to ``url``, else ``ORDER_SYNC_DATABASE_URL``, else the SQLite file in the
        data directory) and bring the schema up to date. Raises ConfigError for a bad URL."""
        settings = settings or database_settings()
        engine = engines.create(url or settings.url)
        engines.upgrade(engine)
        return cls(engine, settings)

    def close(self) -> None:
        self.engine.dispose()

    def __enter__(self) -> DeadLetterDB:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # Ingestion ---------------------------------------------------------------------------------

    def _insert(self, table: Any) -> Any:
        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        return dialect.insert(table)

    def ingest(self, entry: dict[str, Any]) -> bool:
        """Store one entry (a JSON object with an ``id``) as dead; False if it was stored
        already (a redelivery). Committed when this returns."""
        return bool(self.ingest_many([entry]))

    def ingest_many(self, batch: Iterable[dict[str, Any]]) -> int:
        """Store entries in one transaction; how many were new. Committed when this returns."""
        at = now()
        rows = list({row["id"]: row for row in (row_of(e, at) for e in batch)}.values())
        if not rows:
            return 0
        group_rows = {
            row["group_key"]: {
                "key": row["group_key"],
                "reason": row["reason"],
                "error_group": error_group(row["error"]),
            }
            for row in rows
        }
        with self.engine.begin() as connection:
            connection.execute(
                self._insert(groups).on_conflict_do_nothing(index_elements=["key"]),
                list(group_rows.values()),
            )
            inserted = connection.execute(
                self._insert(entries)
                .on_conflict_do_nothing(index_elements=["id"])
                .returning(entries.c.id),
                rows,
            ).all()
        return len(inserted)

    # Reading -----------------------------------------------------------------------------------

    def count(self, selection: Selection = EVERYTHING, state: str | None = DEAD) -> int:
        with self.reader.connect() as connection:
            return int(
                connection.execute(
                    select(func.count()).select_from(entries).where(where(selection, state))
                ).scalar_one()
            )

    def summary(
        self,
        selection: Selection = EVERYTHING,
        state: str | None = DEAD,
        limit: int | None = None,
    ) -> Summary:
        """Counts by reason and by error group (with the group's key, text and note), oldest
        and newest of each; of the first ``limit`` matching entries when given."""
        source: Any = entries
        if limit is not None:
            source = (
                select(entries.c.reason, entries.c.group_key, entries.c.dead_lettered_at)
                .where(where(selection, state))
                .order_by(*ORDER)
                .limit(limit)
                .subquery()
            )
            condition: Any = literal(True)
        else:
            condition = where(selection, state)
        counted = (
            select(
                source.c.reason,
                source.c.group_key,
                func.count().label("n"),
                func.min(source.c.dead_lettered_at).label("oldest"),
                func.max(source.c.dead_lettered_at).label("newest"),
            )
            .where(condition)
            .group_by(source.c.reason, source.c.group_key)
            .subquery()
        )
        query = select(counted, groups.c.error_group, groups.c.note).join(
            groups, groups.c.key == counted.c.group_key, isouter=True
        )
        summary = Summary()
        with self.reader.connect() as connection:
            for row in connection.execute(query):
                summary.add_group(
                    reason=row.reason,
                    error=row.error_group or "",
                    key=row.group_key,
                    count=int(row.n),
                    oldest=_as_text_time(row.oldest),
                    newest=_as_text_time(row.newest),
                    note=row.note,
                )
        return summary

    def page(
        self,
        selection: Selection = EVERYTHING,
        state: str | None = DEAD,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[StoredEntry], int]:
        """One page of matching entries, oldest first, and how many match in all."""
        condition = where(selection, state)
        with self.reader.connect() as connection:
            total = connection.execute(
                select(func.count()).select_from(entries).where(condition)
            ).scalar_one()
            rows = connection.execute(
                select(*_STORED_COLUMNS)
                .where(condition)
                .order_by(*ORDER)
                .offset(offset)
                .limit(limit)
            ).all()
        return [_stored(row) for row in rows], int(total)

    def iter_entries(
        self,
        selection: Selection = EVERYTHING,
        state: str | None = DEAD,
        limit: int | None = None,
    ) -> Iterator[StoredEntry]:
        """Every matching entry, oldest first, read in batches (memory stays flat)."""
        cursor: Cursor | None = None
        seen = 0
        while limit is None or seen < limit:
            size = BATCH if limit is None else min(BATCH, limit - seen)
            with self.reader.connect() as connection:
                rows = connection.execute(
                    select(*_STORED_COLUMNS, *ORDER)
                    .where(where(selection, state), after(cursor))
                    .order_by(*ORDER)
                    .limit(size)
                ).all()
            if not rows:
                return
            for row in rows:
                yield _stored(row)
            seen += len(rows)
            cursor = (rows[-1].dead_lettered_at, rows[-1].seq)

    def get(self, entry_id: str) -> EntryDetail | None:
        """One entry in any state, with its group, notes (its own and its group's) and audit."""
        with self.reader.connect() as connection:
            row = connection.execute(
                select(*_STORED_COLUMNS, entries.c.group_key).where(entries.c.id == entry_id)
            ).first()
            if row is None:
                return None
            group = connection.execute(select(groups).where(groups.c.key == row.group_key)).first()
            note_rows = connection.execute(
                select(notes)
                .where((notes.c.entry_id == entry_id) | (notes.c.group_key == row.group_key))
                .order_by(notes.c.seq)
            ).all()
            audit_rows = connection.execute(
                select(audit)
                .join(audit_entries, audit_entries.c.audit_seq == audit.c.seq)
                .where(audit_entries.c.entry_id == entry_id)
                .order_by(audit.c.seq)
            ).all()
        stored = _stored(row)
        return EntryDetail(
            entry=stored.entry,
            state=stored.state,
            changed_at=stored.changed_at,
            changed_by=stored.changed_by,
            replays=stored.replays,
            group={
                "key": row.group_key,
                "reason": group.reason if group else None,
                "error": group.error_group if group else None,
                "note": group.note if group else None,
            },
            notes=[_note_dict(n) for n in note_rows],
            audit=[_audit_dict(a) for a in audit_rows],
        )

    def audit(self, limit: int = 50, offset: int = 0) -> list[dict[str, Any]]:
        """Operator actions, newest first: when, who, what, how many entries, details."""
        with self.reader.connect() as connection:
            rows = connection.execute(
                select(audit).order_by(audit.c.seq.desc()).offset(offset).limit(limit)
            ).all()
        return [_audit_dict(row) for row in rows]

    def audited_ids(self, audit_seq: int) -> list[str]:
        """The entries one audited action touched."""
        with self.reader.connect() as connection:
            return list(
                connection.execute(
                    select(audit_entries.c.entry_id).where(audit_entries.c.audit_seq == audit_seq)
                ).scalars()
            )

    # Acting on entries ---------------------------------------------------------------------------

    @contextmanager
    def claim_next(
        self,
        selection: Selection,
        cursor: Cursor | None,
        actor: str,
        detail: dict[str, Any],
        audit_seq: list[int],
    ) -> Iterator[Claim | None]:
        """The next dead entry after ``cursor`` that ``selection`` matches, held for a replay
        (None when there is none left).

        The entry's row is locked for the block (``FOR UPDATE SKIP LOCKED`` on PostgreSQL, so a
        second replay moves on to the next entry; SQLite's write lock elsewhere): two replays
        never take the same entry. What ``Claim.replayed`` marked is committed when the block
        ends without an error; an error (a publish that failed) rolls it back.
        """
        with self.engine.begin() as connection:
            row = connection.execute(
                select(entries.c.seq, *_STORED_COLUMNS, entries.c.dead_lettered_at)
                .where(where(selection, DEAD), after(cursor))
                .order_by(*ORDER)
                .limit(1)
                .with_for_update(skip_locked=True)
            ).first()
            if row is None:
                yield None
                return
            yield Claim(
                connection,
                row.seq,
                (row.dead_lettered_at, row.seq),
                _stored(row),
                actor,
                detail,
                audit_seq,
            )

    def mark_replayed(self, entry_id: str, user: str, patch: Any = None) -> bool:
        """Mark one dead entry replayed (after the broker confirmed its event); False if it is
        not dead (any more). ``operations.replay`` does the publishing and this together."""
        from worker.deadletter.entries import replay_step

        with self.claim_next(
            Selection(ids=frozenset({entry_id})), None, user, replay_detail(patch), []
        ) as claim:
            if claim is None:
                return False
            claim.replayed(replay_step(claim.entry, patch))
            return True

    def _change_state(
        self,
        target: Selection | Iterable[str],
        user: str,
        action: str,
        source: str,
        destination: str,
        progress: OnProgress | None = None,
    ) -> list[str]:
        selection = target if isinstance(target, Selection) else Selection(ids=frozenset(target))
        changed: list[str] = []
        audit_seq: int | None = None
        while True:
            with self.engine.begin() as connection:
                rows = connection.execute(
                    select(entries.c.seq, entries.c.id)
                    .where(where(selection, source))
                    .order_by(*ORDER)
                    .limit(BATCH)
                    .with_for_update()
                ).all()
                if not rows:
                    break
                at = now()
                connection.execute(
                    update(entries)
                    .where(entries.c.seq.in_([r.seq for r in rows]))
                    .values(state=destination, changed_at=at, changed_by=user)
                )
                if audit_seq is None:
                    detail = {"selection": selection.as_dict()}
                    audit_seq = _audit_row(connection, user, action, detail, at)
                ids = [r.id for r in rows]
                _link(connection, audit_seq, ids)
            changed.extend(ids)
            if progress:
                progress(len(ids))
        return changed

    def archive(
        self,
        target: Selection | Iterable[str],
        user: str,
        progress: OnProgress | None = None,
    ) -> list[str]:
        """Put dead entries aside (ids, or every dead entry a selection matches); the ids
        archived. Archived entries are deleted after the retention period."""
        return self._change_state(target, user, ARCHIVE, DEAD, ARCHIVED, progress)

    def unarchive(
        self,
        target: Selection | Iterable[str],
        user: str,
        progress: OnProgress | None = None,
    ) -> list[str]:
        """Make archived entries dead again; the ids unarchived."""
        return self._change_state(target, user, UNARCHIVE, ARCHIVED, DEAD, progress)

    def note(
        self, text: str, user: str, *, entry_id: str | None = None, group: str | None = None
    ) -> bool:
        """Write a note on an entry or on an error group (the group's latest note shows in the
        summary); False if there is no such entry or group."""
        if (entry_id is None) == (group is None):
            raise ValueError("a note is on an entry or on a group")
        at = now()
        with self.engine.begin() as connection:
            if entry_id is not None:
                exists = connection.execute(
                    select(entries.c.seq).where(entries.c.id == entry_id)
                ).first()
            else:
                exists = connection.execute(
                    update(groups)
                    .where(groups.c.key == group)
                    .values(note=text, note_by=user, note_at=at)
                    .returning(groups.c.key)
                ).first()
            if exists is None:
                return False
            connection.execute(
                insert(notes).values(
                    entry_id=entry_id, group_key=group, text=text, actor=user, at=at
                )
            )
            detail: dict[str, Any] = {"text": text}
            if group is not None:
                detail["group"] = group
            seq = _audit_row(connection, user, NOTE, detail, at)
            if entry_id is not None:
                _link(connection, seq, [entry_id])
        return True

    def purge(
        self,
        selection: Selection,
        user: str,
        state: str | None = DEAD,
        limit: int | None = None,
        progress: OnProgress | None = None,
    ) -> list[str]:
        """Delete the selected entries for good, oldest first, committing every ``BATCH``; the
        ids deleted. Killed midway, it has deleted whole batches and nothing else."""
        purged: list[str] = []
        audit_seq: int | None = None
        while limit is None or len(purged) < limit:
            size = BATCH if limit is None else min(BATCH, limit - len(purged))
            with self.engine.begin() as connection:
                rows = connection.execute(
                    select(entries.c.seq, entries.c.id)
                    .where(where(selection, state))
                    .order_by(*ORDER)
                    .limit(size)
                ).all()
                if not rows:
                    break
                connection.execute(delete(entries).where(entries.c.seq.in_([r.seq for r in rows])))
                if audit_seq is None:
                    detail = {"selection": selection.as_dict(), "state": state}
                    audit_seq = _audit_row(connection, user, PURGE, detail, now())
                ids = [r.id for r in rows]
                _link(connection, audit_seq, ids)
            purged.extend(ids)
            if progress:
                progress(len(ids))
        return purged

    def expire(self, at: dt.datetime | None = None) -> int:
        """Delete replayed and archived entries older than the retention period; how many."""
        cutoff = (at or now()) - dt.timedelta(days=self.settings.retention_days)
        expired = 0
        while True:
            with self.engine.begin() as connection:
                seqs = (
                    connection.execute(
                        select(entries.c.seq)
                        .where(entries.c.state.in_([REPLAYED, ARCHIVED]))
                        .where(entries.c.changed_at < cutoff)
                        .limit(BATCH)
                    )
                    .scalars()
                    .all()
                )
                if not seqs:
                    break
                connection.execute(delete(entries).where(entries.c.seq.in_(seqs)))
                detail = {"before": format_time(cutoff)}
                seq = _audit_row(connection, RETENTION_ACTOR, EXPIRE, detail, now())
                connection.execute(update(audit).where(audit.c.seq == seq).values(count=len(seqs)))
            expired += len(seqs)
        return expired

    def counts_by_reason(self, state: str | None = DEAD) -> dict[str, int]:
        """How many entries of each reason, most first (``order-sync status``)."""
        summary = self.summary(EVERYTHING, state)
        return {reason: group.count for reason, group in summary.ranked(summary.by_reason)}


def replay_detail(patch: Any, selection: Selection | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {}
    if selection is not None:
        detail["selection"] = selection.as_dict()
    if patch is not None:
        detail["patch"] = patch
    return detail


def _as_text_time(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):  # SQLite's min()/max() give the stored text back
        value = dt.datetime.fromisoformat(value)
    return format_time(value if value.tzinfo else value.replace(tzinfo=dt.UTC))


def _note_dict(row: Any) -> dict[str, Any]:
    return {
        "text": row.text,
        "by": row.actor,
        "at": _time(row.at),
        "entry_id": row.entry_id,
        "group": row.group_key,
    }


def _audit_dict(row: Any) -> dict[str, Any]:
    return {
        "seq": row.seq,
        "at": _time(row.at),
        "user": row.actor,
        "action": row.action,
        "count": row._mapping["count"],
        "detail": json.loads(row.detail),
    }


__all__ = [
    "ARCHIVE",
    "ARCHIVED",
    "BATCH",
    "DEAD",
    "EXPIRE",
    "NOTE",
    "PURGE",
    "REPLAY",
    "REPLAYED",
    "UNARCHIVE",
    "Claim",
    "DeadLetterDB",
    "EntryDetail",
    "StoredEntry",
]
