"""Where the console reads and acts: the dead-letter store (``DeadLetterDB``), the order history
(``worker.history``), the broker and the fleet's shared store (``observability.fleet_status``).

Replays go through ``deadletter.operations.replay``, the same code as ``order-sync dlq replay``:
an entry is marked replayed only after the broker confirmed its event, and two replays never
take the same entry. Every page reads one page of entries (or counts), never all of them.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from worker.console.forms import Filter
from worker.deadletter.selection import Selection
from worker.settings import BrokerSettings, ConfigError

if TYPE_CHECKING:
    from worker.console.fleet import Fleet
    from worker.deadletter.store import DeadLetterDB, StoredEntry

#: Entries validated against a patch before it is sent (the rest are checked as they are sent).
PREVIEW_MAX = 1000
PREVIEW_SAMPLES = 3
HISTORY_MAX = 500
#: Entries still in the dead-letter queue are moved into the database before a page shows the
#: dead letters (workers do it too; this covers a console running with no worker), at most
#: this often.
DRAIN_EVERY = 2.0


@dataclass(frozen=True)
class Target:
    """The entries an action is for: ticked ids, or what a filter matches."""

    ids: tuple[str, ...] = ()
    filter: Filter | None = None

    @property
    def selection(self) -> Selection:
        if self.filter is not None:
            return self.filter.selection
        return Selection(ids=frozenset(self.ids))

    def state_for(self, verb: str) -> str | None:
        """The state the entries must be in for ``verb`` (None: any)."""
        from worker.deadletter.store import ARCHIVED, DEAD

        if verb in ("replay", "archive", "preview"):
            return DEAD
        if verb == "unarchive":
            return ARCHIVED
        # purge: what the filter shows; ticked ids in whatever state they are.
        if self.filter is not None and self.filter.state != "all":
            return self.filter.state
        return None


@dataclass
class Outcome:
    done: list[str] = field(default_factory=list)
    failed: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class GroupRow:
    key: str
    reason: str
    error: str
    count: int
    first_seen: str | None
    last_seen: str | None
    note: str | None


@dataclass(frozen=True)
class Row:
    id: str
    state: str
    reason: str
    order_id: Any
    event_id: Any
    error: str
    dead_lettered_at: Any


@dataclass(frozen=True)
class Page:
    rows: list[Row]
    total: int
    group: GroupRow | None = None


@dataclass
class Preview:
    total: int = 0
    valid: int = 0
    invalid: int = 0
    unchecked: int = 0
    failures: list[dict[str, str]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class Trace:
    records: list[dict[str, Any]]
    truncated: bool = False


class Backend:
    def __init__(
        self,
        db: DeadLetterDB,
        broker: BrokerSettings,
        fleet: Fleet,
        history: Callable[..., Any] | None = None,
        secrets: tuple[str, ...] = (),
    ) -> None:
        self.db = db
        self.broker = broker
        self._fleet = fleet
        self._history = history
        self._secrets = secrets
        self._drained_at = -DRAIN_EVERY
        self._drain_lock = threading.Lock()

    @classmethod
    def from_settings(cls) -> Backend:
        """Everything from the environment, as the worker and ``order-sync dlq`` read it."""
        from worker.console.fleet import Fleet
        from worker.deadletter.store import DeadLetterDB
        from worker.settings import broker_settings, console_settings, credentials

        db = DeadLetterDB.open()
        secrets = []
        # No Sellercloud password in this environment: nothing of it to mask.
        with contextlib.suppress(ConfigError):
            secrets.append(credentials()[1])
        password = console_settings().password
        if password:
            secrets.append(password)
        history = _history_reader(db)
        backend = cls(db, broker_settings(), Fleet(broker_settings()), history, tuple(secrets))
        backend._fleet.per_minute = backend.per_minute
        return backend

    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    # Overview ----------------------------------------------------------------------------------

    def fleet(self) -> dict[str, Any]:
        from worker.deadletter.store import DEAD

        return self._fleet.snapshot(lambda: self.db.count(Selection(), DEAD))

    def per_minute(self, minutes: int) -> list[dict[str, Any]]:
        from worker.console.rates import per_minute

        return per_minute(self.db.engine, minutes)

    # Dead letters ------------------------------------------------------------------------------

    def drain(self) -> None:
        """Move what waits in the dead-letter queue into the database (``ingest.drain``)."""
        with self._drain_lock:
            if time.monotonic() - self._drained_at < DRAIN_EVERY:
                return
            self._drained_at = time.monotonic()
            from worker.broker.connection import connect
            from worker.deadletter.ingest import drain

            # The broker away is no reason to hide what the database already holds.
            with contextlib.suppress(Exception), connect(self.broker) as connection:
                drain(connection, self.db)

    def groups(self, state: str = "dead", limit: int | None = None) -> list[GroupRow]:
        self.drain()
        summary = self.db.summary(Selection(), None if state == "all" else state)
        rows = [
            GroupRow(
                key=group.key,
                reason=reason,
                error=error,
                count=group.count,
                first_seen=group.oldest,
                last_seen=group.newest,
                note=group.note,
            )
            for (reason, error), group in summary.ranked(summary.by_error)
        ]
        return rows[:limit] if limit is not None else rows

    def page(self, wanted: Filter) -> Page:
        self.drain()
        state = None if wanted.state == "all" else wanted.state
        stored, total = self.db.page(wanted.selection, state, wanted.offset, wanted.limit)
        group = None
        if wanted.group is not None:
            group = next(
                (g for g in self.groups(state=wanted.state) if g.key == wanted.group), None
            ) or self._group(wanted.group)
        return Page([_row(s) for s in stored], total, group)

    def _group(self, key: str) -> GroupRow | None:
        from sqlalchemy import select

        from worker.deadletter.store.tables import groups

        with self.db.reader.connect() as connection:
            row = connection.execute(select(groups).where(groups.c.key == key)).first()
        if row is None:
            return None
        return GroupRow(key, row.reason, row.error_group, 0, None, None, row.note)

    def entry(self, entry_id: str) -> dict[str, Any] | None:
        detail = self.db.get(entry_id)
        if detail is None:
            return None
        entry = detail.entry
        history = [
            {"at": step.get("replayed_at"), "what": "replayed (earlier failure)", "detail": step}
            for step in entry.get("history") or []
            if isinstance(step, dict)
        ] + [
            {
                "at": step.get("replayed_at"),
                "what": f"replayed by {step.get('by', '?')}",
                "detail": step,
            }
            for step in detail.replays
        ]
        return {
            "id": detail.id,
            "state": detail.state,
            "entry": entry,
            "group": detail.group,
            "history": history,
            "notes": [{"actor": n["by"], "at": n["at"], "text": n["text"]} for n in detail.notes],
            "audit": [
                {"at": a["at"], "actor": a["user"], "action": a["action"], "detail": a["detail"]}
                for a in detail.audit
            ],
        }

    # Actions -----------------------------------------------------------------------------------

    def count(self, target: Target, verb: str = "purge") -> int:
        return self.db.count(target.selection, target.state_for(verb))

    def act(self, verb: str, target: Target, *, user: str, patch: Any = None) -> Outcome:
        selection, state = target.selection, target.state_for(verb)
        if verb == "replay":
            # Entries picked one by one go out as live events; a whole filter (a group) goes
            # out as bulk events, which never delay a live change.
            outcome = self._replay(selection, patch, user, live=target.filter is None)
        else:
            done: list[str]
            if verb == "archive":
                done = self.db.archive(selection, user)
            elif verb == "unarchive":
                done = self.db.unarchive(selection, user)
            elif verb == "purge":
                from worker.deadletter import operations

                done = operations.purge(self.db, selection, user=user, state=state).done
            else:
                raise ValueError(f"unknown action {verb!r}")
            outcome = Outcome(done=done)
        if target.ids:
            missed = set(target.ids) - set(outcome.done) - {f["id"] for f in outcome.failed}
            for entry_id in sorted(missed):
                outcome.failed.append(
                    {"id": entry_id, "error": f"not {state or 'found'} (any more), left as it was"}
                )
        return outcome

    def _replay(self, selection: Selection, patch: Any, user: str, live: bool) -> Outcome:
        from worker.deadletter import operations

        result = operations.replay(
            self.broker, self.db, selection, user=user, patch=patch, live=live
        )
        return Outcome(done=list(result.done), failed=list(result.failed))

    def preview(self, target: Target, patch: dict[str, Any]) -> Preview:
        from worker.deadletter.operations import replay_message

        result = Preview(total=self.count(target, "preview"))
        for stored in self.db.iter_entries(
            target.selection, target.state_for("preview"), limit=PREVIEW_MAX
        ):
            entry = stored.entry
            try:
                message = replay_message(entry, patch)
            except ValueError as exc:
                result.invalid += 1
                result.failures.append({"id": stored.id, "error": str(exc)})
                continue
            result.valid += 1
            if len(result.samples) < PREVIEW_SAMPLES:
                import json

                after = json.loads(message.body).get("changes")
                event = entry.get("event")
                before = event.get("changes") if isinstance(event, dict) else None
                result.samples.append(
                    {
                        "id": stored.id,
                        "order_id": entry.get("order_id"),
                        "before": before,
                        "after": after,
                    }
                )
        result.unchecked = max(0, result.total - result.valid - result.invalid)
        return result

    def note_entry(self, entry_id: str, text: str, *, user: str) -> None:
        from worker.console.forms import BadInput

        if not self.db.note(text, user, entry_id=entry_id):
            raise BadInput([f"There is no entry {entry_id!r}."])

    def note_group(self, group: str, text: str, *, user: str) -> None:
        from worker.console.forms import BadInput

        if not self.db.note(text, user, group=group):
            raise BadInput([f"There is no group {group!r}."])

    # History -----------------------------------------------------------------------------------

    def trace(self, order_id: int | None, event_id: str | None) -> Trace:
        if self._history is None:
            return Trace([])
        if order_id is not None:
            records = self._history(order_id=order_id)
        else:
            records = self._history(event_id=event_id)
        shown = [_record(r) for r in records[-HISTORY_MAX:]]
        return Trace(shown, truncated=len(records) > HISTORY_MAX)

    def audit(self, offset: int, limit: int) -> list[dict[str, Any]]:
        return self.db.audit(limit=limit, offset=offset)

    def close(self) -> None:
        self._fleet.close()
        self.db.close()


RECORD_KEYS = ("at", "kind", "order_id", "event_id")


def _record(record: dict[str, Any]) -> dict[str, Any]:
    """A history record for the page: its common keys, the dead-letter entry it names, and the
    kind's own details."""
    shown = {key: record.get(key) for key in RECORD_KEYS}
    shown["entry_id"] = record.get("dead_letter_id")
    shown["detail"] = {k: v for k, v in record.items() if k not in RECORD_KEYS} or None
    return shown


def _row(stored: StoredEntry) -> Row:
    entry = stored.entry
    return Row(
        id=stored.id,
        state=stored.state,
        reason=str(entry.get("reason", "")),
        order_id=entry.get("order_id"),
        event_id=entry.get("event_id"),
        error=str(entry.get("error", "")),
        dead_lettered_at=entry.get("dead_lettered_at"),
    )


def _history_reader(db: DeadLetterDB) -> Callable[..., Any]:
    """``history.reader.trace`` on the dead-letter store's database (they share it)."""
    from worker.history.reader import trace

    def read(order_id: int | None = None, event_id: str | None = None) -> list[dict[str, Any]]:
        return trace(db.engine, order_id=order_id, event_id=event_id)

    return read


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)
