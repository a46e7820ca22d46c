"""Ordering and idempotency across the fleet: one writer per order, newest data per field.

Each event joins its order's pending set in the shared store. Whoever holds the order's lock
takes the whole set, merges it field by field (the newest ``occurred_at`` wins), drops fields an
already-applied newer event wrote, and sends one PUT for all of it. Events whose task finds the
lock taken wait for the holder (their task is retried shortly) and end when the holder has
applied or dead-lettered them. Applied event ids are remembered for the de-duplication window.

Field versions are only read and written under the order's lock, so no newer value is ever
overwritten by an older one, whatever order the events arrive in.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from schemas.event import OrderChange
from worker.state import Store

PREFIX = "order-sync"
DEAD_LETTERED = "dead_lettered"


def _key(kind: str, name: object) -> str:
    return f"{PREFIX}:{kind}:{name}"


@dataclass(frozen=True)
class PendingEvent:
    event_id: str
    occurred_at: str  # ISO 8601, compared as datetimes
    changes: dict[str, Any]
    envelope: dict[str, Any]

    @property
    def replays(self) -> int:
        return len(self.envelope.get("history") or [])

    @property
    def when(self) -> dt.datetime:
        return dt.datetime.fromisoformat(self.occurred_at)

    def dumps(self) -> str:
        return json.dumps(self.__dict__, separators=(",", ":"))

    @classmethod
    def loads(cls, raw: str) -> PendingEvent:
        return cls(**json.loads(raw))


@dataclass
class Merge:
    """What one PUT will carry for an order, and where each part came from."""

    events: list[PendingEvent]
    changes: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)  # field -> occurred_at sent
    stale: list[tuple[str, str]] = field(default_factory=list)  # (event_id, field) skipped

    @property
    def event_ids(self) -> list[str]:
        return [e.event_id for e in self.events]


class OrderCoordinator:
    def __init__(self, store: Store, dedup_window: float, lock_ttl: float) -> None:
        self.store = store
        self.dedup_window = dedup_window
        self.lock_ttl = lock_ttl

    # De-duplication ---------------------------------------------------------------------
    def outcome(self, event_id: str, replays: int = 0) -> str | None:
        """How an event ended ("applied", "stale", "dead_lettered"), if it has.

        A dead-lettered event counts as unfinished for a replay newer than its last failure
        (``replays`` is how many times the copy at hand was replayed).
        """
        value = self.store.get(_key("done", event_id))
        if value is None:
            return None
        outcome, _, failed_at_replay = value.partition(":")
        if outcome == DEAD_LETTERED and int(failed_at_replay or 0) < replays:
            return None
        return outcome

    def finish(self, events: list[PendingEvent], outcome: str) -> None:
        for event in events:
            value = f"{outcome}:{event.replays}" if outcome == DEAD_LETTERED else outcome
            self.store.put(_key("done", event.event_id), value, ttl=self.dedup_window)

    # The per-order pending set and lock -------------------------------------------------
    def enqueue(self, event: OrderChange, envelope: dict[str, Any]) -> None:
        pending = PendingEvent(
            event.event_id, event.occurred_at.isoformat(), event.changes, envelope
        )
        self.put_back(event.order_id, [pending])

    def put_back(self, order_id: int, events: list[PendingEvent]) -> None:
        if events:
            self.store.hash_put(
                _key("pending", order_id),
                {e.event_id: e.dumps() for e in events},
                ttl=self.dedup_window,
            )

    def lock(self, order_id: int, owner: str) -> bool:
        return self.store.claim(_key("lock", order_id), owner, self.lock_ttl)

    def keep(self, order_id: int, owner: str) -> bool:
        """Renew our lock before each round of work; False if it expired and is lost."""
        return self.store.extend(_key("lock", order_id), owner, self.lock_ttl)

    def unlock(self, order_id: int, owner: str) -> None:
        self.store.release(_key("lock", order_id), owner)

    def take(self, order_id: int) -> list[PendingEvent]:
        """Every pending event of the order not already finished, oldest first."""
        taken = [
            PendingEvent.loads(raw)
            for raw in self.store.hash_take_all(_key("pending", order_id)).values()
        ]
        fresh = [e for e in taken if self.outcome(e.event_id, e.replays) is None]
        return sorted(fresh, key=lambda e: (e.when, e.event_id))

    # Per-field last writer wins ----------------------------------------------------------
    def merge(self, order_id: int, events: list[PendingEvent]) -> Merge:
        applied = self.store.hash_get_all(_key("versions", order_id))
        merge = Merge(events)
        for event in events:  # oldest first: a newer event overwrites a field
            for name, value in event.changes.items():
                newer_applied = applied.get(name)
                if newer_applied and dt.datetime.fromisoformat(newer_applied) > event.when:
                    merge.stale.append((event.event_id, name))
                    continue
                merge.changes[name] = value
                merge.versions[name] = event.occurred_at
        return merge

    def applied(self, order_id: int, merge: Merge) -> None:
        if merge.versions:
            self.store.hash_put(_key("versions", order_id), merge.versions, ttl=self.dedup_window)
        self.finish(merge.events, "applied")
